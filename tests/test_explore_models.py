"""The model explorers (`diffnb.explore_models`): tiny untrained models saved with the provenance of real samplers.

Every check compares what an explorer shows with an independent computation: the sampler's own sample, a direct
`predict` on the same image, the VAE's own `decode` of the same latent vector.
"""
import json

import numpy as np
import pytest
import torch

from diffnb.core import DiffnbFileNotFoundError, DiffnbValueError, ShapeError
from diffnb.data import get_sampler
from diffnb.learn.io import load_model, predict, save_model
from diffnb.learn.models import conv_vae, conversion_cnn
from diffnb.explore_models import latent_explorer, model_explorer, model_sampler


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    speckle = get_sampler("speckle.mono", n=33, n_max=8)
    bi = get_sampler("powder.bismuth", shape=(32, 32), pixels_per_inv_angstrom=16.0)
    torch.manual_seed(0)
    clf = conversion_cnn(n_in=1, n_out=len(speckle.classes), img_size=(33, 33), channels=(4, 8), hidden=(16,), p_drop=0.3)
    save_model(clf, tmp / "clf", task="classification", classes=speckle.classes, input_shape=(1, 33, 33),
               provenance={"sampler": speckle.name, "sampler_config": speckle.config})
    for k in range(2):
        reg = conversion_cnn(n_in=1, n_out=1, img_size=(32, 32), channels=(4,), hidden=(8,), p_drop=0.3)
        # a store's provenance form: {"sampler": {"name", "version", "config"}}; the config holds a derived entry (norm)
        save_model(reg, tmp / f"reg{k}", task="regression", targets=["u_iso"], target_units=["Å²"], input_shape=(1, 32, 32),
                   preprocessing=[{"name": "LogIntensity", "offset": 1e-3}],
                   provenance={"sampler": {"name": bi.name, "version": bi.version, "config": bi.config}})
    vae = conv_vae(n_in=1, img_size=16, latent_dim=3, base=4)
    save_model(vae, tmp / "vae", task="vae", input_shape=(1, 16, 16))
    big = conv_vae(n_in=1, img_size=8, latent_dim=10, base=2)
    save_model(big, tmp / "vae10", task="vae", input_shape=(1, 8, 8))
    return dict(tmp=tmp, speckle=speckle, bi=bi)


def test_classifier_explorer_matches_sampler_and_predict(models):
    tmp, speckle = models["tmp"], models["speckle"]
    ex = model_explorer(tmp / "clf", device="cpu")
    first = ex.data["probabilities"].copy()
    direct_model = load_model(tmp / "clf", device="cpu")
    for cls in ("3", "7"):
        d = ex.set(cls=cls, draw=2, seed=4)
        images, targets, params = speckle.sample(4, [d["index"]])        # the sampler's own sample
        assert speckle.classes[int(targets[0])] == cls == d["truth"] and params["n_disks"][0] == int(cls)
        np.testing.assert_array_equal(d["image"], images[0].numpy())
        direct = predict(direct_model, images, progress=False)
        np.testing.assert_allclose(d["probabilities"], direct.probabilities[0], rtol=1e-5, atol=1e-7)
        assert d["label"] == direct.labels[0]
    assert not np.allclose(d["probabilities"], first)
    d = ex.set(mc_dropout=6)
    direct = predict(direct_model, d["image"][None], mc_dropout=6, progress=False)
    np.testing.assert_allclose(d["std"], direct.std[0], rtol=1e-5, atol=1e-7)
    assert d["std"].max() > 0 and d["prediction"].n_samples == 6
    np.testing.assert_allclose(d["probabilities"].sum(), 1.0, rtol=1e-5)


