"Tests of diffnb.analysis: radial profiles vs a brute-force loop, ΔB and T recovery from simulated Bi images."
import math

import numpy as np
import pytest
import torch

from diffnb.analysis import (debye_waller_delta_b, outlier_mask, radial_profile, ring_intensities,
                             temperature_series)
from diffnb.core import DiffnbValueError
from diffnb.scattering import bismuth_b_iso, bismuth_temperature
from diffnb.sim.detector import LabDomain, beam_stop_mask
from diffnb.sim.powder import PowderRings, bismuth_atoms

PPIA = 128.0


@pytest.fixture(scope="module")
def rings():
    return PowderRings(bismuth_atoms(), 100.0, s_max=1.2)


def test_radial_profile_matches_brute_force_loop():
    rng = np.random.default_rng(1)
    img = rng.random((2, 37, 41))
    mask = rng.random((37, 41)) < 0.1
    cy, cx = 17.3, 21.8
    r, prof, n = radial_profile(torch.from_numpy(img), center=(cy, cx), mask=torch.from_numpy(mask), bin_width_px=2.0)
    ref = np.zeros((2, len(r))); cnt = np.zeros(len(r))
    for i in range(37):                  # the independent, obvious implementation
        for j in range(41):
            if mask[i, j]: continue
            k = int(math.hypot(i - cy, j - cx) / 2.0)
            if k < len(r): ref[:, k] += img[:, i, j]; cnt[k] += 1
    ok = cnt > 0
    np.testing.assert_allclose(prof.numpy()[:, ok], ref[:, ok] / cnt[ok], rtol=1e-12)
    np.testing.assert_array_equal(n.numpy(), cnt)


def _ideal_series(rings, temps, shape=(256, 256)):
    b = torch.as_tensor(bismuth_b_iso(np.asarray(temps, dtype=float)))
    return rings.image(b_iso=b, shape=shape, pixels_per_inv_angstrom=PPIA, fwhm=0.02)


def test_delta_b_and_t_from_noise_free_images_within_1_percent(rings):
    temps = np.array([295., 400., 550., 800.])
    imgs = _ideal_series(rings, temps)
    b = bismuth_b_iso(temps)
    s_g = rings.s_g[(rings.s_g > 0.25) & (rings.s_g < 0.95)]
    I, s_fit = ring_intensities(imgs, s_g, PPIA, fwhm=0.02, s_range=(0.25, 0.95))
    strong = I[0].numpy() > 0.04 * float(I[0].max())
    dB = debye_waller_delta_b(I[1:, strong], I[0, strong], s_fit[strong], fit_scale=False)
    np.testing.assert_allclose(dB, b[1:] - b[0], rtol=0.01)
    T = temperature_series(imgs[1:], imgs[0], rings, 295., PPIA, fwhm=0.02)
    np.testing.assert_allclose(T, temps[1:], rtol=0.01)
    # Eq. 1 with a single ring, (012)
    i012 = int(np.argmin(abs(s_fit - 0.3049)))
    dB1 = debye_waller_delta_b(I[1:, i012:i012 + 1], I[0, i012:i012 + 1], s_fit[i012:i012 + 1], fit_scale=False)
    np.testing.assert_allclose(dB1, b[1:] - b[0], rtol=0.01)


def test_t_from_noisy_lab_like_images_within_10_percent(rings):
    # one instrument for the whole series, independent noise per frame, dose 500 e-/px
    temps = np.array([295., 350., 450., 600.])
    imgs = _ideal_series(rings, temps)
    lab = LabDomain(dose_e_per_px=(500., 500.))
    p = lab.params_table(3, [0])
    frames = {k: np.repeat(v, len(temps)) for k, v in p.items()}
    frames["noise_seed"] = np.arange(len(temps))
    noisy = lab.apply(imgs, frames, level=float(imgs[0].mean()))
    c = (127.5 + float(p["shift_y_px"][0]), 127.5 + float(p["shift_x_px"][0]))
    T = temperature_series(noisy[1:], noisy[0], rings, 295., PPIA, center=c, fwhm=None, screen_outliers=True)
    np.testing.assert_allclose(T, temps[1:], rtol=0.10)
    dB = bismuth_b_iso(T) - bismuth_b_iso(295.)
    np.testing.assert_allclose(dB, bismuth_b_iso(temps[1:]) - bismuth_b_iso(295.), rtol=0.10, atol=0.05)


def test_masked_beam_stop_does_not_bias(rings):
    imgs = _ideal_series(rings, [295., 500.])
    m = beam_stop_mask(imgs[0], 40., arm_angle_rad=0.5, arm_width_px=30.)
    spoiled = imgs.clone(); spoiled[:, m] = 1e3
    T = temperature_series(spoiled[1:], spoiled[0], rings, 295., PPIA, mask=m, fwhm=0.02)
    np.testing.assert_allclose(T, [500.], rtol=0.01)


def test_outlier_mask_finds_hot_and_dead_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((2, 50, 50), 300.), generator=g)
    x[0, 5, 5] = 1e5; x[1, 40, 7] = 0
    m = outlier_mask(x)
    assert m[5, 5] and m[40, 7] and int(m.sum()) == 2


def test_eq1_single_ring_analytic():
    s = np.array([0.44])
    np.testing.assert_allclose(debye_waller_delta_b(np.exp(-0.6 * s ** 2 / 2), [1.0], s, fit_scale=False), 0.6)
    # T round trip through Gao & Peng
    np.testing.assert_allclose(bismuth_temperature(bismuth_b_iso(420.)), 420., rtol=1e-9)


@pytest.mark.parametrize("call, msg", [
    (lambda: radial_profile(torch.full((8, 8), float("nan"))), "finite"),
    (lambda: radial_profile(torch.zeros(0, 8)), "non-empty"),
    (lambda: radial_profile(torch.zeros(8, 8), mask=torch.zeros(4, 4, dtype=torch.bool)), "mask must be"),
    (lambda: radial_profile(torch.zeros(8, 8), center=(1., 2., 3.)), "center must be"),
    (lambda: ring_intensities(torch.zeros(16, 16), [], 10.), "at least one ring"),
    (lambda: debye_waller_delta_b([1., 0.], [1., 1.], [0.3, 0.4]), "positive ring intensities"),
    (lambda: debye_waller_delta_b([1., 1.], [1., 1.], [0.3]), "last axis of length 1"),
    (lambda: temperature_series(torch.zeros(2, 16, 16), torch.zeros(8, 8), [0.3, 0.4]), "reference must be"),
])
def test_bad_inputs(call, msg):
    with pytest.raises(DiffnbValueError, match=msg):
        call()
