"""The MoTe2 study workflow (`diffnb run mote2`) at its tiny defaults: outputs, saved models, the steering score
(distance of a latent code to the 2H→1T' path) against a brute-force distance, and the unseen instrument of the
transfer study against the training instrument."""
import json

import numpy as np
import pytest
import torch

from conftest import assert_quiet_kernel, diffnb_cli


@pytest.fixture(scope="module")
def run(workflow_run):
    "One tiny run shared by the tests of this session: (run folder, metrics.json)."
    return workflow_run("mote2", "-p", "seed", "1", "-p", "epochs", "3")


def _diffnb_run(tmp, out, *args):
    return diffnb_cli("run", "mote2", "--out", str(out), "--store-dir", str(tmp / "stores"), *args, cwd=tmp)


def test_mote2_tiny_run_outputs(run):
    from diffnb.data import open_store
    from diffnb.learn.io import load_model, predict
    from diffnb.sim.mote2 import CLASSES
    from diffnb.workflows import workflow_parameters
    out, m = run
    assert set(m["parameters"]) == set(workflow_parameters("mote2")) and m["seed"] == 1
    met = m["metrics"]
    for k in ("test.wrn.accuracy", "test.resnet18.accuracy", "test.wrn.worst_class_recall", "transfer.unadapted.accuracy",
              "transfer.fine_tuned.accuracy", "transfer.scratch.accuracy", "vae.steering.test_auc",
              "vae.steering.test_false_alarm_rate", "vae.steering.test_detection_rate", "randomised.test_accuracy",
              "transfer.randomised_unadapted.accuracy", "transfer.randomised_fine_tuned.accuracy",
              "transfer.head_tuned.accuracy", "transfer.randomised_head_tuned.accuracy", "valid.wrn.accuracy",
              "valid.wrn.accuracy_tta", "transfer.fine_tuned.base_valid_accuracy", "transfer.randomised_head_tuned.base_valid_accuracy",
              "transfer.head_refit.accuracy", "transfer.randomised_head_refit.accuracy", "transfer.fine_tuned_refit.accuracy",
              "transfer.randomised_fine_tuned_refit.base_valid_accuracy"):
        assert 0 <= met[k] <= 1, k
    assert met["transfer.fine_tuned.lr"] == pytest.approx(0.1 * m["parameters"]["lr"])   # the study's 10x lower rate
    # keep_best: the saved WRN is the epoch with the best validation accuracy, not the last one
    accs = m["tables"]["train.wrn.valid_accuracy_by_epoch"]
    assert m["parameters"]["keep_best"] is True and len(accs) == 3
    assert met["train.wrn.kept_epoch"] == int(np.argmax(accs))
    assert met["train.wrn.valid_accuracy"] == pytest.approx(max(accs), abs=1e-6)
    assert met["transfer.n_train"] + met["transfer.n_valid"] == 77
    for fig in ("patterns", "training", "confusion", "saliency", "instruments", "latent", "traversal", "reliability",
                "reliability_unseen", "series"):
        assert (out / f"{fig}.png").stat().st_size > 5000, fig
    assert "study_comparison" in m["tables"]
    # every model reloads from safetensors + JSON; the WRN reproduces the reported test accuracy on the stored test fold
    for name in ("wrn", "resnet18", "wrn_randomised", "transfer_fine_tuned", "transfer_randomised_fine_tuned",
                 "transfer_scratch", "transfer_head_tuned", "transfer_randomised_head_tuned", "transfer_head_refit",
                 "transfer_randomised_fine_tuned_refit", "vae"):
        assert load_model(out / m["models"][name], device="cpu").meta["task"] in ("classification", "vae"), name
    wrn = load_model(out / "models" / "wrn", device="cpu")
    assert wrn.classes == CLASSES
    st = open_store(out / "stores" / "synthetic")
    folds = st.load_split("train_valid_test")
    assert set(st.targets[:][folds == 2]) == set(range(7))              # stratified: every class in the test set
    test = np.flatnonzero(folds == 2)
    assert m["parameters"]["tta"] is True                               # test patterns classified over their 8 turns/flips
    p = predict(wrn, st.images[:][test], progress=False, tta=True).probabilities.argmax(1)
    assert np.isclose(np.mean(np.asarray(p) == st.targets[:][test]), met["test.wrn.accuracy"])
    cm = np.array(m["tables"]["test.wrn.confusion"])
    assert cm.shape == (7, 7) and cm.sum() == met["test.n"] == len(test)
    # refit_head: the saved WRN's read-out is the candidate best on validation, and its body is the kept epoch's
    cands = {k.split(".valid_accuracy.")[1]: v for k, v in met.items() if k.startswith("readout.wrn.valid_accuracy.")}
    assert set(cands) == {"trained", "C=0.01", "C=0.1", "C=1", "C=10"}
    choice = met["readout.wrn.choice"]
    assert cands[choice] == max(cands.values())
    assert cands["trained"] == pytest.approx(met["train.wrn.valid_accuracy"], abs=1e-6)   # features @ W + b == fastai's validate
    valid = np.flatnonzero(folds == 1)
    pv = predict(wrn, st.images[:][valid], progress=False, tta=False).probabilities.argmax(1)
    assert np.mean(np.asarray(pv) == st.targets[:][valid]) == pytest.approx(cands[choice], abs=1e-6)
    best = torch.load(out / "checkpoints" / "models" / "best_wrn.pth", map_location="cpu", weights_only=True)
    saved = wrn.model.state_dict()
    for k, v in best.items():
        if not k.startswith("head.") or choice == "trained": assert torch.equal(saved[k].cpu(), v), k
    assert (not torch.equal(saved["head.2.weight"].cpu(), best["head.2.weight"])) == (choice != "trained")
    assert wrn.meta["provenance"]["readout"] == choice