def test_regression_explorer_physical_control_and_ensemble(models):
    tmp, bi = models["tmp"], models["bi"]
    ex = model_explorer([tmp / "reg0", tmp / "reg1"], device="cpu")
    assert ex.controls["mc_dropout"].value == 0 and "ensemble of 2" in ex.title
    p = bi.sample_params(7, 11)                                     # what the sampler drew for (seed 7, index 11)
    d = ex.set(value=p["u_iso"], fwhm=p["fwhm"])
    images, targets, _ = bi.sample(7, [11])
    np.testing.assert_allclose(d["image"], images[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(float(d["target"]), float(targets[0]), rtol=1e-6)
    direct = predict([load_model(tmp / "reg0", device="cpu"), load_model(tmp / "reg1", device="cpu")], images, progress=False)
    np.testing.assert_allclose(d["values"], direct.values[0], rtol=1e-5)
    np.testing.assert_allclose(d["std"], direct.std[0], rtol=1e-5)   # ensemble spread
    before = d["values"].copy()
    d = ex.set(value=0.05)
    assert abs(float(d["target"]) - 0.05) < 1e-7 and not np.allclose(d["values"], before)
    fig = ex.figure()
    assert "u_iso" in fig.axes[1].get_title()


def test_model_sampler_rebuilds_and_refuses(models):
    tmp = models["tmp"]
    s = model_sampler(tmp / "reg0")
    assert s.name == "powder.bismuth" and s.image_shape == (1, 32, 32)
    with pytest.raises(ShapeError, match=r"\(1, 33, 33\)"):
        model_explorer(tmp / "clf", sampler="speckle.mono", n=65, device="cpu")
    with pytest.raises(DiffnbValueError, match="latent_explorer"):
        model_explorer(tmp / "vae", sampler="speckle.mono", device="cpu")
    with pytest.raises(DiffnbValueError, match="mc_dropout"):
        model_explorer(tmp / "clf", sampler="speckle.mono", n=33, n_max=8, mc_dropout=-1, device="cpu")
    with pytest.raises(DiffnbFileNotFoundError):
        model_explorer(tmp / "nothing", device="cpu")


def test_latent_explorer_decodes_the_controls(models, tmp_path):
    tmp = models["tmp"]
    net = load_model(tmp / "vae", device="cpu").model
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(30, 3)); labels = np.repeat(["a", "b", "c"], 10); path = np.linspace([-2, 0, 1], [2, 1, 0], 9)
    np.savez(tmp_path / "codes.npz", codes=codes, labels=labels, path_codes=path)
    ex = latent_explorer(tmp / "vae", codes=str(tmp_path / "codes.npz"), device="cpu")
    first = ex.data["decoded"].copy()
    d = ex.set(dim_x=1, dim_y=2, x=-1.5, y=0.8, z0=2.0)
    np.testing.assert_allclose(d["z"], [2.0, -1.5, 0.8])
    with torch.no_grad(): ref = torch.sigmoid(net.decode(torch.tensor([[2.0, -1.5, 0.8]])))[0].numpy()
    np.testing.assert_allclose(d["decoded"], ref, rtol=1e-5, atol=1e-6)
    assert np.abs(d["decoded"] - first).max() > 1e-4
    assert ex.controls["z1"].disabled and not ex.controls["z0"].disabled
    fig = ex.figure()
    assert fig.axes[0].get_xlabel() == "$z_1$" and len(fig.axes[0].lines) >= 3      # path, its ends, the point
    # codes given as arrays with labels: the same explorer
    ex2 = latent_explorer(tmp / "vae", codes=codes, labels=labels, path_codes=path, device="cpu")
    assert ex2.controls["x"].max == ex.controls["x"].max
    with pytest.raises(ShapeError):
        latent_explorer(tmp / "vae", codes=np.zeros((4, 2)), device="cpu")
    with pytest.raises(DiffnbValueError, match="labels"):
        latent_explorer(tmp / "vae", codes=codes, labels=labels[:5], device="cpu")


def test_latent_explorer_many_dims(models):
    ex = latent_explorer(models["tmp"] / "vae10", device="cpu")
    assert not any(k.startswith("z") for k in ex.controls)              # > 8 dims: the others stay at 0
    d = ex.set(dim_x=9, dim_y=4, x=1.0, y=-2.0)
    z = np.zeros(10); z[9], z[4] = 1.0, -2.0
    np.testing.assert_allclose(d["z"], z)


def test_cli_dispatch(models, capsys, tmp_path):
    from diffnb.cli import main
    from diffnb.explore import explorer_notebook
    tmp = models["tmp"]
    assert main(["explore", "--list"]) == 0
    out = capsys.readouterr().out
    assert "model" in out and "latent" in out
    assert main(["explore", "model", "--no-browser"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["explore", "latent", "--model", str(tmp / "clf"), "--no-browser"]) == 2    # not a VAE
    assert "VAE" in capsys.readouterr().err
    assert main(["explore", "latent", "--model", str(tmp / "vae"), "--model", str(tmp / "vae"), "--no-browser"]) == 2
    assert "one VAE" in capsys.readouterr().err
    assert main(["explore", "speckle", "--model", str(tmp / "clf"), "--no-browser"]) == 2
    assert main(["explore", "model", "--model", str(tmp / "nope"), "--no-browser"]) == 2
    nb = explorer_notebook("latent", tmp_path, model_dir=str(tmp / "vae"), device="cpu")
    import nbformat
    src = nbformat.read(nb, as_version=4).cells[0].source
    ns = {}
    exec(src.replace("display(explorer.widget)", "pass"), ns)                     # the page's code runs
    assert ns["explorer"].name == "latent" and ns["explorer"].data["decoded"].shape == (1, 16, 16)
