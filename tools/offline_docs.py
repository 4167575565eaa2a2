"""Offline documentation build for machines without Quarto (`make docs` falls back to this).

Steps: nbdev's own processing of the notebooks (`_proc/`, the same input Quarto would render: show_doc
signatures, directives removed, frontmatter), then every processed notebook rendered to static HTML in
`_docs/` with nbconvert, with a navigation bar; and README.md written from nbs/index.ipynb.

Usage: python tools/offline_docs.py [--readme-only] [--check-readme]
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (("api", "API"), ("tutorials", "Tutorials"), ("explanations", "Explanations"))


def readme_text(index_nb: Path) -> str:
    "README.md from index.ipynb: markdown cells verbatim, code cells fenced with their text output."
    nb = nbformat.read(index_nb, as_version=4)
    parts = []
    for cell in nb.cells:
        src = cell.source.strip()
        if not src: continue
        if cell.cell_type == "markdown": parts.append(src)
        elif cell.cell_type == "code":
            src = "\n".join(l for l in src.splitlines() if not l.startswith("#|"))
            if not src.strip(): continue
            parts.append(f"```python\n{src}\n```")
            outs = [o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"]
            outs += [o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []) if "data" in o]
            if "".join(outs).strip(): parts.append("    " + "".join(outs).strip().replace("\n", "\n    "))
    body = "\n\n".join(parts) + "\n"
    return "<!-- Generated from nbs/index.ipynb by `make docs` (tools/offline_docs.py); edit the notebook, not this file -->\n\n" + body


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.startswith("---"):
            m = re.search(r"^title:\s*(.+)$", cell.source, re.M)
            if m: return m.group(1).strip().strip("'\"")
        if cell.cell_type == "markdown":
            m = re.match(r"#\s+(.+)", cell.source.strip())
            if m: return m.group(1).strip()
    return fallback


def _nav(pages: list[tuple[str, str, str]], here: str, depth: int) -> str:
    up = "../" * depth
    items = [f'<a class="brand" href="{up}index.html">diffnb</a>']
    for key, label in SECTIONS:
        here_attr = ' class="here"'
        links = [f'<a href="{up}{rel}"{here_attr if rel == here else ""}>{html.escape(t)}</a>'
                 for sec, rel, t in pages if sec == key]
        if links: items.append(f'<details><summary>{label}</summary><div class="menu">{"".join(links)}</div></details>')
    return f'<nav class="diffnb-nav">{"".join(items)}</nav>'


CSS = """<style>
.diffnb-nav{position:sticky;top:0;z-index:10;display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap;
 background:#1f3b57;color:#fff;padding:.6em 1.2em;font-family:system-ui,sans-serif}
.diffnb-nav a{color:#fff;text-decoration:none}.diffnb-nav .brand{font-weight:700;font-size:1.2em}
.diffnb-nav details{cursor:pointer}.diffnb-nav .menu{display:flex;flex-direction:column;background:#2b5277;padding:.4em .8em}
.diffnb-nav .menu a{padding:.15em 0}.diffnb-nav .here{text-decoration:underline}
</style>"""


def build(root: Path = ROOT, out: Path | None = None) -> Path:
    "Process the notebooks with nbdev and render them to `_docs/` as static HTML; return the output folder."
    from nbconvert import HTMLExporter
    from nbdev.config import get_config
    from nbdev.doclinks import _build_modidx
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    os.chdir(root)
    cfg = get_config()
    refresh_quarto_yml()                      # keep nbs/_quarto.yml and nbs/nbdev.yml current for Quarto users
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    cache = proc_nbs(cfg.nbs_path, n_workers=1)
    out = Path(out or cfg.doc_path)
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    nbs = sorted(p for p in cache.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    pages = []
    for p in nbs:
        rel = p.relative_to(cache).with_suffix(".html")
        sec = rel.parts[0] if len(rel.parts) > 1 else ""
        pages.append((sec, rel.as_posix(), _title(nbformat.read(p, as_version=4), rel.stem), p))
    from nbconvert.preprocessors import TagRemovePreprocessor
    exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}), enabled=True)
    nav_pages = [(s, r, t) for s, r, t, _ in pages]
    for sec, rel, title, p in pages:
        nb = nbformat.read(p, as_version=4)
        nb.cells = [c for c in nb.cells if not (c.cell_type == "raw" and c.source.startswith("---"))]
        for c in nb.cells:   # execnb records timings (non-string) that nbformat's schema rejects
            c.metadata = {k: v for k, v in c.metadata.items() if k == "tags"}
            if c.cell_type != "code": continue
            if re.search(r"^#\|\s*echo:\s*false", c.source, re.M):
                c.metadata["tags"] = list(c.metadata.get("tags", [])) + ["remove_input"]
            c.source = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|")).strip("\n")
            for o in c.get("outputs", []):   # Quarto-only link attributes of show_doc's source links
                if "text/markdown" in o.get("data", {}):
                    o["data"]["text/markdown"] = re.sub(r"\{target=[^}]*\}", "", o["data"]["text/markdown"])
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
        depth = rel.count("/")
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + CSS + _nav(nav_pages, rel, depth), body, count=1)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme-only", action="store_true", help="only (re)write README.md")
    ap.add_argument("--check-readme", action="store_true", help="exit 1 if README.md is not up to date")
    a = ap.parse_args(argv)
    text = readme_text(ROOT / "nbs" / "index.ipynb")
    if a.check_readme:
        ok = (ROOT / "README.md").exists() and (ROOT / "README.md").read_text() == text
        if not ok: print("README.md is out of date with nbs/index.ipynb: run `make docs`", file=sys.stderr)
        return 0 if ok else 1
    (ROOT / "README.md").write_text(text)
    if a.readme_only: return 0
    out = build()
    print(f"offline docs written to {out}/index.html ({sum(1 for _ in out.rglob('*.html'))} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
