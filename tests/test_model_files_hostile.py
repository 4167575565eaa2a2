"""Hostile model files and image files: every one is refused with a DiffnbError that says why, before memory is spent."""
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from diffnb.core import DiffnbError, DiffnbValueError
from diffnb.data.images import read_images
from diffnb.learn import build_model
from diffnb.learn.io import load_model, save_model
from diffnb.learn.predict import predict, predict_cli

KW = dict(n_in=1, n_out=1, img_size=16, channels=[2], hidden=[4])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(build_model("conversion_cnn", **KW).eval(), tmp_path_factory.mktemp("m") / "cnn",
                      task="regression", targets=["u_iso"], target_units=["Å²"])


def copy(model_dir, tmp_path, name="m"):
    d = tmp_path / name
    shutil.copytree(model_dir, d)
    return d


def edit_json(d, change):
    doc = json.loads((d / "model.json").read_text())
    change(doc)
    (d / "model.json").write_text(json.dumps(doc))


def write_weights(d, header: dict, data_bytes: int = 0):
    "A safetensors file with this header and `data_bytes` of data (a sparse file: nothing is written)."
    h = json.dumps(header).encode()
    with open(d / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + data_bytes)
    edit_json(d, lambda doc: doc["weights"].update(sha256="0" * 64))


def refused(d, match):
    t = time.perf_counter()
    with pytest.raises(DiffnbValueError, match=match): load_model(d, device="cpu")
    assert time.perf_counter() - t < 30


def test_loads(model_dir):
    assert load_model(model_dir, device="cpu").task == "regression"


# ------------------------------------------------------------------ 5: paths in model.json stay in the model folder
@pytest.mark.parametrize("name", ["../other/model.safetensors", "/etc/passwd", "sub/model.safetensors", "..", 7])
def test_weights_path_confined(model_dir, tmp_path, name):
    other = copy(model_dir, tmp_path, "other")                     # a valid weights file one folder up
    d = copy(model_dir, tmp_path)
    edit_json(d, lambda doc: doc["weights"].update(file=name))
    refused(d, "weights file must be a file name inside the model directory")
    assert (other / "model.safetensors").exists()


def test_weights_link_out_of_folder_refused(model_dir, tmp_path):
    other = copy(model_dir, tmp_path, "other")
    d = copy(model_dir, tmp_path)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").symlink_to(other / "model.safetensors")
    refused(d, "not a link that leads out of it")


# ------------------------------------------------------------------ 6, 7, 11: the safetensors header
def test_header_length_bounded(model_dir, tmp_path):
    d = copy(model_dir, tmp_path)
    with open(d / "model.safetensors", "wb") as f:               # declares a 3 GiB header; sparse, nothing is read
        f.write(struct.pack("<Q", 3 << 30)); f.truncate(8 + (3 << 30))
    refused(d, "more than the 104,857,600 safetensors allows")


def test_huge_tensor_compared_before_loading(model_dir, tmp_path, monkeypatch):
    import diffnb.learn.io as io
    monkeypatch.setattr(io, "_sha256", lambda p: pytest.fail("the weights were read before the header was compared"))
    d = copy(model_dir, tmp_path)
    write_weights(d, {"features.0.weight": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]}}, 4 << 30)
    refused(d, "do not fit the architecture conversion_cnn")


@pytest.mark.parametrize("entry,match", [
    ({"dtype": "EVIL", "shape": [2], "data_offsets": [0, 8]}, "dtype 'EVIL'"),
    ({"dtype": "F32", "shape": [2 ** 62, 2 ** 62], "data_offsets": [0, 8]}, "needs .* bytes, its offsets span 8"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}, "not a list of at most 8 sizes"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "data_offsets"),
    ({"dtype": "F32", "shape": "2"}, "not \\{dtype, shape, data_offsets\\}"),
])
def test_absurd_header_entries(model_dir, tmp_path, entry, match):
    d = copy(model_dir, tmp_path)
    write_weights(d, {"x": entry}, 8)
    refused(d, match)
    with pytest.raises(DiffnbValueError, match=match): predict(d, np.zeros((1, 16, 16), np.float32), progress=False)


def test_overlapping_tensors_refused(model_dir, tmp_path):
    d = copy(model_dir, tmp_path)
    e = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    write_weights(d, {"a": e, "b": e}, 8)
    refused(d, "overlap or leave a gap")


