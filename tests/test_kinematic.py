"""Physics tests of diffnb.sim.kinematic and diffnb.sim.mote2 against analytic limits and an independent direct sum.

The reference sums here use abTEM's Lobato table directly (not diffnb.scattering) and plain numpy loops.
"""
import math
from pathlib import Path

import abtem
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import chemical_symbols

from diffnb.core import DiffnbValueError
from diffnb.scattering import electron_form_factor
from diffnb.sim.kinematic import (add_vacancies, amorphize, apply_strain, crystallite, difference_channels, observe,
                                  pattern, random_strain, reciprocal_axis, thermal_displacements, excitation_qz)
from diffnb.sim.mote2 import (CLASSES, MoTe2Sampler, MoTe2VAESampler, load_mote2_cell, mote2_primitive, mote2_supercell,
                              phonon_displacements, phonon_fields, transformation_cell)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mote2"
_LOBATO = abtem.parametrizations.LobatoParametrization()


def f_e(z, s):
    "Electron form factor [Å] (diffnb.scattering; checked against abTEM in `test_form_factor_input`)."
    return np.asarray(electron_form_factor(int(z), np.asarray(s, float)))


def test_form_factor_input():
    # abTEM's own Lobato function agrees to ~1e-6 (it evaluates in lower precision; diffnb uses float64)
    s = np.linspace(0, 1.5, 31)
    for z in (42, 52):
        ab = _LOBATO.scattering_factor(chemical_symbols[z])(s**2)
        np.testing.assert_allclose(f_e(z, s), ab, rtol=2e-6)


def brute_force(atoms, gx, gy, qz=None):
    "Reference amplitude: explicit double sum over atoms and pixels (loop over atoms)."
    s = np.sqrt(gx**2 + gy**2 + (0 if qz is None else qz**2))
    out = np.zeros(np.shape(gx), complex)
    for z, r in zip(atoms.numbers, atoms.positions):
        ph = gx * r[0] + gy * r[1] + (0 if qz is None else qz * r[2])
        out += f_e(z, s) * np.exp(-2j * np.pi * ph)
    return out


@pytest.fixture(scope="module")
def hex2h():
    return mote2_primitive("2H")


def reciprocal(cell):
    return np.linalg.inv(cell.cell.array).T[:2, :2]


def first_order(cell):
    b1, b2 = reciprocal(cell)
    c = [b1, b2, -b1, -b2, b1 + b2, -b1 - b2, b1 - b2, b2 - b1]
    n = np.linalg.norm(c, axis=1)
    return np.array(c)[np.isclose(n, n.min(), rtol=1e-9)]


def test_package_data_matches_shared():
    if not SHARED.exists(): pytest.skip("shared data not present")
    ours = load_mote2_cell("2H")
    ref = ase.io.read(SHARED / "unit_cells" / "CONTCAR_2H", format="vasp")
    np.testing.assert_allclose(ours.positions, ref.positions)


def test_first_order_spots_on_hexagonal_lattice(hex2h):
    a = hex2h.cell.lengths()[0]
    g1 = 2 / (math.sqrt(3) * a)
    xtal = crystallite(hex2h, 100.0, "ellipse", rotation_deg=23.0)
    img = pattern(xtal, grid=261, s_max=1.3, dtype=torch.float64).numpy()
    g = reciprocal_axis(261, 1.3); ds = g[1] - g[0]
    gx, gy = np.meshgrid(g, g)
    r = np.hypot(gx, gy)
    from scipy.ndimage import maximum_filter
    peaks = (img == maximum_filter(img, 3)) & (r > 0.1) & (r < 1.5 * g1)
    top = np.argsort(np.where(peaks, img, 0).ravel())[-6:]
    np.testing.assert_allclose(r.ravel()[top], g1, atol=ds)
    ang = np.sort((np.degrees(np.arctan2(gy.ravel()[top], gx.ravel()[top])) - 23.0) % 60)
    assert np.ptp(ang) < 2 * np.degrees(ds / g1) + 1e-9 or np.ptp((ang + 30) % 60) < 2 * np.degrees(ds / g1)
    np.testing.assert_allclose(img, img[::-1, ::-1], rtol=1e-9, atol=1e-12 * img.max())  # Friedel


