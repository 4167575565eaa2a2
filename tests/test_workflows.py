"""`diffnb run` and the workflow notebooks: listing, parameter help and checks, a tiny speckle run end to end,
cached stores, the packaged copies, and the papermill `parameters` tag surviving nbdev-clean."""
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, assert_quiet_kernel, diffnb_cli as diffnb, run_record

SPECKLE = ("-p", "seed", "3")            # the shared tiny speckle run: the defaults with a seed given on the command line


def cli(capsys, *args):
    "`diffnb ARGS` in this process: (exit code, stdout, stderr)."
    from diffnb.cli import main
    code = main(list(args))
    o = capsys.readouterr()
    return code, o.out, o.err


def test_list_names_every_workflow(capsys):
    code, out, err = cli(capsys, "run", "--list")
    assert code == 0, err
    for nb in (ROOT / "nbs" / "workflows").glob("*.ipynb"):
        line = next(l for l in out.splitlines() if l.split() and l.split()[0] == nb.stem)
        assert len(line.split()) > 3            # a name and its one-line summary


def test_help_lists_every_parameter_with_default_and_full_scale(capsys):
    import papermill as pm
    code, out, err = cli(capsys, "run", "speckle", "--help")
    assert code == 0, err
    rows = {l.split()[0]: l for l in out.splitlines() if l.startswith("  ")}
    params = pm.inspect_notebook(str(ROOT / "nbs" / "workflows" / "speckle.ipynb"))
    assert {"n_samples", "image_size", "arch", "epochs", "seed"} <= set(params)
    for name, p in params.items():
        full = p["help"].split("full scale:")[1].split(" — ")[0].strip()
        assert name in rows and p["default"] in rows[name] and full in rows[name], (name, rows.get(name))
    assert "19000" in rows["n_samples"] and "resnet50" in rows["arch"]      # the study's scale is documented


@pytest.mark.parametrize("args, message", [
    (("run", "nosuch"), "workflow must be one of"),
    (("run", "speckle", "-p", "n_sampels", "10"), "'n_sampels' is not a parameter of workflow 'speckle'"),
    (("run", "speckle", "-p", "n_samples", "many"), "parameter n_samples must be an integer"),
    (("run", "speckle", "-p", "lr", "fast"), "parameter lr must be a number"),
    (("run", "speckle", "-p", "fluences", "10"), "parameter fluences must be a list"),
])
def test_bad_workflow_or_parameter_fails_before_running(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *args)
    assert code == 2 and message in err, (code, err)
    assert not (tmp_path / "runs").exists()                         # nothing ran, no run folder


def test_parameter_types_follow_the_defaults():
    from diffnb.workflows import check_parameters
    assert check_parameters("speckle", {"epochs": "3", "lr": "1e-3", "fluences": "[1, 10]", "arch": "resnet18"},
                            strings=True) == {"epochs": 3, "lr": 1e-3, "fluences": [1, 10], "arch": "resnet18"}
    with pytest.raises(ValueError, match="an integer"): check_parameters("speckle", {"epochs": True})
    with pytest.raises(ValueError, match="a string"): check_parameters("speckle", {"arch": 50})


