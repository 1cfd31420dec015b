"""Where a result came from: code version, library versions, machine."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """The git commit of this checkout, with ``+dirty`` if tdlib or the claims differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=_REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tdlib", "claims", "conftest.py"],
            cwd=_REPO, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}+dirty" if dirty else commit


def machine() -> str:
    """A one-line description of the machine and its threads."""
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {platform.machine()} ({cpu}), {torch.get_num_threads()} torch threads"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def provenance() -> dict[str, str]:
    """The facts every run record and report carries."""
    return {
        "code_version": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": machine(),
        "date": now(),
    }
