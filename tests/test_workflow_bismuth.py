"""The bismuth workflow at its tiny defaults through `diffnb run bismuth`: outputs, the simulated experiment's T(t)
model, folds grouped by experiment, and the `images` path on TIFF files written here."""
import json
import math

import numpy as np
import pytest

from conftest import assert_quiet_kernel

DELAYS = [-1.0, 1.0, 3.0, 10.0]
# the least that still runs every section: fewer images, experiments, folds and epochs
SMALL = ("-p", "n_ideal", "64", "-p", "n_lab", "64", "-p", "n_experiments", "4", "-p", "n_folds", "2", "-p", "ccnn_epochs", "1",
         "-p", "dr_epochs", "1", "-p", "gan_pretrain_epochs", "0", "-p", "delays_ps", "[-2.0, 3.0, 12.0]")


def _write_frames(folder):
    "A user delay series of 4 TIFF frames (lab-like Bi images of 32² px) in `folder`/frames."
    import tifffile
    from diffnb.sim.powder import BismuthRingSampler
    s = 32 / 256
    lab = dict(center_shift_px=[0.0, 3 * s], beam_width_px=[1.5 * s, 4 * s], stop_radius_px=[6 * s, 12 * s],
               stop_arm_width_px=[3 * s, 6 * s], psf_sigma_px=[0.5 * s, 1.5 * s], gain_correlation_px=16 * s)
    x, _, _ = BismuthRingSampler((32, 32), mode="lab", pixels_per_inv_angstrom=16.0, fwhm_range=(0.05, 0.08), lab=lab).sample(7, range(4))
    frames = folder / "frames"; frames.mkdir()
    for i, img in enumerate(x[:, 0].numpy()): tifffile.imwrite(frames / f"frame_{i:02d}.tif", img.astype(np.float32))


@pytest.fixture(scope="module")
def run(workflow_run):
    "One tiny run (shared by the session) with a user delay series of 4 TIFF frames; the glob is relative to the folder the command runs in."
    return workflow_run("bismuth", "-p", "images", "frames/*.tif", "-p", "images_delays_ps", str(DELAYS), setup=_write_frames)


def test_outputs_metrics_figures_models(run):
    from diffnb.learn.io import load_model, predict
    out, m = run
    assert m["run"]["completed"] and m["workflow"] == "bismuth"
    met = m["metrics"]
    methods = ("cnn_only", "gan_cnn", "domain_randomised", "gan_dr_mean", "analytic")
    for meth in methods:
        assert 0 <= met[f"cv.{meth}.mean_rel_error"] < 10, meth
        for split in ("low_fluence", "uiso_band"): assert f"split.{split}.{meth}.mean_rel_error" in met
    for k in ("ccnn.ideal_valid.mean_rel_error", "ccnn.lab.mean_rel_error", "dr.lab.coverage_1sigma", "analytic.fraction_failed",
              "dr.valid.mean_rel_error"):
        assert k in met, k
    assert set(m["tables"]["error_table"]["method"]) == set(methods)
    for k in range(m["parameters"]["n_folds"]):   # what the CCNN sees in each fold's translations, next to the ideal targets
        for key in ("ccnn_on_G.mean_rel_error", "ccnn_on_G.fraction_out_of_range", "ccnn_on_ideal.mean_rel_error", "G.psnr_db",
                    "G.pixel_mean", "ideal.pixel_mean"):
            assert f"gan.cv{k}.{key}" in met, (k, key)
    assert set(m["tables"]["gan_curves"]["phase"]) <= {"pretrain", "gan"} and "reader_error" in m["tables"]["gan_curves"]
    for fig in ("temperature_model", "experiment_images", "temperature_curves", "gan_translations", "user_temperatures", "gan_curves"):
        assert (out / f"{fig}.png").stat().st_size > 5000, fig
    assert set(m["models"]) >= {"ccnn", "domain_randomised_0", "gan_generator"}
    ccnn = load_model(out / m["models"]["ccnn"], device="cpu")
    assert ccnn.task == "regression" and ccnn.targets == ["u_iso"]
    # the reloaded domain-randomised ensemble reproduces the run's coverage metric on its own inputs: finite U_iso in Å²
    ens = [load_model(out / m["models"][f"domain_randomised_{k}"], device="cpu") for k in range(m["parameters"]["n_ensemble"])]
    assert m["parameters"]["dr_loss"] == "relative"          # the default: trained on the relative error it is judged by
    assert json.loads((out / m["models"]["domain_randomised_0"] / "model.json").read_text())["provenance"]["loss"] == "relative"
    x = np.abs(np.random.default_rng(0).normal(100, 10, (3, 1, 32, 32))).astype(np.float32)
    p = predict(ens, x, progress=False)
    assert p.values.shape == (3, 1) and np.isfinite(p.values).all() and p.std is not None


