"""diffnb.scattering: published values, abTEM agreement, limits, Debye–Waller and the Bi B(T) fit."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from diffnb.core import DiffnbValueError
from diffnb.scattering import (b_from_u, bismuth_b_iso, bismuth_temperature, dw_amplitude, dw_intensity,
                               electron_form_factor, u_from_b, xray_form_factor)


@pytest.mark.parametrize("par, f0", [("lobato", 13.57), ("kirkland", 13.04), ("peng", 13.08)])
def test_bi_f0(par, f0):
    assert electron_form_factor("Bi", 0.0, par) == pytest.approx(f0, abs=0.01)


@pytest.mark.parametrize("par", ["lobato", "kirkland", "peng"])
def test_matches_abtem(par):
    import abtem
    from abtem import parametrizations as p
    abtem.config.set({"precision": "float64"})
    P = {"lobato": p.LobatoParametrization, "kirkland": p.KirklandParametrization, "peng": p.PengParametrization}[par]()
    s = np.linspace(0, 4, 57)
    for el in ["H", "C", "O", "Si", "Fe", "Mo", "Te", "Bi", "U"]:
        np.testing.assert_allclose(electron_form_factor(el, s, par), P.scattering_factor(el)(s**2), rtol=1e-6)


def test_parametrizations_agree():
    # three independent fits of the same Hartree–Fock scattering factors agree within 6 % for s < 2 1/Å
    s = np.linspace(0, 2, 41)
    for el in ["C", "Si", "Mo", "Bi"]:
        lo, ki, pe = (electron_form_factor(el, s, p) for p in ("lobato", "kirkland", "peng"))
        assert np.max(np.abs(lo - ki) / lo) < 0.06 and np.max(np.abs(lo - pe) / lo) < 0.06


def test_large_s_limit():
    # Rutherford limit: f_e → Z/(2π² a0 s²) for s → ∞ (bare nucleus), Lobato is built to reach it
    from diffnb.core import BOHR_RADIUS_ANGSTROM
    for el, z in [("Si", 14), ("Bi", 83)]:
        s = 40.0
        assert electron_form_factor(el, s) == pytest.approx(z / (2 * np.pi**2 * BOHR_RADIUS_ANGSTROM * s**2), rel=0.02)


def test_torch_gpu_style_batching():
    s = torch.rand(3, 4, dtype=torch.float64) * 2
    f = electron_form_factor(["O", "Bi"], s)
    assert f.shape == (2, 3, 4) and f.dtype == torch.float64
    np.testing.assert_allclose(f[1].numpy(), electron_form_factor("Bi", s.numpy()), rtol=1e-12)


def test_xray_f0_is_z():
    for el, z in [("C", 6), ("Si", 14), ("Bi", 83)]:
        assert xray_form_factor(el, 0.0) == pytest.approx(z, abs=0.1)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 0.1), st.floats(0.0, 3.0))
def test_debye_waller(u, s):
    b = b_from_u(u)
    assert u_from_b(b) == pytest.approx(u, abs=1e-15)
    assert dw_amplitude(b, s) ** 2 == pytest.approx(dw_intensity(b, s), rel=1e-12)
    assert dw_intensity(b, s) == pytest.approx(np.exp(-8 * np.pi**2 * u * s**2 / 2), rel=1e-12)


def test_bismuth_b_of_t():
    assert bismuth_b_iso(295) == pytest.approx(1.150, abs=2e-3)
    assert bismuth_b_iso(500) == pytest.approx(1.943, abs=2e-3)
    t = np.linspace(2, 1000, 999)
    t = t[(t < 79.83) | (t > 80)]
    np.testing.assert_allclose(bismuth_temperature(bismuth_b_iso(t)), t, atol=1e-6)


@pytest.mark.parametrize("t", [0.5, 1001, float("nan")])
def test_bismuth_rejects(t):
    with pytest.raises(DiffnbValueError, match="temperature_k"):
        bismuth_b_iso(t)


def test_bismuth_temperature_rejects_out_of_range():
    with pytest.raises(DiffnbValueError, match="b_iso"):
        bismuth_temperature(np.array([1.0, 9.0]))
