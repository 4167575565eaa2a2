"Learners on real small tasks (speckle counting, Bi Debye–Waller regression, MoTe2 VAE), distributed training, interpretation."
import os
import runpy
import sys
import textwrap

import numpy as np
import pytest
import torch

from diffnb.data.loaders import dataloaders, LogIntensity, PercentileNormalize, FloatImage
from diffnb.data.store import get_sampler, generate
import diffnb.learn.models  # registers the architectures
from diffnb.learn import model_spec
from diffnb.learn.learner import (classification_learner, regression_learner, vae_learner, vae_encode, vae_decode,
                                  vae_sample, train_distributed)

SEED = int(os.environ.get("DIFFNB_TEST_SEED", 0))


def _quiet(learn):
    from fastai.callback.progress import ProgressCallback
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *a, **k: None
    return learn


def test_classification_speckle_counts_disks():
    "Number of disks (2, 3 or 4) from 32² speckle patterns, simulated afresh each epoch: ≥ 95 % validation accuracy."
    torch.manual_seed(SEED)
    # a coarse k-step (0.05 rad/px, 31× the default π/box) puts the disks' form-factor rings on the 32-pixel detector
    s = get_sampler("speckle.mono", n=32, n_min=2, n_max=4, block=3, k_step=0.05)
    dls = dataloaders(s, bs=64, n_train=512, n_valid=256, device="cpu", seed=SEED)
    learn = _quiet(classification_learner(dls, "conversion_cnn", {"channels": [16, 32, 32], "hidden": [64], "p_drop": 0.0}))
    assert learn.diffnb_meta["classes"] == ["2", "3", "4"] and learn.diffnb_meta["task"] == "classification"
    assert learn.diffnb_meta["provenance"]["sampler"] == "speckle.mono"
    learn.fit_one_cycle(6, 5e-3)
    preds, targs = learn.get_preds()
    acc = float((preds.argmax(1) == targs).float().mean())  # independent of fastai's metric
    print(f"speckle accuracy {acc:.4f}")
    assert acc >= 0.95, acc
    assert len(targs) == 256


def test_regression_bismuth_u_iso():
    "U_iso [Å²] of Bi from ideal 32² ring images: R² ≥ 0.95 on 256 fixed validation images."
    from sklearn.metrics import r2_score
    torch.manual_seed(SEED)
    # 16 px per 1/Å at 32² covers the same s range (|s| ≤ 1 /Å) as the study's 128 px per 1/Å at 256²
    s = get_sampler("powder.bismuth", shape=(32, 32), pixels_per_inv_angstrom=16.0)
    dls = dataloaders(s, bs=64, n_train=512, n_valid=256, device="cpu", seed=SEED)
    learn = _quiet(regression_learner(dls, "conversion_cnn", {"channels": [16, 32, 32], "hidden": [64], "p_drop": 0.0}))
    assert learn.diffnb_meta["targets"] == ["u_iso"] and learn.diffnb_meta["target_units"] == ["Å²"]
    assert model_spec(learn.model)["arch"] == "target_scaled"
    learn.fit_one_cycle(8, 3e-3)
    preds, targs = learn.get_preds()
    r2 = r2_score(targs.numpy().ravel(), preds.numpy().ravel())
    print(f"bismuth R2 {r2:.4f}")
    assert r2 >= 0.95, r2
    assert 0.005 <= float(preds.mean()) <= 0.06  # predictions come out in Å²


MOTE2_SETS = ["2H thermal", "2H vacancies", "2H phonons", "1T' vacancies", "1T' phonons"]