def _brute_force_distance(points, vertices, n=20001):
    "Distance to a polyline sampled densely (independent of the exact point-to-segment formula)."
    seg = np.diff(vertices, axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
    s = np.linspace(0, cum[-1], n)
    dense = np.stack([np.interp(s, cum, vertices[:, d]) for d in range(vertices.shape[1])], 1)
    return np.sqrt(((points[:, None] - dense[None]) ** 2).sum(-1)).min(1), cum[-1] / (n - 1)


def test_steering_score_is_zero_on_the_path_and_grows_off_it(run):
    from diffnb.learn.io import load_model
    out, m = run
    path = np.array(m["tables"]["vae.path_codes"])
    t = m["tables"]["vae.test_codes"]
    n_z = m["parameters"]["vae_latent"]
    codes, scores = np.stack([t[f"z{d}"] for d in range(n_z)], 1), np.array(t["distance"])
    assert m["parameters"]["vae_members"] == 1 and m["metrics"]["vae.steering.choice"].endswith("_single")
    np.testing.assert_array_equal(scores, np.array(t["score"]))        # one VAE: the score is its distance
    # the recorded scores are the distances of the recorded codes to the polyline through the path codes
    ref, step = _brute_force_distance(codes, path)
    np.testing.assert_allclose(scores, ref, atol=step)
    # zero on the path (vertices and midpoints of segments), and growing linearly with a step off it
    on = np.concatenate([path, 0.5 * (path[1:] + path[:-1])])
    assert np.abs(_brute_force_distance(on, path)[0]).max() < step
    rng = np.random.default_rng(0)
    mid = 0.5 * (path[0] + path[1])
    d = rng.normal(size=n_z); u = path[1] - path[0]
    d -= d @ u / (u @ u) * u; d /= np.linalg.norm(d)                       # orthogonal to the first segment
    off = mid + np.outer([0.001, 0.002, 0.004], d) * np.linalg.norm(u)
    dist = _brute_force_distance(off, path)[0]
    assert np.all(np.diff(dist) > 0)
    # the codes come from the saved VAE: encoding the stored test patterns again gives them back
    vae = load_model(out / "models" / "vae", device="cpu")
    from diffnb.data import open_store
    st = open_store(out / "stores" / "vae")
    x = vae.preprocess(torch.as_tensor(st.images[:][np.array(t["index"])]))
    with torch.no_grad(): mu = vae.model.encode(x)[0].numpy()
    np.testing.assert_allclose(mu, codes, rtol=1e-4, atol=1e-5)
    # the alarm threshold, set on the validation fold, flags at most `alarm_rate` of its transformation patterns
    from diffnb.sim.mote2 import VAE_SETS
    folds, sets = st.load_split("train_valid_test"), st.param("set").astype(int)
    vp = np.flatnonzero((folds == 1) & (sets == VAE_SETS.index("2H-1T' transformation")))
    with torch.no_grad(): mu_v = vae.model.encode(vae.preprocess(torch.as_tensor(st.images[:][vp])))[0].numpy()
    above = _brute_force_distance(mu_v, path)[0] > m["metrics"]["vae.steering.threshold"] + step
    assert above.mean() <= m["parameters"]["alarm_rate"]
    assert m["metrics"]["vae.steering.valid_false_alarm_rate"] <= m["parameters"]["alarm_rate"]


def test_unseen_instrument_differs_from_training_instrument(run):
    from diffnb.sim.mote2 import MoTe2Sampler
    from diffnb.sim.detector import LabDomain
    out, m = run
    train = m["stores"]["synthetic"]["config"]
    lab = m["stores"]["unseen_instrument"]["config"]
    assert m["stores"]["unseen_instrument"]["sampler"] == "mote2.unseen_instrument"
    assert {k: v for k, v in lab["mote2"].items()} == train              # the same structures and diffraction
    assert train["oversample"] == m["parameters"]["oversample"] > 1       # pixel-integrated patterns in both
    dom = LabDomain(**{k: tuple(v) if isinstance(v, list) else v for k, v in lab["domain"].items()}).config
    assert train["psf_sigma_px"] == 0 and dom["psf_sigma_px"][0] > 0                 # PSF
    assert dom["stop_radius_px"][0] > train["stop_radius_px"]                         # larger beam stop (+ arm)
    assert dom["stop_arm_width_px"][1] > 0
    assert dom["background"][1] > 0 and dom["halo"][1] > 0                            # background (none in training)
    assert dom["gain_sigma"][0] > 0                                                   # gain non-uniformity
    assert tuple(dom["dose_e_per_px"]) != tuple(train["dose_e_per_px"])               # dose range
    assert dom["dose_e_per_px"][1] < train["dose_e_per_px"][1]
    assert lab["ref_dose_factor"] > 1
    # and the stored patterns do differ: the PSF correlates neighbouring pixels of the signal (the training
    # instrument's difference images are spatially white to within 0.01)
    from diffnb.data import open_store
    def neighbour_correlation(x):
        d = (x[:, 0] - x[:, 1]).astype(np.float64); d -= d.mean((1, 2), keepdims=True)
        return np.mean([np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1] for a in d])
    cs = neighbour_correlation(open_store(out / "stores" / "synthetic").images[:])
    cl = neighbour_correlation(open_store(out / "stores" / "unseen_instrument").images[:])
    assert abs(cs) < 0.01 and cl > 0.03, (cs, cl)
    MoTe2Sampler(**train)                                                             # the recorded config is valid


