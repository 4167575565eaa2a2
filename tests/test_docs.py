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


def _headless_chromium():
    "Debian's Chromium, headless at 1,280 × 900 with no background networking (skip, or fail in CI, when missing)."
    chromium, driver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver)):
        if os.environ.get("CI", "").lower() == "true": pytest.fail("chromium/chromedriver missing in CI")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=o)


def test_math_rendered_in_chromium(docs):
    "After KaTeX ran in a real browser no page shows raw $…$ or pseudo-LaTeX (x^{…}, x_{…}) outside code."
    assert (docs / "_static" / "katex" / "katex.min.js").exists(), "KaTeX was not shipped with the site"
    d = _headless_chromium()
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


def _all_local_pages(docs):
    return [p for p in sorted(docs.rglob("*.html")) if "_static" not in p.relative_to(docs).parts]


def _ids_of(page, cache={}):
    if page not in cache: cache[page] = set(html_lib.unescape(i) for i in re.findall(r'\sid="([^"]+)"', page.read_text()))
    return cache[page]


def test_every_local_link_lands_on_its_anchor(docs):
    "Every local link names a file that exists and, when it has a fragment, an id of that page (case-sensitive)."
    broken, checked = [], 0
    for page in _all_local_pages(docs):
        for url in re.findall(r'href="([^"]*)"', page.read_text()):
            url = html_lib.unescape(url)
            if not url or re.match(r"^[a-z][a-z0-9+.-]*:", url) or url.startswith("//"): continue
            path, _, frag = url.partition("#")
            target = (page.parent / path).resolve() if path else page
            checked += 1
            if not target.exists(): broken.append(f"{page.relative_to(docs)}: {url} (no such file)"); continue
            if frag and target.suffix == ".html" and frag not in _ids_of(target):
                broken.append(f"{page.relative_to(docs)}: {url} (no id {frag!r} on {target.name})")
    assert checked > 1000
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken[:40])


def test_fragment_matching_rules():
    "The generator's fragment matching: exact, then case and punctuation aside, then a method's class; else none."
    sys.path.insert(0, str(ROOT / "tools"))
    from offline_docs import _match_fragment
    ids = {"LogIntensity", "Explorer", "LACBED-(Bloch-waves)", "cell-id=1"}
    assert _match_fragment("LogIntensity", ids) == "LogIntensity"
    assert _match_fragment("logintensity", ids) == "LogIntensity"
    assert _match_fragment("lacbed-bloch-waves", ids) == "LACBED-(Bloch-waves)"
    assert _match_fragment("explorer.figure", ids) == "Explorer"
    assert _match_fragment("nothing", ids) is None


# words that speak to the authors instead of the reader (internal targets, placeholders, history); "blocked" in its
# status sense only ("blocked on/until/by an issue", "(blocked)"), not the beam stop's blocked pixels
INTERNAL_WORDS = ("our target", "science target", "left open", "KEEP_BEST_RUN", "stopped for lack of time",
                  "which did not exist yet", "the explanation at the time")
INTERNAL_PATTERNS = (r"\bblocked (on|until)\b", r"\bblocked by (the |an? )?(issue|lack|bug|missing|other)", r"\(blocked\)", r"\bblocked:",
                     r"\b(aim|target) of [^.]{0,20}[≤≥]")   # an internal threshold ("the aim of ≤ 5 %")
WORKFLOW_PAGES = "workflows/bismuth.html, workflows/lacbed.html, workflows/mote2.html, workflows/speckle.html"


