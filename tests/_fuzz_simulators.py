"""Property test, run as a script in its own process by tests/test_validation.py (a crash cannot take pytest down):
every public simulator function, given a valid small call with ONE argument replaced by a random bad value or type,
either returns or raises a DiffnbError subclass — never another exception type.

    python tests/_fuzz_simulators.py [max_examples] [name-filter]
"""
import math
import sys
import time
import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from diffnb.core import DiffnbError

NAN, INF = float("nan"), float("inf")

BAD = st.one_of(
    st.none(), st.booleans(), st.text(max_size=4), st.sampled_from(["200", "cpu", "tpu", "cuda", "nan", ""]),
    st.sampled_from([NAN, INF, -INF, -1.0, 0.0, -1e-300, 1e-300, 0.5, 3.7, 1e6, 1e12, 1e30, -1e30]),
    st.integers(-10**6, 10**6), st.sampled_from([0, 1, 2, 3, -1, 10**6, 2**31]),
    st.sampled_from([[], (), [[]], ["a", "b"], [1, "x"], [NAN, 1.0], [1.0, 2.0, 3.0], (1, 2), [[1.0, 2.0], [3.0, 4.0]],
                     {"a": 1}, object(), 1 + 2j, np.array([NAN]), np.zeros((0, 3)), np.ones((2, 3)) * INF,
                     torch.tensor([NAN]), torch.zeros(0), torch.ones(3, dtype=torch.int32), torch.ones(2, 2, 2),
                     torch.int32, torch.int64, torch.complex64, torch.bool, np.float64, "float32"]),
)


def _si():
    from ase.build import bulk
    a = bulk("Si", "diamond", a=5.431, cubic=True)
    a.arrays["b_iso"] = np.full(len(a), 0.5)
    return a


def _bad_atoms():
    a = _si(); a.positions[1, 2] = NAN
    return a


