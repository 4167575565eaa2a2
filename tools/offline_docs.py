"""Offline documentation build for machines without Quarto (`make docs` falls back to this).

Steps: nbdev's own processing of the notebooks (`_proc/`, the same input Quarto would render: show_doc
signatures, directives removed, frontmatter), then every processed notebook rendered to static HTML in
`_docs/` with nbconvert, with a navigation bar, a search box (a static index, `search-index.js`, searched in the
browser), previous/next links and every link's fragment matched to an id of its target page; the workflows' results
(JSON, figures) are copied beside the workflow pages; and README.md written from nbs/index.ipynb.

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


SECTIONS = (("", ""), ("tutorials", "Tutorials"), ("workflows", "Workflows"), ("explanations", "Explanations"),
            ("api", "API reference"))
SITE_URL = "https://diffnb.github.io/diffnb/"
# Notebook cells that display an ipywidgets app: in a static page they show the matching explorer's default state.
WIDGET_EXPLORERS = {"bismuth_widget": "powder", "lacbed_widget": "lacbed"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _front_matter(nb) -> dict:
    "nbdev's front matter (title, description, output-file) from the processed notebook's leading raw cell."
    import yaml
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.startswith("---"):
            try: return yaml.safe_load(cell.source.strip().strip("-")) or {}
            except yaml.YAMLError: return {}
    return {}


def _title(nb, fallback: str) -> str:
    fm = _front_matter(nb)
    if fm.get("title"): return str(fm["title"])
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.match(r"#\s+(.+)", cell.source.strip())
            if m: return m.group(1).strip()
    return fallback


def _summary(nb_path: Path) -> str:
    "The whole `> summary` of a notebook's title cell (nbdev's front matter keeps only its first line)."
    if not nb_path.exists(): return ""
    for cell in nbformat.read(nb_path, as_version=4).cells:
        if cell.cell_type != "markdown": continue
        lines = [l[1:].strip() for l in cell.source.splitlines() if l.startswith(">")]
        return " ".join(lines)
    return ""


def _inline_md(text: str) -> str:
    "Escaped text with `code` spans (enough for a one-paragraph summary)."
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _section_label(key: str) -> str:
    return dict(SECTIONS).get(key, key.replace("_", " ").capitalize())


def _section_order(key: str) -> int:
    keys = [k for k, _ in SECTIONS]
    return keys.index(key) if key in keys else len(keys)


def _nav(pages, here: str, depth: int) -> str:
    up = "../" * depth
    items = [f'<a class="brand" href="{up}index.html">diffnb</a>']
    for key in sorted({p[0] for p in pages if p[0]}, key=_section_order):
        here_cls = ' class="here"'
        links = [f'<a href="{up}{rel}"{here_cls if rel == here else ""} title="{html.escape(d or "", quote=True)}">'
                 f'{html.escape(t)}</a>' for sec, rel, t, d in pages if sec == key]
        items.append(f'<details><summary>{_section_label(key)}</summary><div class="menu">{"".join(links)}</div></details>')
    items.append('<div class="diffnb-search"><input type="search" id="diffnb-q" placeholder="Search the docs" aria-label="Search the docs">'
                 '<div class="diffnb-hits" id="diffnb-hits"></div></div>')
    return (f'<nav class="diffnb-nav" data-root="{up}">{"".join(items)}</nav>'
            f'<script defer src="{up}_static/search.js"></script>')


CSS = """<style>
.diffnb-nav{position:sticky;top:0;z-index:10;display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap;
 background:#1f3b57;color:#fff;padding:.6em 1.2em;font-family:system-ui,sans-serif}
.diffnb-nav a{color:#fff;text-decoration:none}.diffnb-nav .brand{font-weight:700;font-size:1.2em}
.diffnb-nav details{cursor:pointer;position:relative}.diffnb-nav .menu{display:flex;flex-direction:column;background:#2b5277;padding:.4em .8em;position:absolute;top:1.6em;left:0;min-width:14em;box-shadow:0 4px 12px rgba(0,0,0,.3)}
.diffnb-nav .menu a{padding:.15em 0}.diffnb-nav .here{text-decoration:underline}
.diffnb-title{max-width:1100px;margin:1.2em auto .4em auto;padding:0 1em;font-family:system-ui,sans-serif}
.diffnb-title h1{margin:.2em 0;font-size:2.1em}.diffnb-title .description{color:#444;font-size:1.1em;margin:.3em 0 0 0}
.diffnb-note{border-left:4px solid #2b5277;background:#f3f6f9;padding:.5em 1em;margin:.5em 0}
.diffnb-src pre{font-size:12px;line-height:1.35}.diffnb-src .ln{color:#999;display:inline-block;width:4em;user-select:none}
[id]{scroll-margin-top:4em}   /* an anchor's heading is not hidden under the sticky navigation bar */
.diffnb-source{float:right;font-size:.6em;font-weight:normal;margin-left:1em}
.diffnb-search{margin-left:auto;position:relative}.diffnb-search input{width:16em;padding:.2em .4em;border-radius:4px;border:0}
.diffnb-hits{display:none;position:absolute;right:0;top:2em;width:32em;max-height:70vh;overflow:auto;background:#fff;color:#222;
 box-shadow:0 4px 14px rgba(0,0,0,.35);padding:.3em .6em;font-size:.9em}.diffnb-hits a{color:#1f3b57;display:block;padding:.3em 0;border-bottom:1px solid #eee}
.diffnb-hits small{color:#555;display:block}
.diffnb-pager{max-width:1100px;margin:2em auto;padding:1em;display:flex;justify-content:space-between;gap:1em;border-top:1px solid #ccc;
 font-family:system-ui,sans-serif}.diffnb-pager a{text-decoration:none;color:#1f3b57}
.diffnb-figure{margin:1em 0}.diffnb-figure img{max-width:100%}.diffnb-figure figcaption{color:#555;font-size:.9em}
</style>"""


def _katex_dir(cache: Path) -> Path | None:
    "KaTeX (katex.min.js/.css, fonts/, contrib/auto-render.js): $DIFFNB_KATEX_DIR, Debian's libjs-katex, or npm's package in `cache`."
    cands = [Path(os.environ["DIFFNB_KATEX_DIR"])] if os.environ.get("DIFFNB_KATEX_DIR") else []
    cands += [Path("/usr/share/javascript/katex"), cache / "package" / "dist"]
    ok = lambda d: all((d / f).exists() for f in ("katex.min.js", "katex.min.css", "contrib/auto-render.js"))
    for d in cands:
        if ok(d): return d
    if shutil.which("npm"):
        import subprocess, tarfile
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "pack", "katex", "--silent", "--pack-destination", str(cache)], capture_output=True, text=True, timeout=300)
        tgz = sorted(cache.glob("katex-*.tgz"))
        if r.returncode == 0 and tgz:
            with tarfile.open(tgz[-1]) as t: t.extractall(cache, filter="data")
            if ok(cache / "package" / "dist"): return cache / "package" / "dist"
    return None


def _math_head(depth: int) -> str:
    up = "../" * depth + "_static/katex/"
    delims = ('[{left:"$$",right:"$$",display:true},{left:"\\\\[",right:"\\\\]",display:true},'
              '{left:"$",right:"$",display:false},{left:"\\\\(",right:"\\\\)",display:false}]')
    return (f'<link rel="stylesheet" href="{up}katex.min.css">'
            f'<script defer src="{up}katex.min.js"></script><script defer src="{up}contrib/auto-render.js"></script>'
            '<script>document.addEventListener("DOMContentLoaded",function(){renderMathInElement(document.body,'
            f'{{delimiters:{delims},throwOnError:false,ignoredTags:["script","noscript","style","textarea","pre","code"]}});'
            'document.body.setAttribute("data-math","done");});</script>')


def _source_pages(root: Path, out: Path) -> None:
    "A static page per module of diffnb with line anchors (#L<n>), the local target of the `source` links."
    for py in sorted((root / "diffnb").rglob("*.py")):
        rel = py.relative_to(root)
        target = out / "src" / (rel.as_posix() + ".html")
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = py.read_text().splitlines()
        body = "\n".join(f'<span id="L{i}"><span class="ln">{i}</span>{html.escape(l)}</span>' for i, l in enumerate(lines, 1))
        depth = len(target.relative_to(out).parts) - 1
        target.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{rel.as_posix()}</title>{CSS}</head>'
                          f'<body class="diffnb-src"><nav class="diffnb-nav"><a class="brand" href="{"../" * depth}index.html">diffnb</a>'
                          f'<span>{rel.as_posix()}</span></nav><pre>{body}</pre></body></html>')


def _rewrite_links(body: str, rel: str, names: dict) -> str:
    "Site-absolute links and GitHub source links point at the local pages; page links follow nbdev's output files."
    depth = rel.count("/")
    up = "../" * depth
    here_dir = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    def fix(m):
        url = m.group(2)
        if url.startswith(SITE_URL):
            path = url[len(SITE_URL):]
            path = re.sub(r"\.html\.md(?=$|#)", ".html", path)
            return f'{m.group(1)}"{up}{path or "index.html"}"'
        g = re.match(r"https://github\.com/[^/]+/[^/]+/blob/[^/]+/(diffnb/[^#\s]+\.py)(#L(\d+))?", url)
        if g or url.startswith("/blob/"):
            path = g.group(1) if g else re.sub(r"^/blob/[^/]+/", "", url).split("#")[0]
            line = (g.group(3) if g else (url.split("#L")[1] if "#L" in url else None))
            return f'{m.group(1)}"{up}src/{path}.html{"#L" + line if line else ""}"'
        if not re.match(r"^[a-z]+:|^#|^/", url):
            p, _, frag = url.partition("#")
            key = (here_dir + p)
            if key in names: return f'{m.group(1)}"{up}{names[key]}{"#" + frag if frag else ""}"'
        return m.group(0)
    return re.sub(r'(href=)"([^"]*)"', fix, body)


def _explorer_png(name: str, cache: dict) -> str | None:
    "Base64 PNG of explorer `name` in its default state (None when it cannot be built here)."
    if name not in cache:
        try:
            import base64
            from diffnb.explore import EXPLORERS
            cache[name] = base64.b64encode(EXPLORERS[name]().image.value).decode()
        except Exception as e:   # the page still says how to launch the app
            print(f"offline docs: no static figure for explorer {name!r}: {e}", file=sys.stderr)
            cache[name] = None
    return cache[name]


def _static_widgets(cell, pngs: dict) -> None:
    "Widget outputs have no live kernel in a static page: keep their static fallback, or show the explorer's figure."
    outs = []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if WIDGET_MIME not in data: outs.append(o); continue
        del data[WIDGET_MIME]
        if set(data) - {"text/plain"}: outs.append(o); continue
        called = next((e for f, e in WIDGET_EXPLORERS.items() if f in cell.source), None)
        if called is None: continue   # e.g. a progress bar: nothing to show
        png = _explorer_png(called, pngs)
        note = (f'<div class="diffnb-note">Interactive in Jupyter. As a local web app: <code>diffnb explore {called}</code>'
                f'{" — below, its default state." if png else "."}</div>')
        outs.append(nbformat.v4.new_output("display_data", data={"text/html": note}))
        if png: outs.append(nbformat.v4.new_output("display_data", data={"image/png": png}))
    cell["outputs"] = outs


def _empty_sections(body_html: str) -> list:
    "Headings followed directly by another heading of the same or a higher level (nothing under them)."
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", body_html, flags=re.S)
    heads = list(re.finditer(r"<h([1-6])[^>]*>(.*?)</h\1>", text, flags=re.S))
    out = []
    for a, b in zip(heads, heads[1:]):
        between = re.sub(r"<[^>]+>|\s|&#182;|¶", "", text[a.end():b.start()])
        if not between and int(b.group(1)) <= int(a.group(1)): out.append(re.sub(r"<[^>]+>", "", a.group(2)).strip("¶ "))
    return out


def _sidebar(cfg, pages) -> None:
    "nbs/sidebar.yml for Quarto in reading order: index, tutorials, workflows, explanations, API."
    import yaml
    contents = [p[4] for p in pages if not p[0]]
    for key in sorted({p[0] for p in pages if p[0]}, key=_section_order):
        contents.append({"section": _section_label(key), "contents": [p[4] for p in pages if p[0] == key]})
    Path(cfg.nbs_path, "sidebar.yml").write_text(yaml.safe_dump({"website": {"sidebar": {"contents": contents}}},
                                                                sort_keys=False, allow_unicode=True))


def _is_setup_cell(cell) -> bool:
    "A code cell that only sets up the session (matplotlib backend, warnings filters): not shown to a reader."
    lines = [l.strip() for l in cell.source.splitlines() if l.strip() and not l.strip().startswith("#")]
    setup = re.compile(r"^(import (matplotlib|warnings)|matplotlib\.use\(.*\)|%matplotlib \w+|warnings\.(filterwarnings|simplefilter)\(.*\))$")
    return bool(lines) and all(setup.match(l) for l in lines) and not cell.get("outputs")


def _clean_signature(md: str) -> str:
    "show_doc markdown: `x:NoneType=None` (the annotation inferred from a None default) reads `x=None`."
    return re.sub(r"NoneType", "None", re.sub(r"\s*:\s*NoneType\s*=\s*None", "=None", md))


def _source_beside_heading(body: str) -> str:
    "Move show_doc's `source` link (a paragraph above the heading) into the heading, floated right."
    return re.sub(r'<p><a href="([^"]+)">source</a></p>\s*(<h([1-6])[^>]*>)(.*?)(</h\3>)',
                  r'\2\4<a class="diffnb-source" href="\1">source</a>\5', body, flags=re.S)


def _captioned_images(body: str) -> str:
    "A markdown image alone in its paragraph, `![caption](path)`, becomes a figure with that caption (as Quarto renders it)."
    def figure(m):
        alt = re.search(r'\salt="([^"]*)"', m.group(1))
        if not alt or not alt.group(1).strip(): return m.group(0)
        return f'<figure class="diffnb-figure"><img{m.group(1)}><figcaption>{alt.group(1)}</figcaption></figure>'
    return re.sub(r"<p>\s*<img(\s[^>]*?)\s*/?>\s*</p>", figure, body)


def _drop_duplicate_headings(body: str) -> str:
    "A notebook's own heading for a function directly above show_doc's heading of it (same id, nothing between): keep one."
    heads = list(re.finditer(r'<h([1-6])\sid="([^"]+)"[^>]*>.*?</h\1>', body, flags=re.S))
    drop = [a for a, b in zip(heads, heads[1:])
            if a.group(2) == b.group(2) and not re.sub(r"<[^>]+>|\s|<hr/?>", "", body[a.end():b.start()])]
    for a in reversed(drop): body = body[:a.start()] + body[a.end():]
    return body


def _ids(body: str) -> set:
    return {html.unescape(i) for i in re.findall(r'\sid="([^"]+)"', body)}


def _slug(s: str) -> str:
    "A fragment as Quarto/pandoc and nbconvert would both spell it: lower case, hyphens, no punctuation but _ . -"
    return re.sub(r"[^\w.-]", "", re.sub(r"\s+", "-", html.unescape(s).strip().lower()))


def _match_fragment(frag: str, ids: set) -> str | None:
    "The id of the target page that `frag` means: exact, else case and punctuation aside, else its class (`Cls.method` → `Cls`)."
    if frag in ids: return frag
    by_slug = {}
    for i in sorted(ids): by_slug.setdefault(_slug(i), i)
    while frag:
        if _slug(frag) in by_slug: return by_slug[_slug(frag)]
        if "." not in frag: return None
        frag = frag.rsplit(".", 1)[0]          # a method documented with its class
    return None


def _fix_fragments(bodies: dict) -> int:
    "Point every local `href=page#frag` at an id that exists on that page (in place); returns how many links changed."
    ids = {rel: _ids(b) for rel, b in bodies.items()}
    changed = 0
    for rel in bodies:
        base = Path(rel).parent
        def fix(m):
            nonlocal changed
            url = html.unescape(m.group(1))
            if re.match(r"^[a-z][a-z0-9+.-]*:|^//", url): return m.group(0)
            path, _, frag = url.partition("#")
            target = rel if not path else os.path.normpath((base / path).as_posix())
            if target not in ids or not frag: return m.group(0)
            got = _match_fragment(frag, ids[target])
            if got == frag: return m.group(0)
            changed += 1
            new = path + ("#" + got if got else "")
            if not got: print(f"offline docs: {rel}: no anchor {frag!r} on {target}; linking the page", file=sys.stderr)
            return f'href="{html.escape(new, quote=True)}"'
        bodies[rel] = re.sub(r'href="([^"]*#[^"]*)"', fix, bodies[rel])
    return changed


def _page_text(body: str) -> list:
    "[(anchor id, heading, text)] of a page's sections (h1–h3), for the search index."
    main = re.sub(r"<(script|style|nav|header)[^>]*>.*?</\1>", " ", body, flags=re.S)
    main = re.sub(r'<div class="diffnb-pager".*?</div>', " ", main, flags=re.S)
    parts = re.split(r'(<h[1-3][^>]*\sid="[^"]+"[^>]*>.*?</h[1-3]>)', main, flags=re.S)
    out, anchor, head = [], "", ""
    def text(h): return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", h))).replace("¶", "").strip()
    for part in parts:
        m = re.match(r'<h[1-3][^>]*\sid="([^"]+)"[^>]*>(.*?)</h[1-3]>', part, flags=re.S)
        if m: anchor, head = html.unescape(m.group(1)), text(m.group(2).split('<a class="diffnb-source"')[0]); continue
        t = text(part)
        if t or head: out.append((anchor, head, t[:4000]))
    return out


SEARCH_JS = r"""(function(){
// Client-side search of the offline site: search-index.js (built with the pages) defines window.DIFFNB_SEARCH.
const nav=document.querySelector('.diffnb-nav'), q=document.getElementById('diffnb-q'), hits=document.getElementById('diffnb-hits');
if(!nav||!q||!hits) return;
const root=nav.getAttribute('data-root')||'';
const norm=s=>s.toLowerCase().normalize('NFKD').replace(/[\u2010-\u2015\u2212]/g,'-').replace(/[\u0300-\u036f]/g,'');
function load(cb){ if(window.DIFFNB_SEARCH) return cb();
  const s=document.createElement('script'); s.src=root+'search-index.js'; s.onload=cb; document.head.appendChild(s); }
function esc(s){ return s.replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function run(){ const words=norm(q.value).split(/\s+/).filter(w=>w.length>1);
  if(!words.length){ hits.style.display='none'; return; }
  const found=[];
  for(const e of window.DIFFNB_SEARCH){ const hay=norm(e.p+' '+e.h+' '+e.x); let score=0, ok=true;
    for(const w of words){ const i=hay.indexOf(w); if(i<0){ok=false;break;} score+=norm(e.h).includes(w)?3:1; score+=norm(e.p).includes(w)?2:0; }
    if(ok) found.push([score,e]); }
  found.sort((a,b)=>b[0]-a[0]);
  hits.innerHTML=found.length?found.slice(0,30).map(([s,e])=>{ const t=norm(e.x), i=Math.max(0,t.indexOf(words[0])-60);
      return '<a class="diffnb-hit" href="'+root+e.u+(e.a?'#'+encodeURIComponent(e.a):'')+'">'+esc(e.p)+(e.h&&e.h!==e.p?' › '+esc(e.h):'')+
             '<small>'+esc(e.x.slice(i,i+160))+'…</small></a>'; }).join('')
    :'<small>No page mentions all of these words.</small>';
  hits.style.display='block'; }
q.addEventListener('input',()=>load(run));
q.addEventListener('keydown',e=>{ if(e.key==='Escape'){ hits.style.display='none'; q.blur(); } });
document.addEventListener('click',e=>{ if(!e.target.closest('.diffnb-search')) hits.style.display='none'; });
})();
"""


def _pager(pages, i: int, depth: int) -> str:
    "Previous/next links in reading order."
    up = "../" * depth
    prev = pages[i - 1] if i > 0 else None
    nxt = pages[i + 1] if i + 1 < len(pages) else None
    a = lambda p, rel, label: f'<a rel="{rel}" href="{up}{p[1]}">{label}</a>'
    return ('<div class="diffnb-pager">' + (a(prev, "prev", f"← {html.escape(prev[2])}") if prev else "<span></span>")
            + (a(nxt, "next", f"{html.escape(nxt[2])} →") if nxt else "<span></span>") + "</div>")


RESULTS_DIR = Path("workflows") / "results"   # inside nbs/: each workflow's recorded results (JSON, figures)
FIGURE_PREFERENCE = ("summary", "results", "confusion", "parity", "histogram", "curve")


def _study_figure(nbs: Path, study: str) -> Path | None:
    "The figure the Results page shows for `study`: a PNG under nbs/workflows/results/<study>/ (or `<study>_*.png`), if any."
    d = nbs / RESULTS_DIR
    pngs = sorted((d / study).glob("*.png")) if (d / study).is_dir() else []
    pngs += sorted(d.glob(f"{study}_*.png")) + sorted(d.glob(f"{study}.png"))
    if not pngs: return None
    rank = lambda p: next((k for k, w in enumerate(FIGURE_PREFERENCE) if w in p.stem.lower()), len(FIGURE_PREFERENCE))
    return min(pngs, key=lambda p: (rank(p), p.name))


def _results_figures(body: str, nbs: Path, rel: str) -> str:
    "On the Results page: under each study's heading (`<h2 id=\"bismuth…\">`), that study's figure when one was recorded."
    up = "../" * rel.count("/")
    def add(m):
        study = re.match(r"[`']?(\w+)", html.unescape(re.sub(r"<[^>]+>", "", m.group(2)))).group(1)
        fig = _study_figure(nbs, study)
        if fig is None: return m.group(0)
        src = (RESULTS_DIR / fig.relative_to(nbs / RESULTS_DIR)).as_posix()
        page = Path("workflows") / f"{study}.html"
        more = (f' More on the <a href="{up}{page.as_posix()}#Figures-of-the-recorded-runs">{study} page</a>.'
                if (nbs / "workflows" / f"{study}.ipynb").exists() else "")
        return (m.group(0) + f'<figure class="diffnb-figure"><img src="{up}{src}" alt="{study}: {html.escape(fig.stem)}">'
                f'<figcaption>Drawn from the recorded runs ({html.escape(fig.name)}).{more}</figcaption></figure>')
    return re.sub(r'(<h2[^>]*\sid="[^"]+"[^>]*>)(.*?)</h2>', add, body, flags=re.S)


def build(root: Path = ROOT, out: Path | None = None) -> Path:
    "Process the notebooks with nbdev and render them to `_docs/` as static HTML; return the output folder."
    from nbconvert import HTMLExporter
    from nbdev.config import get_config
    from nbdev.doclinks import _build_modidx
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.serve import proc_nbs
    os.chdir(root)
    cfg = get_config()
    refresh_quarto_yml()                      # keep nbs/_quarto.yml and nbs/nbdev.yml current for Quarto users
    _build_modidx()
    cache = proc_nbs(cfg.nbs_path, n_workers=1)
    out = Path(out or cfg.doc_path)
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    nbs = sorted(p for p in cache.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    pages, names = [], {}
    for p in nbs:
        nb = nbformat.read(p, as_version=4)
        fm = _front_matter(nb)
        src_rel = p.relative_to(cache)
        sec = src_rel.parts[0] if len(src_rel.parts) > 1 else ""
        fname = fm.get("output-file") or src_rel.with_suffix(".html").name
        rel = (Path(sec) / fname).as_posix() if sec else fname
        names[src_rel.with_suffix(".html").as_posix()] = rel     # numbered file names still resolve
        names[src_rel.as_posix()] = rel
        desc = _summary(Path(cfg.nbs_path) / src_rel) or str(fm.get("description") or "").strip()
        pages.append((sec, rel, _title(nb, src_rel.stem), desc, src_rel.as_posix(), p))
    pages.sort(key=lambda x: (_section_order(x[0]), x[4]))
    _sidebar(cfg, pages)
    (Path(cfg.nbs_path) / "styles.css").exists() and shutil.copy(Path(cfg.nbs_path) / "styles.css", out / "styles.css")
    katex = _katex_dir(root / ".cache" / "katex")
    if katex is None: print("offline docs: KaTeX not found (install Debian's libjs-katex or npm): math stays as LaTeX", file=sys.stderr)
    else: shutil.copytree(katex, out / "_static" / "katex", symlinks=False)
    _source_pages(root, out)
    (out / "_static").mkdir(exist_ok=True)
    (out / "_static" / "search.js").write_text(SEARCH_JS)
    results = Path(cfg.nbs_path) / RESULTS_DIR
    if results.is_dir():    # the results JSON and figures the workflow and Results pages link to
        shutil.copytree(results, out / RESULTS_DIR, ignore=shutil.ignore_patterns("*.ipynb", ".*"))
    from nbconvert.preprocessors import TagRemovePreprocessor
    exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}), enabled=True)
    nav_pages = [(s, r, t, d) for s, r, t, d, _, _ in pages]
    pngs, bodies = {}, {}
    for sec, rel, title, desc, _, p in pages:
        nb = nbformat.read(p, as_version=4)
        nb.metadata.pop("widgets", None)      # no widget manager from a CDN: widget outputs become static below
        nb.cells = [c for c in nb.cells if not (c.cell_type == "raw" and c.source.startswith("---")) and not _is_setup_cell(c)]
        for c in nb.cells:   # execnb records timings (non-string) that nbformat's schema rejects
            c.metadata = {k: v for k, v in c.metadata.items() if k == "tags"}
            if c.cell_type == "markdown":   # `#| export` prose (module docstrings): the directive is not text
                c.source = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|"))
            if c.cell_type != "code": continue
            if re.search(r"^#\|\s*echo:\s*false", c.source, re.M):
                c.metadata["tags"] = list(c.metadata.get("tags", [])) + ["remove_input"]
            _static_widgets(c, pngs)
            c.source = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|")).strip("\n")
            for o in c.get("outputs", []):   # Quarto-only link attributes of show_doc's source links
                if "text/markdown" in o.get("data", {}):
                    o["data"]["text/markdown"] = _clean_signature(re.sub(r"\{target=[^}]*\}", "", o["data"]["text/markdown"]))
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
        depth = rel.count("/")
        body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", body)          # CDN scripts (MathJax, require.js)
        body = re.sub(r"<script[^>]*>(?:(?!</script>).)*MathJax(?:(?!</script>).)*</script>", "", body, flags=re.S)
        if katex is not None: body = body.replace("</head>", _math_head(depth) + "</head>", 1)
        head = (f'<header class="diffnb-title"><h1 class="title">{html.escape(title)}</h1>'
                + (f'<p class="description">{_inline_md(desc)}</p>' if desc else "") + "</header>")
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + CSS + _nav(nav_pages, rel, depth) + head, body, count=1)
        body = _rewrite_links(_captioned_images(_drop_duplicate_headings(_source_beside_heading(body))), rel, names)
        if rel == "explanations/results.html": body = _results_figures(body, Path(cfg.nbs_path), rel)
        bodies[rel] = body
    fixed = _fix_fragments(bodies)
    index = []
    for i, (sec, rel, title, *_rest) in enumerate(pages):
        body = bodies[rel].replace("</body>", _pager(pages, i, rel.count("/")) + "</body>", 1)
        index += [{"p": title, "u": rel, "a": a, "h": h, "x": x} for a, h, x in _page_text(body)]
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    import json
    (out / "search-index.js").write_text("window.DIFFNB_SEARCH = " + json.dumps(index, ensure_ascii=False) + ";\n")
    print(f"offline docs: {fixed} link fragments matched to their page's ids; search index of {len(index)} sections")
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
    readme = ROOT / "README.md"
    if not readme.exists() or readme.read_text() != text: readme.write_text(text)   # unchanged: never rewritten (readers may be checking it)
    if a.readme_only: return 0
    out = build()
    print(f"offline docs written to {out}/index.html ({sum(1 for _ in out.rglob('*.html'))} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
