"""Benchmark of diffnb.sim.bloch.lacbed against FELIX (published figures) and abTEM's Bloch-wave module (measured).

FELIX (Fortran/MPI) cannot run here: its single-core times for one 128x128 bright-field pattern are the
figures quoted in the issue (Si, 69 beams: 94 s; SrTiO3, 113 beams: 348 s), and the ratio is against those.
abTEM's Bloch module is timed in the same run on a subset of tilts (its tilt-ensemble route: one rotated
crystal and one structure-matrix diagonalisation per tilt) and extrapolated to 128x128 pixels.

Usage: python bench/bench_bloch.py [--quick]
"""
import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import ase
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from diffnb.core import electron_wavenumber
from diffnb.sim.bloch import bloch_setup, lacbed, lacbed_tilts, zolz_beams

E = 200.0
FELIX_S = {"Si": 94.0, "SrTiO3": 348.0}   # issue #4: FELIX, one core of the 2-core test machine, one 128x128 pattern


def diamond(sym, a, b):
    at = ase.Atoms(sym, cell=np.eye(3) * a, pbc=True,
                   scaled_positions=[[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                                     [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    at.arrays["b_iso"] = np.full(8, b)
    return at


def crystals():
    sto = ase.Atoms("SrTiO3", scaled_positions=[[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]],
                    cell=np.eye(3) * 3.905, pbc=True)
    sto.arrays["b_iso"] = np.array([0.55, 0.35, 0.6, 0.6, 0.6])
    return [("Si", diamond("Si8", 5.4309, 0.4632), 0.6, 70),
            ("GaAs", diamond("Ga4As4", 5.6533, 0.6), 0.6, 70),
            ("SrTiO3", sto, 0.8913, 113)]


def g_max_for(atoms, n_beams):
    "Smallest shell radius whose beam count is closest to n_beams."
    _, g = zolz_beams(atoms, 3.0)
    shells = np.unique(np.round(np.linalg.norm(g, axis=1), 9))
    counts = [(abs(len(zolz_beams(atoms, s + 1e-9)[0]) - n_beams), s) for s in shells[1:]]
    return min(counts)[1] + 1e-6


def abtem_seconds_per_tilt(atoms, hkl, n_tilts=6):
    from abtem.bloch import BlochWaves, StructureFactor
    k0 = electron_wavenumber(E)
    b = atoms.arrays["b_iso"]
    gmax = np.linalg.norm(hkl @ np.linalg.inv(atoms.cell.array).T, axis=1).max()
    sf = StructureFactor(atoms, g_max=2 * gmax + 1, parametrization="kirkland", thermal_sigma=np.sqrt(b / (8 * np.pi ** 2)))
    sfa = sf.build(lazy=False)
    rng = np.random.default_rng(0)
    t = np.linspace(50, 2000, 40)
    t0 = time.process_time()
    for kx, ky in rng.uniform(-0.5, 0.5, (n_tilts, 2)):
        khat = np.array([kx, ky, np.sqrt(k0 ** 2 - kx ** 2 - ky ** 2)]) / k0
        rot = Rotation.align_vectors([[0, 0, 1]], [khat])[0].as_matrix()
        bw = BlochWaves(sfa, energy=E * 1e3, sg_max=10.0, g_max=gmax + 1e-6, orientation_matrix=rot, centering="P")
        lut = {tuple(h): i for i, h in enumerate(sfa.hkl.tolist())}
        mask = np.zeros(len(sfa.hkl), bool); mask[[lut[tuple(h)] for h in hkl.tolist()]] = True
        bw._hkl_mask = mask
        bw.calculate_diffraction_patterns(t, lazy=False)
    return (time.process_time() - t0) / n_tilts


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--quick", action="store_true"); args = ap.parse_args()
    torch.set_num_threads(1)
    pixels = 32 if args.quick else 128
    t = np.linspace(50, 2000, 40)
    print(f"diffnb.sim.bloch.lacbed — 200 keV, {pixels}x{pixels} px, 40 thicknesses 50-2000 Å, Kirkland, bright field, "
          f"ONE CPU core (torch threads = 1); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'crystal':8s} {'beams':>5s} {'g_max':>6s} {'sym':>3s} {'dtype':>10s} {'s/pattern':>9s} {'FELIX s':>8s} "
          f"{'vs FELIX':>8s} {'abTEM s':>8s} {'vs abTEM':>8s} {'wall s':>7s}")
    for name, atoms, alpha, nb in crystals():
        gm = g_max_for(atoms, nb)
        st = bloch_setup(atoms, E, g_max=gm)
        lacbed(atoms, E, t, pixels=4, alpha=alpha, g_max=gm, device="cpu")      # warm-up
        ab = abtem_seconds_per_tilt(atoms, st.hkl, 3 if args.quick else 6) * 128 * 128
        for dtype in (torch.complex128, torch.complex64):
            t0, c0 = time.perf_counter(), time.process_time()
            lacbed(atoms, E, t, pixels=pixels, alpha=alpha, g_max=gm, device="cpu", dtype=dtype)
            wall = (time.perf_counter() - t0) * (128 / pixels) ** 2
            sec = (time.process_time() - c0) * (128 / pixels) ** 2                  # CPU time of the one core
            felix = FELIX_S.get(name)
            print(f"{name:8s} {len(st.hkl):5d} {gm:6.3f} {len(st.ops):3d} {str(dtype)[6:]:>10s} {sec:9.2f} "
                  f"{felix if felix else float('nan'):8.0f} {felix / sec if felix else float('nan'):7.0f}x "
                  f"{ab:8.0f} {ab / sec:7.0f}x {wall:7.2f}")
    name, atoms, alpha, nb = crystals()[0]
    gm = g_max_for(atoms, nb)
    px = 32 if args.quick else 64
    for method in ("expm", "eigh"):          # with absorption "eigh" means the general eig + solve
        c0 = time.process_time()
        lacbed(atoms, E, t, pixels=px, alpha=alpha, g_max=gm, device="cpu", absorption="bird_king", method=method)
        sec = (time.process_time() - c0) * (128 / px) ** 2
        print(f"Si with Bird-King absorption, {'expm (auto)' if method == 'expm' else 'eig + solve'}: {sec:.2f} s/pattern, "
              f"{FELIX_S['Si'] / sec:.0f}x FELIX (if FELIX's figure included absorption)")
    print("s/pattern and abTEM s are CPU seconds of the single core (process time; the wall time is also shown, it is "
          "inflated when other jobs share the machine).")
    print("FELIX figures are the issue's published single-core times (FELIX cannot run here); abTEM is measured in "
          "this run on a few tilts and extrapolated to 128x128 pixels (no symmetry reduction in abTEM).")
    if pixels != 128: print("--quick: diffnb timed on a smaller field and scaled by the pixel count.")
    if torch.cuda.is_available():
        from diffnb.structure import random_cubic_crystal
        def gpu_time(atoms, alpha, gm, method):
            lacbed(atoms, E, t, pixels=8, alpha=alpha, g_max=gm, device="cuda", method=method); torch.cuda.synchronize()
            t0 = time.perf_counter(); lacbed(atoms, E, t, pixels=128, alpha=alpha, g_max=gm, device="cuda", method=method)
            torch.cuda.synchronize(); return time.perf_counter() - t0
        print(f"GPU: {torch.cuda.get_device_name()}, complex128, s/pattern by solver")
        for name, atoms, alpha, nb in crystals():
            gm = g_max_for(atoms, nb)
            print(f"GPU {name}: eigh {gpu_time(atoms, alpha, gm, 'eigh'):.3f} s, expm {gpu_time(atoms, alpha, gm, 'expm'):.3f} s")
        at = random_cubic_crystal(225, seed=0)
        gm = g_max_for(at, 400)
        nb = len(zolz_beams(at, gm)[0])
        print(f"GPU random cubic crystal (Fm-3m), {nb} beams: expm {gpu_time(at, 0.6, gm, 'expm'):.3f} s/pattern "
              f"(target <= 1 s on an H100); eigh {gpu_time(at, 0.6, gm, 'eigh'):.3f} s")
    else:
        print("No GPU here: GPU timings and the 400-beam H100 target were not measured.")


if __name__ == "__main__":
    main()
