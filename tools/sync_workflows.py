#!/usr/bin/env python3
"""Copy the workflow notebooks (nbs/workflows/*.ipynb, the source) into diffnb/workflow_nbs/ (package data), so that
`diffnb run` works from an installed package. `--check`: change nothing, exit 1 when the copies differ."""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, DST = ROOT / "nbs" / "workflows", ROOT / "diffnb" / "workflow_nbs"


def differences() -> list[str]:
    src = {p.name: p.read_bytes() for p in sorted(SRC.glob("*.ipynb"))}
    dst = {p.name: p.read_bytes() for p in sorted(DST.glob("*.ipynb"))} if DST.is_dir() else {}
    return sorted(n for n in set(src) | set(dst) if src.get(n) != dst.get(n))


def main(argv) -> int:
    diff = differences()
    if "--check" in argv:
        if diff:
            print(f"ERROR: diffnb/workflow_nbs/ differs from nbs/workflows/ ({', '.join(diff)}); "
                  "run `python tools/sync_workflows.py`", file=sys.stderr)
            return 1
        print("diffnb/workflow_nbs/ matches nbs/workflows/.")
        return 0
    DST.mkdir(exist_ok=True)
    for name in diff:
        if (SRC / name).exists(): shutil.copyfile(SRC / name, DST / name)
        else: (DST / name).unlink()
    print(f"synced {len(diff)} workflow notebook(s) into diffnb/workflow_nbs/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
