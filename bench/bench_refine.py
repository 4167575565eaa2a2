"""Benchmark of diffnb.sim.refine: the same LACBED misfit minimised by scipy's Nelder–Mead simplex (FELIX's optimiser)
and by L-BFGS with the Daleckii–Krein gradient, from the same start to the same χ² tolerance.

Problem: SrTiO3 [001], 200 keV, one bright-field pattern with Poisson noise at 10⁴ counts/px, free thickness, B of Sr,
Ti and O and the four lowest U_g (8 parameters), scale and background solved in closed form at every step (the same
objective for both). Both start after the thickness scan, from B 30 % and U_g 6–10 % off. A method has converged
when χ² ≤ χ²_min + 0.1 (total χ², far below the statistical Δχ² = 1), χ²_min from a tightly converged L-BFGS run.
One evaluation is one forward solve (L-BFGS: forward + gradient; its wall time includes the backward pass).

Usage: python bench/bench_refine.py [--quick] [--pixels N] [--max-fev K]
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
from scipy.optimize import minimize

from diffnb.sim.bloch import lacbed
from diffnb.sim.refine import LacbedModel, _Fit, _parse_free, _thickness_scan

E, T, ALPHA, G_MAX = 200.0, 1200.0, 0.6, 1.2


def srtio3(f=1.0):
    a = ase.Atoms("SrTiO3", scaled_positions=[[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]],
                  cell=np.eye(3) * 3.905, pbc=True)
    a.arrays["b_iso"] = np.array([0.55, 0.35, 0.6, 0.6, 0.6]) * f
    return a


class Counter:
    "Objective wrapper: counts evaluations and notes the first at which χ² reaches the target."
    def __init__(self, fit, n_data, grad):
        self.fit, self.n, self.grad = fit, n_data, grad
        self.evals, self.best, self.target, self.hit, self.t0 = 0, np.inf, -np.inf, None, time.perf_counter()

    def __call__(self, x):
        th = torch.as_tensor(x, dtype=torch.float64)
        if self.grad:
            th.requires_grad_()
            c = self.fit.chi2(self.fit.simulate(th)); c.backward()
            out = (float(c.detach()) / self.n, th.grad.numpy() / self.n)
        else:
            with torch.no_grad(): c = self.fit.chi2(self.fit.simulate(th))
            out = float(c) / self.n
        self.evals += 1
        self.best = min(self.best, float(c.detach()))
        if self.hit is None and self.best <= self.target: self.hit = (self.evals, time.perf_counter() - self.t0)
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="16x16 pixels, at most 3000 simplex evaluations")
    ap.add_argument("--pixels", type=int, default=24)
    ap.add_argument("--max-fev", type=int, default=8000, help="simplex evaluation cap")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_px, max_fev = (16, 3000) if args.quick else (args.pixels, args.max_fev)
    truth = srtio3()
    clean = lacbed(truth, E, T, pixels=n_px, alpha=ALPHA, g_max=G_MAX)[0, 0].numpy()
    y = np.random.default_rng(0).poisson(1e4 * clean / clean.mean()).astype(float)
    model = LacbedModel(srtio3(1.3), E, ALPHA, n_px, g_max=G_MAX)
    ug_true = LacbedModel(truth, E, ALPHA, n_px, g_max=G_MAX).ug_start(4)
    free = _parse_free("thickness,b_iso,ug:4")
    w = 1.0 / np.maximum(y, 1.0)
    fit = _Fit(model, y[None], w[None], [1.2 * T], model.b_start, ug_true * np.array([1.08, 0.93, 1.06, 0.9]), 0.0, free)
    best_t, _, _ = _thickness_scan(fit, 0.6, 1.5)
    fit = _Fit(model, y[None], w[None], best_t, model.b_start, ug_true * np.array([1.08, 0.93, 1.06, 0.9]), 0.0, free)
    n_data, n_free = y.size, len(fit.th0)
    print(f"SrTiO3 [001], {E:.0f} keV, {n_px}x{n_px} px ({model.n_tilts} symmetry-independent tilts), {len(model.hkl)} beams, "
          f"{n_free} free parameters (thickness, 3 B, 4 U_g) + scale and background; one CPU thread; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    ref = Counter(fit, n_data, grad=True)
    r = minimize(ref, fit.th0, jac=True, method="L-BFGS-B", options=dict(maxiter=2000, ftol=1e-15, gtol=1e-12, maxcor=20))
    chi2_min = ref.best
    target = chi2_min + 0.1
    print(f"reference L-BFGS: chi2_min = {chi2_min:.3f} (reduced {chi2_min / (n_data - n_free - 2):.4f}) after {ref.evals} evaluations; "
          f"target chi2 <= {target:.3f}")

    lb = Counter(fit, n_data, grad=True); lb.target = target
    minimize(lb, fit.th0, jac=True, method="L-BFGS-B", options=dict(maxiter=2000, ftol=1e-12, gtol=1e-12, maxcor=20))
    nm = Counter(fit, n_data, grad=False); nm.target = target
    t0 = time.perf_counter()
    minimize(nm, fit.th0, method="Nelder-Mead",
             options=dict(maxfev=max_fev, xatol=1e-9, fatol=1e-12, adaptive=True, initial_simplex=None))
    nm_wall_all = time.perf_counter() - t0
    print(f"{'method':24s} {'evaluations':>11s} {'wall s':>8s} {'chi2 reached':>12s}")
    print(f"{'L-BFGS + gradient':24s} {lb.hit[0] if lb.hit else 'not reached':>11} {lb.hit[1] if lb.hit else float('nan'):8.2f} {lb.best:12.3f}")
    if nm.hit:
        print(f"{'Nelder-Mead (simplex)':24s} {nm.hit[0]:11d} {nm.hit[1]:8.2f} {nm.best:12.3f}")
        print(f"ratio simplex / gradient: {nm.hit[0] / lb.hit[0]:.1f}x evaluations, {nm.hit[1] / lb.hit[1]:.1f}x wall time")
    else:
        print(f"{'Nelder-Mead (simplex)':24s} {'>' + str(nm.evals):>11s} {nm_wall_all:8.2f} {nm.best:12.3f}  (target not reached)")
        print(f"ratio simplex / gradient: > {nm.evals / lb.hit[0]:.1f}x evaluations, > {nm_wall_all / lb.hit[1]:.1f}x wall time "
              f"(simplex stopped at its cap of {max_fev} evaluations without reaching the target)")


if __name__ == "__main__":
    main()
