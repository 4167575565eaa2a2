"Physics and contract tests of diffnb.sim.detector (instrument/detector model)."
import math

import numpy as np
import pytest
import torch

from diffnb.core import DiffnbValueError, torch_rng
from diffnb.sim.detector import (LabDomain, bad_pixels, beam_stop_mask, central_beam, distort, gain_map, psf_blur,
                                 radius_map, readout_noise, saturate, scale_to_dose, shot_noise, substrate_rings)


def test_gaussian_beam_total_matches_analytic():
    # 2-D Gaussian of height A and width σ integrates to 2πσ²A
    out = central_beam(torch.zeros(3, 81, 81), torch.tensor([1., 2., 5.]), torch.tensor([2., 3., 4.]), center=(40., 40.))
    np.testing.assert_allclose(out.sum((-2, -1)).numpy(), 2 * np.pi * np.array([4., 9., 16.]) * [1, 2, 5], rtol=1e-4)


def test_psf_blur_preserves_total_and_variance():
    d = torch.zeros(3, 61, 61); d[:, 30, 30] = 1
    s = torch.tensor([0.8, 1.5, 3.0])
    b = psf_blur(d, s)
    np.testing.assert_allclose(b.sum((-2, -1)).numpy(), 1.0, rtol=1e-5)
    x = torch.arange(61.) - 30
    var = (b.sum(-2) * x ** 2).sum(-1)
    np.testing.assert_allclose(var.numpy(), (s ** 2).numpy(), rtol=0.02)


def test_psf_blur_matches_scipy():
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(0)
    a = rng.random((40, 50)).astype(np.float32)
    ours = psf_blur(torch.from_numpy(a), 1.7).numpy()
    ref = gaussian_filter(a.astype(np.float64), 1.7, mode="nearest", truncate=4.0)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_poisson_variance_equals_mean_and_dose_scaling():
    ideal = radius_map(torch.zeros(128, 128)).neg().exp() + 0.5     # any positive image
    for dose in (5., 50.):
        ex = scale_to_dose(ideal.expand(4, 128, 128), dose)
        c = shot_noise(ex, [torch_rng(3, i) for i in range(4)])
        assert abs(float(c.mean()) - dose) < 0.02 * dose               # total intensity scales with dose
        resid = (c - ex)
        # variance of (counts - expectation) equals the expectation: sum over pixels
        ratio = float((resid ** 2).sum() / ex.sum())
        assert abs(ratio - 1) < 0.03


def test_beam_stop_arm_direction():
    m = beam_stop_mask(torch.zeros(101, 101), 5., center=(50., 50.), arm_angle_rad=math.pi / 4, arm_width_px=3.)
    assert m[50 + 30, 50 + 30] and not m[50 - 30, 50 - 30] and not m[50 + 30, 50 - 30]


def test_substrate_ring_radius_uses_calibration():
    out = substrate_rings(torch.zeros(201, 201), 1., 200., center=(100., 100.), s_peaks=(0.25,), s_widths=(0.01,), weights=(1.,))
    assert int(out[100, 100:].argmax()) == 50


def test_distort_ellipticity_axes():
    r = radius_map(torch.zeros(121, 121))
    ring = ((r - 40).abs() < 1.2).float()
    d = distort(ring, ellipticity=0.1, angle_rad=math.pi / 2)    # long axis along y
    col = torch.nonzero(d[:, 60] > 0.5).flatten().float()
    row = torch.nonzero(d[60] > 0.5).flatten().float()
    assert abs(float(col.max() - 60) - 42) < 1.5 and abs(float(row.max() - 60) - 38) < 1.5


def test_gain_readout_badpixels_saturation():
    g = gain_map((256, 256), 0.03, 10., torch_rng(0, 0))
    assert abs(float(g.std()) - 0.03) < 0.005
    rn = readout_noise(torch.zeros(2, 200, 200), torch.tensor([1., 4.]), [torch_rng(0, i) for i in range(2)])
    np.testing.assert_allclose(rn.std((-2, -1)).numpy(), [1., 4.], rtol=0.03)
    bp = bad_pixels(torch.ones(300, 300), 0.05, 0., generators=torch_rng(0, 1))
    assert abs(float((bp == 0).float().mean()) - 0.05) < 0.005
    assert float(saturate(torch.full((2, 2), 10.), 4.).max()) == 4.


def test_lab_domain_reproducible_and_batch_independent():
    ideal = torch.exp(-0.5 * ((radius_map(torch.zeros(4, 64, 64)) - 20) / 1.5) ** 2) + 0.05
    lab = LabDomain()
    a, pa = lab(ideal, 11, [3, 4, 5, 6])
    b, pb = lab(ideal[[2, 0]], 11, [5, 3])
    torch.testing.assert_close(b[0], a[2], rtol=0, atol=0)
    torch.testing.assert_close(b[1], a[0], rtol=0, atol=0)
    assert pb["dose_e_per_px"][0] == pa["dose_e_per_px"][2]
    c, _ = lab(ideal, 12, [3, 4, 5, 6])
    assert not torch.equal(a, c)
    lo, hi = lab.dose_e_per_px
    assert ((pa["dose_e_per_px"] >= lo) & (pa["dose_e_per_px"] <= hi)).all()


def test_lab_domain_fixed_parameters_noise_free_limit():
    # disabling every effect but dose and shot noise: counts/dose reproduce the normalised ideal image on average
    off = dict(center_shift_px=(0, 0), ellipticity=(0, 0), substrate=(0, 0), background=(0, 0), halo=(0, 0),
               beam=(0, 0), stop_radius_px=(0, 0), stop_arm_width_px=(0, 0), psf_sigma_px=(0, 0), gain_sigma=(0, 0),
               readout_e=(0, 0), dead_fraction=(0, 0), hot_fraction=(0, 0), dose_e_per_px=(1e4, 1e4))
    ideal = torch.exp(-0.5 * ((radius_map(torch.zeros(1, 64, 64)) - 20) / 3) ** 2) + 0.2
    out, _ = LabDomain(**off)(ideal, 0, [0])
    ref = ideal / ideal.mean() * 1e4
    assert float(((out - ref) / ref.sqrt()).std()) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("call, msg", [
    (lambda: psf_blur(torch.zeros(4, 4), -1.), "sigma_px must be non-negative"),
    (lambda: scale_to_dose(torch.zeros(4, 4), 10.), "positive mean"),
    (lambda: shot_noise(-torch.ones(3, 3)), "non-negative"),
    (lambda: central_beam(torch.zeros(4, 4), 1., 1., kind="bessel"), "kind must be one of"),
    (lambda: LabDomain(ellipticity=(0., 0.9)), "ellipticity"),
    (lambda: radius_map(torch.zeros(0, 5)), "non-empty"),
    (lambda: LabDomain().apply(torch.full((1, 8, 8), float("nan")), {}), "finite"),
])
def test_bad_inputs(call, msg):
    with pytest.raises(DiffnbValueError, match=msg):
        call()
