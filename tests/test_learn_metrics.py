"Metrics of diffnb.learn.metrics against independent implementations (numpy, scikit-learn, brute force) and their errors."
import math

import numpy as np
import pytest
import torch
from fastai.torch_core import TensorImage
from sklearn.metrics import f1_score, precision_recall_fscore_support

from diffnb.core import DiffnbValueError, ShapeError
from diffnb.learn.metrics import (pearson, mse, mae, ssim, psnr, shift_invariant_mse, accuracy, accuracy_within, macro_f1,
                                  per_class_table, relative_error, uiso_to_temperature, PerSampleMetric)

rng = np.random.default_rng(42)


def test_pearson_matches_numpy_on_multichannel_and_subclasses():
    a, b = rng.random((4, 2, 9, 7)), rng.random((4, 2, 9, 7))
    expected = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(pearson(a, b).numpy(), expected, rtol=1e-12)          # numpy in, float64 kept
    r = pearson(TensorImage(torch.from_numpy(a).float()), torch.from_numpy(b).float())  # fastai subclass in
    assert type(r) is torch.Tensor and r.dtype == torch.float32
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-5)


def test_mse_mae_scalar_targets():
    p, t = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.5, 2.0, 1.0])
    np.testing.assert_allclose(mse(p, t).numpy(), [0.25, 0.0, 9.0])
    np.testing.assert_allclose(mae(p, t).numpy(), [0.5, 0.0, 3.0])
    with pytest.raises(ShapeError, match="shape of pred"): mse(p[:, None], t)


def test_nan_and_bad_types_raise():
    x = torch.rand(2, 16, 16); y = x.clone(); y[0, 3, 3] = float("inf")
    for f in (pearson, mse, shift_invariant_mse):
        with pytest.raises(DiffnbValueError, match="target must be finite"): f(x, y)
    with pytest.raises(DiffnbValueError, match="tensor or numpy array"): mse([1.0], [1.0])
    with pytest.raises(ShapeError): shift_invariant_mse(x[0], x[0])                  # no batch axis


def test_psnr_formula_and_ssim_properties():
    x = torch.from_numpy(rng.random((3, 1, 24, 24))).float()
    y = x + 0.1 * torch.from_numpy(rng.standard_normal((3, 1, 24, 24))).float()
    R = 5.0
    np.testing.assert_allclose(psnr(x, y, data_range=R).numpy(),
                               10 * np.log10(R ** 2 / ((x - y) ** 2).numpy().reshape(3, -1).mean(1)), rtol=1e-5)
    assert torch.isinf(psnr(x, x, data_range=1.0)).all()
    torch.testing.assert_close(ssim(x, x, data_range=1.0), torch.ones(3))
    s_small, s_big = ssim(x, y, data_range=1.0), ssim(x, y, data_range=100.0)
    assert (s_small < 1).all() and (s_big > s_small).all()        # larger range: the constants dominate, SSIM -> 1
    with pytest.raises(DiffnbValueError, match="data_range must be positive"): psnr(x, y, data_range=0)


def test_shift_invariant_mse_brute_force_and_channels():
    x, y = torch.from_numpy(rng.random((2, 3, 4, 6))), torch.from_numpy(rng.random((2, 3, 4, 6)))
    shifts = [(i, j) for i in range(4) for j in range(6)]
    errs = torch.stack([((x - torch.roll(y, s, dims=(-2, -1))) ** 2).mean((1, 2, 3)) for s in shifts])
    v, best = shift_invariant_mse(x, y, return_shift=True)
    torch.testing.assert_close(v, errs.min(0).values)
    for k in range(2): assert tuple(best[k].tolist()) == shifts[int(errs[:, k].argmin())]
    v3 = shift_invariant_mse(x[:, 0], torch.roll(x[:, 0], (1, 5), dims=(-2, -1)))     # (batch, h, w)
    torch.testing.assert_close(v3, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_classification_against_sklearn():
    t = rng.integers(0, 6, 300); p = np.where(rng.random(300) < 0.7, t, rng.integers(0, 6, 300)); p[p == 5] = 4  # class 5 never predicted
    assert math.isclose(macro_f1(p, t), f1_score(t, p, average="macro", zero_division=0))
    assert math.isclose(macro_f1(p, t, n_classes=8), f1_score(t, p, labels=range(8), average="macro", zero_division=0))
    tab = per_class_table(torch.from_numpy(p), torch.from_numpy(t))
    for col, ref in zip(["precision", "recall", "f1", "support"], precision_recall_fscore_support(t, p, zero_division=0)):
        np.testing.assert_allclose(tab[col].to_numpy(), ref)
    assert accuracy(p, t).item() == pytest.approx((p == t).mean())
    assert accuracy_within(2)(p, t).item() == pytest.approx((np.abs(p - t) <= 2).mean())
    with pytest.raises(ShapeError, match="class indices"): accuracy(torch.zeros(2, 3, 4), torch.zeros(2))


def test_relative_error_temperature():
    from diffnb.scattering import bismuth_b_iso
    T = np.array([120.0, 295.0, 900.0])
    u = bismuth_b_iso(T) / (8 * math.pi ** 2)
    np.testing.assert_allclose(uiso_to_temperature(u), T, rtol=1e-9)                  # numpy in, numpy out
    u_pred = torch.from_numpy(bismuth_b_iso(T * np.array([0.9, 1.0, 1.02])) / (8 * math.pi ** 2))
    np.testing.assert_allclose(relative_error(u_pred, torch.from_numpy(u), uiso_to_temperature).numpy(), [0.1, 0, 0.02],
                               atol=1e-9)
    with pytest.raises(DiffnbValueError): uiso_to_temperature(torch.tensor([-0.01]))  # negative u_iso


def test_per_sample_metric_name_and_reduce():
    m = PerSampleMetric(mae, "median")
    assert m.name == "mae_median" and m.value is None
    with pytest.raises(DiffnbValueError, match="reduce"): PerSampleMetric(mae, "max")