def test_randomised_instruments_cover_both_instruments_and_change_per_pattern(run):
    "The domain-randomised base model's instruments: ranges containing the training and the unseen instrument."
    from diffnb.data import open_store
    out, m = run
    st = m["stores"]["randomised_instruments"]
    assert st["sampler"] == "mote2.randomised_instruments"
    train, dr = m["stores"]["synthetic"]["config"], st["config"]
    unseen = m["stores"]["unseen_instrument"]["config"]["domain"]
    assert dr["mote2"] == train and dr["ref_dose_factor"] == m["parameters"]["ref_dose_factor"]
    dom = dr["domain"]
    for k, v in unseen.items():                       # every unseen-instrument range lies inside the randomised one
        if isinstance(v, list): assert dom[k][0] <= v[0] and v[1] <= dom[k][1], k
    # the training instrument of section 1 is inside too: no PSF, no background, its stop and its doses
    for k in ("psf_sigma_px", "background", "halo", "substrate", "gain_sigma", "readout_e", "center_shift_px"):
        assert dom[k][0] == 0, k
    assert dom["stop_radius_px"][0] <= train["stop_radius_px"] <= dom["stop_radius_px"][1]
    assert dom["dose_e_per_px"][0] <= train["dose_e_per_px"][0] and train["dose_e_per_px"][1] <= dom["dose_e_per_px"][1]
    # one instrument per pattern: the recorded draws spread over the ranges
    s = open_store(out / "stores" / "randomised_instruments")
    psf = s.param("psf_sigma_px")
    assert len(psf) == m["parameters"]["n_randomised"] and len(np.unique(psf)) == len(psf)
    assert psf.min() < 0.25 * dom["psf_sigma_px"][1] and psf.max() > 0.75 * dom["psf_sigma_px"][1]
    # a split of its own, stratified: every class is in its held-out test fold
    folds = s.load_split("train_valid_test")
    assert set(s.targets[:][folds == 2]) == set(range(7)) and m["metrics"]["randomised.n_test"] == int((folds == 2).sum())
    meta = json.loads((out / m["models"]["transfer_randomised_fine_tuned"] / "model.json").read_text())
    assert meta["provenance"]["init"] == "models/wrn_randomised"


