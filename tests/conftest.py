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
