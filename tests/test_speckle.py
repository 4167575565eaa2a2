"Tests of diffnb.sim.speckle: analytic speckle vs independent references, disk placement, baseline, sampler."
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.special import j1

from diffnb.core import DiffnbValueError
from diffnb.sim.speckle import (MOMENT_VARIANTS, DiskSystem, NearestClassMean, SpeckleSampler, disk_system,
                                first_moment, k_axes, photon_noise, preprocess, raster_speckle, speckle,
                                study_k_step)


def airy_intensity(k, R):
    "(πR² 2J₁(kR)/(kR))², independent of the library (scipy)."
    kr = np.maximum(k * R, 1e-300)
    return (np.pi * R**2 * np.where(k > 0, 2 * j1(kr) / kr, 1.0))**2


@pytest.mark.parametrize("poly", [0.0, 1 / 3])
def test_analytic_matches_supersampled_raster_fft(poly):
    # the study's route (rasterise + zero-padded FFT), 4× supersampled, on a 400-px box: < 1 % relative L2 (k ≠ 0)
    d = disk_system(6, seed=4, box=400.0, total_area=2 * np.pi * 18.0**2, polydispersity=poly)
    ref = raster_speckle(d, n=257, supersample=4)
    ana = speckle(d, n=257, dtype=torch.float64).numpy()
    keep = np.ones(ana.shape, bool); keep[128, 128] = False
    assert np.linalg.norm((ana - ref)[keep]) / np.linalg.norm(ana[keep]) < 0.01


def test_single_disk_is_airy_on_both_grids():
    d = DiskSystem(np.array([[321.0, 1500.0]]), np.array([75.0]), 2000.0)
    for grid in ("centered", "quadrant"):
        kv = k_axes(129, grid=grid)
        k = np.hypot(*np.meshgrid(kv, kv))
        np.testing.assert_allclose(speckle(d, n=129, grid=grid, dtype=torch.float64).numpy(), airy_intensity(k, 75.0),
                                   rtol=1e-9, atol=1e-12 * (np.pi * 75.0**2)**2)


@pytest.mark.parametrize("poly", [0.0, 0.3])
def test_forward_intensity_is_total_area_squared(poly):
    for i in range(3):
        d = disk_system(3 + 5 * i, seed=9, index=i, polydispersity=poly)
        I0 = speckle(d, n=65, dtype=torch.float64)[32, 32].item()
        assert I0 == pytest.approx(d.total_area**2, rel=1e-9)
        assert d.total_area == pytest.approx(2 * math.pi * 90.0**2, rel=1e-12)


def test_translation_invariance_and_friedel():
    d = disk_system(9, seed=1, polydispersity=1 / 3)
    shifted = DiskSystem(d.centres + np.array([37.5, -12.25]), d.radii, d.box)  # positions only enter via a phase
    a = speckle(d, dtype=torch.float64); b = speckle(shifted, dtype=torch.float64)
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-8, atol=1e-10 * a.max().item())
    np.testing.assert_allclose(a.numpy(), a.flip(-1).flip(-2).numpy(), rtol=1e-9, atol=1e-10 * a.max().item())
    # complex contrast differing between disks breaks Friedel symmetry
    c = speckle(d, contrast=np.exp(1j * np.arange(9)), dtype=torch.float64)
    assert (c - c.flip(-1).flip(-2)).abs().max() > 1e-2 * c.max()


def test_finufft_matches_matrix_dft_many_disks():
    d = disk_system(300, seed=2, total_area=0.2 * 2000.0**2)
    for grid in ("centered", "quadrant"):
        a = speckle(d, n=101, grid=grid, dtype=torch.float64)
        b = speckle(d, n=101, grid=grid, method="finufft", dtype=torch.float64)
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-8 * a.max().item())


def test_study_grid_step():
    assert study_k_step() == pytest.approx(2 * math.pi / 18001)
    assert k_axes(257, k_step=study_k_step())[-1] == pytest.approx(128 * 2 * math.pi / 18001)