def test_reused_classifiers_reproduce_the_run_and_refuse_other_settings(run):
    "`reuse_models`: the classifiers of a run are loaded, not trained, and everything downstream comes out the same."
    from safetensors.torch import load_file
    from diffnb.learn.io import read_model_meta
    out, m = run
    tmp = out.parent
    again = tmp / "reused"
    r = _diffnb_run(tmp, again, "-p", "seed", "1", "-p", "epochs", "3", "-p", "reuse_models", out.name)   # relative to cwd
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m2 = json.loads((again / "metrics.json").read_text())
    met, met2 = m["metrics"], m2["metrics"]
    for name in ("wrn", "resnet18", "wrn_randomised"):
        assert met2[f"train.{name}.reused_from"] == str(out / "models" / name)
        w, w2 = (load_file(d / "models" / name / "model.safetensors") for d in (out, again))
        assert w.keys() == w2.keys() and all(torch.equal(w[k], w2[k]) for k in w), name      # the same weights
        assert read_model_meta(again / "models" / name)["provenance"]["reused_from"] == str(out / "models" / name)
    assert "train.wrn.wall_s" in met2 and m2["tables"]["train.wrn.valid_accuracy_by_epoch"] == m["tables"]["train.wrn.valid_accuracy_by_epoch"]
    for k, v in met.items():       # the test, the transfer runs (same seeds, same shuffles) and the VAE: the same numbers
        if k.startswith(("test.", "valid.", "transfer.", "randomised.", "vae.", "calibration.", "series.")) and not k.endswith("_s"):
            assert met2[k] == pytest.approx(v, abs=1e-9), k
    # the VAE is seeded by the run seed alone: without the classifiers' training before it (other draws from the global
    # generators), its codes are bitwise the same
    assert m2["tables"]["vae.test_codes"] == m["tables"]["vae.test_codes"]
    # a run with other training settings is refused before anything is trained
    bad = _diffnb_run(tmp, tmp / "refused", "-p", "seed", "1", "-p", "epochs", "2", "-p", "reuse_models", str(out))
    assert bad.returncode != 0 and "trained with other settings" in bad.stdout + bad.stderr and "epochs" in bad.stdout + bad.stderr