def specs():
    "(name, function, valid keyword arguments) for every public simulator entry point, at tiny sizes."
    from diffnb import scattering as sc, structure as stc
    from diffnb.sim import bloch, detector as dt, kinematic as km, potential as pt, powder as pw, speckle as sp
    si = _si()
    img = torch.rand(2, 16, 16) + 0.1
    rings = pw.PowderRings(pw.bismuth_atoms(), s_max=0.8)
    disks = sp.disk_system(3, seed=0)
    g = torch.Generator().manual_seed(0)
    from ase.build import graphene
    gr = graphene(size=(2, 2, 1)); gr.center(vacuum=3.0, axis=2)
    return [
        ("structure.check_structure", stc.check_structure, dict(atoms=si)),
        ("structure.random_cubic_crystal", stc.random_cubic_crystal, dict(space_group=221, seed=0, max_atoms=4, max_tries=20)),
        ("scattering.electron_form_factor", sc.electron_form_factor, dict(symbol_or_Z="Si", s=np.linspace(0, 1, 4))),
        ("scattering.xray_form_factor", sc.xray_form_factor, dict(symbol_or_Z="Si", s=np.linspace(0, 1, 4))),
        ("scattering.dw_intensity", sc.dw_intensity, dict(b_iso=0.5, s=np.linspace(0, 1, 4))),
        ("scattering.bismuth_b_iso", sc.bismuth_b_iso, dict(temperature_k=300.0)),
        ("potential.structure_factor", pt.structure_factor, dict(atoms=si, hkl=[[1, 1, 1]], parametrization="kirkland",
                                                                 b_iso=None, occupancy=None)),
        ("potential.projected_potential", pt.projected_potential, dict(atoms=si, zone=(0, 0, 1), pixels=8, g_max=None,
                                                                       normalize=True, b_iso=None)),
        ("potential.zone_frame", pt.zone_frame, dict(atoms=si, zone=(0, 0, 1), x_dir=(1, 0, 0))),
        ("bloch.lacbed_tilts", bloch.lacbed_tilts, dict(pixels=4, alpha=0.3)),
        ("bloch.zolz_beams", bloch.zolz_beams, dict(atoms=si, g_max=0.8, zone=(0, 0, 1), x_dir=(1, 0, 0))),
        ("bloch.bloch_setup", bloch.bloch_setup, dict(atoms=si, energy_kev=200.0, zone=(0, 0, 1), g_max=0.8,
                                                      absorption=None, b_iso=None, occupancy=None)),
        ("bloch.lacbed", bloch.lacbed, dict(atoms=si, energy_kev=200.0, thickness=300.0, zone=(0, 0, 1), x_dir=(1, 0, 0),
                                            pixels=4, alpha=0.3, g_max=0.8, discs=((0, 0, 0),), b_iso=None,
                                            device="cpu", dtype=torch.complex128, chunk=None, method="auto")),
        ("bloch.g_max_for_beams", bloch.g_max_for_beams, dict(atoms=si, n_beams=9)),
        ("bloch.LacbedSampler", bloch.LacbedSampler, dict(pixels=8, energy_kev=200.0, thickness=300.0, alpha=0.3,
                                                          n_beams=9, max_atoms=4, lattice_parameter=(3.5, 5.0), b_iso=0.5)),
        ("kinematic.pattern", km.pattern, dict(atoms=gr, energy_kev=200.0, grid=16, s_max=1.0, ewald=False,
                                               method="nufft", amplitude=False, device=None, dtype=torch.float32)),
        ("kinematic.crystallite", km.crystallite, dict(cell=gr, size=(10.0, 10.0), shape="rectangle", rotation_deg=0.0)),
        ("kinematic.reciprocal_axis", km.reciprocal_axis, dict(grid=16, s_max=1.0)),
        ("kinematic.strain_tensor", km.strain_tensor, dict(strain=0.01)),
        ("powder.PowderRings", pw.PowderRings, dict(atoms=pw.bismuth_atoms(), energy_kev=100.0, s_max=0.6)),
        ("powder.PowderRings.profile", rings.profile, dict(s=torch.linspace(0.1, 0.7, 8), b_iso=1.0, fwhm=0.02,
                                                          device=None, dtype=torch.float32)),
        ("powder.PowderRings.image", rings.image, dict(b_iso=1.0, shape=(16, 16), pixels_per_inv_angstrom=20.0,
                                                      center=None, fwhm=0.02, oversample=2, device=None)),
        ("powder.ring_profile", pw.ring_profile, dict(atoms=pw.bismuth_atoms(), s=np.linspace(0.1, 0.7, 8))),
        ("speckle.disk_system", sp.disk_system, dict(n_disks=3, seed=0, polydispersity=0.0, min_gap=2.0)),
        ("speckle.speckle", sp.speckle, dict(disks=disks, n=9, k_max=None, grid="centered", method="matrix",
                                             device=None, dtype=torch.float32)),
        ("speckle.k_axes", sp.k_axes, dict(n=9, k_step=None, grid="centered")),
        ("speckle.central_mask", sp.central_mask, dict(n=9)),
        ("speckle.first_moment", sp.first_moment, dict(patterns=torch.rand(2, 9, 9))),
        ("detector.psf_blur", dt.psf_blur, dict(img=img, sigma_px=1.0)),
        ("detector.central_beam", dt.central_beam, dict(img=img, amplitude=1.0, width_px=2.0, center=None, kind="gaussian")),
        ("detector.beam_stop", dt.beam_stop, dict(img=img, radius_px=2.0, center=None, transmission=0.0)),
        ("detector.distort", dt.distort, dict(img=img, shift_px=(0.5, 0.5), ellipticity=0.01, angle_rad=0.0)),
        ("detector.scale_to_dose", dt.scale_to_dose, dict(img=img, dose_e_per_px=10.0)),
        ("detector.shot_noise", dt.shot_noise, dict(expected=img * 10, generators=g)),
        ("detector.readout_noise", dt.readout_noise, dict(img=img, sigma_e=1.0, generators=g)),
        ("detector.saturate", dt.saturate, dict(img=img, level=0.5)),
        ("detector.gain_map", dt.gain_map, dict(shape=(16, 16), sigma=0.03, correlation_px=4.0, generator=g)),
        ("detector.pixel_grid", dt.pixel_grid, dict(shape=(4, 4), device=None, dtype=torch.float32)),
    ]


def fuzz(name, fn, base, max_examples):
    keys = sorted(base)
    failures = []

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(key=st.sampled_from(keys), value=BAD)
    def run(key, value):
        kwargs = {**base, key: value}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(**kwargs)
        except DiffnbError:
            pass
        except Exception as e:       # noqa: BLE001 — the point of the test
            failures.append(f"{name}({key}={value!r}): {type(e).__name__}: {str(e)[:160]}")

    run()
    # the structure check must catch a NaN position wherever a structure goes in (spglib would crash on it)
    for key in ("atoms", "cell"):
        if key in base:
            try: fn(**{**base, key: _bad_atoms()})
            except DiffnbError: pass
            except Exception as e: failures.append(f"{name}({key}=NaN atoms): {type(e).__name__}: {e}")
            else: failures.append(f"{name}({key}=NaN atoms): accepted")
    return failures


def main(max_examples=30, only=""):
    import os, resource
    torch.set_num_threads(1)
    os.environ["DIFFNB_MAX_MEMORY_GB"] = "1"          # the memory guards trip at 1 GiB ...
    lim = 6 * 2**30                                    # ... and an allocation they miss fails here instead of in the OOM killer
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    failures = []
    for name, fn, base in specs():
        if only and only not in name: continue
        t = time.perf_counter()
        failures += fuzz(name, fn, base, max_examples)
        print(f"{name}: {time.perf_counter() - t:.2f} s", flush=True)
    seen = {}
    for f in failures: seen.setdefault(f.split("=")[0] + " " + f.split(": ")[1], f)   # one line per (call, argument, error)
    print("\n".join(seen.values()) if failures else "no failures")
    print(f"{len(failures)} failures, {len(seen)} distinct")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30, sys.argv[2] if len(sys.argv) > 2 else ""))
