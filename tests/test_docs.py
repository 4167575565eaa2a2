"""The offline documentation build: a page per notebook with the exported functions' signatures."""
import ast
import html as html_lib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def _public_functions(py: Path):
    "(name, parameter names) of the public functions and classes a module defines."
    tree = ast.parse(py.read_text())
    out = []
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_"):
            params = [a.arg for a in n.args.args if a.arg not in ("self", "cls")] if isinstance(n, ast.FunctionDef) else []
            out.append((n.name, params))
    return out


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "offline_docs.py")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return ROOT / "_docs"


def test_every_api_notebook_has_a_page_with_signatures(docs):
    import json
    for nb in sorted((ROOT / "nbs" / "api").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        exp = next((c for c in cells if c["cell_type"] == "code" and "default_exp" in "".join(c["source"])), None)
        if exp is None: continue
        mod = "".join(exp["source"]).split("default_exp")[1].split()[0]
        page = docs / "api" / (nb.stem + ".html")
        if not page.exists():   # nbdev drops the number prefix from page names
            cands = list((docs / "api").glob(f"*{mod}*.html"))
            assert cands, f"no page for {nb.name}"
            page = cands[0]
        text = html_lib.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        py = ROOT / "diffnb" / (mod.replace(".", "/") + ".py")
        missing = [f for f, params in _public_functions(py)
                   if not (f"def {f}(" in text or f"class {f}" in text) or any(p not in text for p in params)]
        assert not missing, f"{page.name} lacks the signatures of {missing}"
    assert (docs / "index.html").exists()
    assert "diffnb-nav" in (docs / "index.html").read_text()


def test_index_screenshot_not_blank(docs, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium: pytest.skip("Debian's chromium is not installed")
    shot = tmp_path / "index.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900",
                    f"--screenshot={shot}", (docs / "index.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists(), "chromium produced no screenshot"
    from PIL import Image
    import numpy as np
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 10, "screenshot of _docs/index.html is blank"
    assert (img < 128).mean() > 0.005     # some dark text on the page