def test_head_only_fine_tuning_changes_only_the_last_layer(run):
    "The head-only transfer runs (trained or refitted read-out): the body's weights and BatchNorm statistics are exactly the base model's."
    from safetensors.torch import load_file
    out, m = run
    for base, tuned in (("wrn", "transfer_head_tuned"), ("wrn_randomised", "transfer_randomised_head_tuned"),
                        ("wrn", "transfer_head_refit"), ("wrn_randomised", "transfer_randomised_head_refit")):
        a, b = load_file(out / "models" / base / "model.safetensors"), load_file(out / m["models"][tuned] / "model.safetensors")
        assert a.keys() == b.keys()
        changed = {k for k in a if not torch.equal(a[k], b[k])}
        # only the final linear layer (7 outputs): its weight matrix and its bias
        assert len(changed) == 2 and {a[k].ndim for k in changed} == {1, 2} and all(a[k].shape[0] == 7 for k in changed), changed
        assert any("running_mean" in k for k in a)                                  # the model has BatchNorm statistics
        meta = json.loads((out / m["models"][tuned] / "model.json").read_text())["provenance"]
        assert meta["head_only"] is True and meta["init"] == f"models/{base}"
    assert m["metrics"]["transfer.head_tuned.lr"] == pytest.approx(m["parameters"]["lr"])
    meta = json.loads((out / m["models"]["transfer_randomised_head_refit"] / "model.json").read_text())["provenance"]
    assert meta["readout_refit"] is True and meta["rehearsal_weight"] == m["parameters"]["ft_rehearsal_weight"]


def test_no_kernel_transport_warning(run):
    assert_quiet_kernel(run[0])


def test_classifier_probabilities_are_calibrated_on_validation(run):
    "Each classifier's temperature is fitted on its validation fold, stored in model.json and used by `predict`; the recorded ECE agrees with its reliability diagram."
    from diffnb.data import open_store
    from diffnb.learn.io import load_model, predict
    from diffnb.learn.predict import predict_logits
    from diffnb.learn.calibration import fit_temperature, calibrated_probabilities, calibration_error
    out, m = run
    met, tables = m["metrics"], m["tables"]
    st = open_store(out / "stores" / "synthetic")
    folds, y = st.load_split("train_valid_test"), st.targets[:]
    va, te = np.flatnonzero(folds == 1), np.flatnonzero(folds == 2)
    wrn = load_model(out / "models" / "wrn", device="cpu")
    cal = wrn.calibration
    assert cal["kind"] == "classification" and cal["fitted_on"] == "validation" and cal["n"] == len(va)
    assert cal["temperature"] == pytest.approx(met["calibration.wrn.temperature"])
    # refitting on the validation fold gives the stored temperature back (not the test fold's)
    T_valid = fit_temperature(predict_logits(wrn, st.images[:][va], tta=True), y[va])
    assert T_valid == pytest.approx(cal["temperature"], rel=1e-3)
    # predict applies it: softmax(logits / T) averaged over the 8 views; the recorded test ECE is of these probabilities
    lg = predict_logits(wrn, st.images[:][te], tta=True)
    p = predict(wrn, st.images[:][te], tta=True, progress=False)
    assert p.calibration.startswith("temperature scaling")
    np.testing.assert_allclose(p.probabilities, calibrated_probabilities(lg, cal["temperature"]), rtol=1e-4, atol=1e-6)
    assert calibration_error(p.probabilities, y[te]) == pytest.approx(met["test.wrn.ece_calibrated"], abs=1e-5)
    # ECE = sum over bins of (count / N) |accuracy - confidence|, from the recorded reliability diagrams
    for key in [k for k in tables if ".reliability_" in k]:
        d = tables[key]
        n = np.asarray(d["count"]); ok = n > 0
        ece = np.sum(n[ok] / n.sum() * np.abs(np.asarray(d["accuracy"])[ok] - np.asarray(d["confidence"])[ok]))
        assert ece == pytest.approx(met[key.replace("reliability_", "ece_")], abs=1e-5), key
    # the adapted models carry the temperature of the unseen instrument's validation patterns
    for name in ("fine_tuned", "randomised_head_refit"):
        c = load_model(out / m["models"][f"transfer_{name}"], device="cpu").calibration
        assert c["n"] == met["transfer.n_valid"] and c["temperature"] == pytest.approx(met[f"calibration.transfer_{name}.temperature"])
    assert {"uncalibrated", "calibrated", "recalibrated"} <= {k.rsplit("ece_", 1)[1] for k in met if k.startswith("transfer.unadapted.ece_")}