def _reader_text(page) -> str:
    "What a reader reads on a page: the text outside code, commands, scripts and the navigation."
    t = re.sub(r"<(pre|code|script|style|nav)\b[^>]*>.*?</\1>", " ", page.read_text(), flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", t))


@pytest.mark.parametrize("group", ["workflows", "other"])
def test_pages_speak_to_the_reader(docs, group):
    pages = [p for p in _local_pages(docs) if (p.relative_to(docs).parts[0] == "workflows") == (group == "workflows")]
    assert pages
    hits = []
    for page in pages:
        text = _reader_text(page)
        for w in [rf"\b{re.escape(w)}\b" for w in INTERNAL_WORDS] + list(INTERNAL_PATTERNS):
            for m in re.finditer(w, text, flags=re.I):
                hits.append(f"{page.relative_to(docs)}: {m.group(0)!r} in …{text[max(0, m.start() - 60):m.end() + 60].strip()}…")
    assert not hits, "\n".join(hits)


def _search_index(docs) -> list:
    import json
    js = (docs / "search-index.js").read_text()
    assert js.startswith("window.DIFFNB_SEARCH = ")
    return json.loads(js[len("window.DIFFNB_SEARCH = "):].rstrip().rstrip(";"))


def test_search_index_covers_every_page(docs):
    index = _search_index(docs)
    pages = {e["u"] for e in index}
    assert {p.relative_to(docs).as_posix() for p in _local_pages(docs) if "src" not in p.relative_to(docs).parts} <= pages
    for e in index:   # every entry points at a page and an id that exist
        assert (docs / e["u"]).exists() and (not e["a"] or e["a"] in _ids_of(docs / e["u"])), e["u"] + "#" + e["a"]
    hits = [e for e in index if "debye–waller" in (e["h"] + " " + e["x"]).lower()]
    assert {"api/scattering.html", "api/sim.powder.html"} <= {e["u"] for e in hits}    # the pages that define it


def test_search_box_answers_in_chromium(docs):
    "Typing 'Debye–Waller' in the search box of the home page lists sections that mention it, linked to their anchors."
    from selenium.webdriver.common.by import By
    d = _headless_chromium()
    try:
        d.get((docs / "api" / "core.html").resolve().as_uri())
        box = d.find_element(By.ID, "diffnb-q")
        box.send_keys("Debye–Waller")
        t0 = time.time()
        while time.time() - t0 < 10 and not d.find_elements(By.CSS_SELECTOR, "#diffnb-hits a.diffnb-hit"): time.sleep(0.1)
        links = [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, "#diffnb-hits a.diffnb-hit")]
        assert len(links) >= 3, links
        assert any("sim.powder.html#" in u or "scattering.html#" in u for u in links), links
        d.get(links[0])                                  # the first hit opens its page at its section
        assert d.execute_script("return location.hash") and "diffnb-nav" in d.page_source
    finally:
        d.quit()


def test_previous_next_links_follow_the_reading_order(docs):
    pages = [p for p in _local_pages(docs) if "src" not in p.relative_to(docs).parts]
    order = {}
    for page in pages:
        t = page.read_text()
        prev = re.search(r'<a rel="prev" href="([^"]+)"', t); nxt = re.search(r'<a rel="next" href="([^"]+)"', t)
        order[page.resolve()] = ((page.parent / prev.group(1)).resolve() if prev else None,
                                 (page.parent / nxt.group(1)).resolve() if nxt else None)
    firsts = [p for p, (a, b) in order.items() if a is None]; lasts = [p for p, (a, b) in order.items() if b is None]
    assert firsts == [(docs / "index.html").resolve()] and len(lasts) == 1
    seen, p = [], firsts[0]
    while p is not None:                                  # one chain through every page, prev the inverse of next
        seen.append(p)
        nxt = order[p][1]
        if nxt is not None: assert order[nxt][0] == p, f"{nxt.name}: previous is not {p.name}"
        p = nxt
    assert len(seen) == len(order)


def test_home_page_links_studies_and_quick_start(docs):
    t = (docs / "index.html").read_text()
    for wf in ("bismuth", "lacbed", "mote2", "speckle"):
        assert f'href="workflows/{wf}.html"' in t, wf
    assert 'href="tutorials/quickstart.html"' in t and 'href="explanations/results.html"' in t
    assert re.search(r"Shen et al\.? (19|20)\d\d", _reader_text(docs / "index.html"))