def test_simulated_experiment_follows_its_temperature_model(run):
    from diffnb.scattering import bismuth_b_iso
    _, m = run
    prm, e = m["parameters"], m["tables"]["experiment"]
    t, F, T, u = (np.array(e[k], dtype=float) for k in ("delay_ps", "fluence", "temperature_k", "u_iso"))
    # T(t) = T0 for t <= 0, T0 + a F (1 - exp(-t/τr)) exp(-t/τd) after the pump, written out independently here
    want = np.array([prm["t0_k"] + (prm["dt_per_fluence_k"] * f * (1 - math.exp(-d / prm["tau_rise_ps"])) * math.exp(-d / prm["tau_decay_ps"])
                     if d > 0 else 0.0) for d, f in zip(t, F)])
    np.testing.assert_allclose(T, want, rtol=1e-9)
    np.testing.assert_allclose(u, bismuth_b_iso(T) / (8 * math.pi ** 2), rtol=1e-9)   # U = B(T)/8π²
    assert (T[t <= 0] == prm["t0_k"]).all() and (T[t > 0] > prm["t0_k"]).all()
    assert sorted(set(F)) == sorted(prm["fluences"]) and len(set(e["experiment"])) == prm["n_experiments"]
    for exp_id in set(e["experiment"]):  # every experiment: every delay once, one fluence
        rows = np.array(e["experiment"]) == exp_id
        assert sorted(t[rows]) == sorted(prm["delays_ps"]) and len(set(F[rows])) == 1


def test_calibrated_intervals_nest_around_the_prediction(run):
    "The calibrated 68 % interval lies inside the 95 % one and both hold the ensemble's own prediction; coverages are fractions."
    _, m = run
    e = {k: np.array(v, dtype=float) for k, v in m["tables"]["experiment"].items() if k.startswith("dr_")}
    tol = 1e-6
    assert (e["dr_lo95_k"] <= e["dr_lo68_k"] + tol).all() and (e["dr_lo68_k"] <= e["dr_k"] + tol).all()
    assert (e["dr_k"] <= e["dr_hi68_k"] + tol).all() and (e["dr_hi68_k"] <= e["dr_hi95_k"] + tol).all()
    for level in ("0.68", "0.95"):
        assert 0 <= m["metrics"][f"dr.calibrated.coverage_{level}"] <= 1 and m["metrics"][f"dr.calibrated.mean_width_k_{level}"] >= 0


