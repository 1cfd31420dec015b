"""The committed 100-epoch report is what its committed run archive gives: drawn again on a fresh machine, in an
empty cache, from ``archive/paper`` alone (no weights, nothing trained), it has the same verdicts, numbers and
text. A code change that would change the report fails here until the report is drawn again and committed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "reports" / "paper"
# What depends on when and with which commit the report was drawn, not on the runs.
DRAWN = ("| code version (report) |", "| report written |", "| report wall time |")


def without_drawing(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if not line.startswith(DRAWN)]


def test_the_paper_report_is_drawn_again_from_its_archive_alone(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(ROOT / "archive" / "paper", archive)  # a copy: drawing must not write into the repository
    out = tmp_path / "paper" / "CLAIMS.md"
    drawn = subprocess.run([sys.executable, "-m", "tdlib", "report", str(out), "--profile", "paper", "--cache",
                            str(tmp_path / "cache"), "--archive", str(archive)],
                           capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    assert not list((tmp_path / "cache").glob("*/model.pt"))  # drawn without a single weight
    committed, again = (json.loads((d / "claims.json").read_text()) for d in (PAPER, out.parent))
    assert [(c["id"], c["verdict"]) for c in again["claims"]] == [(c["id"], c["verdict"]) for c in committed["claims"]]
    committed.pop("provenance"), again.pop("provenance")
    assert again == committed
    assert without_drawing(out.read_text()) == without_drawing((PAPER / "CLAIMS.md").read_text())
