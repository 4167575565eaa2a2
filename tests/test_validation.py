"""Input hardening: samplers that always succeed, structure/argument/device validation at every simulator boundary,
memory guards, and a property test that random bad input raises a diffnb error (never another exception, never a crash)."""
import numpy as np
import pytest
import torch

from diffnb.core import DiffnbError


# --- A. samplers: every draw succeeds, deterministically from (seed, index) ---------------------------------------

def test_lacbed_sampler_crystals_always_drawn():
    "The crystal draw of `bloch.lacbed` at its defaults succeeds for 256 indices × 3 seeds, reproducibly."
    from diffnb.sim.bloch import LacbedSampler
    from diffnb.structure import feasible_space_groups
    smp = LacbedSampler()
    lo, hi = smp.config["lattice_parameter"]
    groups, first = set(), {}
    for seed in range(3):
        for i in range(256):
            atoms, sg, a = smp.crystal(seed, i)
            assert sg in feasible_space_groups(smp.config["max_atoms"]) and lo <= a <= hi
            assert atoms.info["space_group"] == sg and np.allclose(atoms.cell.lengths(), a)
            groups.add(sg)
            if i % 32 == 0: first[seed, i] = (atoms.numbers.copy(), atoms.positions.copy())
    assert len(groups) >= 30                                  # the draw still spans (almost) all cubic groups
    for (seed, i), (z, pos) in first.items():                 # same (seed, index) → the same crystal
        atoms, _, _ = smp.crystal(seed, i)
        np.testing.assert_array_equal(atoms.numbers, z); np.testing.assert_array_equal(atoms.positions, pos)


