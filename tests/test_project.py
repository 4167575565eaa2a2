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
