"Physics tests of diffnb.sim.powder against hand-written structure factors, the hexagonal metric and analytic limits."
import itertools
import math

import numpy as np
import pytest
import torch

from diffnb.core import DiffnbValueError, relativistic_gamma
from diffnb.scattering import b_from_u, bismuth_b_iso, electron_form_factor
from diffnb.sim.powder import (BI_A, BI_C, BI_Z, BismuthRingSampler, PowderRings, bismuth_atoms, ring_image,
                               ring_profile)


def d_hex(h, k, l):
    "d-spacing from the hexagonal metric (independent of the cell-matrix code path)."
    return (4 * (h * h + h * k + k * k) / (3 * BI_A ** 2) + l * l / BI_C ** 2) ** -0.5


@pytest.fixture(scope="module")
def rings():
    return PowderRings(bismuth_atoms(), 100.0, s_max=1.0)


def brute_force_ring_f2(atoms, hkl0, gamma, tol=1e-6):
    "Σ|F|² over all hkl with |g| = |g(hkl0)|: explicit Python loops over reflections and atoms."
    rec = np.linalg.inv(np.asarray(atoms.cell)).T
    s0 = np.linalg.norm(np.asarray(hkl0) @ rec)
    frac = atoms.get_scaled_positions()
    f = electron_form_factor("Bi", s0)
    total, n = 0.0, 0
    for h, k, l in itertools.product(range(-6, 7), repeat=3):
        if abs(np.linalg.norm(np.array([h, k, l]) @ rec) - s0) > tol: continue
        F = 0j
        for x in frac:
            F += gamma * f * np.exp(2j * np.pi * (h * x[0] + k * x[1] + l * x[2]))
        total += abs(F) ** 2; n += 1
    return s0, total


@pytest.mark.parametrize("hkl", [(0, 0, 3), (0, 1, 2), (1, 0, 4), (1, 1, 0), (2, 0, 2), (0, 0, 6)])
def test_ring_structure_factors_match_direct_sum(rings, hkl):
    s0, f2 = brute_force_ring_f2(bismuth_atoms(), hkl, rings.gamma)
    i = int(np.argmin(abs(rings.s_g - s0)))
    assert abs(rings.s_g[i] - s0) < 1e-9
    np.testing.assert_allclose(rings.f2_static[i], f2, rtol=1e-9)


def test_003_closed_form(rings):
    # R-3m, 6 Bi at ±z (+ centring): F(003) = 6 γ f cos(6πz)
    s = 3 / BI_C
    i = int(np.argmin(abs(rings.s_g - s)))
    F = 6 * rings.gamma * electron_form_factor("Bi", s) * math.cos(6 * math.pi * BI_Z)
    np.testing.assert_allclose(rings.f2_static[i], 2 * F ** 2, rtol=1e-10)


def test_first_ring_positions_in_profile_and_image(rings):
    targets = [1 / d_hex(0, 1, 2), 1 / d_hex(1, 0, 4), 1 / d_hex(1, 1, 0)]
    np.testing.assert_allclose([1 / t for t in targets], [3.28, 2.37, 2.27], atol=0.006)
    s = torch.linspace(0.2, 0.5, 30001, dtype=torch.float64)
    I = rings.profile(s, b_iso=1.1, fwhm=0.004, profile="gaussian").double()
    for t in targets:
        win = (s > t - 0.008) & (s < t + 0.008)
        peak = float(s[win][torch.argmax(I[win])])
        assert abs(peak - t) / t < 0.002
    ppia = 128.0
    img = rings.image(b_iso=1.1, shape=(255, 255), pixels_per_inv_angstrom=ppia, fwhm=0.006, profile="gaussian")
    row = img[127, 127:]                    # centre on pixel (127, 127): pixel k is at r = k
    local_max = torch.nonzero((row[1:-1] > row[:-2]) & (row[1:-1] > row[2:])).flatten().numpy() + 1
    for t in targets:
        r0 = t * ppia
        assert np.min(abs(local_max - r0)) <= 1.0, (r0, local_max)