def _as_arrays(out):
    x, y, params = out
    arr = lambda v: None if v is None else (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
    return arr(x), arr(y), {k: np.asarray(v) for k, v in params.items()}


def test_registered_samplers_deterministic():
    "Every registered sampler makes samples at its defaults; sample i is bitwise the same alone or in a batch."
    from diffnb.data.store import SAMPLERS, get_sampler
    for name in SAMPLERS:
        smp = get_sampler(name)
        x2, y2, p2 = _as_arrays(smp.sample(1, [7, 2]))
        x1, y1, p1 = _as_arrays(smp.sample(1, [2]))
        assert x2.shape[0] == 2 and np.isfinite(x2).all(), name
        np.testing.assert_array_equal(x1[0], x2[1], err_msg=name)
        if y2 is not None: np.testing.assert_array_equal(y1[0], y2[1], err_msg=name)
        for k in p1: np.testing.assert_array_equal(p1[k][0], p2[k][1], err_msg=f"{name}: {k}")


# --- B. cold start: scattering factors without abTEM --------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_process():
    "One clean Python process: a LACBED pattern of Si (is abTEM imported?), then lacbed on Si with a NaN position."
    import subprocess, sys
    code = ("import sys; import numpy as np; from ase.build import bulk; from diffnb.sim.bloch import lacbed\n"
            "from diffnb.core import StructureError\n"
            "si = bulk('Si', 'diamond', a=5.431, cubic=True)\n"
            "lacbed(si, 200.0, 500.0, pixels=4, alpha=0.3, g_max=0.8, device='cpu')\n"
            "print('abtem imported:', 'abtem' in sys.modules)\n"
            "si.positions[3, 0] = np.nan\n"
            "try: lacbed(si, 200.0, 500.0, pixels=4, alpha=0.3, g_max=0.8, device='cpu')\n"
            "except StructureError as e: print('StructureError', e)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_lacbed_does_not_import_abtem(fresh_process):
    "A process that simulates a LACBED pattern reads the coefficient tables from package data, not from abTEM."
    assert fresh_process.returncode == 0, fresh_process.stderr[-2000:]
    assert "abtem imported: False" in fresh_process.stdout


# --- C. structures are checked once, at the boundary of every simulator -------------------------------------------

def _si():
    from ase.build import bulk
    return bulk("Si", "diamond", a=5.431, cubic=True)


def test_nan_position_rejected_before_spglib(fresh_process):
    "A NaN position used to segfault spglib inside lacbed (exit 139): now a StructureError (checked in a separate process)."
    assert fresh_process.returncode == 0, (fresh_process.returncode, fresh_process.stderr[-2000:])
    assert "StructureError" in fresh_process.stdout and "positions" in fresh_process.stdout


POSCAR_NAN = "Si\n1.0\n5.43 0 0\n0 5.43 0\n0 0 5.43\nSi\n2\nDirect\n0 0 0\nnan 0.25 0.25\n"


def _cif(a="5.0", occ="1.0", x="0.0"):
    return (f"data_t\n_cell_length_a {a}\n_cell_length_b 5.0\n_cell_length_c 5.0\n_cell_angle_alpha 90\n"
            f"_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n"
            f"_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\n"
            f"Si1 Si {x} 0.0 0.0 {occ}\n")


@pytest.mark.parametrize("text, fmt, match", [
    (POSCAR_NAN, "vasp", "finite"), (_cif(a="0"), None, "_cell_length_a must be a positive length"),
    (_cif(a="-5"), None, "_cell_length_a must be a positive length"), (_cif(occ="nan"), None, "occupancy must be a finite"),
    (_cif(x="nan"), None, "fract_x must be a finite"), (_cif(occ="1.5"), None, r"\(0, 1\]"),
])
def test_read_structure_rejects_unphysical(text, fmt, match):
    from diffnb.core import StructureError
    from diffnb.structure import read_structure
    with pytest.raises(StructureError, match=match):
        read_structure(text, format=fmt)


def test_check_structure_every_simulator():
    "The same check guards the Bloch, potential, powder and kinematic entry points."
    from diffnb.core import StructureError
    from diffnb.sim.bloch import bloch_setup, lacbed
    from diffnb.sim.kinematic import pattern
    from diffnb.sim.potential import projected_potential, structure_factor
    from diffnb.sim.powder import PowderRings
    from diffnb.structure import check_structure
    bad = {}
    a = _si(); a.positions[0, 1] = np.inf; bad["inf position"] = a
    a = _si(); a.set_cell(-a.cell.array, scale_atoms=False); bad["left-handed cell"] = a
    a = _si(); a.arrays["occupancy"] = np.full(len(a), np.nan); bad["nan occupancy"] = a
    a = _si(); a.arrays["b_iso"] = np.full(len(a), 1e4); bad["B = 1e4"] = a
    a = _si(); a.arrays["b_iso"] = np.full(len(a), np.nan); bad["nan B"] = a
    a = _si(); a.numbers[0] = 0; bad["dummy atom"] = a
    calls = [lambda x: lacbed(x, 200.0, 500.0, pixels=4, alpha=0.3, g_max=0.8, device="cpu"),
             lambda x: bloch_setup(x, 200.0, g_max=0.8), lambda x: projected_potential(x, pixels=8),
             lambda x: structure_factor(x, [[1, 1, 1]]), lambda x: PowderRings(x, s_max=0.6),
             lambda x: pattern(x, grid=16), check_structure]
    for what, atoms in bad.items():
        for f in calls:
            if what == "left-handed cell" and f is calls[5]: continue    # kinematic: finite structures, no cell
            with pytest.raises(StructureError):
                f(atoms)
    si = _si()
    with pytest.raises(StructureError, match="b_iso"):          # per-call overrides obey the same bounds
        lacbed(si, 200.0, 500.0, pixels=4, alpha=0.3, g_max=0.8, b_iso=1e4, device="cpu")
    with pytest.raises(StructureError, match="occupancy"):
        structure_factor(si, [[1, 1, 1]], occupancy=float("nan"))


# --- D. strings and empty lists where numbers belong ---------------------------------------------------------------

def test_wrong_types_raise_diffnb_errors():
    from diffnb.core import DiffnbValueError
    from diffnb.scattering import dw_intensity, electron_form_factor
    from diffnb.sim.bloch import lacbed
    from diffnb.sim.powder import PowderRings, bismuth_atoms
    si, kw = _si(), dict(pixels=4, alpha=0.3, g_max=0.8, device="cpu")
    bad_calls = {
        "energy": lambda: lacbed(si, "200", 500.0, **kw), "thickness": lambda: lacbed(si, 200.0, "500", **kw),
        "zone": lambda: lacbed(si, 200.0, 500.0, zone=("0", "0", "1"), **kw),
        "b_iso": lambda: lacbed(si, 200.0, 500.0, b_iso="0.5", **kw), "empty thickness": lambda: lacbed(si, 200.0, [], **kw),
        "s string": lambda: electron_form_factor("Si", "0.5"), "s empty": lambda: PowderRings(bismuth_atoms(), s_max=0.6).profile([]),
        "s None": lambda: dw_intensity(0.5, None), "symbols empty": lambda: electron_form_factor([], 0.5),
    }
    for what, call in bad_calls.items():
        with pytest.raises(DiffnbValueError):
            call()


# --- E. silent nonsense is refused ---------------------------------------------------------------------------------

def test_silent_nonsense_rejected():
    from diffnb.core import DiffnbValueError
    from diffnb.sim.bloch import lacbed
    from diffnb.sim.detector import psf_blur, shot_noise
    from diffnb.sim.kinematic import pattern
    from diffnb.sim.powder import PowderRings, bismuth_atoms
    from diffnb.sim.speckle import disk_system, speckle
    from ase.build import graphene
    gr = graphene(); gr.center(vacuum=3.0, axis=2)
    si, kw = _si(), dict(pixels=4, alpha=0.3, g_max=0.8, device="cpu")
    rings = PowderRings(bismuth_atoms(), s_max=0.8)
    cases = [
        (lambda: rings.image(center=(float("nan"), 3), shape=(16, 16)), "center"),
        (lambda: psf_blur(torch.full((8, 8), float("nan")), 1.0), "finite"),
        (lambda: shot_noise(torch.full((4, 4), 1e30)), "overflows"),
        (lambda: pattern(gr, grid=16, dtype=torch.int32), "dtype"),
        (lambda: speckle(disk_system(3, seed=0), n=9, dtype=torch.int64), "dtype"),
        (lambda: lacbed(si, 200.0, 500.0, b_iso=1e4, **kw), "b_iso"),
        (lambda: lacbed(si, 200.0, 1e12, **kw), "thickness"),
        (lambda: rings.profile(torch.linspace(0.1, 0.5, 5), b_iso=1e4), "b_iso"),
    ]
    for call, match in cases:
        with pytest.raises(DiffnbValueError, match=match):
            call()
    counts = shot_noise(torch.full((4, 4), 1e17), torch.Generator().manual_seed(0))   # just below the limit: sane counts
    assert float(counts.min()) > 0.99e17 and float(counts.max()) < 1.01e17


# --- F. sizes that cannot fit are refused before allocating ---------------------------------------------------------

def test_memory_guard():
    import time
    from diffnb.core import ResourceError, check_memory
    from diffnb.sim.bloch import lacbed
    from diffnb.sim.kinematic import pattern
    from diffnb.sim.potential import projected_potential
    from diffnb.sim.powder import PowderRings, bismuth_atoms
    from diffnb.sim.speckle import disk_system, speckle
    from ase.build import graphene
    gr = graphene(); gr.center(vacuum=3.0, axis=2)
    t = time.perf_counter()
    for call in [lambda: pattern(gr, grid=60_000), lambda: pattern(gr, grid=30_000, max_memory_gb=4),
                 lambda: PowderRings(bismuth_atoms(), s_max=0.8).image(shape=(60_000, 60_000)),
                 lambda: speckle(disk_system(3, seed=0), n=60_000), lambda: projected_potential(_si(), pixels=60_000),
                 lambda: lacbed(_si(), 200.0, 500.0, pixels=30_000, alpha=0.3, device="cpu", max_memory_gb=8)]:
        with pytest.raises(ResourceError, match="GiB"):
            call()
    with pytest.raises(DiffnbError, match="jamming"):                 # 10⁶ disks and their gaps cannot be packed
        disk_system(10**6)
    assert time.perf_counter() - t < 10                              # refused up front, not after minutes of work
    with pytest.raises(ResourceError, match="53.6 GiB"):             # the message gives the amount needed
        check_memory("a 60000² complex grid", 16 * 60_000**2, max_memory_gb=8)
    assert pattern(gr, grid=16, max_memory_gb=0.01).shape == (16, 16)  # the override also lowers the limit


# --- G. devices are checked first ----------------------------------------------------------------------------------

def test_device_checked_first():
    import time
    from diffnb.core import DiffnbValueError, check_device
    from diffnb.sim.bloch import LacbedSampler, lacbed
    from diffnb.sim.kinematic import pattern
    from diffnb.sim.powder import PowderRings, bismuth_atoms
    from diffnb.sim.speckle import disk_system, speckle
    from ase.build import graphene
    gr = graphene(); gr.center(vacuum=3.0, axis=2)
    rings = PowderRings(bismuth_atoms(), s_max=0.8)
    bad = ["tpu", "gpu0", 3.5] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for dev in bad:
        t = time.perf_counter()
        for call in [lambda: lacbed(_si(), 200.0, 500.0, pixels=64, alpha=0.6, g_max=2.0, device=dev),
                     lambda: LacbedSampler(device=dev), lambda: pattern(gr, grid=16, device=dev),
                     lambda: rings.image(shape=(16, 16), device=dev), lambda: speckle(disk_system(3, seed=0), n=9, device=dev),
                     lambda: check_device(dev)]:
            with pytest.raises(DiffnbValueError, match="device"):
                call()
        assert time.perf_counter() - t < 3, dev                       # before any simulation work
    assert check_device("cpu") == torch.device("cpu")


# --- H. random bad input: a DiffnbError or a valid result, never another exception, never a crash -------------------

def test_property_bad_inputs_every_simulator():
    "Runs tests/_fuzz_simulators.py (hypothesis, 30 examples per function) in its own process: a crash fails the test."
    import subprocess, sys
    from pathlib import Path
    script = Path(__file__).with_name("_fuzz_simulators.py")
    r = subprocess.run([sys.executable, str(script), "30"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    assert "no failures" in r.stdout
