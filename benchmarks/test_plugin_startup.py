"""What installing tdlib costs a pytest run that has nothing to do with it: a project of one trivial test,
run with tdlib's plugin and with it disabled (``-p no:tdlib``), in turns, each a fresh process. The plugin
imports nothing heavy until a claim is collected or a ``--claims-*`` option is given (pinned by
``tests/test_plugin.py``); the difference printed here is what that leaves, against 0.3 s allowed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RUNS = {"-p no:tdlib": ["-p", "no:tdlib"], "with tdlib": []}


def test_an_unrelated_projects_pytest_run(benchmark, tmp_path: Path) -> None:
    (tmp_path / "test_other.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    seconds: dict[str, list[float]] = {name: [] for name in RUNS}

    def one_round() -> None:
        for name, extra in RUNS.items():
            started = time.perf_counter()
            subprocess.run([*command, *extra], cwd=tmp_path, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - started)

    benchmark.group = "pytest startup, a project without claims"
    benchmark.pedantic(one_round, rounds=1 if benchmark.disabled else 15, iterations=1)
    first = np.array(seconds["-p no:tdlib"])
    benchmark.extra_info["round_robin"] = {
        name: {"seconds": float(np.median(times)), "ratio": float(np.median(np.array(times) / first)),
               "quartiles": np.percentile(np.array(times) / first, [25, 75]).tolist(),
               "over the first": float(np.median(np.array(times) - first))}
        for name, times in seconds.items()}
