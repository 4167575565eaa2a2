"""The `lacbed` study: a determined sampler input (potential over a fixed field of view), the shift invariance that
makes `shift_invariant_mse` the right inverse score, the formula-grouped split, and a tiny `diffnb run lacbed`."""
import json

import numpy as np
import pytest
import torch
from ase.build import bulk

from conftest import assert_quiet_kernel, run_record


def silicon(a=5.4309):
    si = bulk("Si", "diamond", a=a, cubic=True)
    si.arrays["b_iso"] = np.full(len(si), 0.5)
    return si


def corr(a, b): return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_sampler_input_determines_the_lattice_parameter():
    "Si at 5.43 Å and 6.5 Å: nearly identical one-cell max-normalised images, clearly different sampler inputs."
    from diffnb.sim.bloch import LacbedSampler, lacbed
    from diffnb.sim.potential import projected_potential
    smp = LacbedSampler(pixels=32)
    small, large = silicon(5.4309), silicon(6.5)
    # the old input (one cell on a fixed grid, rescaled to [0, 1]) could not tell them apart
    assert corr(projected_potential(small, pixels=32), projected_potential(large, pixels=32)) > 0.99
    # the LACBED patterns over one α field differ strongly
    kw = dict(energy_kev=200.0, thickness=1000.0, pixels=16, alpha=0.6, g_max=1.0, device="cpu")
    assert corr(lacbed(small, **kw)[0, 0], lacbed(large, **kw)[0, 0]) < 0.9
    # the sampler's input does tell them apart: different tiling period and absolute scale
    xs, xl = smp.input_image(small), smp.input_image(large)
    assert corr(xs, xl) < 0.5
    assert np.abs(xs - xl).max() > 0.3 * xs.max()
    np.testing.assert_allclose(xs.mean() / xl.mean(), (6.5 / 5.4309) ** 3, rtol=0.01)   # mean ρ ≈ F(000)/V ∝ 1/a³ (non-integer tiling)
    # the same crystal gives the same input, and the sampler's (seed, index) draw is reproducible
    np.testing.assert_array_equal(smp.input_image(silicon(5.4309)), xs)
    s8 = LacbedSampler(pixels=16, n_beams=15, max_atoms=8)
    x1, _, p1 = s8.sample(2, [5]); x2, _, p2 = s8.sample(2, [5])
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    np.testing.assert_array_equal(x1[0, 0].numpy(), s8.input_image(s8.crystal(2, 5)[0]).astype(np.float32))
    assert LacbedSampler.version == "4"


