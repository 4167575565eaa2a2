"""Benchmark of diffnb.sim.powder: ideal and lab-like 256×256 Bi ring images per second.

Target from the issue: >= 200 ideal 256×256 ring images per second on a 2-core CPU.
Baseline measured in the same run: a straightforward implementation that, for every image, loops over the
rings in Python and adds each ring's profile evaluated on the full pixel grid (what a hand-written
simulator without batching/interpolation does). GPU figures are printed when CUDA is available.
"""
import time

import numpy as np
import torch

from diffnb.scattering import bismuth_b_iso
from diffnb.sim.detector import LabDomain
from diffnb.sim.powder import PowderRings, bismuth_atoms

SHAPE, PPIA, FWHM = (256, 256), 128.0, 0.02
TARGET = 200.0   # ideal images / s (issue 3)


def timed(fn, repeat=3):
    fn()                                          # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return best


def naive_images(rings, b):
    "Per-image, per-ring Python loop over the full pixel grid (baseline)."
    H, W = SHAPE
    y, x = np.mgrid[0:H, 0:W]
    s = np.hypot(y - (H - 1) / 2, x - (W - 1) / 2) / PPIA
    sig = FWHM / (2 * np.sqrt(2 * np.log(2))); hw = FWHM / 2
    out = []
    for bi in b:
        img = np.zeros(SHAPE)
        w = rings.ring_weights(b_iso=float(bi)).numpy()
        for sg, wg in zip(rings.s_g, w):
            if wg == 0: continue
            d = s - sg
            img += wg * (0.5 * hw / (np.pi * (d * d + hw * hw)) + 0.5 * np.exp(-0.5 * (d / sig) ** 2) / (sig * np.sqrt(2 * np.pi)))
        out.append(img)
    return np.stack(out)


def main():
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, image {SHAPE}, {PPIA} px per 1/Å")
    rings = PowderRings(bismuth_atoms(), 100.0, s_max=1.5)
    n = 64
    b = torch.as_tensor(bismuth_b_iso(np.linspace(100, 1000, n)))
    # correctness of the baseline comparison (same physics)
    ref = naive_images(rings, b[:2].numpy())
    ours = rings.image(b_iso=b[:2], shape=SHAPE, pixels_per_inv_angstrom=PPIA, fwhm=FWHM).double().numpy()
    rel = np.abs(ours - ref).max() / ref.max()
    print(f"max |ours - naive| / max = {rel:.2e} (linear interpolation of a 4×-oversampled profile)")

    t_ideal = timed(lambda: rings.image(b_iso=b, shape=SHAPE, pixels_per_inv_angstrom=PPIA, fwhm=FWHM))
    ideal_rate = n / t_ideal
    nb = 4
    t_naive = timed(lambda: naive_images(rings, b[:nb].numpy()), repeat=1)
    naive_rate = nb / t_naive
    ideal = rings.image(b_iso=b, shape=SHAPE, pixels_per_inv_angstrom=PPIA, fwhm=FWHM)
    lab = LabDomain()
    idx = list(range(n))
    t_lab = timed(lambda: lab(ideal, 0, idx), repeat=2)
    lab_rate = n / t_lab
    t_setup = timed(lambda: PowderRings(bismuth_atoms(), 100.0, s_max=1.5), repeat=2)
    print(f"ring table (hkl enumeration + |F|², s <= 1.5 1/Å): {t_setup * 1e3:.1f} ms, {len(rings.s_g)} rings")
    print(f"CPU ideal     : {ideal_rate:8.1f} images/s  (target {TARGET:.0f}: ratio {ideal_rate / TARGET:.2f}x)")
    print(f"CPU naive loop: {naive_rate:8.1f} images/s  (baseline; ours is {ideal_rate / naive_rate:.0f}x faster)")
    print(f"CPU lab-like  : {lab_rate:8.1f} images/s  (LabDomain applied to ideal images, all effects on)")
    print(f"CPU ideal+lab : {1 / (1 / ideal_rate + 1 / lab_rate):8.1f} images/s")
    if torch.cuda.is_available():
        dev = "cuda"
        bg = b.to(dev)
        sync = torch.cuda.synchronize
        def gi(): rings.image(b_iso=bg, shape=SHAPE, pixels_per_inv_angstrom=PPIA, fwhm=FWHM, device=dev); sync()
        g_rate = n / timed(gi)
        ideal_g = ideal.to(dev)
        def gl(): lab(ideal_g, 0, idx); sync()
        gl_rate = n / timed(gl, repeat=2)
        print(f"GPU ideal     : {g_rate:8.1f} images/s ({torch.cuda.get_device_name()})")
        print(f"GPU lab-like  : {gl_rate:8.1f} images/s")
    else:
        print("GPU: not available on this machine (the same code runs with device='cuda'; see tests/test_powder.py)")


if __name__ == "__main__":
    main()
