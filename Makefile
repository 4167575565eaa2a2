# diffnb — the two commands: `make demo` and `make test` (see README.md)
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.diffnb-installed
TS := $(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test venv export clean-nbs check-sync nbtest pytest docs bench clean

# Create .venv when missing and (re)install the project when pyproject.toml changed.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# The main job on embedded defaults: the quickstart tutorial executed with papermill into runs/ (`run_notebook`: the
# kernel on IPC sockets, no TCP ports), then the speckle workflow at its tiny defaults with `diffnb run` (data, the
# radial model trained and tested, figures, metrics.json; its last line: the held-out accuracy beside the baseline).
demo: $(STAMP)
	@mkdir -p runs/quickstart/$(TS)
	$(PY) -c "from diffnb.workflows import run_notebook; run_notebook('nbs/tutorials/quickstart.ipynb', \
	    'runs/quickstart/$(TS)/quickstart.ipynb', {'out_dir': '.'}, cwd='runs/quickstart/$(TS)')"
	@echo "demo output: runs/quickstart/$(TS)/"
	$(BIN)/diffnb run speckle --out runs/speckle/$(TS)
	@echo "speckle workflow (tiny defaults: a model trained and tested): runs/speckle/$(TS)/"

# Notebooks are the source: exporting and cleaning must change nothing; then run the notebooks and pytest.
test: $(STAMP) check-sync nbtest pytest

check-sync: $(STAMP)
	@bash tools/check_sync.sh $(BIN)

# Every notebook but the workflow notebooks, with each notebook's time. nbs/workflows/ is skipped here because pytest
# runs each workflow notebook once, through `diffnb run` as users do (tests/conftest.py: `workflow_run`, one shared run
# per workflow), and checks its outputs: running them here as well would execute each workflow twice per `make test`.
NBTEST_SKIP := '^([_.]|workflows$$)'
nbtest: $(STAMP)
	$(BIN)/nbdev-test --n-workers 2 --timing --skip-folder-re $(NBTEST_SKIP)

# one worker per core, each test module on one worker (module fixtures run once); the workflow runs are shared by
# the whole session (tests/conftest.py); the 15 slowest tests are listed at the end
pytest: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

export: $(STAMP)
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(PY) tools/sync_workflows.py

# Documentation: Quarto when present, otherwise an offline static-HTML build of the same pages.
docs: $(STAMP)
	@if command -v quarto >/dev/null 2>&1; then $(BIN)/nbdev-docs; \
	 else $(PY) tools/offline_docs.py; fi

bench: $(STAMP)
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _docs _proc runs