def test_speckle_tiny_run_end_to_end(workflow_run):
    from diffnb.learn.io import load_model, predict
    from diffnb.data import verify, open_store
    from diffnb.sim.speckle import SpeckleSampler
    from diffnb.workflows import store_path, workflow_parameters
    out, _ = workflow_run("speckle", *SPECKLE)
    stores = out.parent / "stores"
    before, after = run_record(out)["source_sha"]
    assert after == before                                             # papermill never ran in place
    nb = json.loads((out / "speckle.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["parameters"]) == set(workflow_parameters("speckle"))  # every parameter recorded
    assert m["seed"] == 3 and m["parameters"]["seed"] == 3 and m["run"]["completed"]
    assert m["diffnb_version"] and m["device"] and m["run"]["wall_time_s"] > 0
    met = m["metrics"]
    for kind in ("mono", "poly"):
        for model in ("cnn", "first_moment"):
            for k in ("accuracy", "macro_f1", "within_1"):
                assert 0 <= met[f"test.{kind}.{model}.{k}"] <= 1
        assert met[f"test.{kind}.{model}.within_1"] >= met[f"test.{kind}.{model}.accuracy"]
        assert met[f"test.{kind}.n"] == met[f"data.{kind}.n_test"] > 0
        cm = np.array(m["tables"][f"test.{kind}.confusion"])
        assert cm.shape == (19, 19) and cm.sum() == met[f"test.{kind}.n"]
        assert np.isclose(np.trace(cm) / cm.sum(), met[f"test.{kind}.cnn.accuracy"])
        # the model: safetensors + json, reloaded here; it reproduces the reported test accuracy on the test fold
        model = load_model(out / "models" / kind, device="cpu")
        assert model.classes == [str(n) for n in range(2, 21)]
        # the store it used: linked from the run, complete, with the stratified 3-way split saved in it
        st = open_store(out / "stores" / kind)
        assert verify(st.path).ok and st.n == m["parameters"]["n_samples"]
        folds = st.load_split("train_valid_test")
        assert set(np.unique(folds)) == {0, 1, 2}
        assert set(st.targets[:][folds == 2]) == set(range(19))       # stratified: every class in the test set
        test_idx = np.flatnonzero(folds == 2)
        p = predict(model, st.images[:][test_idx], progress=False).probabilities.argmax(1)
        assert np.isclose(np.mean(p == st.targets[:][test_idx]), met[f"test.{kind}.cnn.accuracy"])
        # a rerun with the same parameters derives the same store path (and finds it complete)
        rec = m["stores"][kind]
        assert (out / "stores" / kind).resolve() == Path(rec["path"]) and Path(rec["path"]).parent == stores.resolve()
        assert store_path(SpeckleSampler(**rec["config"]), rec["n"], rec["seed"], stores.resolve()) == Path(rec["path"])
    for fig in ("patterns", "training", "confusion", "saliency_gradcam", "fluence"):
        assert (out / f"{fig}.png").stat().st_size > 5000, fig
    assert [k for k in met if k.startswith("fluence.")]
    assert "transfer.mono_to_poly.cnn.accuracy" in met
    assert "study_comparison" in m["tables"]


def test_speckle_radial_model_run(workflow_run):
    "arch 'radial' (the tiny default): the azimuthal-average model trains, is saved and reloaded, and reproduces its reported test accuracy."
    out, m = workflow_run("speckle", *SPECKLE)
    assert m["parameters"]["arch"] == "radial"
    _reloaded_models_reproduce_their_test_accuracy(out, m, "RadialProfileNet")
    assert (out / "saliency_gradcam.png").stat().st_size > 5000


def _reloaded_models_reproduce_their_test_accuracy(out, m, network):
    "Each saved speckle model, reloaded, is a `network` and gives the recorded test accuracy on its store's test fold."
    from diffnb.learn.io import load_model, predict
    from diffnb.data import open_store
    for kind in ("mono", "poly"):
        model = load_model(out / "models" / kind, device="cpu")
        assert type(model.model).__name__ == network
        st = open_store(out / "stores" / kind)
        test_idx = np.flatnonzero(st.load_split("train_valid_test") == 2)
        p = predict(model, st.images[:][test_idx], progress=False).probabilities.argmax(1)
        assert np.isclose(np.mean(p == st.targets[:][test_idx]), m["metrics"][f"test.{kind}.cnn.accuracy"])


def test_speckle_models_carry_their_validation_calibration(workflow_run):
    "Each model's temperature is the NLL minimiser on the validation fold, is stored in model.json, `predict` applies it, and the test ECE is the textbook one."
    import torch
    from diffnb.learn.io import load_model, predict
    from diffnb.data import open_store
    out, m = workflow_run("speckle", *SPECKLE)
    met = m["metrics"]
    assert (out / "reliability.png").stat().st_size > 5000
    for kind in ("mono", "poly"):
        model = load_model(out / "models" / kind, device="cpu")
        cal = model.calibration
        assert cal["kind"] == "classification" and cal["fitted_on"] == "validation" and cal["n"] == met[f"data.{kind}.n_valid"]
        T = cal["temperature"]
        assert T > 0 and np.isclose(T, met[f"calibration.{kind}.temperature"])
        st = open_store(out / "stores" / kind)
        folds, y = st.load_split("train_valid_test"), st.targets[:]
        with torch.no_grad():
            z_va = model(torch.as_tensor(st.images[:][folds == 1])).double()
            z_te = model(torch.as_tensor(st.images[:][folds == 2])).double()
        nll = lambda t: float(torch.nn.functional.cross_entropy(z_va / t, torch.as_tensor(y[folds == 1])))
        if (z_va.argmax(1).numpy() != y[folds == 1]).any():                    # (all right: the NLL falls as T → 0, no minimum)
            assert nll(T) <= min(nll(T * 1.2), nll(T / 1.2)) + 1e-9             # a minimum of the validation NLL
        p = torch.softmax(z_te / T, 1).numpy()
        np.testing.assert_allclose(predict(model, st.images[:][folds == 2], progress=False).probabilities, p, atol=1e-5)
        # ECE by hand: top-class confidence in 15 equal bins (a, b], |accuracy − confidence| weighted by the bin's share
        conf, hit = p.max(1), p.argmax(1) == y[folds == 2]
        b = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
        ece = sum(abs(hit[b == i].mean() - conf[b == i].mean()) * (b == i).mean() for i in range(15) if (b == i).any())
        assert np.isclose(ece, met[f"test.{kind}.ece"], atol=1e-5)
        assert 0 <= met[f"test.{kind}.ece_uncalibrated"] <= 1


def test_speckle_polar_model_run(workflow_run):
    "arch 'polar' (a small run): the polar 2-D model trains on the study's protocol, is reloaded and reproduces its test accuracy."
    out, m = workflow_run("speckle", "-p", "arch", "polar", "-p", "poly_sampler", "poly_study", "-p", "image_size", "32",
                          "-p", "epochs", "1", "-p", "fluences", "[10.0]", "-p", "n_saliency", "2")
    assert m["stores"]["poly"]["config"]["radii"] == "per_class"
    _reloaded_models_reproduce_their_test_accuracy(out, m, "PolarSpeckleNet")
    assert (out / "saliency_gradcam.png").stat().st_size > 5000


def test_speckle_cnn_model_run(workflow_run):
    "arch 'cnn' (a small run): the compact CNN trains, is reloaded, reproduces its test accuracy, and gets a Grad-CAM row."
    out, m = workflow_run("speckle", "-p", "arch", "cnn", "-p", "image_size", "32", "-p", "k_max", "0.2",
                          "-p", "epochs", "1", "-p", "fluences", "[10.0]", "-p", "n_saliency", "2")
    _reloaded_models_reproduce_their_test_accuracy(out, m, "ConversionCNN")
    assert (out / "saliency_gradcam.png").stat().st_size > 5000


def test_speckle_profile_model_run(workflow_run):
    "arch 'profile' (a small run): the stores hold exact radial profiles of the same disk systems on their absolute scale, the MLP is reloaded and reproduces its test accuracy, and the flux-error study runs."
    from diffnb.data import open_store
    from diffnb.sim.speckle import SpeckleProfileSampler, SpeckleSampler, radial_profile
    out, m = workflow_run("speckle", "-p", "arch", "profile", "-p", "profile_bins", "64", "-p", "epochs", "1",
                          "-p", "fluences", "[10.0]", "-p", "n_saliency", "2")
    assert m["stores"]["poly"]["sampler"] == "speckle.poly_profile" and m["stores"]["mono"]["config"]["profile_bins"] == 64
    _reloaded_models_reproduce_their_test_accuracy(out, m, "ProfileMLP")
    st = open_store(out / "stores" / "poly")
    smp = SpeckleProfileSampler(**m["stores"]["poly"]["config"])
    d = SpeckleSampler(polydispersity=1 / 3).disks(m["seed"], 5)              # the 2-D sampler's system of sample 5
    p = np.log(radial_profile(d, smp.k).numpy())                            # the default profile_scale "absolute": log P itself
    assert m["parameters"]["profile_scale"] == "absolute" and smp.config["standardise"] is False
    np.testing.assert_allclose(st.images[5, 0, 0], p, rtol=1e-6, atol=1e-4)
    assert st.targets[5] == d.n_disks - 2
    flux = [m["metrics"][f"flux.poly.{e:g}.cnn_macro_f1"] for e in m["parameters"]["flux_errors"]]
    assert all(0 <= f <= 1 for f in flux)                                   # the test profiles read again at each flux error


def test_speckle_tiny_defaults_train_a_model_that_works(workflow_run):
    "The demo: at its tiny defaults the speckle model counts monodisperse disks on the held-out test set (≥ 95 %), ahead of the first moment, and says so last."
    out, m = workflow_run("speckle", *SPECKLE)
    met = m["metrics"]
    assert met["test.mono.cnn.accuracy"] >= 0.95 and met["test.mono.cnn.accuracy"] > met["test.mono.first_moment.accuracy"]
    assert met["test.mono.n"] >= 30
    lines = run_record(out)["stdout"].strip().splitlines()
    assert lines[-1] == f"speckle: {m['summary']}", lines[-3:]
    assert f"{met['test.mono.cnn.accuracy']:.2f}" in lines[-1] and f"{met['test.mono.first_moment.accuracy']:.2f}" in lines[-1]


def test_no_kernel_transport_warning(workflow_run):
    "The kernel talks over IPC sockets: no 'Kernel is running over TCP without encryption' in a `diffnb run`'s output."
    out, _ = workflow_run("speckle", *SPECKLE)
    assert_quiet_kernel(out)


@pytest.mark.parametrize("deep", [False, True])
def test_run_notebook_uses_a_private_ipc_kernel(tmp_path, capfd, monkeypatch, deep):
    "`run_notebook`: the kernel's sockets are in a private temporary folder, removed afterwards; no TCP warning. A temporary"
    "folder too deep for a socket path (over ~100 bytes) is not used (the kernel would never answer)."
    import nbformat, tempfile
    from diffnb.workflows import run_notebook
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import json, ipykernel; f = ipykernel.connect.get_connection_file(); "
                                          "print(json.load(open(f))['transport'], x * 6, f)")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    kernels = Path(tempfile.mkdtemp(prefix="dk-"))
    try:
        tmp = kernels / ("d" * 120 if deep else "t"); tmp.mkdir()
        with monkeypatch.context() as mp:
            mp.setattr(tempfile, "tempdir", str(tmp))
            out = run_notebook(tmp_path / "in.ipynb", tmp_path / "out.ipynb", {"x": 7}, cwd=tmp_path)
        transport, value, conn = out.cells[-1].outputs[0]["text"].split()
        assert (transport, value) == ("ipc", "42") and Path(conn).parent.name.startswith("diffnb-kernel-")
        assert Path(conn).parent.parent == (Path("/tmp") if deep else tmp)
        assert not Path(conn).parent.exists() and list(tmp.iterdir()) == []    # the kernel's folder is gone
    finally:
        shutil.rmtree(kernels)
    assert "Kernel is running over TCP" not in capfd.readouterr().err


def test_summary_line_of_a_run(tmp_path):
    "A workflow's `summary` in metrics.json: its first line, at most 300 characters; nothing when absent or not text."
    from diffnb.workflows import run_summary
    assert run_summary(tmp_path) is None                                  # no metrics.json
    for summary, want in (("acc 0.98", "acc 0.98"), ("  two\nlines ", "two"), ("x" * 400, "x" * 300), ("", None), (3, None),
                          (None, None)):
        (tmp_path / "metrics.json").write_text(json.dumps({"summary": summary}))
        assert run_summary(tmp_path) == want, summary
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert run_summary(tmp_path) is None


@pytest.mark.parametrize("target", ["inside", "itself"])
def test_read_only_out_is_refused_before_anything_runs(tmp_path, target):
    "--out in a read-only folder, or an empty read-only folder itself: one clear message, exit 2, nothing started."
    import stat
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK): pytest.skip("this user can write read-only folders (root): see the test below")
        out = ro / "run" if target == "inside" else ro
        r = diffnb("run", "speckle", "--out", str(out), "--store-dir", str(tmp_path / "stores"), cwd=tmp_path)
        assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
        assert "out must be a folder diffnb can write" in r.stderr and "read-only" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "running into" not in r.stdout
        assert list(ro.iterdir()) == [] and not (tmp_path / "stores").exists()   # nothing was started
    finally:
        ro.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("target", ["inside", "itself", "store_dir"])
