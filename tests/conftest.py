"""Fixtures shared by the tests: the writeup's study (``claims/study.py``), imported as pytest imports it
for the claims, with ``claims/`` on ``sys.path``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
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


@pytest.fixture()
def isolated_registries() -> Iterator[None]:
    """The claims framework's registries (profiles, conditions, report sections, figures, the title) restored
    after the test, in place: what a conftest it loads registers (the worked example's) is forgotten."""
    from tdlib.claims import conditions, profiles, report

    registries = (profiles.PROFILES, conditions.CONDITIONS, report.SECTIONS, report.FIGURES, report.TITLE)
    saved = [list(r.items()) if isinstance(r, dict) else list(r) for r in registries]
    yield
    for registry, content in zip(registries, saved):
        registry.clear()
        registry.update(content) if isinstance(registry, dict) else registry.extend(content)
