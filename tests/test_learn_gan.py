"Conditional GANs (diffnb.learn.gan): learning a known map, conditional critic, losses, input checks, save/load."
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnb.core import DiffnbValueError
from diffnb.learn import build_model, model_spec
from diffnb.learn.gan import (pix2pix_unet, unet_resnet, pix2pixhd_global, pix2pixhd_local, patchgan, multiscale_critic,
                              ConditionalCritic, feature_matching_loss, critic_adv_loss, generator_adv_loss,
                              physics_term, ssim_term, psnr_term, l2_term, perceptual_term, pair_dataloaders,
                              sample_pairs, generator_learner, gan_learner, pix2pixhd_learner, translate,
                              save_generator)
from fastai.callback.core import Callback


def smooth_images(n, size=32, sigma=2.0, seed=0, channels=1):
    "Gaussian-filtered white noise, unit variance per image."
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    k = torch.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None] ** 2))
    im = torch.fft.ifft2(torch.fft.fft2(torch.randn(n, channels, size, size, generator=g)) * k).real
    return (im - im.mean((-2, -1), keepdim=True)) / im.std((-2, -1), keepdim=True)


SOBEL_X = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]]) / 8


def sobel_x(im):
    "Horizontal derivative (Sobel), periodic boundaries: a fixed linear filter uncorrelated with its input."
    return F.conv2d(F.pad(im, (1, 1, 1, 1), mode="circular"), SOBEL_X[None, None])


def pearson(a, b):
    "Mean per-image Pearson r, computed with numpy."
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    return float(np.mean([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b)]))


@pytest.fixture(scope="module")
def sobel_dls():
    x = smooth_images(96, seed=1)
    return pair_dataloaders(x, sobel_x(x), bs=8, device="cpu", seed=0)


def test_pix2pix_learns_a_linear_filter(sobel_dls):
    dls = sobel_dls
    xv, yv = dls.valid_ds.x, dls.valid_ds.y
    assert abs(pearson(xv, yv)) < 0.1                      # copying the input scores ~0
    torch.manual_seed(0)
    G = pix2pix_unet(1, 1, img_size=32, ngf=8)
    pre = generator_learner(dls, G, lr=1e-2)
    with pre.no_bar(), pre.no_logging(): pre.fit_one_cycle(8)
    learn = gan_learner(dls, pre, patchgan(2, ndf=16), lr=2e-4)
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    names = list(learn.recorder.metric_names[1:-1])
    last = dict(zip(names, learn.recorder.values[-1]))
    assert last["pearson_mean"] >= 0.9, last                    # the fastai metric on the validation set
    r = pearson(translate(learn, xv, progress=False), yv)   # independent check with numpy
    assert r >= 0.9
    assert abs(r - last["pearson_mean"]) < 1e-3
    assert {"ssim", "psnr", "mse", "gen_loss", "crit_loss"} <= set(names), names
    assert len(learn.loss_func.terms) == 2 and set(learn.loss_func.terms) == {"adv", "l1"}
    assert not any("MixedPrecision" in type(cb).__name__ for cb in learn.cbs)  # never fp16 on CPU


class RecordingCritic(nn.Module):
    "A critic that records every image it is given."
    def __init__(self, c):
        super().__init__(); self.conv = nn.Conv2d(c, 1, 3, padding=1); self.seen = []
    def forward(self, x):
        self.seen.append(x.detach().clone()); return self.conv(x)


class RecordInputs(Callback):
    "Records the batch's input before PairGANCallback and GANTrainer touch the batch."
    order = -6
    def __init__(self, critic): self.critic, self.log = critic, []
    def before_batch(self): self.log.append((len(self.critic.seen), self.learn.xb[0].clone(), self.learn.yb[0].clone()))