def test_pump_probe_series_alarms(run):
    "The pump–probe series: onsets are the sampler's, every other series damaged; the recorded alarms give the recorded delays and false alarms."
    from diffnb.data import open_store
    from diffnb.data.sampler import get_sampler
    out, m = run
    par, met = m["parameters"], m["metrics"]
    n_s, n_f = par["n_series"], par["n_frames"]
    st = open_store(out / "stores" / "pump_probe")
    assert m["stores"]["pump_probe"]["sampler"] == "mote2.pump_probe" and len(st.param("series")) == n_s * n_f
    smp = get_sampler("mote2.pump_probe", **m["stores"]["pump_probe"]["config"])
    # vae_oversample 0: every frame, and every VAE pattern, integrates its pixels with sub-samples no further apart
    # than 1/D (D the largest crystallite's diagonal), so no spot falls between them
    from diffnb.sim.kinematic import exact_oversample
    assert par["vae_oversample"] == 0
    for k in ("pump_probe", "vae"):
        c = m["stores"][k]["config"]
        assert c["oversample"] == exact_oversample(c["grid"], c["s_max"], np.hypot(*np.array(c["size"]) * (1 + c["size_spread"])))
    onsets = st.param("onset_frame").astype(int)[::n_f]
    truth = [smp.onset_frame(m["seed"] + 3000, j) for j in range(n_s)]
    assert list(onsets) == truth and all((o >= 0) == (j % 2 == 1) for j, o in enumerate(truth))
    t = m["tables"]["series.test"]
    series, onset, alarm = (np.array(t[k]) for k in ("series", "onset", "alarm"))
    assert list(series) == list(range(n_s // 2, n_s)) and list(onset) == truth[n_s // 2:]
    dmg = onset >= 0
    fa = np.mean(alarm[~dmg] >= 0)
    assert fa == pytest.approx(met["series.test.false_alarm_rate"])
    delays = [np.inf if a < 0 else a - o for a, o in zip(alarm[dmg], onset[dmg])]
    assert [None if d == np.inf else d for d in delays] == m["tables"]["series.test_delays"]   # a miss: ∞, recorded as null
    ok = [d for d in delays if d >= 0]
    med = met["series.test.median_delay"]
    assert (med is None and not ok) or med == pytest.approx(float(np.median(ok)))
    assert met["series.rule"] in ("threshold", "cusum", "threshold_self", "cusum_self", "threshold_window")
    # the latent explorer reads the saved codes: the test fold's sets with the path, and the first damaged test series
    from diffnb.explore_models import _alarm_frame, _latent_series, _latent_sets, _npz_series
    f = out / "latent_codes.npz"
    codes, labels, path = _latent_sets(f, None, None, par["vae_latent"])
    assert len(codes) == len(labels) == met["vae.n_test"] and len(path) >= 2
    assert np.array_equal(path, np.array(m["tables"]["vae.path_codes"]))
    z = _npz_series(f, dict.fromkeys(("series_codes", "series_scores", "series_threshold", "series_onset", "series_score_name")))
    s = _latent_series(z["series_codes"], z["series_scores"], z["series_threshold"], z["series_onset"], par["vae_latent"],
                       z["series_score_name"])
    rule = met["series.rule"]
    assert s["codes"].shape == (n_f, par["vae_latent"]) and s["threshold"] == pytest.approx(met[f"series.alarm_threshold.{rule}"])
    assert s["onset"] == onset[dmg][0]                        # the series shown first in the figure: its onset and alarm
    a = _alarm_frame(s["scores"], s["threshold"])
    assert (-1 if a is None else a) == alarm[dmg][0]