def test_debye_waller_ratio_isolated_peaks(rings):
    u = torch.tensor([0.0, 0.01, 0.03, 0.06])
    for hkl in [(0, 1, 2), (2, 0, 2), (0, 2, 4)]:
        sg = 1 / d_hex(*hkl)
        s = torch.tensor([sg], dtype=torch.float64)
        I = rings.profile(s, u_iso=u, fwhm=0.004, profile="gaussian").double()[:, 0]
        b = b_from_u(u.double())
        np.testing.assert_allclose((I / I[0]).numpy(), torch.exp(-b * sg ** 2 / 2).numpy(), rtol=1e-3)


def test_lorentz_and_relativistic_factors():
    r100 = PowderRings(bismuth_atoms(), 100.0, s_max=0.6)
    r300 = PowderRings(bismuth_atoms(), 300.0, s_max=0.6)
    w1, w0 = r100.ring_weights(b_iso=0.0), r100.ring_weights(b_iso=0.0, lorentz=False)
    np.testing.assert_allclose((w1 / w0).numpy(), r100.s_g ** -2, rtol=1e-12)
    # |F|² ∝ γ² (relativistic mass correction of the scattering amplitude)
    ratio = (relativistic_gamma(300.0) / relativistic_gamma(100.0)) ** 2
    np.testing.assert_allclose(r300.f2_static[r300.f2_static > 1], r100.f2_static[r100.f2_static > 1] * ratio, rtol=1e-12)


def test_per_site_b_equals_override(rings):
    at = bismuth_atoms(b_iso=1.3)
    r = PowderRings(at, 100.0, s_max=1.0)
    s = torch.linspace(0.1, 0.9, 500, dtype=torch.float64)
    np.testing.assert_allclose(r.profile(s).numpy(), rings.profile(s, b_iso=1.3).numpy(), rtol=1e-5)


def test_occupancy_scales_intensity():
    at = bismuth_atoms(); at.arrays["occupancy"] = np.full(len(at), 0.5)
    r_half, r_full = PowderRings(at, 100., s_max=0.6), PowderRings(bismuth_atoms(), 100., s_max=0.6)
    np.testing.assert_allclose(r_half.f2_static, 0.25 * r_full.f2_static, rtol=1e-12, atol=1e-20)


def test_parametrizations_agree_roughly():
    s = torch.linspace(0.25, 0.9, 400, dtype=torch.float64)
    a = ring_profile(bismuth_atoms(), s, b_iso=1.1, parametrization="lobato")
    b = ring_profile(bismuth_atoms(), s, b_iso=1.1, parametrization="kirkland")
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0.03, atol=1e-3 * float(a.max()))


def test_image_matches_profile_at_pixels(rings):
    ppia = 100.0
    s = torch.arange(0, 0.9, 0.0025, dtype=torch.float64)
    prof = rings.profile(s, b_iso=torch.tensor([0.5, 2.0]))
    img = ring_image(prof, s, (121, 121), ppia, center=(60., 60.))
    assert img.shape == (2, 121, 121) and img.dtype == torch.float32
    # pixels on the axes sit exactly on grid points of the profile (r = 0.25 px multiples → s grid)
    for k in (20, 31, 44, 53):
        np.testing.assert_allclose(img[:, 60, 60 + k].numpy(), prof[:, int(round(k / ppia / 0.0025))].numpy(), rtol=1e-5)
    # elliptical distortion: radius stretched by 1+ε/2 along x
    e_img = ring_image(prof[0], s, (121, 121), ppia, center=(60., 60.), ellipticity=0.1)
    np.testing.assert_allclose(float(e_img[60, 60 + 42]), float(ring_image(prof[0], s, (121, 121), ppia, center=(60., 60.))[60, 100]), rtol=1e-4)


