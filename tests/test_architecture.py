"""The architecture of ``pyproject.toml``'s import-linter contracts: the command line over the claims framework
over the ML library, each module importing only from the layers below its own, and no import cycle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def linter() -> None:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install .[test])")


def test_the_import_contracts_are_kept(linter: None) -> None:
    checked = lint_imports(ROOT)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert "2 kept, 0 broken" in checked.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("data.py", "from tdlib.claims import stats", "at any depth BROKEN"),  # the library reaching up: a cycle
    ("selection.py", "from tdlib import registry", "layer by layer BROKEN"),  # up a layer, with no cycle
    ("fused.py", "from tdlib import files", "layer by layer BROKEN"),  # a sibling in its own layer
    ("newmodule.py", "", "not listed as layers"),  # a module placed in no layer
])
def test_the_contracts_catch_what_they_forbid(linter: None, tmp_path: Path, module: str, line: str,
                                              broken: str) -> None:
    shutil.copytree(ROOT / "tdlib", tmp_path / "tdlib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "tdlib" / module).open("a") as file:
        file.write(f"\n{line}\n")
    checked = lint_imports(tmp_path)
    assert checked.returncode != 0 and broken in checked.stdout, checked.stdout[-3000:]
