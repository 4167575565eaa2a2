"""Project-level checks: configuration, README in sync with index.ipynb, layout."""
import subprocess
import sys
import tomllib

from conftest import ROOT


def test_nbdev_config():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    nb = cfg["tool"]["nbdev"]
    assert nb["tst_flags"] == "notest slow gpu"
    assert nb["allowed_cell_metadata_keys"] == ["tags"]
    assert cfg["project"]["license"] == "GPL-3.0-or-later"
    assert cfg["project"]["scripts"]["diffnb"] == "diffnb.cli:main"


def test_readme_matches_index():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "offline_docs.py"), "--check-readme"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_papermill_parameters_tag_survives_clean():
    import json
    nb = json.loads((ROOT / "nbs" / "tutorials" / "quickstart.ipynb").read_text())
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])


def test_demo_job_writes_its_outputs(tmp_path):
    """What `make demo` runs: papermill executes the quickstart with injected parameters into a run folder,
    which then holds the executed notebook, the figures and a dataset that verifies."""
    import papermill as pm
    from diffnb.data import open_store, verify
    out = tmp_path / "run"
    out.mkdir()
    pm.execute_notebook(str(ROOT / "nbs" / "tutorials" / "quickstart.ipynb"), str(out / "quickstart.ipynb"),
                        parameters={"out_dir": ".", "n_dataset": 32, "seed": 7}, cwd=str(out), progress_bar=False,
                        kernel_name="python3")
    for f in ("quickstart.ipynb", "scattering_factors.png", "bismuth_b_of_t.png", "simulators.png"):
        assert (out / f).stat().st_size > 1000, f
    assert verify(out / "speckle.zarr").ok
    s = open_store(out / "speckle.zarr")
    assert s.n == 32 and s.meta["seed"] == 7          # the injected parameters reached the run