def test_batched_profiles_and_images_consistent(rings):
    s = torch.linspace(0.1, 0.9, 300, dtype=torch.float64)
    b = torch.tensor([0.3, 1.1, 2.5])
    batch = rings.profile(s, b_iso=b)
    for i in range(3):
        torch.testing.assert_close(batch[i], rings.profile(s, b_iso=float(b[i])), rtol=1e-6, atol=0)


def test_sampler_protocol_and_reproducibility():
    smp = BismuthRingSampler(shape=(48, 48), mode="lab", target="u_iso", pixels_per_inv_angstrom=30.)
    assert smp.image_shape == (1, 48, 48) and smp.task == "regression" and smp.target_shape == ()
    assert smp.name and smp.version and smp.classes is None
    import json; json.dumps(smp.config)
    x, y, p = smp.sample(7, [0, 1, 2, 3])
    assert x.shape == (4, 1, 48, 48) and x.dtype == torch.float32 and y.dtype == torch.float32
    assert all(isinstance(v, np.ndarray) and v.shape == (4,) for v in p.values())
    lo, hi = smp.config["u_iso_range"]
    assert ((p["u_iso"] >= lo) & (p["u_iso"] <= hi)).all()
    np.testing.assert_allclose(y.numpy(), p["u_iso"], rtol=1e-6)
    x2, y2, p2 = smp.sample(7, [3, 1])
    torch.testing.assert_close(x2[0], x[3], rtol=0, atol=0)
    torch.testing.assert_close(x2[1], x[1], rtol=0, atol=0)
    x3, _, _ = smp.sample(8, [0])
    assert not torch.equal(x3[0], x[0])


def test_sampler_temperature_target_and_pairs():
    smp = BismuthRingSampler(shape=(32, 32), mode="pair", target="temperature_k", pixels_per_inv_angstrom=20.)
    x, y, p = smp.sample(0, [0, 1])
    assert smp.task == "image2image" and y.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(p["b_iso"], bismuth_b_iso(p["temperature_k"]), rtol=1e-12)
    # the target is the ideal image of the same sample
    ideal, _, _ = BismuthRingSampler(shape=(32, 32), mode="ideal", target="temperature_k",
                                     pixels_per_inv_angstrom=20.).sample(0, [0, 1])
    torch.testing.assert_close(y, ideal)
    # hotter samples have weaker high-s rings
    assert float(ideal[np.argmax(p["temperature_k"])].sum()) < float(ideal[np.argmin(p["temperature_k"])].sum())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_matches_cpu(rings):
    b = torch.tensor([0.5, 1.5])
    cpu = rings.image(b_iso=b, shape=(128, 128))
    gpu = rings.image(b_iso=b, shape=(128, 128), device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-6 * float(cpu.max()))


@pytest.mark.parametrize("call, msg", [
    (lambda r: r.profile(torch.linspace(0.1, 0.5, 5), b_iso=-0.5), "b_iso must be non-negative"),
    (lambda r: r.profile(torch.linspace(-0.1, 0.5, 5)), "s must be non-negative"),
    (lambda r: r.profile(torch.linspace(0.1, 0.5, 5), b_iso=1., u_iso=0.01), "u_iso must be None"),
    (lambda r: r.profile(torch.linspace(0.1, 2.0, 5)), "s_max"),
    (lambda r: PowderRings(bismuth_atoms()[:0]), "at least one atom"),
    (lambda r: r.image(b_iso=1., shape=(0, 16)), "H must be an integer >= 1"),
    (lambda r: ring_image(torch.ones(5), torch.linspace(0, 1, 4)), "s must be"),
    (lambda r: ring_profile(bismuth_atoms(), [0.1, 0.2], energy_kev=-5), "energy_kev must be positive"),
    (lambda r: r.profile(torch.linspace(0.1, 0.5, 5), fwhm=0.), "fwhm must be positive"),
    (lambda r: BismuthRingSampler(u_iso_range=(0.05, 0.01)), "lo <= hi"),
])
def test_bad_inputs(rings, call, msg):
    with pytest.raises(DiffnbValueError, match=msg):
        call(rings)
