"""Calibrated uncertainty: variance scale and split-conformal intervals, temperature scaling and ECE, the record in
model.json, and `predict(level=...)` / `diffnb predict --level`. Synthetic data with known answers, seconds on a CPU."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from diffnb.core import DiffnbValueError, ShapeError
from diffnb.learn import MODELS, register_model
from diffnb.learn.calibration import (calibrated_probabilities, calibration_error, check_calibration, conformal_quantile,
                                      fit_classification_calibration, fit_regression_calibration, fit_temperature,
                                      interval_coverage, prediction_sets, regression_interval, reliability_diagram,
                                      variance_scale)
from diffnb.learn.io import calibrate_model, load_model, save_model
from diffnb.learn.predict import predict, predict_cli


def _gaussian(rng, n, too_small=3.0):
    "True values with known heteroscedastic Gaussian noise, and a predicted σ `too_small` times too small."
    mu = rng.uniform(0, 10, (n, 2)); sigma = rng.uniform(0.5, 2.0, (n, 2))
    return mu + sigma * rng.standard_normal((n, 2)), mu, sigma / too_small


def test_variance_scale_recovers_factor_and_coverage_on_fresh_data():
    rng = np.random.default_rng(0)
    rec = fit_regression_calibration(*_gaussian(rng, 50_000), targets=["a", "b"])
    np.testing.assert_allclose(rec["scale"], 3.0, rtol=0.02)
    y, mu, s = _gaussian(rng, 100_000)
    assert (interval_coverage(y, mu - s, mu + s) < 0.30).all()          # the bare σ is far from 68 %
    for p in (0.68, 0.95):
        lo, hi, how = regression_interval(mu, s, rec, p)                 # conformal (stored level)
        assert how.startswith("split-conformal")
        np.testing.assert_allclose(interval_coverage(y, lo, hi), p, atol=0.02)
        lo, hi, how = regression_interval(mu, s, rec, p + 0.0005)       # not stored: Gaussian with the fitted scale
        assert how.startswith("Gaussian")
        np.testing.assert_allclose(interval_coverage(y, lo, hi), p, atol=0.02)


def test_conformal_quantile_rank_and_coverage_on_exchangeable_heavy_tails():
    assert conformal_quantile(np.arange(1.0, 20.0), 0.95)[0] == 19.0        # ⌈20 · 0.95⌉ = 19
    assert conformal_quantile(np.arange(99.0), 0.95)[0] == 94.0             # ⌈100 · 0.95⌉ = 95th smallest, not 96th
    assert conformal_quantile(np.arange(10.0), 0.95)[0] == np.inf           # too few samples: infinite interval
    rng = np.random.default_rng(1)
    mu = rng.uniform(-5, 5, 60_000); sigma = rng.uniform(0.2, 3, 60_000)
    y = mu + sigma * rng.standard_t(2.5, 60_000)                            # heavy-tailed: a Gaussian scale would miss
    rec = fit_regression_calibration(y[:20_000], mu[:20_000], sigma[:20_000] * 0.1)
    for p in (0.68, 0.9, 0.95, 0.99):
        lo, hi, _ = regression_interval(mu[20_000:], sigma[20_000:] * 0.1, rec, p)
        cover = interval_coverage(y[20_000:], lo, hi)[0]
        assert cover >= p - 3 * math.sqrt(p * (1 - p) / 40_000), (p, cover)
    # small calibration sets: the expected coverage is ⌈(n + 1)p⌉/(n + 1) ≥ p, over many exchangeable draws
    scores = np.abs(rng.standard_t(3, (30_000, 20)))
    q = np.sort(scores[:, :19], 1)[:, math.ceil(20 * 0.9) - 1]
    assert (scores[:, 19] <= q).mean() >= 0.9 - 0.005


def test_temperature_scaling_of_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(60_000, 5, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]   # a calibrated model's logits are z
    T = fit_temperature(3 * z, labels)
    assert abs(T - 3) < 0.1
    before = calibration_error(torch.softmax(3 * z, 1), labels)
    after = calibration_error(calibrated_probabilities(3 * z, T), labels)
    assert before > 0.05 and after < 0.01, (before, after)
    # independent check of torchmetrics' ECE: the reliability diagram's weighted |accuracy − confidence|
    d = reliability_diagram(calibrated_probabilities(3 * z, T), labels)
    w = np.array(d["count"]) / len(labels)
    gap = np.nan_to_num(np.abs(np.array(d["accuracy"]) - np.array(d["confidence"])))
    assert abs((w * gap).sum() - after) < 1e-6
    rec = fit_classification_calibration(3 * z[:30_000], labels[:30_000], classes=list("abcde"))
    assert rec["ece"]["before"] > 0.05 and rec["ece"]["after"] < 0.015
    p_new = calibrated_probabilities(3 * z[30_000:], rec["temperature"])
    for level in (0.68, 0.95):
        sets = prediction_sets(p_new, rec["quantiles"][f"{level:g}"])
        assert sets[np.arange(len(sets)), labels[30_000:].numpy()].mean() >= level - 0.01


@pytest.mark.parametrize("call, msg", [
    (lambda: regression_interval(np.zeros((4, 1)), np.ones((4, 1)), _REC, 1.0), "level must be"),
    (lambda: regression_interval(np.zeros((4, 1)), np.ones((4, 1)), _REC, -0.5), "level must be"),
    (lambda: fit_regression_calibration(np.zeros(5), np.zeros(4), np.ones(5)), "of shape"),
    (lambda: fit_regression_calibration(np.zeros(5), np.full(5, np.nan), np.ones(5)), "NaN"),
    (lambda: fit_regression_calibration(np.zeros(5), np.zeros(5), np.zeros(5)), "positive spreads"),
    (lambda: fit_temperature(np.zeros((5, 3)), np.zeros(4)), "labels must be"),
    (lambda: fit_temperature(np.full((5, 3), np.nan), np.zeros(5)), "NaN"),
    (lambda: fit_temperature(np.zeros((5, 3)), np.full(5, 3)), "class indices in 0"),
    (lambda: calibration_error(np.ones((5, 3)), np.zeros(5)), "rows sum to 1"),
    (lambda: check_calibration({"kind": "regression", "n": 3, "fitted_on": "validation", "quantiles": {}, "scale": [-1]}), "scale must be"),
    (lambda: variance_scale(np.zeros((3, 2)), np.zeros((3, 2)), np.ones((3, 1))), "of shape"),
])
def test_invalid_inputs_fail_clearly(call, msg):
    with pytest.raises(DiffnbValueError, match=msg): call()


_REC = fit_regression_calibration(np.arange(30.0), np.arange(30.0) + 0.5, np.ones(30))


def _tiny(n_in: int = 1, n_out: int = 2, width: int = 4):
    return nn.Sequential(nn.Conv2d(n_in, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_out))


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    "Two registered toy regressors saved as an ensemble, calibrated on a synthetic validation set (σ 3× too small)."
    build = register_model("_test_cal_tiny")(_tiny)
    tmp = tmp_path_factory.mktemp("cal")
    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        dirs.append(save_model(build(n_in=1, n_out=2), tmp / f"m{seed}", task="regression", targets=["u_iso", "t"],
                               target_units=["Å²", "K"], input_shape=(1, 8, 8)))
    g = np.random.default_rng(0)
    pv = predict(dirs, torch.rand(3000, 8, 8), progress=False, device="cpu")
    y = pv.values + 3 * pv.std * g.standard_normal(pv.values.shape)
    rec = fit_regression_calibration(y, pv.values, pv.std, targets=pv.names, setup=pv.setup)
    for d in dirs: calibrate_model(d, rec)
    yield dirs, rec, build
    MODELS.pop("_test_cal_tiny", None)


def test_record_round_trips_through_model_files(ensemble, tmp_path):
    dirs, rec, build = ensemble
    assert load_model(dirs[0], device="cpu").calibration == rec
    assert json.loads(json.dumps(rec)) == rec and abs(rec["scale"][0] - 3) < 0.2
    d = save_model(build(n_in=1, n_out=2), tmp_path / "direct", task="regression", targets=["u_iso", "t"],
                   input_shape=(1, 8, 8), calibration=rec)
    assert load_model(d, device="cpu").calibration == rec
    doc = json.loads((d / "model.json").read_text()); doc.pop("calibration")           # an older file: no calibration key
    (d / "model.json").write_text(json.dumps(doc))
    assert load_model(d, device="cpu").calibration is None
    with pytest.raises(DiffnbValueError, match="one per output"):
        calibrate_model(d, {**rec, "quantiles": {"0.9": [1.0]}})
    doc["calibration"] = {"kind": "regression"}; (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(DiffnbValueError, match="model.json calibration"):
        load_model(d, device="cpu")


def test_predict_level_gives_calibrated_intervals(ensemble):
    dirs, rec, _ = ensemble
    g = np.random.default_rng(5)
    p = predict(dirs, torch.rand(3000, 8, 8), level=0.68, progress=False, device="cpu")
    assert p.calibration.startswith("split-conformal") and p.lo.shape == p.values.shape
    y = p.values + 3 * p.std * g.standard_normal(p.values.shape)
    np.testing.assert_allclose(interval_coverage(y, p.lo, p.hi), 0.68, atol=0.03)
    with pytest.warns(UserWarning, match="fitted for 2 member"):
        one = predict(dirs[0], torch.rand(4, 8, 8), level=0.68, progress=False, device="cpu")
    assert one.calibration == "none" and np.isnan(one.lo).all() and not one.to_frame()["calibrated"].any()
    with pytest.raises(DiffnbValueError, match="level must be"):
        predict(dirs, torch.rand(4, 8, 8), level=1.2, progress=False, device="cpu")


def test_cli_writes_lo_hi(ensemble, tmp_path):
    import pandas as pd
    dirs, rec, _ = ensemble
    imgs = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", imgs)
    out = tmp_path / "p.csv"
    assert predict_cli([str(dirs[0]), str(tmp_path / "x.npy"), "--ensemble", str(dirs[1]), "--out", str(out),
                        "--level", "0.95", "--no-progress"]) == 0
    df = pd.read_csv(out)
    ref = predict(dirs, imgs, level=0.95, progress=False, device="cpu")
    np.testing.assert_allclose(df[["u_iso_lo", "t_lo"]].to_numpy(), ref.lo, rtol=1e-5)
    np.testing.assert_allclose(df[["u_iso_hi", "t_hi"]].to_numpy(), ref.hi, rtol=1e-5)
    assert df["calibrated"].all()
    assert predict_cli([str(dirs[0]), str(tmp_path / "x.npy"), "--out", str(tmp_path / "q.csv"), "--level", "95",
                        "--no-progress"]) == 2
