import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    "The project's shared reference data (../shared/data); tests that need it skip when it is absent."
    if not SHARED_DATA.exists(): pytest.skip("../shared/data not present")
    return SHARED_DATA