def test_read_only_out_is_refused_for_any_user(tmp_path, monkeypatch, capsys, target):
    "The same on a read-only file system, where not even root may write (simulated: the system's access check says no)."
    ro = tmp_path / "ro"; ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK else real_access(p, mode, **kw))
    monkeypatch.chdir(tmp_path)
    out_dir = {"inside": ro / "run", "itself": ro, "store_dir": tmp_path / "run"}[target]
    stores = ro / "stores" if target == "store_dir" else tmp_path / "stores"
    code, out, err = cli(capsys, "run", "speckle", "--out", str(out_dir), "--store-dir", str(stores))
    name = "store_dir" if target == "store_dir" else "out"
    assert code == 2 and f"{name} must be a folder diffnb can write ({ro} is read-only" in err, err
    assert "running into" not in out
    assert list(ro.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


def test_out_that_cannot_be_created_is_refused(tmp_path, monkeypatch, capsys):
    "A run folder in a place where no folder can be made (here /proc) is a message, not a traceback."
    if not Path("/proc/self").exists(): pytest.skip("no /proc")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "run", "speckle", "--out", "/proc/diffnb-no-such-folder/run", "--store-dir", "stores")
    assert code == 2 and "out must be a folder diffnb can" in err, err
    assert "running into" not in out and list(tmp_path.iterdir()) == []


