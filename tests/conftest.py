import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("MPLBACKEND", "Agg")
# under pytest-xdist each worker gets one core: one BLAS/OpenMP thread each (set before torch is imported)
if "PYTEST_XDIST_WORKER" in os.environ: os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    "The project's shared reference data (../shared/data); tests that need it skip when it is absent."
    if not SHARED_DATA.exists(): pytest.skip("../shared/data not present")
    return SHARED_DATA


# ---- workflow runs shared by the tests ---------------------------------------------------------------------------
# `diffnb run` of a whole workflow takes tens of seconds: each distinct (workflow, arguments) runs once per test session,
# in a folder shared by the pytest-xdist workers (file-locked, so the first test to ask runs it and the others wait for
# it), and every test that needs it reads that run folder. `make test` skips nbs/workflows in nbdev-test for this reason:
# these runs execute each workflow notebook, through the command users run.

def diffnb_cli(*args, cwd=None, timeout=600):
    "`diffnb ARGS` in a fresh interpreter (this checkout's package): the CompletedProcess."
    import subprocess, sys
    return subprocess.run([sys.executable, "-c", "import sys; from diffnb.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _shared_root(tmp_path_factory) -> Path:
    "A folder of this test session shared by all its xdist workers (their base temp folders' parent)."
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def _sha(path) -> str:
    import hashlib
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory):
    """`workflow_run(name, *args, setup=None)` → (run folder, metrics.json as a dict): `diffnb run NAME --out RUN
    --store-dir STORES ARGS`, started in a folder of its own (`setup(folder)` prepares it first), run once per session.
    The command's output and the workflow notebook's checksum before and after are in `run_record(run folder)`."""
    import hashlib, json
    from filelock import FileLock
    from diffnb.workflows import workflow_path
    root = _shared_root(tmp_path_factory) / "workflow-runs"
    root.mkdir(exist_ok=True)

    def run(name, *args, setup=None):
        key = hashlib.sha1(json.dumps([name, *args]).encode()).hexdigest()[:10]
        folder = root / f"{name}-{key}"
        with FileLock(str(folder) + ".lock"):
            done = folder / "result.json"
            if not done.exists():
                folder.mkdir(exist_ok=True)
                if setup is not None: setup(folder)
                src = workflow_path(name)
                before = _sha(src)
                r = diffnb_cli("run", name, "--out", str(folder / "run"), "--store-dir", str(folder / "stores"), *args,
                               cwd=folder)
                done.write_text(json.dumps({"args": [name, *args], "returncode": r.returncode, "stdout": r.stdout,
                                            "stderr": r.stderr, "source": str(src), "source_sha": [before, _sha(src)]}))
        r = json.loads(done.read_text())
        assert r["returncode"] == 0, f"diffnb run {' '.join(r['args'])} failed:\n{r['stdout'][-3000:]}\n{r['stderr'][-4000:]}"
        out = folder / "run"
        return out, json.loads((out / "metrics.json").read_text())
    return run


def run_record(out) -> dict:
    "What `workflow_run` kept of the command that made run folder `out`: args, returncode, stdout, stderr, source_sha."
    import json
    return json.loads((Path(out).parent / "result.json").read_text())


def assert_quiet_kernel(out):
    "The command that made run folder `out` printed no kernel transport warning (the kernel runs over IPC sockets)."
    r = run_record(out)
    assert "running into" in r["stdout"]                              # the command's output was captured
    assert "Kernel is running over TCP" not in r["stdout"] + r["stderr"], (r["stdout"] + r["stderr"])[-2000:]