# ------------------------------------------------------------------ 9, 18: architecture arguments and input shape
@pytest.mark.parametrize("kwargs,match", [
    (dict(KW, hidden=[10 ** 9]), "parameters, more than MAX_PARAMETERS"),
    (dict(KW, img_size=[65536, 65536]), "parameters, more than MAX_PARAMETERS|activations"),
])
def test_absurd_architecture_refused_before_building(model_dir, tmp_path, kwargs, match):
    d = copy(model_dir, tmp_path)
    edit_json(d, lambda doc: doc["model"].update(kwargs=kwargs))
    refused(d, match)


@pytest.mark.parametrize("shape", [[1, -1, 1e9], [1, 16], [1, 16, 16.0], [True, 16, 16], [1, 100000, 100000], "1x16x16"])
def test_input_shape_checked_at_load(model_dir, tmp_path, shape):
    d = copy(model_dir, tmp_path)
    edit_json(d, lambda doc: doc["input"].update(shape=shape))
    refused(d, "input shape must be")


def test_input_channels_agree_with_shape(model_dir, tmp_path):
    d = copy(model_dir, tmp_path)
    edit_json(d, lambda doc: doc["input"].update(channels=3))
    refused(d, "input channels must be")


# ------------------------------------------------------------------ 12: malformed JSON
def test_weights_not_a_dict(model_dir, tmp_path):
    d = copy(model_dir, tmp_path)
    edit_json(d, lambda doc: doc.update(weights="x"))
    refused(d, "weights must be a dict")


def test_deeply_nested_json(model_dir, tmp_path):
    d = copy(model_dir, tmp_path)
    text = (d / "model.json").read_text()
    (d / "model.json").write_text(text[:-2] + ', "extra": ' + "[" * 200000 + "]" * 200000 + "}")
    refused(d, "nests its JSON too deeply")


def test_deeply_nested_spec(model_dir, tmp_path):
    d = copy(model_dir, tmp_path)
    nested = {}
    for _ in range(40): nested = {"arch": "conversion_cnn", "kwargs": {"model": nested}}
    edit_json(d, lambda doc: doc.update(model=nested))
    refused(d, "nested at most 16 levels")


# ------------------------------------------------------------------ older files still load
def test_older_record_names_and_task_alias_read(tmp_path):
    from diffnb.learn.models import conversion_cnn  # noqa: F401  (registers the architecture)
    d = save_model(build_model("unet_resnet", n_in=1, n_out=1, img_size=32) if False else build_model("conversion_cnn", **KW),
                   tmp_path / "old", task="regression", preprocessing=[{"name": "LogIntensity", "offset": 1.0}])
    edit_json(d, lambda doc: doc.update(task="image_to_image", preprocessing=[{"transform": "log", "offset": 1.0}]))
    lm = load_model(d, device="cpu")
    assert lm.task == "image2image" and lm.meta["preprocessing"] == [{"transform": "log", "offset": 1.0}]
    assert [s.to_json() for s in lm.steps] == [{"name": "LogIntensity", "offset": 1.0}]
    saved = save_model(build_model("conversion_cnn", **KW), tmp_path / "new", task="image_to_image")
    assert json.loads((saved / "model.json").read_text())["task"] == "image2image"      # written with one name


