"Model factories of diffnb.learn.models: shapes for several sizes and channels, registry round trip, errors, weights."
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

from diffnb.core import DiffnbValueError, DiffnbFileNotFoundError, ShapeError
from diffnb.learn import build_model, model_spec, MODELS
from diffnb.learn.models import (conversion_cnn, wide_resnet, wide_resnet_ued, resnet, conv_vae, load_weights,
                                 ccnn_opt_func, ExponentialDecay)

torch.manual_seed(0)


def n_params(m): return sum(p.numel() for p in m.parameters())


def same_architecture(a, b):
    return [(n, p.shape) for n, p in a.state_dict().items()] == [(n, p.shape) for n, p in b.state_dict().items()]


@pytest.mark.parametrize("n_in,size", [(1, 16), (2, 32), (3, (24, 40))])
def test_conversion_cnn_shapes_and_rebuild(n_in, size):
    m = conversion_cnn(n_in=n_in, n_out=2, img_size=size, channels=(4, 8, 8), hidden=(16, 8, 4)).eval()
    h, w = (size, size) if isinstance(size, int) else size
    assert m(torch.rand(3, n_in, h, w)).shape == (3, 2)
    spec = json.loads(json.dumps(model_spec(m)))           # what model.json holds
    assert same_architecture(build_model(spec), m)
    # dense input size = filters of the last stage × (h // 8) × (w // 8)
    assert m[10].in_features == 8 * (h // 8) * (w // 8)


def test_conversion_cnn_default_is_the_study_layout():
    m = conversion_cnn()
    kinds = [type(l).__name__ for l in m]
    assert kinds.count("Conv2d") == 3 and kinds.count("MaxPool2d") == 3
    assert kinds.count("Linear") == 4 and kinds.count("Dropout") == 1      # 3 dense + linear output
    assert kinds.index("Dropout") == kinds.index("Linear") + 2             # after the first dense layer's ReLU
    assert m[kinds.index("Dropout")].p == 0.2 and m[-1].out_features == 1
    assert 1e6 < n_params(m) < 1e7                                         # 128·8·8·256 ≈ 2.1 M dominate


@pytest.mark.parametrize("bad,msg", [(dict(img_size=7), "at least 8 pixels"), (dict(img_size=(64, 64, 1)), "pair"),
                                     (dict(n_in=0), "n_in must be"), (dict(channels=()), "non-empty"),
                                     (dict(kernel_size=4), "odd"), (dict(p_drop=-0.1), "p_drop")])
def test_conversion_cnn_bad_arguments(bad, msg):
    with pytest.raises(DiffnbValueError, match=msg): conversion_cnn(**bad)


def test_forward_input_checks():
    m = conversion_cnn(img_size=32)
    with pytest.raises(ShapeError, match=r"\(batch, 1, height, width\)"): m(torch.rand(2, 3, 32, 32))
    with pytest.raises(ShapeError, match=r"\(32, 32\) images"): m(torch.rand(2, 1, 64, 64))
    with pytest.raises(ShapeError): m(torch.rand(1, 32, 32))                       # no batch axis
    with pytest.raises(ShapeError, match="float"): m(torch.ones(2, 1, 32, 32, dtype=torch.int64))
    r = resnet(18, n_in=2, n_out=3)
    with pytest.raises(ShapeError, match=r"\(batch, 2, height, width\)"): r(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("n_in,size", [(1, 8), (2, 32), (2, (16, 48))])
def test_wide_resnet_ued_shapes(n_in, size):
    m = wide_resnet_ued(n_in=n_in, width=1).eval()
    h, w = (size, size) if isinstance(size, int) else size
    assert m(torch.rand(2, n_in, h, w)).shape == (2, 7)
    assert same_architecture(build_model(model_spec(m)), m)


def test_wide_resnet_param_counts_match_the_paper():
    # Zagoruyko & Komodakis (2016), Table 1/2: WRN-40-4 8.9 M parameters (CIFAR, 3 channels)
    assert abs(n_params(wide_resnet(40, 4, n_in=3, n_out=10)) / 1e6 - 8.9) < 0.05
    m = wide_resnet(16, 2, n_in=1, n_out=5).eval()
    for s in (8, 31, 64): assert m(torch.rand(1, 1, s, s)).shape == (1, 5)
    with pytest.raises(DiffnbValueError, match="6n"): wide_resnet(depth=20)


@pytest.mark.parametrize("n_layers", [18, 50])
def test_resnet_n_in_and_rebuild(n_layers):
    m = resnet(n_layers, n_in=2, n_out=19).eval()
    assert m[0][0].in_channels == 2 and m(torch.rand(2, 2, 64, 64)).shape == (2, 19)
    assert same_architecture(build_model(model_spec(m)), m)
    tv = getattr(torchvision.models, f"resnet{n_layers}")(weights=None)
    body_tv = n_params(tv) - n_params(tv.fc) - tv.conv1.weight.numel() // 3  # one of three input channels fewer
    assert n_params(m[0]) == body_tv
    with pytest.raises(DiffnbValueError, match="n_layers"): resnet(20)


@pytest.mark.parametrize("n_in", [1, 2, 4])
def test_load_torchvision_weights_adapts_first_conv(tmp_path, n_in):
    tv = torchvision.models.resnet18(weights=None)
    save_file(tv.state_dict(), str(tmp_path / "tv.safetensors"))
    m = load_weights(resnet(18, n_in=n_in, n_out=3), tmp_path / "tv.safetensors")
    w = tv.conv1.weight
    expected = {1: w.sum(1, keepdim=True), 2: w[:, :2] * 1.5, 4: torch.cat([w, torch.zeros_like(w[:, :1])], 1)}[n_in]
    torch.testing.assert_close(m[0][0].weight, expected)
    torch.testing.assert_close(m[0][7][1].bn2.running_var, tv.layer4[1].bn2.running_var)


def test_load_weights_refuses_pickles_and_missing_files(tmp_path):
    m = conv_vae(img_size=16, base=4)
    torch.save(m.state_dict(), tmp_path / "w.pt")
    with pytest.raises(DiffnbValueError, match="pickled checkpoints are refused"): load_weights(m, tmp_path / "w.pt")
    with pytest.raises(DiffnbFileNotFoundError): load_weights(m, tmp_path / "nothing.safetensors")
    other = conv_vae(img_size=16, base=4)
    save_file(other.state_dict(), str(tmp_path / "w.safetensors"))
    load_weights(m, tmp_path / "w.safetensors")
    torch.testing.assert_close(m.fc_mu.weight, other.fc_mu.weight)
    partial = {k: v for k, v in other.state_dict().items() if not k.startswith("fc_mu")}
    save_file(partial, str(tmp_path / "p.safetensors"))
    with pytest.raises(DiffnbValueError, match="missing"): load_weights(m, tmp_path / "p.safetensors")
    load_weights(m, tmp_path / "p.safetensors", strict=False)


@pytest.mark.parametrize("size,n_in,depth", [(8, 1, 1), (64, 1, 4), (128, 2, 5), ((32, 8), 1, 1)])
def test_conv_vae_depth_follows_image_size(size, n_in, depth):
    v = conv_vae(n_in=n_in, img_size=size, base=4)
    assert sum(isinstance(l, nn.Conv2d) for l in v.encoder) == depth
    assert sum(isinstance(l, nn.ConvTranspose2d) for l in v.decoder) == depth
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.rand(2, n_in, h, w)
    recon, mu, logvar = v(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 4)
    assert same_architecture(build_model(model_spec(v)), v)


def test_conv_vae_training_step_and_reparameterisation():
    torch.manual_seed(1)
    v = conv_vae(img_size=16, base=4, latent_dim=2)
    x = torch.rand(8, 1, 16, 16)
    r1, mu, logvar = v(x)
    r2, _, _ = v(x)
    assert not torch.equal(r1, r2)                    # training: z is sampled
    loss = nn.functional.binary_cross_entropy_with_logits(r1, x) - 0.5 * (1 + logvar - mu**2 - logvar.exp()).mean()
    loss.backward()
    assert all(p.grad is not None for p in v.parameters())
    v.eval()
    torch.testing.assert_close(v.reconstruct(x), torch.sigmoid(v.decode(v.encode(x)[0])))
    assert v.sample(3).shape == (3, 1, 16, 16)
    with pytest.raises(DiffnbValueError, match="power of two"): conv_vae(img_size=(64, 48))
    with pytest.raises(DiffnbValueError, match="power of two"): conv_vae(img_size=4)


def test_exponential_decay_smooth():
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    import fastai.callback.progress  # noqa: F401
    ds = list(zip(torch.rand(8, 1, 8, 8), torch.rand(8, 1)))
    dls = DataLoaders.from_dsets(ds[:8], ds[:4], bs=4, device="cpu")
    learn = Learner(dls, conversion_cnn(img_size=8, channels=(2, 2, 2), hidden=(2,)), loss_func=MSELossFlat(),
                    opt_func=ccnn_opt_func, cbs=ExponentialDecay(0.5, staircase=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    np.testing.assert_allclose(learn.recorder.lrs, 1e-2 * 0.5 ** np.array([0, 0.5, 1, 1.5]), rtol=1e-12)
    with pytest.raises(DiffnbValueError, match="gamma"): ExponentialDecay(1.5)


def test_all_factories_registered():
    assert {"conversion_cnn", "wide_resnet", "wide_resnet_ued", "resnet", "conv_vae"} <= set(MODELS)


def test_polar_cnn_sees_the_speckle_that_the_radial_average_discards():
    import numpy as np
    import torch
    from diffnb.learn.models import polar_cnn, radial_mlp
    yy, xx = np.mgrid[:41, :41] - 20
    r, phi = np.hypot(yy, xx), np.arctan2(yy, xx)
    base = 1 / (1 + r / 3.0)
    flat = torch.tensor(base)[None, None].float()
    ringed = torch.tensor(base * (1 + 0.9 * np.cos(6 * phi)))[None, None].float()  # same ring means, azimuthal contrast
    rad = radial_mlp(n_out=2, img_size=41, skip=1, tail=4, hidden=[8]).eval()
    pol = polar_cnn(n_out=2, img_size=41, skip=1, tail=4, n_phi=32, channels=[4], hidden=[8]).eval()
    torch.testing.assert_close(rad.features(ringed), rad.features(flat), atol=0.05, rtol=0)   # the average cannot tell them apart
    n_prof = 21 - 1
    fp, ff = pol.features(ringed), pol.features(flat)
    torch.testing.assert_close(fp[:, :n_prof], ff[:, :n_prof], atol=0.1, rtol=0)             # nor can the polar model's profile (bilinear error)
    assert (fp[:, n_prof:] - ff[:, n_prof:]).abs().max() > 0.5                              # its ring features can
    # invariant to a quarter turn and to a·I + b; gradients reach the input (saliency works)
    torch.testing.assert_close(pol.features(torch.rot90(ringed, 1, (-2, -1))), fp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pol.features(2.5 * ringed - 1.0), fp, atol=1e-3, rtol=1e-3)
    x = ringed.clone().requires_grad_(True); pol(x)[0, 1].backward()
    assert x.grad.abs().sum() > 0