def test_spot_intensities_equal_unit_cell_structure_factor(hex2h):
    n = 10
    whole = hex2h.repeat((n, n, 1)); whole.pbc = False
    b1, b2 = reciprocal(hex2h)
    # a grid whose x axis passes through b1 (rotate b1 onto +x) with step |b1|/12
    ang = math.degrees(math.atan2(b1[1], b1[0]))
    w = whole.copy(); w.rotate(-ang, "z")
    gb = np.linalg.norm(b1)
    img = pattern(w, grid=49, s_max=2 * gb, eps=1e-12, dtype=torch.float64).numpy()
    # independent |F_cell(g)|² from a direct sum over the 3-atom cell, × n_cells²
    firsts = first_order(hex2h)
    f_cell = np.array([brute_force(hex2h, np.array(v[0]), np.array(v[1])) for v in firsts])
    i_ref = np.abs(f_cell) ** 2 * n**4
    np.testing.assert_allclose(i_ref, i_ref.mean(), rtol=1e-6)  # six equivalent first-order reflections
    np.testing.assert_allclose(img[24, 24 + 12], i_ref[0], rtol=1e-6)
    np.testing.assert_allclose(img[24, 24 - 12], i_ref[0], rtol=1e-6)


def test_nufft_and_dft_agree_with_brute_force(hex2h):
    x = crystallite(mote2_supercell("1T'"), 30.0, rotation_deg=41.0)
    x = thermal_displacements(x, np.random.default_rng(0), 0.01)
    g = reciprocal_axis(48, 1.3); gx, gy = np.meshgrid(g, g)
    ref = brute_force(x, gx, gy)
    tol = 1e-6 * np.abs(ref).max()
    for method in ("nufft", "dft"):
        amp = pattern(x, grid=48, s_max=1.3, method=method, amplitude=True, eps=1e-9, dtype=torch.complex128).numpy()
        np.testing.assert_allclose(amp, ref, atol=tol)
    # Ewald sphere (200 keV, tilted) against the explicit 3-D double sum
    qz = excitation_qz(48, 1.3, 200.0, (15.0, 5.0))
    ref3 = brute_force(x, gx, gy, qz)
    amp3 = pattern(x, 200.0, grid=48, s_max=1.3, ewald=True, tilt_mrad=(15.0, 5.0), eps=1e-9, dtype=torch.float64).numpy()
    np.testing.assert_allclose(amp3, np.abs(ref3) ** 2, atol=1e-6 * (np.abs(ref3) ** 2).max())


def test_batched_equals_single(hex2h):
    xs = [crystallite(hex2h, 30.0, rotation_deg=r) for r in (0.0, 10.0)]
    b = pattern(xs, grid=32, s_max=1.0)
    assert b.shape == (2, 32, 32)
    torch.testing.assert_close(b[1], pattern(xs[1], grid=32, s_max=1.0))


def test_strain_moves_spots_by_the_strain(hex2h):
    from diffnb.sim.kinematic import direct_sum
    whole = hex2h.repeat((40, 40, 1)); whole.pbc = False
    whole.positions -= whole.positions.mean(0)
    b1 = reciprocal(hex2h)[0]
    t = np.linspace(-0.012, 0.012, 25)  # fine patch around the predicted spot [1/Å], step 1e-3
    for strain in [(0.05, 0.0), (-0.03, 0.02, 0.01)]:
        st = apply_strain(whole, strain)
        f = np.eye(2) + np.array([[strain[0], strain[2] if len(strain) > 2 else 0],
                                  [strain[2] if len(strain) > 2 else 0, strain[1]]])
        g_new = np.linalg.inv(f).T @ b1  # reciprocal vectors transform with F^{-T}
        gx, gy = np.meshgrid(g_new[0] + t, g_new[1] + t)
        amp = np.abs(direct_sum(st, np.stack([gx.ravel(), gy.ravel()], 1)))
        k = int(np.argmax(amp))
        assert abs(gx.ravel()[k] - g_new[0]) <= 1e-3 + 1e-12 and abs(gy.ravel()[k] - g_new[1]) <= 1e-3 + 1e-12
        assert np.linalg.norm(g_new - b1) > 0.009  # the spot really moved (by ≫ the patch step)


def test_vacancies_reduce_bragg_by_occupancy_squared(hex2h):
    from diffnb.sim.kinematic import direct_sum
    whole = hex2h.repeat((16, 16, 1)); whole.pbc = False
    b1, b2 = reciprocal(hex2h)
    refl = np.array([b1, b1 + 2 * b2, 2 * b1])
    i0 = np.abs(direct_sum(whole, refl)) ** 2
    for p in (0.1, 0.5):
        iv = np.mean([np.abs(direct_sum(add_vacancies(whole, np.random.default_rng(k), p), refl)) ** 2 for k in range(10)], 0)
        np.testing.assert_allclose(iv / i0, (1 - p) ** 2, rtol=0.04)
    # diffuse background between the spots rises
    mid = ((b1 + b2) / 2 + 0.011)[None]
    assert np.mean([np.abs(direct_sum(add_vacancies(whole, np.random.default_rng(k), 0.2), mid)) ** 2 for k in range(5)]) > \
        20 * np.abs(direct_sum(whole, mid)) ** 2