# ------------------------------------------------------------------ 15: diffnb predict --out
@pytest.mark.parametrize("out", ["folder", "/"])
def test_predict_out_must_be_a_file(model_dir, tmp_path, out):
    img = tmp_path / "x.npy"; np.save(img, np.ones((16, 16), np.float32))
    (tmp_path / "folder").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    target = str(tmp_path / "folder") if out == "folder" else "/"
    assert predict_cli([str(model_dir), str(img), "--out", target, "--no-progress"]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_predict_out_unwritable_is_a_message(model_dir, tmp_path, capsys):
    img = tmp_path / "x.npy"; np.save(img, np.ones((16, 16), np.float32))
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    assert predict_cli([str(model_dir), str(img), "--out", str(tmp_path / "notes.txt" / "p.csv"), "--no-progress"]) == 2
    assert "cannot write --out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "x.npy"]


# ------------------------------------------------------------------ 20a: architectures registered on import of diffnb.learn
def test_build_model_after_import_of_learn_alone():
    code = ("import diffnb.learn as L; m = L.build_model('conversion_cnn', img_size=16, channels=[2], hidden=[4]); "
            "print(m.diffnb_spec['arch'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "conversion_cnn"


# ------------------------------------------------------------------ 8: image headers
def huge_tiff(path, side=100_000):
    "A 4×4 TIFF whose header is edited to declare side × side pixels (a few hundred bytes on disk)."
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tf:
        offs = [tf.pages[0].tags[k].valueoffset for k in ("ImageWidth", "ImageLength")]
    for o in offs: struct.pack_into("<I", raw, o, side)
    path.write_bytes(bytes(raw))


def test_huge_tiff_header_refused(tmp_path):
    huge_tiff(tmp_path / "big.tif")
    assert (tmp_path / "big.tif").stat().st_size < 1000
    with pytest.raises(DiffnbValueError, match="declares 100000 × 100000 = 10,000,000,000 pixels"):
        read_images(tmp_path / "big.tif")


def test_huge_npy_header_refused(tmp_path):
    p = tmp_path / "big.npy"
    np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(20000, 20000)).flush()  # sparse on disk
    with pytest.raises(DiffnbValueError, match="more than max_pixels"): read_images(p)
    with pytest.raises(DiffnbValueError, match="max_pixels must be"): read_images(p, max_pixels=0)


# ------------------------------------------------------------------ properties: anything else is a DiffnbError
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
PATHS = [("weights",), ("weights", "file"), ("weights", "sha256"), ("input",), ("input", "shape"), ("input", "channels"),
         ("model",), ("model", "arch"), ("model", "kwargs"), ("model", "kwargs", "hidden"), ("model", "kwargs", "img_size"),
         ("preprocessing",), ("task",), ("format_version",), ("classes",)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(PATHS), value=JSON)
def test_property_mutated_model_json(model_dir, tmp_path_factory, where, value):
    d = copy(model_dir, tmp_path_factory.mktemp("p"))
    def change(doc):
        node = doc
        for k in where[:-1]: node = node[k]
        node[where[-1]] = value
    edit_json(d, change)
    try: load_model(d, device="cpu")
    except DiffnbError: pass


ENTRY = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F64", "I64", "EVIL", "", "U8"]) | st.text(max_size=4),
                               "shape": st.lists(st.integers(-3, 2 ** 65), max_size=4) | JSON,
                               "data_offsets": st.lists(st.integers(-3, 2 ** 65), min_size=0, max_size=3) | JSON})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.sampled_from(["features.0.weight", "head.1.bias", "x", "__metadata__"]),
                              ENTRY | JSON, max_size=3),
       data=st.integers(0, 64))
def test_property_mutated_safetensors_header(model_dir, tmp_path_factory, header, data):
    d = copy(model_dir, tmp_path_factory.mktemp("h"))
    write_weights(d, header, data)
    try: load_model(d, device="cpu")
    except DiffnbError: pass


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["tif", "npy"]), pos=st.integers(0, 200), value=st.binary(min_size=1, max_size=4))
def test_property_mutated_image_headers(tmp_path_factory, kind, pos, value):
    d = tmp_path_factory.mktemp("i")
    p = d / f"x.{kind}"
    (tifffile.imwrite(p, np.arange(64, dtype=np.uint16).reshape(8, 8)) if kind == "tif"
     else np.save(p, np.arange(64, dtype=np.float32).reshape(8, 8)))
    raw = bytearray(p.read_bytes())
    pos = min(pos, len(raw) - 1)
    raw[pos:pos + len(value)] = value
    p.write_bytes(bytes(raw))
    try: read_images(p, max_pixels=1 << 20)
    except DiffnbError: pass


@pytest.mark.parametrize("kwargs", [dict(img_size=[65536, 65536]), dict(img_size=16, skip=10 ** 9), dict(hidden=[1e30])])
def test_absurd_arguments_of_an_architecture_without_meta_build(tmp_path, kwargs):
    "radial_mlp computes its bins with torch.nonzero, which PyTorch's meta device cannot run: its arguments are bounded instead."
    d = save_model(build_model("radial_mlp", img_size=16, skip=1, tail=2, hidden=[4]), tmp_path / "r", task="regression")
    edit_json(d, lambda doc: doc["model"]["kwargs"].update(kwargs))
    refused(d, "larger than any model diffnb builds")