def test_results_page_links_its_json_and_shows_recorded_figures(docs):
    results = ROOT / "nbs" / "workflows" / "results"
    for f in results.glob("*.json"): assert (docs / "workflows" / "results" / f.name).read_bytes() == f.read_bytes()
    t = (docs / "explanations" / "results.html").read_text()
    linked = set(re.findall(r'href="\.\./workflows/results/([^"]+\.json)"', t))
    assert {"bismuth_relative.json", "lacbed.json", "mote2_refit.json", "speckle_radial.json"} <= linked
    for study in ("bismuth", "lacbed", "mote2", "speckle"):   # a figure only where a recorded run left one
        has_png = any((results / study).glob("*.png")) or any(results.glob(f"{study}_*.png"))
        shown = re.search(rf'<img src="\.\./workflows/results/{study}[/_][^"]*\.png"', t)
        assert bool(shown) == has_png, study


def test_api_pages_signatures_and_setup_cells(docs):
    for page in sorted((docs / "api").glob("*.html")):
        t = page.read_text()
        assert "NoneType" not in t, f"{page.name}: NoneType in a signature"
        assert not re.search(r"<p><a href=\"[^\"]+\">source</a></p>", t), f"{page.name}: source link above its heading"
    t = (docs / "api" / "learn.learner.html").read_text()
    assert 'class="diffnb-source"' in t
    for name in ("learn.learner.html", "learn.interpret.html"):
        assert "matplotlib.use" not in _reader_text(docs / "api" / name) + re.sub(r"<[^>]+>", "", (docs / "api" / name).read_text())


WORKFLOWS = ("bismuth", "lacbed", "mote2", "speckle")


def test_workflow_pages_show_the_recorded_figures(docs):
    "Each workflow page shows every figure recorded under nbs/workflows/results/<workflow>/, each with a caption."
    results = ROOT / "nbs" / "workflows" / "results"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "results_figures.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr          # the figures drawn from the results JSON are all there
    for wf in WORKFLOWS:
        t = (docs / "workflows" / f"{wf}.html").read_text()
        shown = re.findall(rf'<figure class="diffnb-figure"><img[^>]*\ssrc="(results/{wf}/[^"]+\.png)"[^>]*><figcaption>([^<]+)</figcaption>', t)
        recorded = {f"results/{wf}/{p.name}" for p in (results / wf).glob("*.png")}
        assert recorded, f"no recorded figure for {wf}"
        assert {s for s, _ in shown} == recorded, f"{wf}: shown {sorted(s for s, _ in shown)}, recorded {sorted(recorded)}"
        for src, caption in shown:
            assert len(caption.split()) >= 8, f"{wf}: {src} has no real caption"
            assert (docs / "workflows" / src).read_bytes() == (results / src.split("/", 1)[1]).read_bytes()


def test_workflow_page_figures_load_in_chromium(docs):
    "In a real browser every image of each workflow page loads (naturalWidth > 0), the recorded figures among them."
    d = _headless_chromium()
    try:
        for wf in WORKFLOWS:
            d.get((docs / "workflows" / f"{wf}.html").resolve().as_uri())
            for _ in range(100):
                imgs = d.execute_script("return document.readyState === 'complete' ? Array.from(document.images).map("
                                        "i => [i.getAttribute('src'), i.complete, i.naturalWidth]) : null")
                if imgs is not None: break
                time.sleep(0.05)
            assert imgs is not None, f"{wf}: the page did not finish loading"
            figures = [i for i in imgs if i[0].startswith(f"results/{wf}/")]
            assert figures, f"{wf}: no recorded figure on the page"
            broken = [src for src, complete, width in imgs if not (complete and width > 0)]
            assert not broken, f"{wf}: images that did not load: {broken}"
    finally:
        d.quit()