@settings(max_examples=25, deadline=None)
@given(n_disks=st.integers(1, 40), poly=st.floats(0.0, 0.5), seed=st.integers(0, 2**31),
       box=st.floats(200.0, 3000.0), coverage=st.floats(0.001, 0.3))
def test_disk_system_properties(n_disks, poly, seed, box, coverage):
    area = coverage * box**2
    try:
        d = disk_system(n_disks, seed, box=box, total_area=area, polydispersity=poly, min_gap=1.0, max_attempts=20000)
    except DiffnbValueError as e:  # a packing may be impossible to place, but then the error says so
        assert "can be placed" in str(e) or "fits in the box" in str(e)
        return
    assert d.n_disks == n_disks and (d.radii > 0).all()
    assert d.total_area == pytest.approx(area, rel=1e-10)                      # area exact
    assert (d.centres - d.radii[:, None] >= 0).all() and (d.centres + d.radii[:, None] <= box).all()  # inside
    if n_disks > 1:                                                            # no overlaps, gap respected
        dist = np.linalg.norm(d.centres[:, None] - d.centres[None], axis=-1)
        gap = dist - d.radii[:, None] - d.radii[None]
        np.fill_diagonal(gap, np.inf)
        assert gap.min() >= 1.0 - 1e-9


def test_disk_system_many_disks_uses_grid_and_stays_valid():
    d = disk_system(800, seed=3, total_area=0.3 * 2000.0**2, polydispersity=1 / 3, min_gap=0.5)  # > 256: grid
    from scipy.spatial import cKDTree
    pairs = cKDTree(d.centres).query_pairs(2 * d.radii.max() + 0.5, output_type="ndarray")
    gap = np.linalg.norm(d.centres[pairs[:, 0]] - d.centres[pairs[:, 1]], axis=1) - d.radii[pairs].sum(1)
    assert gap.min() >= 0.5 - 1e-9


def test_first_moment_grows_with_n_disks_on_average():
    # fixed total area: more disks → smaller disks → wider Airy envelope → larger ⟨|k|⟩ (all four variants)
    patterns = {N: speckle([disk_system(N, 1, index=i) for i in range(6)]) for N in (2, 6, 12, 20)}
    m = np.array([[first_moment(patterns[N], v).mean().item() for v in MOMENT_VARIANTS] for N in patterns])
    assert (np.diff(m, axis=0) > 0).all(), m
    np.testing.assert_allclose(m[:, 1], m[:, 3], rtol=1e-9)  # min–max scaling leaves the ratio unchanged


def test_nearest_class_mean_beats_chance_on_first_moment():
    s = SpeckleSampler(n_min=2, n_max=7, n=129)
    _, y, p = s.sample(0, range(180))
    _, yt, pt = s.sample(1, range(120))
    acc = NearestClassMean().fit(p["first_moment"], y.numpy()).score(pt["first_moment"], yt.numpy())
    assert acc > 3 / 6  # chance is 1/6


def test_preprocess_and_noise():
    I = speckle(disk_system(5, 0), n=65)
    z = preprocess(I)
    assert abs(z.mean().item()) < 1e-5 and abs(z.std().item() - 1) < 1e-5
    counts = photon_noise(I.double(), fluence=1e4, seed=3)
    expected = I.double().sum().item() * 1e4 * (math.pi / 2000 / (2 * math.pi))**2
    assert abs(counts.sum().item() - expected) < 5 * math.sqrt(expected)


