"""The offline documentation build: a page per notebook with the exported functions' signatures."""
import ast
import html as html_lib
import os
import re
import shutil
import subprocess
import sys
import time
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
        page = docs / "api" / (mod.removesuffix(".__init__") + ".html")   # nbdev's output-file: module name, no number
        assert page.exists(), f"no page {page.name} for {nb.name}"
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


def _local_pages(docs):
    return [p for p in sorted(docs.rglob("*.html")) if not {"src", "_static"} & set(p.relative_to(docs).parts)]


def test_pages_have_titles_links_and_content(docs):
    "Every page: a heading with its title, no link to a missing local file, no heading with nothing under it."
    sys.path.insert(0, str(ROOT / "tools"))
    from offline_docs import _empty_sections
    pages = _local_pages(docs)
    assert len(pages) >= 18
    problems = []
    for page in pages:
        text = page.read_text()
        m = re.search(r'<h1 class="title">([^<]+)</h1>', text)
        if not m or not m.group(1).strip(): problems.append(f"{page.name}: no title heading")
        for url in re.findall(r'(?:href|src)="([^"#]+)(?:#[^"]*)?"', text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", url) or url.startswith("//"): continue
            if not (page.parent / html_lib.unescape(url)).resolve().exists(): problems.append(f"{page.name}: broken link {url}")
        for h in _empty_sections(text): problems.append(f"{page.name}: empty section {h!r}")
        if re.search(r">\s*#?\|\s*(export|exportd|hide)\b", text): problems.append(f"{page.name}: nbdev directive shown as text")
        if "https://diffnb.github.io" in re.sub(r"<pre.*?</pre>|<code.*?</code>", "", text, flags=re.S):
            problems.append(f"{page.name}: link to the online site instead of the local page")
    assert not problems, "\n".join(problems)
    assert (docs / "api" / "data.store.html").exists() and not (docs / "api" / "41_data.store.html").exists()


_RAW_MATH_JS = """const b = document.body.cloneNode(true);
b.querySelectorAll('pre, code, .katex, script, style, nav').forEach(e => e.remove());
return [document.body.getAttribute('data-math'), b.innerText];"""


def test_math_rendered_in_chromium(docs):
    "After KaTeX ran in a real browser no page shows raw $…$ or pseudo-LaTeX (x^{…}, x_{…}) outside code."
    chromium, driver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver)):
        if os.environ.get("CI", "").lower() == "true": pytest.fail("chromium/chromedriver missing in CI")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    assert (docs / "_static" / "katex" / "katex.min.js").exists(), "KaTeX was not shipped with the site"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=o)
    problems, rendered = [], 0
    try:
        for page in _local_pages(docs):
            d.get(page.resolve().as_uri())
            for _ in range(100):
                state, text = d.execute_script(_RAW_MATH_JS)
                if state == "done": break
                time.sleep(0.05)
            if state != "done": problems.append(f"{page.name}: KaTeX did not run"); continue
            rendered += d.execute_script("return document.querySelectorAll('.katex').length") > 0
            raw = re.findall(r"\$[^$\n]{1,80}\$", text) + re.findall(r"\S*[\^_]\{[^}\n]*\}\S*", text)
            if raw: problems.append(f"{page.name}: raw math {raw[:5]}")
    finally:
        d.quit()
    assert not problems, "\n".join(problems)
    assert rendered >= 5, f"KaTeX rendered math on only {rendered} pages"