def test_vae_mote2_latent_separates_phases(tmp_path):
    "Conv VAE (4-d latent) on 32² MoTe2 patterns: reconstruction loss falls ≥ 50 %; a linear probe separates 2H from 1T'."
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    torch.manual_seed(SEED)
    s = get_sampler("kinematic.mote2_vae", grid=32, sets=MOTE2_SETS, rotation_deg=(0.0, 0.0))
    store = generate(s, 320, tmp_path / "vae.zarr", seed=SEED, chunk_size=64, scheduler="synchronous", progress=False)
    tfms = [LogIntensity(), PercentileNormalize(0, 100)]
    dls = dataloaders(store, bs=32, device="cpu", seed=SEED, batch_tfms=tfms, valid_pct=0.25)
    learn = _quiet(vae_learner(dls, "conv_vae", {"latent_dim": 4, "base": 16}, beta=1.0))
    assert learn.loss_func.logits  # conv_vae decodes to logits
    recon0 = learn.validate()[1]
    learn.fit_one_cycle(15, 3e-3)
    recon1 = learn.validate()[1]
    assert recon1 <= 0.5 * recon0, (recon0, recon1)
    x = FloatImage(torch.as_tensor(store.images[:]))
    for tf in tfms: x = tf(x)
    mu = vae_encode(learn, x).numpy()
    assert mu.shape == (320, 4)
    is_1t = store.param("is_1t").astype(int)
    acc = cross_val_score(LogisticRegression(max_iter=2000), mu, is_1t, cv=5).mean()
    print(f"vae recon {recon0:.1f} -> {recon1:.1f}, probe accuracy {acc:.3f}")
    assert acc >= 0.85, acc  # chance: 0.6
    img = vae_decode(learn, mu[:3])
    assert img.shape == (3, 1, 32, 32) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert torch.equal(vae_sample(learn, 2, seed=3), vae_sample(learn, 2, seed=3))


_DDP_SCRIPT = textwrap.dedent('''
    import os, sys, torch
    from fastai.optimizer import SGD
    from diffnb.data.store import SlitSampler
    from diffnb.data.loaders import dataloaders, LogIntensity
    from diffnb.learn.learner import classification_learner, rank_device
    import diffnb.learn.models
    bs, out = int(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    dls = dataloaders(SlitSampler(image_size=16, max_slits=3), bs=bs, n_train=32, n_valid=16,
                      batch_tfms=[LogIntensity()], device=rank_device())
    learn = classification_learner(dls, "conversion_cnn", {"img_size": 16, "channels": [8, 8], "hidden": [16], "p_drop": 0.0},
                                   opt_func=SGD)
    from fastai.callback.progress import ProgressCallback
    learn.remove_cb(ProgressCallback)
    init = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with learn.distrib_ctx(): learn.fit(3, 0.1)
    assert learn.dls.train.dataset.epoch == 3
    if int(os.environ.get("RANK", 0)) == 0: torch.save({"init": init, "final": learn.model.state_dict()}, out)
''')


def test_distributed_gloo_equals_single_process(tmp_path):
    "Two CPU processes (gloo), 16 images each per step, end with the weights of one process taking 32 per step."
    script = tmp_path / "train.py"
    script.write_text(_DDP_SCRIPT)
    env = {"OMP_NUM_THREADS": 1, "PYTHONPATH": os.pathsep.join([os.getcwd()] + sys.path)}
    train_distributed(script, 16, tmp_path / "ddp.pt", nproc=2, cpu=True, env=env, timeout=300)
    argv = sys.argv
    try:  # the single-process reference, in this process (WORLD_SIZE unset: distrib_ctx does nothing)
        sys.argv = [str(script), "32", str(tmp_path / "one.pt")]
        runpy.run_path(str(script), run_name="__main__")
    finally: sys.argv = argv
    ddp, one = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "one.pt")
    assert set(ddp["final"]) == set(one["final"])
    for k in one["final"]: torch.testing.assert_close(ddp["final"][k], one["final"][k], rtol=1e-5, atol=1e-6)
    # training moved the weights, so the agreement is not that of two untouched copies
    assert max(float((one["final"][k] - one["init"][k]).abs().max()) for k in one["init"]) > 1e-3


def test_train_distributed_inputs(tmp_path):
    from diffnb.core import DiffnbValueError, DiffnbFileNotFoundError
    with pytest.raises(DiffnbFileNotFoundError, match="script must be an existing Python file"):
        train_distributed(tmp_path / "missing.py")
    (tmp_path / "t.py").write_text("")
    with pytest.raises(DiffnbValueError, match="launcher must be"):
        train_distributed(tmp_path / "t.py", launcher="mpirun")
    with pytest.raises(DiffnbValueError, match="nproc"):
        train_distributed(tmp_path / "t.py", nproc=0)


# ---- interpretation ---------------------------------------------------------------------------------------------

from diffnb.learn.interpret import (polyline_distance, saliency_maps, gradcam_maps, interpret_classifier, parity_stats,
                                    latent_embedding, latent_traversal, plot_confusion, plot_top_losses, plot_parity)