def test_calibration_is_stored_with_every_member_and_applied_by_predict(run):
    """Every ensemble member's model.json holds the calibration fitted on the calibration experiments (every pumped frame of
    4 × n_experiments series); `predict(level=)` uses it, and an interval is the prediction ± the stored conformal quantile ×
    the chosen scale (σ, |prediction| or 1); without `level` no interval is claimed."""
    from diffnb.learn.io import load_model, predict
    out, m = run
    ens = [load_model(out / m["models"][f"domain_randomised_{k}"], device="cpu") for k in range(m["parameters"]["n_ensemble"])]
    cal = [e.calibration for e in ens]
    assert all(c is not None and c == cal[0] for c in cal) and cal[0]["kind"] == "regression" and cal[0]["targets"] == ["u_iso"]
    prm = m["parameters"]
    assert cal[0]["n"] == m["metrics"]["dr.calibration.n"] == 4 * prm["n_experiments"] * sum(d > 0 for d in prm["delays_ps"])
    assert cal[0]["sigma"] == m["metrics"]["dr.calibration.scale_by"]
    widths = {k.rsplit(".", 1)[1]: v for k, v in m["metrics"].items() if k.startswith("dr.calibration.cross_fitted_width_k.")}
    assert set(widths) == {"spread", "relative", "none"} and widths[cal[0]["sigma"]] == min(widths.values())
    t = {k: np.array(v) for k, v in m["tables"]["experiment"].items() if k in ("fluence", "u_iso", "delay_ps", "temperature_k", "dr_lo68_k", "dr_hi68_k")}
    low = sorted(m["parameters"]["fluences"])[: max(1, len(m["parameters"]["fluences"]) // 4)]
    held = {"low_fluence": np.isin(t["fluence"], low), "uiso_band": (t["u_iso"] >= 0.024) & (t["u_iso"] <= 0.030)}
    for name, sel in held.items():                           # coverage on each generalisation split's held-out pumped frames
        sel = sel & (t["delay_ps"] > 0)
        k = f"split.{name}.dr_calibrated.coverage_68"
        if not sel.any(): assert k not in m["metrics"]; continue
        inside = (t["temperature_k"][sel] >= t["dr_lo68_k"][sel] - 1e-6) & (t["temperature_k"][sel] <= t["dr_hi68_k"][sel] + 1e-6)
        assert m["metrics"][k] == pytest.approx(inside.mean()), name
    x = np.abs(np.random.default_rng(1).normal(0, 0.1, (5, 1, 32, 32))).astype(np.float32)
    p = predict(ens, x, progress=False, level=0.95)
    q = cal[0]["quantiles"]["0.95"][0]
    scale = {"spread": p.std, "relative": np.abs(p.values), "none": np.ones_like(p.values)}[cal[0]["sigma"]]
    np.testing.assert_allclose(p.hi - p.values, q * scale, rtol=1e-6)
    np.testing.assert_allclose(p.values - p.lo, q * scale, rtol=1e-6)
    assert "conformal" in p.calibration or "quantile" in p.calibration, p.calibration
    assert predict(ens, x, progress=False).lo is None


def test_cross_validation_folds_are_grouped_by_experiment(run):
    _, m = run
    e = m["tables"]["experiment"]
    fold_of = {}
    for exp_id, k in zip(e["experiment"], e["cv_fold"]):
        assert fold_of.setdefault(exp_id, k) == k          # all frames of an experiment in one fold
    assert sorted(set(fold_of.values())) == list(range(m["parameters"]["n_folds"]))


def test_images_parameter_reads_the_users_tiffs(run):
    import pandas as pd
    out, m = run
    u = pd.read_csv(out / "user_temperatures.csv")
    assert len(u) == 4 and list(u.delay_ps) == DELAYS and list(u.frame) == [0, 0, 0, 0]
    assert [p.rsplit("/", 1)[-1] for p in u.file] == [f"frame_{i:02d}.tif" for i in range(4)]
    for col in ("gan_cnn_k", "domain_randomised_k"):
        assert np.isfinite(u[col]).all() and (u[col] > 0).all() and (u[col] <= 1000).all(), col
    assert (u.dr_lo_k <= u.domain_randomised_k + 1e-6).all() and (u.domain_randomised_k <= u.dr_hi_k + 1e-6).all()
    # Eq. 1 of the reference frame against itself: exactly the reference temperature
    assert u.analytic_k[0] == pytest.approx(m["parameters"]["t0_k"], rel=1e-6)
    assert "user_images" in m["tables"]


def test_radial_domain_randomised_regressor(workflow_run):
    "dr_arch 'radial': the ensemble members are azimuthal-average models, saved, reloaded and scored on the experiment."
    from diffnb.learn.io import load_model
    # a second, smaller run (the shared one keeps the default ccnn members with the relative loss)
    out, m = workflow_run("bismuth", "-p", "dr_arch", "radial", "-p", "dr_loss", "mse", *SMALL)
    assert m["parameters"]["dr_arch"] == "radial" and m["parameters"]["dr_loss"] == "mse"
    members = sorted((out / "models").glob("domain_randomised_*"))
    assert len(members) == m["parameters"]["n_ensemble"]
    for folder in members:
        net = load_model(folder, device="cpu").model                    # TargetScaled(network): U_iso in Å²
        assert type(net).__name__ == "TargetScaled" and type(net.model).__name__ == "RadialProfileNet"
        assert json.loads((folder / "model.json").read_text())["provenance"]["loss"] == "mse"
    assert 0 <= m["metrics"]["cv.domain_randomised.mean_rel_error"] < 10


def test_no_kernel_transport_warning(run):
    assert_quiet_kernel(run[0])
