"Hostile and careless use: a user's files are never deleted, and a `diffnb run -p` value never runs as code."
import ast, os, subprocess, sys, uuid
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from diffnb.core import DiffnbValueError
from diffnb.workflows import check_parameters, notebook_literal, workflow_parameters

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_save_model_overwrite_keeps_a_users_folder(tmp_path):
    "The reproduction: a folder with a `model.json` of its own and a thesis is refused, byte for byte unchanged."
    p = tmp_path / "p"; p.mkdir()
    (p / "model.json").write_text("{}\n"); (p / "thesis.tex").write_text("x\n")
    code = ("import diffnb.learn.models; from diffnb.learn import build_model; from diffnb.learn.io import save_model; "
            "save_model(build_model('conversion_cnn', img_size=16, channels=[2], hidden=[4]), 'p', overwrite=True)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "refusing to overwrite" in r.stderr, r.stderr[-2000:]
    assert sorted(f.name for f in p.iterdir()) == ["model.json", "thesis.tex"]
    assert (p / "thesis.tex").read_text() == "x\n" and (p / "model.json").read_text() == "{}\n"
    assert [f.name for f in tmp_path.iterdir()] == ["p"]          # no temporary folder left beside it


def test_save_model_overwrite_keeps_extra_files_in_a_model_folder(tmp_path):
    import diffnb.learn.models  # noqa: F401  registers the architectures
    from diffnb.learn import build_model
    from diffnb.learn.io import load_model, save_model
    net = build_model("conversion_cnn", img_size=16, channels=[2], hidden=[4])
    m = save_model(net, tmp_path / "m", task="regression", targets=["u_iso"])
    (m / "notes.txt").write_text("mine"); (m / "plots").mkdir()
    with pytest.raises(DiffnbValueError, match=r"notes\.txt.*plots/|plots/.*notes\.txt"):
        save_model(net, m, task="regression", overwrite=True)
    assert (m / "notes.txt").read_text() == "mine" and (m / "plots").is_dir()
    load_model(m)                                                  # the model itself is intact
    (m / "notes.txt").unlink(); (m / "plots").rmdir()
    save_model(net, m, task="regression", overwrite=True)
    assert sorted(f.name for f in m.iterdir()) == ["model.json", "model.safetensors"]
    link = tmp_path / "link"; link.symlink_to(m)
    with pytest.raises(DiffnbValueError, match="a link"): save_model(net, link, task="regression", overwrite=True)
    f = tmp_path / "file.txt"; f.write_text("mine")
    with pytest.raises(DiffnbValueError, match="refusing to overwrite"): save_model(net, f, overwrite=True)
    assert f.read_text() == "mine"


def test_run_parameter_reproduction_executes_nothing(tmp_path):
    "The reproduction: a bytes literal with an embedded call, given to a None-default parameter, runs no code."
    marker = Path("/tmp") / f"diffnb-pwned-{uuid.uuid4().hex}"
    payload = f"b'\" + str(__import__(\"os\").system(\"touch {marker}\")) + \"'"
    r = subprocess.run([str(BIN / "diffnb"), "run", "speckle", "-p", "store_dir", payload, "-p", "arch", "bogus",
                        "--out", "r1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert not marker.exists(), "a -p value was executed"
    assert r.returncode != 0 and "arch must be one of" in r.stderr     # it fails for the bad arch, as it should


PAYLOADS = [
    "b'\" + str(__import__(\"os\").system(\"touch /tmp/x\")) + \"'",   # the reproduction
    "b'abc'", "{1, 2}", "__import__('os').system('true')", "f'{__import__(\"os\").getcwd()}'",
    "\"\"\"\nimport os\n\"\"\"", "'a'\nimport os", "x\" + __import__('os').getcwd() + \"", "print(1)", "(1).__class__",
    "[b'x']", "{'a': b'x'}", "{1: 2}", "float('nan')", "1e999", "[1, {2, 3}]", "lambda: 0", "..."]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_run_parameter_payloads(payload):
    "Every payload is either refused or reaches the notebook as a plain literal that reads back as itself."
    for name in ("store_dir", "fluences", "n_samples", "arch", "lr", "epochs"):
        try: v = check_parameters("speckle", {name: payload}, strings=True)[name]
        except DiffnbValueError: continue
        src = notebook_literal(v, name)
        assert ast.literal_eval(src) == v and type(v) in (str, int, float, bool, list, dict, type(None)), (name, v)
        if isinstance(v, str): assert name in ("store_dir", "arch") and v == payload   # strings stay the text given


@pytest.mark.parametrize("value", [b"x", {1, 2}, (lambda: 0), float("nan"), [1, {2}], {1: 2}, {"a": object()}])
def test_non_plain_values_are_refused(value):
    with pytest.raises(DiffnbValueError, match="parameter"): notebook_literal(value, "store_dir")


def test_none_default_parameters_declare_their_type():
    "Every parameter whose default is None declares the type of its other values in the notebook."
    from diffnb.workflows import list_workflows
    for wf in list_workflows():
        for p in workflow_parameters(wf).values():
            if p.default is None: assert p.type in ("str", "int", "float", "bool", "list", "dict"), (wf, p)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_any_command_line_text_is_refused_or_a_plain_literal(text):
    for name in ("store_dir", "fluences", "n_samples", "lr"):
        try: v = check_parameters("speckle", {name: text}, strings=True)[name]
        except DiffnbValueError: continue
        assert ast.literal_eval(notebook_literal(v, name)) == v