def test_polyline_distance_on_and_off_the_path():
    path = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 2.0, 0.0], [2.0, 2.0, 3.0]])
    t = np.linspace(0, 1, 11)[:, None]
    on = np.concatenate([a + t * (b - a) for a, b in zip(path[:-1], path[1:])])
    np.testing.assert_allclose(polyline_distance(on, path), 0.0, atol=1e-12)
    # analytic distances: perpendicular to a segment, or to the nearest end vertex
    pts = np.array([[1.0, -3.0, 4.0],   # off segment 1 at x = 1: √(3² + 4²) = 5
                    [-1.0, 0.0, 0.0],   # before the first vertex: 1
                    [2.0, 2.0, 5.0],    # past the last vertex along its direction: 2
                    [3.0, 1.0, 0.0],    # beside segment 2: 1
                    [2.5, 2.5, 1.5]])   # beside segment 3: √(0.5² + 0.5²)
    np.testing.assert_allclose(polyline_distance(pts, path), [5.0, 1.0, 2.0, 1.0, np.sqrt(0.5)], rtol=1e-12)
    d, s = polyline_distance(pts, path, return_position=True)
    np.testing.assert_allclose(s, [1.0, 0.0, 7.0, 3.0, 5.5], rtol=1e-12)
    with pytest.raises(ValueError, match="path_codes must be"):
        polyline_distance(pts, path[:, :2])


def test_saliency_and_gradcam_maps_have_the_input_shape():
    from diffnb.learn import build_model
    torch.manual_seed(0)
    model = build_model("conversion_cnn", n_in=2, n_out=3, img_size=16, channels=[4, 8], hidden=[8], p_drop=0.0)
    x = torch.randn(5, 2, 16, 16)
    sal = saliency_maps(model, x)
    cam = gradcam_maps(model, x, target=[0, 1, 2, 0, 1])
    assert sal.shape == x.shape and cam.shape == (5, 1, 16, 16)
    assert torch.isfinite(sal).all() and torch.isfinite(cam).all() and (cam >= 0).all()
    # Saliency = |d output / d input| (autograd, per image and its predicted class)
    xg = x.clone().requires_grad_(True)
    out = model.eval()(xg)
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    torch.testing.assert_close(sal, xg.grad.abs())
    assert model.training is False  # left as found (eval above)
    wrn = build_model("wide_resnet_ued", n_in=1, n_classes=3, width=1)
    assert gradcam_maps(wrn, torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_interpretation_of_a_classifier_on_float_images():
    from sklearn.metrics import confusion_matrix
    from diffnb.data.store import SlitSampler
    torch.manual_seed(0)
    dls = dataloaders(SlitSampler(image_size=16, max_slits=3), bs=32, n_train=64, n_valid=48,
                      batch_tfms=[LogIntensity()], device="cpu")
    learn = _quiet(classification_learner(dls, "conversion_cnn", {"channels": [8], "hidden": [16], "p_drop": 0.0}))
    learn.fit(1, 1e-3)
    interp = interpret_classifier(learn)
    preds, targs = learn.get_preds()
    np.testing.assert_array_equal(interp.confusion_matrix(), confusion_matrix(targs, preds.argmax(1), labels=range(3)))
    losses, idx = interp.top_losses(3)
    _, p3, t3, _, _ = interp[idx]  # the samples, re-simulated by position
    torch.testing.assert_close(torch.nn.functional.cross_entropy(p3.log(), t3, reduction="none"), losses, rtol=1e-4, atol=1e-5)
    import matplotlib.pyplot as plt
    assert plot_confusion(interp).axes and plot_top_losses(interp, 3).axes
    plt.close("all")


def test_parity_and_latent_helpers():
    from sklearn.metrics import r2_score
    g = np.random.default_rng(0)
    t = g.uniform(0, 1, 100); p = t + g.normal(0, 0.05, 100)
    s = parity_stats(p, t)
    assert s["r2"] == pytest.approx(r2_score(t, p)) and s["rmse"] == pytest.approx(np.sqrt(((p - t) ** 2).mean()))
    assert len(plot_parity(p, t, "u_iso", "Å²").axes) == 2
    assert latent_embedding(g.normal(size=(40, 4)), "tsne").shape == (40, 2)
    vae = diffnb.learn.build_model("conv_vae", img_size=16, latent_dim=3, base=4)
    grid = latent_traversal(vae, steps=4, span=2.0)
    assert grid.shape == (3, 4, 1, 16, 16) and 0 <= float(grid.min()) and float(grid.max()) <= 1
