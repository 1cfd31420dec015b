"""Provenance names tdlib's own commit, never that of a repository tdlib merely sits in."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tdlib import provenance

ROOT = Path(__file__).resolve().parent.parent


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_this_checkout_reports_its_commit() -> None:
    version = provenance.code_version()
    assert version.removesuffix("+dirty") == git(ROOT, "rev-parse", "--short=12", "HEAD")


def test_an_install_inside_someone_elses_repository_does_not_report_their_commit(tmp_path: Path) -> None:
    theirs = tmp_path / "their-project"
    site = theirs / ".venv" / "lib" / "python3.11" / "site-packages"
    shutil.copytree(ROOT / "tdlib", site / "tdlib", ignore=shutil.ignore_patterns("__pycache__"))
    git(theirs, "init", "-q")
    (theirs / "main.py").write_text("print('theirs')\n")
    git(theirs, "add", "-A")
    git(theirs, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "theirs")
    version = provenance.code_version(site / "tdlib")
    assert git(theirs, "rev-parse", "--short=12", "HEAD") not in version
    assert version.startswith("tdlib ") and "installed, not a git checkout" in version


def test_the_cpu_is_named_with_the_instruction_set_torch_uses() -> None:
    # Bits depend on the CPU (MKL picks its kernels by vendor and instruction set), so records name it.
    import torch

    named = provenance.provenance()["cpu"]
    assert named == provenance.cpu() and named.endswith(f"(torch: {torch.backends.cpu.get_cpu_capability()})")
    info = Path("/proc/cpuinfo")
    if info.exists():
        model = next(line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                     if line.startswith("model name"))
        assert named.startswith(model)