def test_sampler_protocol_and_reproducibility():
    s = SpeckleSampler(polydispersity=1 / 3, n=65, fluence=1e6)
    assert s.name == "speckle.poly" and s.task == "classification" and len(s.classes) == 19
    x, y, p = s.sample(7, [4, 5, 6])
    x2, y2, _ = s.sample(7, [6, 4])
    assert x.shape == (3, *s.image_shape) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[2], x2[0]) and torch.equal(x[0], x2[1]) and y[2] == y2[0]
    assert all(len(v) == 3 for v in p.values())
    assert ((p["n_disks"] >= 2) & (p["n_disks"] <= 20)).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_disks must be an integer >= 1"): disk_system(0)
    with pytest.raises(ValueError, match="RSA jamming"): disk_system(10, box=100.0, total_area=6000.0)
    with pytest.raises(ValueError, match="can be placed"): disk_system(300, box=100.0, total_area=5000.0, max_attempts=500)
    d = disk_system(3, 0)
    with pytest.raises(ValueError, match="n must be an integer >= 3"): speckle(d, n=2)
    bad = d.centres.copy(); bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="centres must be finite"): speckle((bad, d.radii))
    with pytest.raises(ValueError, match="radii must be non-negative"): speckle((d.centres, -d.radii))
    with pytest.raises(ValueError, match="grid must be one of"): speckle(d, grid="polar")
    with pytest.raises(ValueError, match="k_step"): raster_speckle(d, k_step=0.0123)


def test_complex_contrast_matches_finufft_and_brute_force():
    d = disk_system(5, seed=8, polydispersity=0.3)
    cj = np.exp(1j * np.array([0.0, 0.5, 1.0, 2.0, 3.0])) * np.array([1.0, 0.5, 2.0, 1.0, 0.7])
    kv = k_axes(33); KX, KY = np.meshgrid(kv, kv); K = np.hypot(KX, KY)
    A = sum(c * np.sqrt(airy_intensity(K, R)) * np.sign(np.where(K > 0, j1(np.maximum(K * R, 1e-300)), 1.0))
            * np.exp(-1j * (KX * x + KY * y)) for c, (x, y), R in zip(cj, d.centres, d.radii))
    for method in ("matrix", "finufft"):
        got = speckle(d, n=33, contrast=cj, method=method, complex_output=True, dtype=torch.float64).numpy()
        got = got * np.exp(-1j * (KX + KY) * d.box / 2)  # the library measures positions from the box centre
        np.testing.assert_allclose(got, A, rtol=0, atol=1e-9 * np.abs(A).max())


def test_study_protocol_radii_fixed_per_class_positions_fresh():
    from diffnb.sim.speckle import STUDY_CODE_TOTAL_AREA, STUDY_MARGIN, STUDY_TOTAL_AREA, study_radii
    s = SpeckleSampler(radii="per_class", radii_seed=11, n=17)
    assert s.name == "speckle.poly_study" and s.config["total_area"] == STUDY_CODE_TOTAL_AREA
    by_class = {}
    for seed in (0, 1):
        for i in range(120): d = s.disks(seed, i); by_class.setdefault(d.n_disks, []).append(d)
    assert len(by_class) == 19
    for N, ds in by_class.items():
        assert all(np.array_equal(d.radii, ds[0].radii) for d in ds)              # identical radii in every pattern
        np.testing.assert_allclose(sum(np.pi * ds[0].radii**2), STUDY_CODE_TOTAL_AREA, rtol=1e-12)  # exact area
        if len(ds) > 1: assert not np.allclose(ds[0].centres, ds[1].centres)     # positions are fresh
        for d in ds:  # centres in [90, L − 90], edges at least the 2-px gap apart
            assert d.centres.min() >= STUDY_MARGIN and d.centres.max() <= 2000 - STUDY_MARGIN
            gap = np.hypot(*(d.centres[:, None] - d.centres[None]).transpose(2, 0, 1)) - d.radii[:, None] - d.radii[None]
            assert (gap[~np.eye(N, dtype=bool)] >= 2.0 - 1e-9).all()
    # the code's area is π times the text's: Σr² = 2π·90²
    np.testing.assert_allclose(np.sum(study_radii(4, 11)**2), 2 * np.pi * 90.0**2, rtol=1e-12)
    t = SpeckleSampler(radii="per_class", radii_seed=11, total_area=STUDY_TOTAL_AREA, n=17)
    np.testing.assert_allclose(np.pi * np.sum(t.class_radii[9]**2), STUDY_TOTAL_AREA, rtol=1e-12)
    np.testing.assert_allclose(t.class_radii[9], s.class_radii[9] / np.sqrt(np.pi), rtol=1e-12)  # same draw, scaled
    other = SpeckleSampler(radii="per_class", radii_seed=12, n=17)
    assert all(not np.allclose(other.class_radii[N], s.class_radii[N]) for N in range(2, 21))