def test_origin_shift_moves_the_potential_and_leaves_the_pattern():
    "Moving the crystal's origin rolls the input (shift-invariant MSE 0) and leaves the bright-field pattern unchanged."
    from diffnb.learn.metrics import mse, shift_invariant_mse
    from diffnb.sim.bloch import lacbed, potential_field
    a, n = 5.4309, 32
    si, moved = silicon(a), silicon(a)
    moved.translate([3 * 2 * a / n, 5 * 2 * a / n, 0.0])              # 3 and 5 pixels of a 2a field
    moved.wrap()
    p, q = potential_field(si, 2 * a, n), potential_field(moved, 2 * a, n)
    np.testing.assert_allclose(q, np.roll(p, (5, 3), axis=(0, 1)), atol=1e-9)
    pt, qt = torch.as_tensor(p)[None, None], torch.as_tensor(q)[None, None]
    assert float(mse(qt, pt)[0]) > 0.1 * float(pt.var())
    assert float(shift_invariant_mse(qt, pt)[0]) < 1e-12
    kw = dict(energy_kev=200.0, thickness=[500.0, 1500.0], pixels=12, alpha=0.6, g_max=1.2, device="cpu")
    np.testing.assert_allclose(lacbed(moved, **kw).numpy(), lacbed(si, **kw).numpy(), atol=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_grouped_split_never_shares_a_formula(seed):
    from diffnb.data import make_split
    rng = np.random.default_rng(seed)
    formulas = rng.choice([f"X{i}O{j}" for i in range(1, 8) for j in range(1, 4)], size=200)
    folds = make_split(len(formulas), "grouped", valid_pct=0.2, by=formulas, seed=seed)
    assert set(formulas[folds == 0]).isdisjoint(formulas[folds == 1])
    assert 0 < (folds == 1).sum() < len(formulas)


def test_lacbed_tiny_run_end_to_end(workflow_run):
    from diffnb.data import open_store, verify
    from diffnb.learn.gan import translate
    from diffnb.learn.io import load_model
    from diffnb.learn.metrics import pearson
    from diffnb.workflows import workflow_parameters
    out, _ = workflow_run("lacbed")                                     # the tiny defaults
    before, after = run_record(out)["source_sha"]
    assert after == before                                             # papermill never ran in place
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["parameters"]) == set(workflow_parameters("lacbed")) and m["run"]["completed"]
    met = m["metrics"]
    for d in ("forward", "inverse"):
        for k in ("r.mean", "r.median", "mse.mean", "ssim.mean", "mse_phys.mean"):
            assert np.isfinite(met[f"test.{d}.{k}"]), (d, k)
        assert -1 <= met[f"test.{d}.r.mean"] <= 1
    assert 0 <= met["test.inverse.shift_mse.mean"] <= met["test.inverse.mse.mean"] + 1e-9
    assert met["test.forward.n_patterns"] == len(m["parameters"]["thicknesses"]) * met["data.n_test"]   # one per thickness
    assert met["data.test_formulas_in_train"] == 0
    assert met["extrapolate.a_min"] > met["extrapolate.a_train_max"]
    for k in ("speed.gan_batch1_s", "speed.bloch_s", "generation.samples_per_s", "generation.cold_start_s",
              "consistency.forward_of_inverse.r.mean", "extrapolate.forward.r.mean"):
        assert met[k] == met[k], k
    assert met["generation.abtem_imported"] is False
    assert len(m["tables"]["learning_curve"]["n_train"]) == len(m["parameters"]["train_fractions"])
    for fig in ("pairs", "training", "r_histograms", "worst_cases", "learning_curve"):
        assert (out / f"{fig}.png").stat().st_size > 5000, fig
    # the store: complete, formula-grouped test split saved in it, no formula on both sides
    st = open_store(out / "stores" / "lacbed")
    assert verify(st.path).ok and st.n == m["parameters"]["n_crystals"] and st.targets.shape[1] == len(m["parameters"]["thicknesses"])
    folds, formulas = st.load_split("formula_test"), st.param("formula")
    assert set(formulas[folds == 0]).isdisjoint(formulas[folds == 1])
    assert (folds == 1).sum() == met["data.n_test"]
    # the saved forward model reproduces the reported test R
    model = load_model(out / "models" / "forward", device="cpu")
    scale = model.meta["provenance"]["potential_scale_per_A2"]
    idx = np.flatnonzero(folds == 1)
    pred = translate(model, st.images[:][idx] / scale, progress=False)
    r_mean = float(pearson(pred.reshape(-1, 1, *pred.shape[-2:]), torch.as_tensor(st.targets[:][idx]).reshape(-1, 1, *pred.shape[-2:])).mean())
    assert np.isclose(r_mean, met["test.forward.r.mean"], atol=1e-4)
    assert (out / "models" / "inverse" / "model.safetensors").exists()
    # the forward map by the physics (image → U_g on the cell → Bloch waves) needs no training: it reproduces most
    # patterns (those whose couplings lie inside the image's band limit) where the tiny cGAN cannot
    assert met["physics.forward.r.median"] > 0.9 and met["physics.forward.n_patterns"] == met["test.forward.n_patterns"]
    assert met["physics.image_band_limit_per_A"] == pytest.approx((m["parameters"]["pixels"] - 1) / (2 * m["parameters"]["field_of_view"]))
    ways = m["tables"]["inverse_three_ways"]
    n_inv = min(m["parameters"]["n_invert"], met["data.n_test"])
    assert {"cGAN", "hybrid", "refinement from zero"} <= set(ways["way"]) <= {"cGAN", "hybrid", "refinement from zero", "refinement from an isostructural compound"}
    assert 3 * n_inv <= len(ways["way"]) <= 4 * n_inv
    for k in ("cgan", "refinement", "hybrid"):
        assert 0 <= met[f"physics.inverse.{k}.mse.mean"] <= 1, k


def test_no_kernel_transport_warning(workflow_run):
    out, _ = workflow_run("lacbed")
    assert_quiet_kernel(out)