def test_thermal_motion_debye_waller(hex2h):
    from diffnb.sim.kinematic import direct_sum
    whole = hex2h.repeat((16, 16, 1)); whole.pbc = False
    b1, b2 = reciprocal(hex2h)
    refl = np.array([b1, 3 * b1, 3 * b1 + 3 * b2, 5 * b1])
    s = np.linalg.norm(refl, axis=1)
    u = 0.008; B = 8 * math.pi**2 * u
    i0 = np.abs(direct_sum(whole, refl)) ** 2
    it = np.mean([np.abs(direct_sum(thermal_displacements(whole, np.random.default_rng(k), u), refl)) ** 2 for k in range(12)], 0)
    np.testing.assert_allclose(it / i0, np.exp(-B * s**2 / 2), rtol=0.06)
    # and the analytic Debye–Waller factor through atoms.arrays["b_iso"] matches exactly
    wb = whole.copy(); wb.arrays["b_iso"] = np.full(len(wb), B)
    np.testing.assert_allclose(np.abs(direct_sum(wb, refl)) ** 2 / i0, np.exp(-B * s**2 / 2), rtol=1e-9)


def test_phonon_snapshot_displacements():
    x = crystallite(mote2_supercell("2H"), 60.0, rotation_deg=30.0)
    y = phonon_displacements(x, np.random.default_rng(0), 1.0, "2H")
    d = y.positions - x.positions
    u = phonon_fields("2H")
    np.testing.assert_allclose(np.sqrt((d**2).sum(1).mean()), np.sqrt((u**2).sum(2).mean()), rtol=0.15)
    # displacements are rotated with the crystallite: in-plane r.m.s. of x and y components differ only by the field's
    # own anisotropy, z untouched by rotation
    np.testing.assert_allclose(np.sqrt((d[:, 2]**2).mean()), np.sqrt((u[..., 2]**2).mean()), rtol=0.15)
    with pytest.raises(DiffnbValueError, match="crystallite built from"):
        phonon_displacements(crystallite(mote2_supercell("1T'"), 30.0), np.random.default_rng(0), 1.0, "2H")


def test_transformation_path_endpoints():
    from diffnb.sim.kinematic import direct_sum
    t1, p1 = transformation_cell(1.0), mote2_primitive("1T'")
    b = reciprocal(p1)
    refl = np.array([b[0], b[1], b[0] + b[1], 2 * b[1], b[0] + 3 * b[1]])
    np.testing.assert_allclose(np.abs(direct_sum(t1, refl)), np.abs(direct_sum(p1, refl)), rtol=1e-9)
    t0, p0 = transformation_cell(0.0), mote2_primitive("2H")
    b0 = reciprocal(p0)
    np.testing.assert_allclose(np.abs(direct_sum(t0, b0)) ** 2, 4 * np.abs(direct_sum(p0, b0)) ** 2, rtol=1e-9)


def test_difference_images_cancel_scale():
    x = crystallite(mote2_supercell("2H"), 60.0, rotation_deg=12.0)
    ip = pattern(x, grid=96, s_max=1.3)
    iv = pattern(add_vacancies(x, np.random.default_rng(3), 0.1, "Te"), grid=96, s_max=1.3)
    ref = observe(ip[None], 50.0, noise=False)
    gen = lambda k: [torch.Generator().manual_seed(k)]
    energy = lambda d: float((d.double() ** 2).sum())
    e_pp = energy(difference_channels(observe(ip[None], 5e3, gen(1)), ref))  # pristine, other dose, with noise
    e_vac = energy(difference_channels(observe(iv[None], 5e3, gen(2)), ref))
    assert e_pp < 1e-2 * e_vac
    assert energy(difference_channels(observe(ip[None], 3.0, noise=False), ref)) < 1e-10 * e_vac


def test_bad_inputs(hex2h):
    rng = np.random.default_rng(0)
    x = crystallite(hex2h, 20.0)
    with pytest.raises(DiffnbValueError, match="at least one atom"): pattern(Atoms())
    with pytest.raises(DiffnbValueError, match="grid must be an integer >= 8"): pattern(x, grid=7)
    with pytest.raises(DiffnbValueError, match="strain"): apply_strain(x, -1.2)
    with pytest.raises(DiffnbValueError, match="strain"): apply_strain(x, (0.0, -1.0))
    with pytest.raises(DiffnbValueError, match=r"fraction must be in \[0, 1\]"): add_vacancies(x, rng, 1.5)
    with pytest.raises(DiffnbValueError, match=r"fraction must be in \[0, 1\]"): add_vacancies(x, rng, -0.01)
    with pytest.raises(DiffnbValueError, match="species"): add_vacancies(x, rng, 0.1, "W")
    with pytest.raises(DiffnbValueError, match="u_iso must be non-negative"): thermal_displacements(x, rng, -0.1)
    with pytest.raises(DiffnbValueError, match="s_max must be positive"): pattern(x, s_max=0)
    with pytest.raises(ValueError, match="phase"): mote2_supercell("3R")