def test_read_only_store_dir_is_refused(tmp_path):
    "A store cache that cannot be written is refused before the run folder is made."
    import stat
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK): pytest.skip("this user can write read-only folders (root)")
        r = diffnb("run", "speckle", "--out", str(tmp_path / "run"), "--store-dir", str(ro / "stores"), cwd=tmp_path)
        assert r.returncode == 2 and "store_dir must be a folder diffnb can write" in r.stderr, r.stderr
        assert not (tmp_path / "run").exists()
    finally:
        ro.chmod(stat.S_IRWXU)


def test_out_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    code, out, err = cli(capsys, "run", "speckle", "--out", str(tmp_path / "f" / "run"))
    assert code == 2 and "out must be a folder (the path" in err and "is a file" in err, err
    assert (tmp_path / "f").read_text() == "mine"


def test_refused_out_is_not_announced(tmp_path, capsys):
    "A run folder that is refused is never announced as the folder being run into."
    (tmp_path / "full").mkdir(); (tmp_path / "full" / "x").write_text("")
    code, out, err = cli(capsys, "run", "speckle", "--out", str(tmp_path / "full"))
    assert code == 2 and "a new or empty folder" in err
    assert "running into" not in out, out


def test_parameters_tag_survives_nbdev_clean(tmp_path):
    src = ROOT / "nbs" / "workflows" / "speckle.ipynb"
    nb = json.loads(src.read_text())
    i = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
    nb["cells"][i]["metadata"]["collapsed"] = True                     # something nbdev-clean removes
    f = tmp_path / "speckle.ipynb"
    f.write_text(json.dumps(nb))
    exe = Path(sys.executable).parent / "nbdev-clean"
    r = subprocess.run([str(exe) if exe.exists() else shutil.which("nbdev-clean"), "--fname", str(f)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cell = json.loads(f.read_text())["cells"][i]
    assert cell["metadata"] == {"tags": ["parameters"]}


def test_workflow_notebooks_ship_in_the_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "workflow_nbs/*.ipynb" in cfg["tool"]["setuptools"]["package-data"]["diffnb"]
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_workflows.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (ROOT / "nbs" / "workflows").glob("*.ipynb"))
    assert names and names == sorted(p.name for p in (ROOT / "diffnb" / "workflow_nbs").glob("*.ipynb"))


def test_failing_workflow_reports_and_keeps_its_notebook(tmp_path, monkeypatch, capsys):
    "A cell that fails (here: an unknown architecture, a valid string) gives exit code 1 and the executed notebook."
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "run", "speckle", "--out", "r", "--store-dir", "s", "-p", "arch", "nonsense", "-p", "n_samples", "76")
    assert code == 1 and "arch must be one of" in err and "r/speckle.ipynb" in err, err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["run"]["completed"] is False and m["metrics"]["data.mono.n_test"] > 0   # what ran before the failure is kept


@pytest.mark.parametrize("name", ["bismuth", "lacbed", "mote2", "speckle"])
def test_every_parameter_is_seen_by_papermill_and_documented(name):
    "papermill silently skips a parameter line it cannot parse (e.g. a comment holding '='): it would vanish from `diffnb run`."
    import ast, json as _json
    from diffnb.workflows import list_workflows, workflow_parameters, workflow_path
    if name not in list_workflows(): pytest.skip(f"workflow {name} not present")
    nb = _json.loads(workflow_path(name).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    assigned = [t.id for node in ast.parse(src).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]   # `x = 1` and `x: str = None`
    params = workflow_parameters(name)
    assert list(params) == assigned
    undocumented = [k for k, p in params.items() if p.full_scale is None or not p.help]
    assert not undocumented, f"{name}: parameters without '# full scale: VALUE — help': {undocumented}"
