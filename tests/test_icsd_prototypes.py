"""ICSD-derived prototype crystals (diffnb.structure.icsd_prototype_crystal): every matched entry builds, with the
space group of its ICSD entry and exactly its formula, at the ICSD lattice parameter.
(`python tools/make_icsd_prototypes.py --check` verifies that the shipped table is what the tool builds.)"""
import math
from collections import Counter

import numpy as np
import pytest
import spglib

from diffnb.structure import icsd_prototype_crystal, icsd_prototypes


def _reduced_formula(symbols):
    n = Counter(symbols); g = math.gcd(*n.values())
    return "".join(f"{e}{c // g if c // g > 1 else ''}" for e, c in sorted(n.items()))


def test_every_entry_builds_with_its_space_group_and_formula():
    """Each entry is its prototype with the species relabelled one-to-one (the exact formula shows that no two species
    became one element) in a cubic cell scaled to a: neither changes the space group, so spglib runs on the first entry
    of every prototype and on 300 random others (10 ms each), the formula and cell on all."""
    rows = icsd_prototypes()
    assert len(rows) > 3000
    first = {r["prototype"]: i for i, r in reversed(list(enumerate(rows)))}
    spg = set(first.values()) | set(np.random.default_rng(0).choice(len(rows), 300, replace=False).tolist())
    for i, r in enumerate(rows):
        at = icsd_prototype_crystal(i)
        assert _reduced_formula(at.get_chemical_symbols()) == r["formula"], (i, r)
        assert len(set(at.get_chemical_symbols())) == len(set(s for s, _ in _sites(r["prototype"]))), (i, r)
        assert np.allclose(at.cell[:], np.eye(3) * r["a"])
        if i in spg:
            sg = spglib.get_symmetry_dataset((at.cell[:], at.get_scaled_positions(), at.numbers), symprec=1e-3).number
            assert sg == r["space_group"], (i, r, sg)


def _sites(label):
    from diffnb.structure import _prototype_tables
    return _prototype_tables()[0][label]["sites"]


def test_prototype_sites_do_not_overlap():
    """Shortest interatomic distance of each prototype at its smallest matched a (fractional geometry × a)."""
    rows = icsd_prototypes()
    for proto in {r["prototype"] for r in rows}:
        i = min((k for k, r in enumerate(rows) if r["prototype"] == proto), key=lambda k: rows[k]["a"])
        at = icsd_prototype_crystal(i)
        d = at.get_all_distances(mic=True)[np.triu_indices(len(at), 1)] if len(at) > 1 else [rows[i]["a"]]
        assert min(d) > 0.5, (proto, rows[i], min(d))


def test_table_matches_the_icsd_metadata(shared_data):
    import csv
    meta = {int(r["ICSD_code"]): r for r in csv.DictReader(open(shared_data / "lacbed" / "icsd_cubic_metadata.csv"))}
    for r in icsd_prototypes()[::50]:
        m = meta[r["icsd_code"]]
        assert float(m["cell_length"]) == r["a"]
        el = {tok.rstrip("0123456789.") for tok in m["chemical_formula_sum"].split()}
        assert el == set(Counter(icsd_prototype_crystal(icsd_prototypes().index(r)).get_chemical_symbols()))
