"""Where a result came from: code version, library versions, machine."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch


def code_version(package_dir: Path | None = None) -> str:
    """The git commit of tdlib's own checkout, with ``+dirty`` if tdlib or the claims differ from it.

    Only a checkout whose top level holds this very package counts: tdlib installed from a wheel (in
    site-packages, perhaps inside someone else's repository) reports its version instead, never the
    enclosing repository's commit.
    """
    package = (package_dir or Path(__file__).resolve().parent).resolve()
    repo = package.parent
    installed = f"tdlib {_installed_version()} (installed, not a git checkout)"
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        if Path(top).resolve() != repo or not (repo / "pyproject.toml").is_file():
            return installed
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", f"{package.name}/__init__.py"], cwd=repo, capture_output=True,
            text=True,
        )
        if tracked.returncode != 0:
            return installed
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", package.name, "claims", "conftest.py"],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return installed
    return f"{commit}+dirty" if dirty else commit


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tdlib")
    except PackageNotFoundError:
        return "unknown"


def machine() -> str:
    """A one-line description of the machine and its threads."""
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {platform.machine()} ({cpu}), {torch.get_num_threads()} torch threads"


def cpu() -> str:
    """The CPU's model and the instruction set torch's kernels use on it, e.g. "AMD EPYC 7B13 (torch: AVX512)".

    A run's bits depend on them (math libraries choose their kernels by CPU, the same thread count or not),
    so a run is reproduced bit for bit only on a CPU like the one its record names."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not model and platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
    model = model or platform.processor() or platform.machine()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # an older torch
        capability = "unknown"
    return f"{model} (torch: {capability})"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def provenance() -> dict[str, str]:
    """The facts every run record and report carries."""
    return {
        "code_version": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": machine(),
        "cpu": cpu(),
        "date": now(),
    }