def test_perturbations_change_structure(hex2h):
    rng = np.random.default_rng(1)
    x = crystallite(mote2_supercell("2H"), 40.0)
    assert len(add_vacancies(x, rng, 0.9)) == len(x) - round(0.9 * len(x))
    s = random_strain(x, rng, 0.1, "shear")
    assert abs(s.info["strain_xy"]) > 0 and not np.allclose(s.positions, x.positions)
    assert np.abs(amorphize(x, rng, 0.5).positions - x.positions).max() > 1.0


def test_samplers_protocol_and_reproducibility():
    smp = MoTe2Sampler(grid=32, size=(40.0, 40.0))
    assert smp.image_shape == (2, 32, 32) and smp.task == "classification" and smp.classes == CLASSES
    im, tg, pr = smp.sample(7, [0, 1, 2, 3, 4, 5, 6, 13])
    assert im.dtype == torch.float32 and im.shape == (8, 2, 32, 32) and tg.dtype == torch.int64
    assert tg.tolist() == [0, 1, 2, 3, 4, 5, 6, 6]
    assert all(v.shape == (8,) for v in pr.values())
    im2, tg2, pr2 = smp.sample(7, [13, 2])
    torch.testing.assert_close(im2[0], im[7]); torch.testing.assert_close(im2[1], im[2])
    assert pr["vacancy_fraction"][1] > 0 and pr["strain_xx"][2] != 0 or pr["strain_xy"][2] != 0
    assert pr["is_1t"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    vae = MoTe2VAESampler(grid=32, size=40.0)
    vi, vt, vp = vae.sample(0, range(10))
    assert vt is None and vi.shape == (10, 1, 32, 32) and vae.task == "unlabelled"
    assert 0 <= vp["transformation_t"][7] <= 1 and vp["vacancy_fraction"][8] >= 0.75 and vp["amorphous_fraction"][9] >= 0.3


def test_phonons_attenuate_bragg_as_their_displacements_predict():
    from diffnb.sim.kinematic import direct_sum
    sc = mote2_supercell("2H")
    x = crystallite(sc, 90.0, rotation_deg=0.0)
    b1, b2 = reciprocal(mote2_primitive("2H"))
    refl = np.array([b1, 2 * b1 + b2, 4 * b1])
    u = phonon_fields("2H")  # (10, sites, 3)
    # independent prediction: each atom's amplitude times the snapshot average of exp(-2πi g·u) at its site
    damp = np.exp(-2j * np.pi * np.einsum("gk,nsk->gns", refl, u[..., :2])).mean(1)  # (g, sites)
    f = np.stack([np.asarray(electron_form_factor(int(z), np.linalg.norm(refl, axis=1))) for z in x.numbers], 1)  # (g, atoms)
    ph = np.exp(-2j * np.pi * refl @ x.positions[:, :2].T)
    predicted = np.abs((f * ph * damp[:, x.arrays["site"]]).sum(1)) ** 2
    got = np.mean([np.abs(direct_sum(phonon_displacements(x, np.random.default_rng(k), 1.0, "2H"), refl)) ** 2
                   for k in range(6)], 0)
    i0 = np.abs(direct_sum(x, refl)) ** 2
    assert got[-1] < 0.8 * i0[-1]  # high-order reflection clearly attenuated
    np.testing.assert_allclose(got, predicted, rtol=0.05)


def test_chgnet_phonons_harmonic_temperature_scaling():
    pytest.importorskip("chgnet"); pytest.importorskip("phonopy")
    from diffnb.sim.mote2 import chgnet_phonon_fields
    u1 = chgnet_phonon_fields("2H", 1000.0, 40, seed=1)
    u2 = chgnet_phonon_fields("2H", 2000.0, 40, seed=2)
    rms = lambda u: np.sqrt((u**2).mean())
    assert u1.shape == phonon_fields("2H").shape[:0] + (40, 108, 3)
    np.testing.assert_allclose(rms(u2) / rms(u1), math.sqrt(2), rtol=0.05)  # classical harmonic limit: <u²> ∝ T
    np.testing.assert_allclose(u1.mean((0, 1)), 0, atol=0.02)
    x = crystallite(mote2_supercell("2H"), 30.0)
    y = phonon_displacements(x, np.random.default_rng(0), 1.0, "2H", fields=u1)
    np.testing.assert_allclose(np.sqrt(((y.positions - x.positions) ** 2).mean()), rms(u1), rtol=0.2)
