"""./dev, the bootstrap the README and CI run: it refuses early, and clearly, when the disk is too full."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_dev(tmp_path: Path, free_kb: int, *args: str, torch_env: bool = False) -> subprocess.CompletedProcess:
    """Runs a copy of ./dev in ``tmp_path`` with ``df`` reporting ``free_kb`` and a stand-in Python that
    exits 3 when asked to make the tox virtualenv, so reaching that step is visible and nothing installs."""
    shutil.copy(ROOT / "dev", tmp_path / "dev")
    if torch_env:
        (tmp_path / ".tox" / "torch").mkdir(parents=True)
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "df").write_text(
        "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"echo '/dev/x 999999999 1 {free_kb} 1% /'\n"
    )
    (shims / "python").write_text("#!/bin/sh\necho 'venv step reached'\nexit 3\n")
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "PYTHON": str(shims / "python"),
           "TDLIB_DATA_DIR": str(tmp_path)}
    return subprocess.run(["bash", str(tmp_path / "dev"), *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("command", ["test", "report", "bench"])
def test_too_little_space_for_torch_is_refused_before_anything_is_installed(tmp_path: Path, command: str) -> None:
    result = run_dev(tmp_path, 2 * 1024 * 1024, command)
    assert result.returncode == 1
    assert "2048 MiB free" in result.stderr and "about 7 GiB" in result.stderr
    assert "venv step reached" not in result.stdout
    assert not (tmp_path / ".venv-tox").exists()


@pytest.mark.parametrize(
    ("free_kb", "args", "torch_env"),
    [
        (8 * 1024 * 1024, ("test",), False),  # enough space
        (1024, ("test",), True),  # torch already installed: nothing more to fit
        (1024, ("lint",), False),  # lint needs no torch
    ],
)
def test_the_space_check_lets_through_what_fits(tmp_path: Path, free_kb: int, args: tuple[str, ...],
                                               torch_env: bool) -> None:
    result = run_dev(tmp_path, free_kb, *args, torch_env=torch_env)
    assert result.returncode == 3, result.stderr
    assert "venv step reached" in result.stdout
