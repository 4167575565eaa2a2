"""diffnb.core: electron optics against tabulated values and limits, validation, reproducible RNG."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from diffnb import core
from diffnb.core import (DiffnbValueError, electron_wavelength, interaction_constant, numpy_rng,
                         relativistic_gamma, torch_rng)


@pytest.mark.parametrize("energy_kev, lam", [(100, 0.037014), (200, 0.025079), (300, 0.019687), (1000, 0.008719)])
def test_wavelength_table(energy_kev, lam):
    assert electron_wavelength(energy_kev) == pytest.approx(lam, abs=5e-7)


def test_gamma_and_sigma():
    assert relativistic_gamma(200) == pytest.approx(1.39139, abs=5e-6)
    # Kirkland's tabulated σ at 100/200/300 kV [rad/(V·Å)]
    for e, s in [(100, 9.2446e-4), (200, 7.2884e-4), (300, 6.5262e-4)]:
        assert interaction_constant(e) == pytest.approx(s, rel=2e-4)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 5000))
def test_wavelength_relativistic_relation(e):
    # p c = sqrt(E (E + 2 m c²)) and λ = h/p: independent check from momentum and γ: p = γ m v
    gamma = relativistic_gamma(e)
    beta = math.sqrt(1 - 1 / gamma**2)
    pc_kev = gamma * beta * core.ELECTRON_REST_ENERGY_KEV
    assert electron_wavelength(e) == pytest.approx(core.HC_KEV_ANGSTROM / pc_kev, rel=1e-9)
    # relativistic λ is always shorter than the non-relativistic one
    assert electron_wavelength(e) < core.HC_KEV_ANGSTROM / math.sqrt(2 * core.ELECTRON_REST_ENERGY_KEV * e)


@pytest.mark.parametrize("bad", [-3, 0, float("nan"), float("inf"), 2e5, True])
def test_wavelength_rejects(bad):
    with pytest.raises(DiffnbValueError, match="energy_kev"):
        electron_wavelength(bad)


def test_error_hierarchy():
    assert issubclass(core.DiffnbValueError, ValueError)
    assert issubclass(core.DiffnbFileNotFoundError, FileNotFoundError)
    assert issubclass(core.StructureError, core.DiffnbError)
    with pytest.raises(ValueError, match=r"pixels must be an integer >= 1, got 0"):
        core.check_int("pixels", 0, min_value=1)


def test_rng_reproducible_and_independent():
    a = [numpy_rng(3, i).standard_normal(1000) for i in range(4)]
    assert np.array_equal(a[1], numpy_rng(3, 1).standard_normal(1000))
    c = np.corrcoef(a)                       # independent streams: no correlation between neighbours
    assert np.abs(c[np.triu_indices(4, 1)]).max() < 0.15
    t1 = torch.randn(5, generator=torch_rng(3, 7))
    assert torch.equal(t1, torch.randn(5, generator=torch_rng(3, 7)))
    assert not torch.equal(t1, torch.randn(5, generator=torch_rng(4, 7)))


def test_default_device_env(monkeypatch):
    monkeypatch.setenv("DIFFNB_DEVICE", "cpu")
    assert core.default_device() == torch.device("cpu")
