"""Re-run the lacbed workflow's physics inverse on a finished run: the same store, formula-held-out test crystals and
trained inverse cGAN, with the site scan before the free-U_g refinement (`invert_patterns(..., sites=True)`).

    python tools/lacbed_reinvert.py RUN_DIR [N_INVERT] [INVERT_ITER]

Writes RUN_DIR/reinvert_sites.json: one row per crystal and way, as the workflow's `inverse_three_ways` table.
"""
import json, sys, time
from pathlib import Path

import numpy as np
import spglib
import torch

from diffnb.data.store import open_store
from diffnb.learn.gan import translate
from diffnb.learn.io import load_model
from diffnb.learn.metrics import shift_invariant_mse
from diffnb.sim.bloch import LacbedSampler, substitute_elements
from diffnb.sim.refine import invert_patterns


def minmax(t):
    t = torch.as_tensor(t, dtype=torch.float64)
    lo, hi = t.amin((-2, -1), keepdim=True), t.amax((-2, -1), keepdim=True)
    return ((t - lo) / (hi - lo).clamp_min(1e-12)).float()


def study_mse(a, b): return float(shift_invariant_mse(minmax(a)[None, None], minmax(b)[None, None])[0])


def main(run, n_invert=8, invert_iter=150):
    run = Path(run)
    meta = json.loads((run / "metrics.json").read_text())
    par, seed = meta["parameters"], meta["seed"]
    torch.set_num_threads(1)
    store = open_store(meta["stores"]["lacbed"]["path"])
    smp = LacbedSampler(pixels=par["pixels"], thickness=[float(t) for t in par["thicknesses"]], alpha=par["alpha"],
                        n_beams=par["n_beams"], max_atoms=par["max_atoms"], lattice_parameter=par["lattice_parameter"],
                        field_of_view=par["field_of_view"], crystals=par["crystals"])
    X, Y = store.images[:].astype(np.float32), store.targets[:].astype(np.float32)
    test_idx = np.flatnonzero(store.load_split("formula_test") == 1)[:n_invert]
    x_scale = meta["metrics"]["data.potential_scale_per_A2"]
    pred = translate(load_model(run / "models" / "inverse", device="cpu"), Y[test_idx], progress=False).numpy() * x_scale
    th, e_kev, g_max = [float(t) for t in par["thicknesses"]], smp.config["energy_kev"], store.param("g_max")
    sg = store.param("space_group")
    rows = []
    for j, i in enumerate(test_idx):
        truth = smp.crystal(seed, int(i))[0]
        try:
            guess, _ = substitute_elements(truth, np.random.default_rng([seed, int(i)]), p=1.0)
            guess.set_cell(truth.cell, scale_atoms=True)
            if spglib.get_symmetry_dataset((guess.cell[:], guess.get_scaled_positions(), guess.numbers), symprec=1e-3).number != int(sg[i]):
                guess = None
        except ValueError: guess = None
        if guess is None: continue
        for way, start, outside in (("refinement from an isostructural compound, site scan", "iam", "guess"),
                                    ("hybrid, site scan", pred[j, 0], "start")):
            t0 = time.perf_counter()
            o = invert_patterns(Y[i], guess, e_kev, par["alpha"], th, start=start, free=(), outside=outside, sites=True,
                                field_of_view=par["field_of_view"], potential_pixels=par["pixels"], g_max=float(g_max[i]),
                                max_iter=invert_iter, seed=seed)
            rows.append({"crystal": int(i), "formula": str(store.param("formula")[i]), "guess": guess.get_chemical_formula(),
                         "way": way, "mse": study_mse(o.potential, X[i, 0]), "r_min": float(min(o.result.r)),
                         "site_chi2": o.sites.chi2, "evaluations": o.result.n_evaluations + o.sites.n_evaluations,
                         "wall_s": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    (run / "reinvert_sites.json").write_text(json.dumps({"n_invert": n_invert, "invert_iter": invert_iter, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
