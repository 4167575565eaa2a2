"""Write diffnb/_tables/electron_scattering.json: the published electron scattering-factor coefficients
(Lobato & Van Dyck 2014; Kirkland 2010, Appendix C; Peng et al. 1996, high-angle fit 0-6 1/Å), as distributed
with abTEM, so that diffnb evaluates f_e(s) without importing abTEM. Run once when the tables change:
    python tools/make_scattering_tables.py
The notebook nbs/api/15_scattering.ipynb checks the vendored values against abTEM's."""
import json
from pathlib import Path

import abtem.parametrizations as p

SOURCES = {"lobato": "lobato.json", "kirkland": "kirkland.json", "peng": "peng_high.json"}
out = {"_about": "Published electron scattering-factor coefficients, raw (unscaled) as in the papers: "
                 "lobato (2, 5) rows a, b [Lobato & Van Dyck, Acta Cryst. A70 (2014) 636]; "
                 "kirkland (4, 3) rows a, b, c, d [Kirkland, Advanced Computing in Electron Microscopy, 2nd ed. (2010), App. C]; "
                 "peng (2, 5) rows a, b for s = sin(theta)/lambda [Peng et al., Acta Cryst. A52 (1996) 257, 0-6 1/A fit]."}
data_dir = Path(p.__file__).parent / "data"
for name, fname in SOURCES.items():
    out[name] = json.loads((data_dir / fname).read_text())
dest = Path(__file__).resolve().parents[1] / "diffnb" / "_tables" / "electron_scattering.json"
dest.write_text(json.dumps(out, separators=(",", ":")) + "\n")
print(f"wrote {dest} ({dest.stat().st_size} bytes)")
