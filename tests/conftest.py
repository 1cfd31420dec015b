"""Fixtures shared by the tests: the writeup's study (``claims/study.py``), imported as pytest imports it
for the claims, with ``claims/`` on ``sys.path``."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

CLAIMS = Path(__file__).resolve().parent.parent / "claims"


@pytest.fixture(scope="session")
def study() -> ModuleType:
    if str(CLAIMS) not in sys.path:
        sys.path.insert(0, str(CLAIMS))
    import study as module

    return module
