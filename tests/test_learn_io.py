"""Model files (safetensors + JSON), prediction with uncertainty, reading experimental images, `diffnb predict`."""
import inspect
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from pathlib import Path

from diffnb.core import DiffnbError, ShapeError
from diffnb.learn import MODELS, register_model
from diffnb.learn.io import (LogIntensityStep, NormalizeStep, PercentileNormalizeStep, SqrtIntensityStep, load_model,
                             predict, predict_cli, preprocessing_from_json, read_images, save_model)

tifffile = pytest.importorskip("tifffile")


def _tiny(n_in: int = 1, n_out: int = 2, width: int = 4, p_drop: float = 0.0):
    return nn.Sequential(nn.Conv2d(n_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p_drop), nn.Linear(width, n_out))


@pytest.fixture(scope="module")
def tiny():
    "A registered toy architecture (removed afterwards)."
    build = register_model("_test_io_tiny")(_tiny)
    yield build
    MODELS.pop("_test_io_tiny", None)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    "Two different saved regression models (2 channels, 16×16, log + per-channel normalisation)."
    root = tmp_path_factory.mktemp("models")
    prep = [{"name": "LogIntensity", "offset": 1.0}, {"name": "Normalize", "mean": [1.0, 2.0], "std": [0.5, 1.0]}]
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = tiny(n_in=2, n_out=2).eval()
        net[1].running_mean.uniform_(); net[1].running_var.uniform_(0.5, 2)
        out.append((net, save_model(net, root / f"m{seed}", task="regression", targets=["u_iso", "tilt_mrad"],
                                    target_units=["Å²", "mrad"], preprocessing=prep, input_shape=(2, 16, 16),
                                    provenance={"store": root / "data.zarr", "seed": seed})))
    return out


def _reference(net, x):
    "The model's outputs with the preprocessing written out by hand (numpy-free torch formula)."
    mean, std = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1), torch.tensor([0.5, 1.0]).view(1, 2, 1, 1)
    with torch.no_grad(): return net((torch.log(x.clamp_min(0) + 1) - mean) / std)


def test_round_trip_bitwise(saved):
    net, path = saved[0]
    x = torch.rand(6, 2, 16, 16) * 100
    lm = load_model(path, device="cpu")
    assert not lm.model.training
    assert torch.equal(lm(x), _reference(net, x))
    p = predict(lm, x, progress=False)
    np.testing.assert_array_equal(p.values, _reference(net, x).numpy())
    assert p.std is None and p.names == ["u_iso", "tilt_mrad"] and p.units == ["Å²", "mrad"]
    doc = json.loads((path / "model.json").read_text())
    assert doc["model"] == {"arch": "_test_io_tiny", "kwargs": {"n_in": 2, "n_out": 2, "width": 4, "p_drop": 0.0}}
    assert doc["input"] == {"shape": [2, 16, 16], "channels": 2, "dtype": "float32"}


def test_preprocessing_matches_training_transforms():
    from diffnb.data import loaders as L
    x = torch.rand(3, 1, 8, 8) * 1000
    for ours, theirs in [(LogIntensityStep(3.0), L.LogIntensity(3.0)), (SqrtIntensityStep(), L.SqrtIntensity()),
                         (PercentileNormalizeStep(2, 98), L.PercentileNormalize(2, 98))]:
        assert torch.equal(ours(x), theirs(L.FloatImage(x)))
        assert preprocessing_from_json([theirs.record()]) == [ours]
    # percentile normalisation against numpy's percentiles (linear interpolation, as torch.quantile)
    lo, hi = np.percentile(x[0].numpy(), [2, 98])
    np.testing.assert_allclose(PercentileNormalizeStep(2, 98)(x)[0].numpy(), (x[0].numpy() - lo) / (hi - lo), rtol=1e-4, atol=1e-5)
    n = NormalizeStep([5.0], [2.0])(x)
    np.testing.assert_allclose(n.numpy(), (x.numpy() - 5) / 2, rtol=1e-6)


