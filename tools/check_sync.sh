#!/usr/bin/env bash
# Fail when `nbdev-export` or `nbdev-clean` would change any file: diffnb/ must be exactly what the
# notebooks export and the notebooks must be clean. Works whatever the git state (compares checksums).
set -euo pipefail
bin=${1:-.venv/bin}
snap() { find diffnb nbs -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 md5sum; }
before=$(snap)
"$bin/nbdev-export"
"$bin/nbdev-clean"
after=$(snap)
if [ "$before" != "$after" ]; then
  echo "ERROR: nbdev-export / nbdev-clean changed these files (export from the notebooks and commit):" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "nbdev-export and nbdev-clean change nothing."
# the workflow notebooks ship inside the package (diffnb/workflow_nbs/): the copies must match nbs/workflows/
"$bin/python" tools/sync_workflows.py --check
