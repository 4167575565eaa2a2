"""Build diffnb/data/lacbed/{cubic_prototypes.json, icsd_prototypes.csv}: the cubic AFLOW prototypes shipped with
pymatgen, and the cubic ICSD entries (../shared/data/lacbed/icsd_cubic_metadata.csv: code, formula, a, space group —
metadata only, no ICSD structures) that match one of them by space group and reduced stoichiometry.

Each match becomes a real crystal: the ICSD formula's elements on the prototype's Wyckoff sites (element → site by
the stoichiometry; where several species share a count, by electronegativity order, so cations stay on the
prototype's cation sites) at the ICSD lattice parameter. `diffnb.structure.icsd_prototype_crystal(i)` builds it.

Usage: python tools/make_icsd_prototypes.py [--check]   (--check: fail if the shipped files would change)
"""
import argparse
import csv
import gzip
import io
import json
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "diffnb" / "data" / "lacbed"
ICSD = ROOT.parent / "shared" / "data" / "lacbed" / "icsd_cubic_metadata.csv"


def cubic_prototypes():
    "AFLOW prototypes of cubic space groups, as conventional cells: label, space group, species, fractional sites."
    import pymatgen.analysis.prototypes as m
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    raw = json.load(gzip.open(Path(m.__file__).parent / "aflow_prototypes.json.gz"))
    out = []
    for e in raw:
        s = Structure.from_dict(e["snl"])
        sga = SpacegroupAnalyzer(s, symprec=1e-3)
        sg = sga.get_space_group_number()
        if not 195 <= sg <= 230: continue
        conv = sga.get_conventional_standard_structure()
        if max(abs(x - 90) for x in conv.lattice.angles) > 1e-4 or np.ptp(conv.lattice.abc) > 1e-4: continue
        species = sorted({str(x.specie) for x in conv})
        out.append({"label": e["tags"]["aflow"], "mineral": e["tags"].get("mineral") or "", "space_group": sg,
                    "a": round(conv.lattice.a, 6), "species": species,
                    "sites": [[str(x.specie), [round(float(v) % 1.0, 6) for v in x.frac_coords]] for x in conv]})
    out.sort(key=lambda p: (p["space_group"], p["label"]))
    return out


def reduced(counts: dict) -> tuple:
    "Counts divided by their gcd: {el: n} → {el: n/g}."
    g = math.gcd(*counts.values())
    return {k: v // g for k, v in counts.items()}


def _known_elements():
    from ase.data import chemical_symbols
    from diffnb.scattering import electron_form_factor
    ok = set()
    for el in chemical_symbols[1:]:
        try: electron_form_factor(el, 0.5); ok.add(el)
        except Exception: pass
    return ok

KNOWN = _known_elements()


def parse_formula(text):
    "ICSD 'chemical_formula_sum' → {element: integer count}, or None when a count is not an integer (disorder)."
    out = {}
    for tok in text.split():
        m = re.fullmatch(r"([A-Z][a-z]?)([0-9.]*)", tok)
        if not m: return None
        n = float(m.group(2) or 1)
        if abs(n - round(n)) > 1e-6 or round(n) < 1 or m.group(1) not in KNOWN: return None   # disorder; D, T
        out[m.group(1)] = out.get(m.group(1), 0) + int(round(n))
    return out or None


def space_group_number(hm: str):
    "Hermann–Mauguin symbol of the metadata ('F d -3 m S', 'P m -3 m') → international number."
    import spglib
    sym = re.sub(r"\s+[SZ]$", "", hm.strip()).replace(" ", "")
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        if t.international_short == sym or t.international_full.replace(" ", "") == sym or t.international == sym:
            return t.number
    return None


def electronegativity(el):
    from pymatgen.core import Element
    x = Element(el).X
    return x if x == x else 0.0     # NaN (noble gases) → 0


def assign(proto, formula):
    "Prototype species → ICSD element: by reduced count; equal counts by electronegativity order. None if no match."
    pc = reduced(Counter(s for s, _ in proto["sites"]))
    fc = reduced(formula)
    if sorted(pc.values()) != sorted(fc.values()): return None
    mapping = {}
    for n in set(pc.values()):
        ps = sorted([s for s, c in pc.items() if c == n], key=electronegativity)
        fs = sorted([s for s, c in fc.items() if c == n], key=electronegativity)
        mapping.update(zip(ps, fs))
    return mapping


def build():
    protos = cubic_prototypes()
    by_sg = {}
    for k, p in enumerate(protos): by_sg.setdefault(p["space_group"], []).append(k)
    rows, cache = [], {}
    with open(ICSD, newline="") as f:
        for r in csv.DictReader(f):
            formula = parse_formula(r["chemical_formula_sum"])
            if formula is None: continue
            hm = r["space_group"]
            if hm not in cache: cache[hm] = space_group_number(hm)
            sg = cache[hm]
            for k in by_sg.get(sg, []):
                mapping = assign(protos[k], formula)
                if mapping is None: continue
                rows.append({"icsd_code": int(r["ICSD_code"]), "formula": "".join(f"{e}{n if n > 1 else ''}" for e, n in sorted(reduced(formula).items())),
                             "space_group": sg, "a": float(r["cell_length"]), "prototype": protos[k]["label"],
                             "mapping": ";".join(f"{p}:{e}" for p, e in sorted(mapping.items()))})
                break                                    # first matching prototype of the group
    return protos, rows


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--check", action="store_true"); args = ap.parse_args()
    protos, rows = build()
    pj = json.dumps(protos, indent=0, sort_keys=True) + "\n"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n"); w.writeheader(); w.writerows(rows)
    files = {OUT / "cubic_prototypes.json": pj, OUT / "icsd_prototypes.csv": buf.getvalue()}
    if args.check:
        stale = [str(p) for p, t in files.items() if not p.exists() or p.read_text() != t]
        if stale: sys.exit(f"stale: {stale}")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for p, t in files.items(): p.write_text(t)
    n = sum(1 for _ in open(ICSD)) - 1
    top = Counter(r["prototype"] for r in rows).most_common(8)
    print(f"{len(protos)} cubic prototypes; {len(rows)} of {n} ICSD entries matched ({100 * len(rows) / n:.1f} %); top: {top}")


if __name__ == "__main__":
    main()