def test_refuses_pickles_and_damaged_files(saved, tmp_path):
    net, path = saved[0]
    torch.save(net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(DiffnbError, match="never unpickles"): load_model(tmp_path / "w.pt")
    (tmp_path / "w.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DiffnbError, match="is a pickle"): load_model(tmp_path / "w.pkl")
    # a torch.save file put in place of the weights is refused too
    d = tmp_path / "swapped"; shutil.copytree(path, d); shutil.copy(tmp_path / "w.pt", d / "model.safetensors")
    with pytest.raises(DiffnbError, match="never unpickles"): load_model(d)
    raw = (path / "model.safetensors").read_bytes()
    for name, data, msg in [("trunc", raw[: len(raw) // 2], "truncated"), ("empty", b"", "truncated"),
                            ("altered", raw[:-4] + b"\0\0\0\0", "does not match model.json")]:
        d = tmp_path / name; shutil.copytree(path, d); (d / "model.safetensors").write_bytes(data)
        with pytest.raises(DiffnbError, match=msg): load_model(d)


@pytest.mark.parametrize("edit,msg", [
    (lambda doc: doc.update(format_version=2), "reads version 1"),
    (lambda doc: doc.update(format="something-else"), "format must be"),
    (lambda doc: doc.update(model={"arch": "nope", "kwargs": {}}), "not registered"),
    (lambda doc: doc["model"]["kwargs"].update(width=8), "do not fit the architecture"),
    (lambda doc: doc["model"]["kwargs"].update(n_out=3), "do not fit the architecture"),
    (lambda doc: doc["model"]["kwargs"].update(bogus=1), "cannot build"),
    (lambda doc: doc.pop("weights"), "lacks the keys"),
    (lambda doc: doc.update(preprocessing=[{"name": "Magic"}]), "preprocessing step name"),
])
def test_mismatched_json(saved, tmp_path, edit, msg):
    _, path = saved[0]
    d = tmp_path / "m"; shutil.copytree(path, d)
    doc = json.loads((d / "model.json").read_text()); edit(doc); (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(DiffnbError, match=msg): load_model(d, device="cpu")


def test_save_is_atomic_and_checked(tiny, tmp_path):
    net = tiny()
    with pytest.raises(DiffnbError, match="task must be"): save_model(net, tmp_path / "a", task="segmentation")
    with pytest.raises(DiffnbError, match="JSON-serialisable"): save_model(net, tmp_path / "a", task="regression", provenance={"x": object()})
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    save_model(net, tmp_path / "a", task="regression")
    with pytest.raises(DiffnbError, match="overwrite=True"): save_model(net, tmp_path / "a", task="regression")
    save_model(net, tmp_path / "a", task="regression", targets=["t0", "t1"], overwrite=True)
    assert load_model(tmp_path / "a", device="cpu").targets == ["t0", "t1"]
    with pytest.raises(DiffnbError, match="JSON-serialisable"):  # fails after the weights are written: the old model stays
        save_model(net, tmp_path / "a", task="regression", targets=["new"], provenance={"x": object()}, overwrite=True)
    assert load_model(tmp_path / "a", device="cpu").targets == ["t0", "t1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    # a model saved without a task loads (its network is usable) but predict asks for the task
    save_model(net, tmp_path / "no_task")
    lm = load_model(tmp_path / "no_task", device="cpu")
    assert lm.task is None and lm(torch.rand(2, 1, 8, 8)).shape == (2, 2)
    with pytest.raises(DiffnbError, match="needs the model's task"): predict(lm, torch.rand(2, 1, 8, 8), progress=False)


def test_predict_input_errors(saved):
    lm = load_model(saved[0][1], device="cpu")
    with pytest.raises(ShapeError, match=r"must have 2 channel\(s\)"): predict(lm, torch.rand(3, 1, 16, 16), progress=False)
    with pytest.raises(ShapeError, match=r"\(N, 2, 16, 16\)"): predict(lm, torch.rand(3, 2, 20, 16), progress=False)
    with pytest.raises(ShapeError, match="batch"): predict(lm, torch.rand(3, 16, 16), progress=False)
    x = torch.rand(4, 2, 16, 16); x[2, 0, 0, 0] = float("inf")
    with pytest.raises(DiffnbError, match=r"image\(s\) \[2\]"): predict(lm, x, progress=False)


def test_ensemble_uncertainty(saved):
    (n0, p0), (n1, p1) = saved
    x = torch.rand(5, 2, 16, 16) * 30
    same = predict([p0, p0], x, progress=False, device="cpu")
    np.testing.assert_array_equal(same.std, 0)
    ens = predict([p0, p1], x, progress=False, device="cpu")
    outs = torch.stack([_reference(n0, x), _reference(n1, x)]).numpy()
    np.testing.assert_allclose(ens.values, outs.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ens.std, outs.std(0), rtol=1e-4, atol=1e-7)
    assert (ens.std > 0).all()
    df = ens.to_frame()
    assert list(df.columns) == ["u_iso", "tilt_mrad", "u_iso_std", "tilt_mrad_std"]


def test_mc_dropout_classification(tiny, tmp_path):
    torch.manual_seed(0)
    save_model(tiny(n_in=1, n_out=3, width=16, p_drop=0.5), tmp_path / "c", task="classification",
               classes=["a", "b", "c"], input_shape=(1, 8, 8))
    lm = load_model(tmp_path / "c", device="cpu")
    x = torch.rand(4, 1, 8, 8)
    state = torch.get_rng_state()
    p1, p2 = (predict(lm, x, mc_dropout=6, seed=3, progress=False) for _ in range(2))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    np.testing.assert_array_equal(p1.probabilities, p2.probabilities)  # reproducible from the seed
    np.testing.assert_allclose(p1.probabilities.sum(1), 1, rtol=1e-5)
    assert (p1.std.max(1) > 0).all() and not lm.model.training
    plain = predict(lm, x, progress=False)
    np.testing.assert_allclose(plain.probabilities, torch.softmax(lm(x), 1).numpy(), rtol=1e-6)


def _write_mrc(path, data, pixel_a):
    "Minimal MRC2014: NX NY NZ MODE(2=float32), MX MY MZ, cell [Å], angles, axis order, 'MAP ' stamp, data."
    data = np.asarray(data, np.float32)
    nz, ny, nx = data.shape
    h = np.zeros(256, "<i4"); hf = h.view("<f4")
    h[0:4] = nx, ny, nz, 2; h[7:10] = nx, ny, nz; hf[10:13] = np.array([nx, ny, nz]) * pixel_a
    hf[13:16] = 90; h[16:19] = 1, 2, 3
    hb = bytearray(h.tobytes()); hb[208:212] = b"MAP "; hb[212:214] = b"\x44\x44"
    path.write_bytes(bytes(hb) + data.tobytes())



def write_dm3(path, image, scale, units):
    "Minimal DigitalMicrograph 3 file: one float32 image (big-endian tag tree, little-endian data) and its calibration."
    image = np.ascontiguousarray(image, dtype="<f4")
    h, w = image.shape
    def group(tags): return struct.pack(">BBI", 0, 1, len(tags)) + b"".join(tags)
    def tag_group(name, tags): return struct.pack(">BH", 20, len(name)) + name.encode() + group(tags)
    def tag_data(name, info, payload):  # "%%%%", info array (type codes), payload
        return (struct.pack(">BH", 21, len(name)) + name.encode() + b"%%%%" + struct.pack(">I", len(info))
                + struct.pack(f">{len(info)}I", *info) + payload)
    def long(name, v): return tag_data(name, [3], struct.pack("<i", v))
    def f32(name, v): return tag_data(name, [6], struct.pack("<f", v))
    def text(name, s): return tag_data(name, [20, 4, len(s)], struct.pack(f"<{len(s)}H", *map(ord, s)))
    def calib(sc, u): return tag_group("", [f32("Origin", 0.0), f32("Scale", sc), text("Units", u)])
    image_data = tag_group("ImageData", [
        tag_data("Data", [20, 6, h * w], image.tobytes()), long("DataType", 2),  # 6: float32 elements; DataType 2: float32 image
        tag_group("Dimensions", [long("", w), long("", h)]),  # x (columns) first
        tag_group("Calibrations", [tag_group("Dimension", [calib(scale, units), calib(scale, units)]),
                                   tag_group("Brightness", [f32("Origin", 0.0), f32("Scale", 1.0), text("Units", "counts")])])])
    body = group([tag_group("ImageList", [tag_group("", [image_data, tag_group("ImageTags", [])])])])
    Path(path).write_bytes(struct.pack(">III", 3, len(body) + 12, 1) + body + b"\0" * 8)  # version 3, size, little-endian


def test_read_dm3(tmp_path):
    img = np.arange(6 * 8, dtype=np.float32).reshape(6, 8) ** 1.5  # not square: rows and columns must not swap
    write_dm3(tmp_path / "pattern.dm3", img, 0.01, "1/nm")
    x, meta = read_images(tmp_path / "pattern.dm3")
    assert x.shape == (1, 1, 6, 8)
    np.testing.assert_array_equal(x[0, 0], img)
    assert meta[0]["pixel_size"] == pytest.approx(0.01) and meta[0]["pixel_unit"] == "1/nm"


def test_read_images(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4000, (3, 8, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", a, photometric="minisblack")
    _write_mrc(tmp_path / "stack.mrc", a.astype(np.float32) * 0.5, pixel_a=2.0)
    np.save(tmp_path / "one.npy", a[0].astype(np.int32))
    x, meta = read_images([tmp_path / "stack.tif", tmp_path / "stack.mrc", tmp_path / "one.npy"])
    assert x.shape == (7, 1, 8, 12) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:3, 0], a); np.testing.assert_array_equal(x[3:6, 0], a * 0.5)
    np.testing.assert_array_equal(x[6, 0], a[0])
    assert meta[4]["index"] == 1 and meta[4]["pixel_size"] == pytest.approx(0.2) and meta[4]["pixel_unit"] == "nm"
    assert meta[0]["dtype"] == "uint16" and meta[0]["shape"] == [3, 8, 12]
    xc, mc = read_images(tmp_path / "stack.tif", stack="channels")
    assert xc.shape == (1, 3, 8, 12) and len(mc) == 1


def test_read_images_errors(tmp_path):
    bad = np.ones((2, 8, 8), np.float32); bad[1, 2, 3] = np.nan
    tifffile.imwrite(tmp_path / "with_nan.tif", bad)
    with pytest.raises(DiffnbError, match=r"with_nan\.tif.*NaN or Inf \(frame\(s\) \[1\]\)"): read_images(tmp_path / "with_nan.tif")
    with pytest.raises(FileNotFoundError, match="no file matches"): read_images(str(tmp_path / "*.dm4"))
    with pytest.raises(FileNotFoundError, match="does not exist"): read_images(tmp_path / "missing.tif")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(DiffnbError, match=r"x\.jpg.*known format"): read_images(tmp_path / "x.jpg")
    (tmp_path / "cut.mrc").write_bytes(b"\0" * 100)
    with pytest.raises(DiffnbError, match=r"cannot read image file .*cut\.mrc"): read_images(tmp_path / "cut.mrc")
    (tmp_path / "junk.dm4").write_bytes(b"\0" * 64)
    with pytest.raises(DiffnbError, match=r"cannot read image file .*junk\.dm4"): read_images(tmp_path / "junk.dm4")
    (tmp_path / "junk.emd").write_bytes(b"\0" * 64)
    try: import h5py  # noqa: F401
    except ImportError: msg = "needs the package h5py"
    else: msg = r"cannot read image file .*junk\.emd"
    with pytest.raises(DiffnbError, match=msg): read_images(tmp_path / "junk.emd")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(DiffnbError, match="RGB"): read_images(tmp_path / "rgb.tif")
    with pytest.raises(DiffnbError, match="stack must be"): read_images(tmp_path / "rgb.tif", stack="pages")


def test_cli_predict_end_to_end(saved, tmp_path):
    import pandas as pd
    (n0, p0), (_, p1) = saved
    rng = np.random.default_rng(2)
    frames = rng.poisson(40, (3, 2, 16, 16)).astype(np.float32)
    for k in range(3): tifffile.imwrite(tmp_path / f"img{k}.tif", frames[k], photometric="minisblack")  # 2 pages -> the model's 2 channels
    out = tmp_path / "res" / "predictions.csv"
    # a fresh process knows the toy architecture only through --import of the module that registers it
    (tmp_path / "toy_arch.py").write_text("import torch.nn as nn\nfrom diffnb.learn import register_model\n"
                                          + "@register_model('_test_io_tiny')\n" + inspect.getsource(_tiny))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", "import sys; from diffnb.cli import main; sys.exit(main())", "predict",
           str(p0), str(tmp_path / "img*.tif"), "--out", str(out), "--bs", "2", "--device", "cpu"]
    r = subprocess.run(cmd + ["--import", "toy_arch"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "wrote 3 predictions" in r.stdout and "predict" in r.stderr  # tqdm bar on stderr
    df = pd.read_csv(out)
    assert list(df.columns) == ["file", "index", "u_iso", "tilt_mrad"]
    np.testing.assert_allclose(df[["u_iso", "tilt_mrad"]].to_numpy(), _reference(n0, torch.from_numpy(frames)).numpy(),
                               rtol=1e-5, atol=1e-6)
    # ensemble in-process: std columns; bad input: exit status 2 and a message naming the file
    assert predict_cli([str(p0), str(tmp_path), "--ensemble", str(p1), "--out", str(tmp_path / "e.csv"), "--no-progress"]) == 0
    assert (pd.read_csv(tmp_path / "e.csv")["u_iso_std"] > 0).all()
    tifffile.imwrite(tmp_path / "one_channel.tif", frames[0, 0])
    assert predict_cli([str(p0), str(tmp_path / "one_channel.tif"), "--out", str(tmp_path / "x.csv"), "--no-progress"]) == 2
    assert not (tmp_path / "x.csv").exists()
    assert predict_cli([str(p0), str(tmp_path), "--import", "no_such_module_xyz", "--out", str(tmp_path / "x.csv")]) == 2


@pytest.mark.parametrize("arch,kwargs,meta", [
    ("conversion_cnn", dict(n_in=1, n_out=2, img_size=32, channels=(4, 8), hidden=(16,)), dict(task="regression", targets=["u_iso", "b_iso"])),
    ("wide_resnet_ued", dict(n_in=2, n_classes=7, width=1), dict(task="classification", classes=list("ABCDEFG"), input_shape=(2, 16, 16))),
    ("resnet", dict(n_layers=18, n_in=1, n_out=3, lin_ftrs=[16]), dict(task="classification", classes=["1", "2", "3"], input_shape=(1, 32, 32))),
    ("conv_vae", dict(n_in=1, img_size=16, latent_dim=4, base=8), dict(task="vae")),
])
def test_diffnb_architectures_round_trip(tmp_path, arch, kwargs, meta):
    models = pytest.importorskip("diffnb.learn.models")
    torch.manual_seed(0)
    net = getattr(models, arch)(**kwargs).eval()
    lm = load_model(save_model(net, tmp_path / arch, **meta), device="cpu")
    x = torch.rand(3, *lm.input_shape)
    with torch.no_grad(): a, b = net(x), lm(x)
    if isinstance(a, tuple): assert all(torch.equal(u, v) for u, v in zip(a, b))
    else: assert torch.equal(a, b)
    p = predict(lm, x, progress=False)
    assert len(p.to_frame()) == 3