def test_study_radii_follow_the_area_coefficient_draw():
    from diffnb.sim.speckle import study_radii
    # c_i ~ N(3, 1) kept if positive: within a class the areas r_i² / mean(r²) = c_i / mean(c); pooled over many
    # classes their spread is σ/mean(c) = 1/3 (less the 1/N of the class mean: √(1 − 1/N)/3 to first order)
    a = np.concatenate([study_radii(10, seed)**2 / np.mean(study_radii(10, seed)**2) for seed in range(2000)])
    assert abs(a.mean() - 1) < 1e-12
    assert abs(a.std() - np.sqrt(1 - 1 / 10) / 3) < 0.01
    with pytest.raises(ValueError, match="radii_seed must be an integer >= 0"): study_radii(3, -1)
    with pytest.raises(ValueError, match="total_area must be positive"): study_radii(3, 0, 0.0)


def test_fresh_radii_sampler_is_unchanged_by_the_study_protocol():
    # the registered fresh-radii samplers keep their recorded config (stores made before still match) and draw
    # fresh radii in every pattern of a class
    s = SpeckleSampler(polydispersity=1 / 3, n=17)
    assert s.name == "speckle.poly" and s.class_radii is None
    assert sorted(s.config) == sorted(["polydispersity", "n_min", "n_max", "n", "grid", "k_step", "box", "total_area",
                                       "min_gap", "block", "standardise", "fluence"])
    assert s.config["total_area"] == 2 * np.pi * 90.0**2
    ds = [d for d in (s.disks(0, i) for i in range(80)) if d.n_disks == 8]
    assert len(ds) >= 2 and not np.allclose(ds[0].radii, ds[1].radii)
    # a sample is the speckle of the disk system of its own stream (the placement of `disk_system`)
    from diffnb.core import numpy_rng
    rng = numpy_rng(4, 9); N = int(rng.integers(2, 21))
    d = disk_system(N, rng, polydispersity=1 / 3)
    np.testing.assert_array_equal(s.disks(4, 9).centres, d.centres)
    x = s.sample(4, [9])[0][0, 0]
    assert torch.equal(x, preprocess(speckle([d], n=17))[0])


def test_fresh_area_radii_are_the_study_draw_in_every_pattern():
    from diffnb.core import numpy_rng
    from diffnb.sim.speckle import STUDY_CODE_TOTAL_AREA, STUDY_MARGIN, area_coefficient_radii
    s = SpeckleSampler(radii="fresh_area", n=17)
    assert s.name == "speckle.poly_area" and s.class_radii is None and s.config["total_area"] == STUDY_CODE_TOTAL_AREA
    # sample (seed, index): N, then the study's area-coefficient draw, then the placement, all from the sample's stream
    rng = numpy_rng(4, 9); N = int(rng.integers(2, 21))
    r = area_coefficient_radii(rng, N)
    d = disk_system(N, rng, radii=r, margin=STUDY_MARGIN)
    got = s.disks(4, 9)
    np.testing.assert_array_equal(got.radii, r); np.testing.assert_array_equal(got.centres, d.centres)
    # radii differ between patterns of one class; the areas scatter as the coefficients N(3, 1): σ/mean = 1/3 less 1/N
    ds = [d for d in (s.disks(0, i) for i in range(400)) if d.n_disks == 12]
    assert len(ds) >= 10 and not np.allclose(np.sort(ds[0].radii), np.sort(ds[1].radii))
    a = np.concatenate([d.radii**2 / np.mean(d.radii**2) for d in ds])
    assert abs(a.std() - np.sqrt(1 - 1 / 12) / 3) < 0.04
    for d in ds: np.testing.assert_allclose(np.pi * np.sum(d.radii**2), STUDY_CODE_TOTAL_AREA, rtol=1e-12)
    with pytest.raises(ValueError, match="polydispersity"): SpeckleSampler(radii="fresh_area", polydispersity=0.1)
