"""Speed of diffnb.sim.speckle vs the speckle study's rasterise + zero-pad + FFT + crop pipeline.

Prints patterns per second of the analytic speckle (disk placement included) at 257² and 513² for N = 2, 10, 20
disks, mono- and polydisperse, on one core, two cores and a GPU when present, and the per-pattern time of a
faithful numpy port of the study's pipeline measured in the same run. One-core figures are process CPU times
(best of 5 batches of 16 for diffnb), so that other jobs on a shared machine do not distort the ratio.

The study's pipeline rasterises a 2000-px box, zero-pads to 18001², FFTs and crops: one 18001² complex128 FFT
needs ~5 GB and ~1 min, too heavy for a shared 2-core machine. By default it is measured at reduced sizes (box and
padding divided by 8 and by 4, the same 9:1 padding ratio) and extrapolated to the full size: the raster cost as
L²·N (every disk tests every pixel of the box, as in the study's code) and the FFT cost as M² log M².
`--full` runs the full-size pipeline instead (needs ~8 GB of memory).
Usage: python bench/bench_speckle.py [--full] [--quick]
"""
import math
import sys
import time

import numpy as np
import torch

from diffnb.sim.speckle import STUDY_BOX, STUDY_PADDED, STUDY_TOTAL_AREA, disk_system, speckle


def study_pipeline(disks, box_px, padded, n=257):
    "Faithful numpy port of the study: binary raster of the whole box, fft2 zero-padded to padded², fftshift, crop."
    t0 = time.process_time()  # CPU time of this single-threaded pipeline, like the one-core diffnb figures
    X, Y = np.meshgrid(np.arange(box_px) + 0.5, np.arange(box_px) + 0.5)
    img = np.zeros((box_px, box_px))
    for (x, y), r in zip(disks.centres, disks.radii):  # one full-box mask per disk, as in the study's code
        img[(X - x)**2 + (Y - y)**2 <= r**2] = 1.0
    t1 = time.process_time()
    F = np.fft.fftshift(np.fft.fft2(img, s=(padded, padded)))
    c = padded // 2
    I = np.abs(F[c - n // 2:c + n // 2 + 1, c - n // 2:c + n // 2 + 1])**2
    t2 = time.process_time()
    return I, t1 - t0, t2 - t1


def time_ours(n, N, poly, threads, device, reps, batch=16):
    """Seconds per pattern, best of `reps` batches. On one core the process CPU time is used (robust to other jobs
    sharing the machine, equal to wall time for single-threaded code); with 2 threads or a GPU, wall time."""
    torch.set_num_threads(threads)
    clock = time.process_time if (threads == 1 and device == "cpu") else time.perf_counter
    def run(start):
        ds = [disk_system(N, 0, index=start + i, polydispersity=poly) for i in range(batch)]
        out = speckle(ds, n=n, device=device)
        if out.is_cuda: torch.cuda.synchronize()
    run(10**6)  # warm-up (caches, kernels)
    best = math.inf
    for r in range(reps):
        t0 = clock(); run(r * batch); best = min(best, clock() - t0)
    return best / batch


def main():
    full = "--full" in sys.argv; quick = "--quick" in sys.argv
    reps = 2 if quick else 5
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("diffnb.sim.speckle — analytic speckle, disk placement included; patterns per second")
    print(f"{'n':>4} {'N':>3} {'disks':>5} {'1 core':>9} {'2 cores':>9}" + ("     GPU" if len(devices) > 1 else ""))
    ours = {}
    for n in (257, 513):
        for N in (2, 10, 20):
            for poly in (0.0, 1 / 3):
                t1 = time_ours(n, N, poly, 1, "cpu", reps)
                t2 = time_ours(n, N, poly, 2, "cpu", reps)
                ours[n, N, poly] = t1
                row = f"{n:>4} {N:>3} {'poly' if poly else 'mono':>5} {1 / t1:>9.1f} {1 / t2:>9.1f}"
                if len(devices) > 1: row += f" {1 / time_ours(n, N, poly, 1, 'cuda', reps):>8.1f}"
                print(row)
    torch.set_num_threads(1)

    print("\nstudy pipeline (numpy port: raster 2000-px box, zero-pad to 18001², fft2, crop 257²), one core")
    d = disk_system(20, 0, index=0, polydispersity=1 / 3)
    if full:
        _, tr, tf = study_pipeline(d, int(STUDY_BOX), STUDY_PADDED)
        t_study = tr + tf
        print(f"  full size measured: raster {tr:.2f} s + FFT {tf:.2f} s = {t_study:.1f} s per pattern")
    else:
        ests = []
        for s in (8, 4):
            L, M = int(STUDY_BOX) // s, math.ceil(STUDY_PADDED / s)
            ds = disk_system(20, 0, index=0, box=float(L), total_area=STUDY_TOTAL_AREA / s**2, polydispersity=1 / 3)
            I_study, tr, tf = study_pipeline(ds, L, M)
            I_ours = speckle(ds, n=257, k_step=2 * math.pi / M, dtype=torch.float64).numpy()
            keep = np.ones(I_ours.shape, bool); keep[128, 128] = False
            dev_l2 = np.linalg.norm((I_study - I_ours)[keep]) / np.linalg.norm(I_ours[keep])
            print(f"  box {L} px, pad {M}²: same speckle? relative L2 (study binary raster vs analytic, k ≠ 0) "
                  f"= {dev_l2:.2%}")
            est_r = tr * (STUDY_BOX / L)**2
            est_f = tf * (STUDY_PADDED**2 * math.log(STUDY_PADDED**2)) / (M**2 * math.log(M**2))
            ests.append(est_r + est_f)
            print(f"  box {L} px, pad {M}²: raster {tr * 1e3:.1f} ms + FFT {tf:.2f} s measured "
                  f"→ extrapolated to 2000/18001²: {est_r:.1f} + {est_f:.1f} = {est_r + est_f:.1f} s")
        t_study = ests[-1]  # from the larger of the two reduced sizes
        print(f"  extrapolated study time per pattern: {t_study:.1f} s (issue's reference figures: ~67 s numpy port, "
              f"~140 s MATLAB/Octave, both on 2 cores)")
    worst = max(ours[257, N, p] for N in (2, 10, 20) for p in (0.0, 1 / 3))
    print(f"\nslowest diffnb case at 257² on one core: {worst * 1e3:.2f} ms per pattern (target ≤ 20 ms)")
    print(f"speed-up vs study pipeline measured in this run: {t_study / worst:,.0f}× (target ≥ 1000×)")
    print(f"speed-up vs the issue's 67 s numpy figure: {67 / worst:,.0f}×; vs 140 s Octave: {140 / worst:,.0f}×")
    for n in (257, 513):
        print(f"  {n}²: per-pattern ms (1 core) " + ", ".join(
            f"N={N} {'poly' if p else 'mono'} {ours[n, N, p] * 1e3:.2f}" for N in (2, 10, 20) for p in (0.0, 1 / 3)))


if __name__ == "__main__":
    main()
