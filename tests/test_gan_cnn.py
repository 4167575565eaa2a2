"""The Bi study's GAN-CNN at a size a test affords: a pix2pix translator of lab-like Bi ring patterns (32² px) trained
with `fit_translator` must give images that the frozen CCNN, trained on ideal patterns only, reads as it reads ideal
images: inside its training domain (no reading at the edge of B(T)), at the ideal images' intensity level, and
tracking U_iso. A translator with too few generator updates emits images outside that domain, which the CCNN
reads as one extreme U_iso for every frame."""
import numpy as np
import pytest
import torch

S = 32 / 256
LAB = dict(center_shift_px=[0.0, 3 * S], beam_width_px=[1.5 * S, 4 * S], stop_radius_px=[6 * S, 12 * S],
           stop_arm_width_px=[3 * S, 6 * S], psf_sigma_px=[0.5 * S, 1.5 * S], gain_correlation_px=16 * S)


@pytest.fixture(scope="module")
def gan_cnn():
    from fastai.data.core import DataLoaders
    from fastai.torch_core import set_seed
    from diffnb.sim.powder import BismuthRingSampler
    from diffnb.scattering import bismuth_b_iso, u_from_b
    from diffnb.data.loaders import LogIntensity, PercentileNormalize, FloatImage, FloatTarget
    from diffnb.learn.models import ccnn_opt_func, ExponentialDecay
    from diffnb.learn.learner import regression_learner
    from diffnb.learn.gan import pix2pix_unet, patchgan, pair_dataloaders, fit_translator, physics_term, l2_term, translate
    torch.set_num_threads(1)
    u_range = [u_from_b(bismuth_b_iso(250.0)), u_from_b(bismuth_b_iso(1000.0))]
    kw = dict(u_iso_range=u_range, fwhm_range=(0.05, 0.08), pixels_per_inv_angstrom=16.0, lab=LAB)
    # the CCNN: ideal patterns only
    x_id, y_id, _ = BismuthRingSampler((32, 32), mode="ideal", **kw).sample(0, range(1024))
    perm = np.random.default_rng(0).permutation(1024)
    items = lambda idx: [(FloatImage(x_id[i]), FloatTarget(y_id[i].reshape(1))) for i in idx]
    dls = DataLoaders.from_dsets(items(perm[128:]), items(perm[:128]), bs=64, device="cpu")
    dls.task, dls.c, dls.vocab, dls.intensity_transforms = "regression", 1, None, []
    set_seed(0, reproducible=True)
    learn = regression_learner(dls, "conversion_cnn", dict(channels=[16, 32, 64], hidden=[256, 128, 64], img_size=32),
                               opt_func=ccnn_opt_func, cbs=[ExponentialDecay(0.96)], metrics=[])
    learn.fit(8, 1e-3)
    ccnn = learn.model.eval()
    # lab → ideal pairs, one random instrument each; inputs as log counts normalised per image (the workflow's transform)
    lab, ideal, prm = BismuthRingSampler((32, 32), mode="pair", **kw).sample(1, range(320))
    x = torch.log1p(lab.clamp_min(0))
    lo, hi = (torch.quantile(x.flatten(1), q, dim=1)[:, None, None, None] for q in (0.01, 0.99))
    x = (x - lo) / (hi - lo)
    u = torch.as_tensor(np.asarray(prm["u_iso"], dtype=np.float32))
    dl = pair_dataloaders(x[:256], ideal[:256], u[:256], valid_idx=np.arange(224, 256), bs=16, device="cpu")
    set_seed(1, reproducible=True)
    tr = fit_translator(dl, pix2pix_unet(1, 1, 32, ngf=16, norm="instance"), patchgan(2, ndf=16, norm="instance"),
                        reader=ccnn, pretrain_epochs=8, epochs=2, adv_loss="vanilla", l1_weight=0.0,
                        extra_losses={"l2": (l2_term(), 10.0), "physics": (physics_term(ccnn), 5.0 / float(ccnn.std))})
    g = translate(tr, x[256:], progress=False)
    with torch.no_grad(): read_g, read_ideal = ccnn(g).numpy()[:, 0], ccnn(ideal[256:]).numpy()[:, 0]
    return dict(g=g, ideal=ideal[256:], u=u[256:].numpy(), read_g=read_g, read_ideal=read_ideal, u_range=u_range)


def test_translations_are_in_the_ccnn_domain(gan_cnn):
    r = gan_cnn
    lo, hi = r["u_range"]
    span = hi - lo
    out = (r["read_g"] < lo - 0.1 * span) | (r["read_g"] > hi + 0.1 * span)
    assert out.mean() < 0.1, f"{out.mean():.0%} of the CCNN's readings of G(lab) fall outside its training range"
    # intensity level of the ideal images (the CCNN saw no other): per-image means within 30 %
    ratio = r["g"].mean((1, 2, 3)) / r["ideal"].mean((1, 2, 3))
    assert float((ratio - 1).abs().median()) < 0.3, ratio


def test_gan_cnn_readings_are_not_one_value(gan_cnn):
    "The readings of held-out translations spread over a fifth of the spread of the CCNN's readings of their ideal targets."
    r = gan_cnn
    assert np.std(r["read_g"]) > 0.2 * np.std(r["read_ideal"]), (np.std(r["read_g"]), np.std(r["read_ideal"]))
