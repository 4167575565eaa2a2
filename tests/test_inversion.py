"""The lacbed inverse by physics (diffnb.sim.refine): U_g from a projected-potential image against the independent
potential_coefficients, the Fourier synthesis back, and the inversion of a thickness series from a start 5 % off."""
import numpy as np
import pytest

from diffnb.core import DiffnbError
from diffnb.sim.bloch import potential_field
from diffnb.sim.potential import potential_coefficients
from diffnb.sim.refine import LacbedModel, invert_patterns, potential_from_ug, ug_from_potential
from diffnb.structure import icsd_prototype_crystal, icsd_prototypes

E = 200.0


def icsd(formula):
    return icsd_prototype_crystal(next(i for i, r in enumerate(icsd_prototypes()) if r["formula"] == formula), b_iso=0.5)


@pytest.mark.parametrize("formula", ["CaF2", "O3SrTi"])
def test_potential_ug_round_trip(formula):
    """The lacbed input image → U_g equals γF(−g)/(πV) about the model's origin; U_g → image is exact over the band,
    and a truncated set gives potential_field's band-limited image (fov 14 Å holds no whole number of cells)."""
    at = icsd(formula)
    rho = potential_field(at, 14.0, 40)
    hkl, u = ug_from_potential(rho, at, 14.0, E)
    x0 = LacbedModel(at, E, 0.5, 4, n_beams=9).origin
    ref = potential_coefficients(at, hkl, E) * np.exp(2j * np.pi * hkl @ x0)
    np.testing.assert_allclose(u, ref, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(potential_from_ug(hkl, u, at, 14.0, E, pixels=40), rho, atol=1e-9 * np.abs(rho).max())
    s = np.linalg.norm(hkl / at.cell.lengths()[0], axis=1)
    low = s <= 0.7
    np.testing.assert_allclose(potential_from_ug(hkl[low], u[low], at, 14.0, E, pixels=40),
                               potential_field(at, 14.0, 40, g_max=0.7), atol=1e-9 * np.abs(rho).max())


def test_bad_input():
    at = icsd("ClNa")
    with pytest.raises(DiffnbError): ug_from_potential(np.zeros((8, 6)), at, 14.0, E)
    with pytest.raises(DiffnbError): ug_from_potential(np.full((8, 8), np.nan), at, 14.0, E)
    with pytest.raises(DiffnbError): potential_from_ug([[1, 1, 0]], [1e-2, 2e-2], at, 14.0, E)
    with pytest.raises(DiffnbError): invert_patterns(np.ones((1, 8, 8)), at, E, 0.5, [500.0], start="random", n_beams=9)


def test_inversion_from_a_noisy_potential_image():
    """The hybrid path: a potential image with 5 % pixel noise → start U_g → refined against noiseless patterns at
    three thicknesses: every free U_g within 1 %, and the synthesised potential matches the true one."""
    at, ts = icsd("MgO"), [300.0, 700.0, 1200.0]
    m = LacbedModel(at, E, 0.5, 10, n_beams=13)
    meas = m(ts).numpy()
    true = m.ug_start(len(m.free_orbits))
    rho = potential_field(at, 14.0, 32)
    img = rho + 0.05 * rho.std() * np.random.default_rng(0).standard_normal(rho.shape)
    inv = invert_patterns(meas, at, E, 0.5, ts, start=img, n_beams=13, potential_pixels=32)
    np.testing.assert_allclose(inv.ug, true, rtol=0.01)
    np.testing.assert_allclose(inv.potential, rho, atol=1e-3 * np.ptp(rho))