def test_critic_is_conditional():
    torch.manual_seed(0)
    x = smooth_images(20, seed=2, channels=2); y = smooth_images(20, seed=3)   # C_in = 2, C_out = 1
    dls = pair_dataloaders(x, y, bs=4, device="cpu", valid_pct=0.2)
    crit = RecordingCritic(3)
    rec = RecordInputs(crit)
    learn = gan_learner(dls, pix2pix_unet(2, 1, 32, ngf=4), crit, cbs=[rec], metrics=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    starts = [s for s, _, _ in rec.log] + [len(crit.seen)]
    n_real = n_fake = 0
    for (s, xb, yb), e in zip(rec.log, starts[1:]):
        assert e > s                                       # the critic judged something in every batch
        for seen in crit.seen[s:e]:
            assert seen.shape[1] == 3                      # C_in + C_out channels
            assert torch.equal(seen[:, :2], xb)            # the input channels are this batch's inputs
            if torch.equal(seen[:, 2:], yb): n_real += 1
            else: n_fake += 1
    assert n_real > 0 and n_fake > 0                       # real and generated pairs were both judged


def test_feature_matching_and_adversarial_losses():
    torch.manual_seed(0)
    D = multiscale_critic(2, num_D=3, ndf=8)
    y = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        assert float(feature_matching_loss(D(y), D(y))) == 0.0
        assert float(feature_matching_loss(D(y + 0.1), D(y))) > 0
    ones, zeros = [[torch.ones(2, 1, 4, 4)]], [[torch.zeros(2, 1, 4, 4)]]
    assert float(critic_adv_loss(ones, zeros, "lsgan")) == 0.0
    assert float(critic_adv_loss(zeros, ones, "lsgan")) == pytest.approx(1.0)
    assert float(critic_adv_loss(zeros, zeros, "vanilla")) == pytest.approx(math.log(2), rel=1e-6)
    assert float(generator_adv_loss([[torch.full((2, 1, 4, 4), 3.)]], "hinge")) == -3.0


class FrozenRegressor(nn.Module):
    "A small CNN reading one number from an image."
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    def forward(self, x): return self.net(x)


def test_physics_term_gradient_reaches_generator_only():
    torch.manual_seed(0)
    G, reg = pix2pix_unet(1, 1, 32, ngf=4), FrozenRegressor()
    x = smooth_images(8, seed=4); u = torch.rand(8, 1)
    term = physics_term(reg)
    loss = term(G(x), None, x, u)
    loss.backward()
    assert all(p.grad is None for p in reg.parameters())
    assert sum(float(p.grad.abs().sum()) for p in G.parameters() if p.grad is not None) > 0
    # through a GAN fit: the regressor's weights and BN statistics stay as they were, the generator moves
    before_reg = {k: v.clone() for k, v in reg.state_dict().items()}
    before_g = {k: v.clone() for k, v in G.state_dict().items()}
    dls = pair_dataloaders(smooth_images(20, seed=5), smooth_images(20, seed=6), labels=torch.rand(20), bs=4, device="cpu")
    learn = gan_learner(dls, G, patchgan(2, ndf=4), l1_weight=0.0, extra_losses={"physics": (term, 5.0)}, metrics=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert all(torch.equal(before_reg[k], v) for k, v in reg.state_dict().items())
    assert any(not torch.equal(before_g[k], v) for k, v in G.state_dict().items())
    assert "physics" in learn.loss_func.terms


def test_extra_terms_values():
    y = torch.rand(4, 1, 32, 32)
    assert float(ssim_term(1.0)(y, y, None, None)) == pytest.approx(0.0, abs=1e-6)
    assert float(psnr_term(1.0)(y + 0.1, y, None, None)) == pytest.approx(-20.0, abs=1e-3)
    assert float(l2_term()(y + 0.1, y, None, None)) == pytest.approx(0.01, rel=1e-4)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert float(perceptual_term(net)(y, y, None, None)) == 0.0


def test_bad_input_fails_before_training(sobel_dls):
    dls = sobel_dls
    with pytest.raises(DiffnbValueError, match="input channel"):
        gan_learner(dls, pix2pix_unet(2, 1, 32, ngf=4), patchgan(3, ndf=4))
    with pytest.raises(DiffnbValueError, match="C_in \\+ C_out"):
        gan_learner(dls, pix2pix_unet(1, 1, 32, ngf=4), patchgan(1, ndf=4))
    with pytest.raises(DiffnbValueError, match="target's shape"):
        gan_learner(dls, pix2pix_unet(1, 2, 32, ngf=4), patchgan(3, ndf=4))
    with pytest.raises(DiffnbValueError, match="divisible by 32"):   # depth 5 from the size, 40 = 32 + 8
        pix2pix_unet(1, 1, img_size=40)
    with pytest.raises(DiffnbValueError, match="divisible by 16"):
        pix2pix_unet(1, 1, img_size=40, n_down=4)
    with pytest.raises(DiffnbValueError, match="divisible by 32"):
        unet_resnet(1, 1, img_size=40)
    x = smooth_images(10, size=36, seed=7)
    dls36 = pair_dataloaders(x, x, bs=4, device="cpu")
    with pytest.raises(DiffnbValueError, match="divisible by 8"):
        gan_learner(dls36, pix2pixhd_global(ngf=4, n_downsampling=3, n_blocks=1), patchgan(2, ndf=4))
    with pytest.raises(DiffnbValueError, match="judge"):                       # critic too deep for 32² images
        gan_learner(dls, pix2pix_unet(1, 1, 32, ngf=4), patchgan(2, ndf=4, n_layers=5))
    with pytest.raises(DiffnbValueError, match="needs the label"):
        gan_learner(dls, pix2pix_unet(1, 1, 32, ngf=4), patchgan(2, ndf=4),
                    extra_losses={"physics": (physics_term(FrozenRegressor()), 1.0)})
    with pytest.raises(DiffnbValueError, match="adv_loss"):
        gan_learner(dls, pix2pix_unet(1, 1, 32, ngf=4), patchgan(2, ndf=4), adv_loss="wgan")
    with pytest.raises(DiffnbValueError, match="cond"):
        ConditionalCritic(patchgan(2, ndf=4))(torch.zeros(1, 1, 32, 32))


def test_patchgan_receptive_field_is_70():
    torch.manual_seed(0)
    D = patchgan(2, ndf=4, n_layers=3).eval()
    # analytic, from the convolutions' kernels and strides: r <- (r - 1) s + k from the output back
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    r = 1
    for c in reversed(convs): r = (r - 1) * c.stride[0] + c.kernel_size[0]
    assert r == 70
    # empirical: the input pixels that move one central logit
    x = torch.randn(1, 2, 160, 160, requires_grad=True)
    out = D(x)[-1]
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows, cols = (x.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
    assert (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)) == (70, 70)


def test_generators_shapes_and_registry_round_trip():
    torch.manual_seed(0)
    x = smooth_images(5, seed=8)
    for g in (pix2pix_unet(1, 2, 32, ngf=4), unet_resnet(1, 2, 32), pix2pixhd_global(1, 2, ngf=4, n_blocks=1),
              pix2pixhd_local(1, 2, ngf=4, n_blocks_global=1, n_blocks_local=1, n_downsampling_global=2)):
        out = translate(g, x, bs=2, progress=False)
        assert out.shape == (5, 2, 32, 32)
        g2 = build_model(model_spec(g)); g2.load_state_dict(g.state_dict())
        assert torch.equal(translate(g2, x, bs=2, progress=False), out)   # state_dict + registry round trip
        torch.testing.assert_close(translate(g2, x, bs=5, progress=False), out, rtol=1e-4, atol=1e-5)  # batching
    for d in (patchgan(3, ndf=4), multiscale_critic(3, num_D=2, ndf=4)):
        d2 = build_model(model_spec(d)); d2.load_state_dict(d.state_dict())


def test_save_load_translate(tmp_path):
    "save_generator -> load_model (safetensors + JSON) -> translate gives the same images."
    from diffnb.learn.io import load_model
    torch.manual_seed(0)
    x = smooth_images(12, seed=9)
    dls = pair_dataloaders(x, sobel_x(x), bs=4, device="cpu")
    learn = gan_learner(dls, pix2pixhd_global(1, 1, ngf=4, n_downsampling=2, n_blocks=1), multiscale_critic(2, ndf=4),
                        metrics=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    save_generator(learn, tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(tmp_path / "g", device="cpu")
    assert loaded.task == "image2image" and loaded.input_shape == [1, 32, 32]
    assert torch.equal(translate(loaded, x, bs=4, progress=False), translate(learn, x, bs=4, progress=False))


class PairSampler:
    "An image2image sampler in diffnb's Sampler protocol: smooth image -> its Sobel derivative, label = a parameter."
    name, version, config, image_shape, task, classes, target_shape = \
        "test.sobel", "1", {}, (1, 32, 32), "image2image", None, (1, 32, 32)
    def sample(self, seed, indices):
        x = torch.cat([smooth_images(1, seed=1000 * seed + int(i)) for i in indices])
        return x, sobel_x(x), {"gain": np.asarray(indices, dtype=float) / 10}


def test_pairs_from_a_store(tmp_path):
    from diffnb.data.store import generate
    st = generate(PairSampler(), 10, tmp_path / "pairs", seed=3, chunk_size=5, scheduler="synchronous", progress=False)
    dls = pair_dataloaders(st.path, labels="gain", bs=4, device="cpu", valid_pct=0.2)
    xs, ys, labs = dls.train_ds.x, dls.train_ds.y, dls.train_ds.label
    i = labs.flatten().mul(10).round().long()                  # each sample's index, from its label
    ref_x, ref_y, _ = PairSampler().sample(3, i.tolist())
    torch.testing.assert_close(xs, ref_x); torch.testing.assert_close(ys, ref_y)


def test_labels_travel_with_pairs(tmp_path):
    x, y, lab = sample_pairs(PairSampler(), 12, label="gain")
    assert lab.shape == (12, 1)
    with pytest.raises(DiffnbValueError, match="label must be one of"):
        sample_pairs(PairSampler(), 4, label="nope")
    dls = pair_dataloaders(x, y, labels=lab, bs=4, device="cpu", valid_pct=0.25)
    b = dls.one_batch()
    assert len(b) == 3 and b[2].shape == (4, 1)
    # the label of each sample is its own: look the rows up
    idx = [int(torch.nonzero((x == xi).flatten(1).all(1))[0]) for xi in b[0]]
    assert torch.equal(b[2].flatten().as_subclass(torch.Tensor), lab[idx].flatten())
    learn = pix2pixhd_learner(dls, ngf=4, ndf=4, n_downsampling=2, n_blocks=1, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
        res = learn.lr_find(num_it=12, stop_div=False, show_plot=False)  # losses alternate critic/generator
    assert set(learn.loss_func.terms) == {"adv", "fm"} and res.valley > 0
    learn.show_results(max_n=2)


class FrozenWatch(Callback):
    "After every training batch: did the network that was frozen for this step keep its weights?"
    order = 100
    def __init__(self): self.ok = []
    def before_batch(self):
        if not self.training: return
        self.gen = self.learn.gan_trainer.gen_mode
        frozen = self.learn.model.critic if self.gen else self.learn.model.generator
        self.before = [p.detach().clone() for p in frozen.parameters()]
    def after_batch(self):
        if not self.training: return
        frozen = self.learn.model.critic if self.gen else self.learn.model.generator
        self.ok.append((self.gen, all(torch.equal(a, p) for a, p in zip(self.before, frozen.parameters()))))


def test_only_the_trained_network_moves():
    "fastai's single optimiser must not move the frozen network with Adam's momentum."
    torch.manual_seed(0)
    x = smooth_images(24, seed=10)
    dls = pair_dataloaders(x, sobel_x(x), bs=4, device="cpu", valid_pct=0.2)
    watch = FrozenWatch()
    learn = gan_learner(dls, pix2pix_unet(1, 1, 32, ngf=4), patchgan(2, ndf=4), cbs=[watch], metrics=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert len(watch.ok) >= 4 and {g for g, _ in watch.ok} == {True, False}
    assert all(ok for _, ok in watch.ok), watch.ok


def test_gan_learner_on_the_data_layers_dataloaders():
    "diffnb.data.loaders.dataloaders (on-the-fly sampler, (input, target) batches) feeds gan_learner as is."
    from diffnb.data.loaders import dataloaders
    torch.manual_seed(0)
    dls = dataloaders(PairSampler(), bs=4, n_train=8, n_valid=4, device="cpu")
    learn = gan_learner(dls, pix2pix_unet(1, 1, 32, ngf=4), patchgan(2, ndf=4))
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    names = list(learn.recorder.metric_names[1:-1])
    assert np.isfinite(dict(zip(names, learn.recorder.values[-1]))["pearson_mean"])
