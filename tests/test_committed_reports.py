"""The committed reports and what shows them. Each report is what its committed run archive gives: drawn
again on a fresh machine, in an empty cache, from ``archive/paper`` or ``archive/default`` alone (no weights,
nothing trained), it has the same verdicts, numbers and text; a code change that would change it fails here
until it is drawn again and committed. The README's findings blocks are what ``findings`` writes from the
committed reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tdlib.claims.findings import block, markers

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "reports" / "paper"
FIFTEEN = ROOT / "reports"
EXAMPLE = ROOT / "examples" / "fashion_cnn"
# (profile, the report, its archive, its claims)
REPORTS = [("paper", PAPER, ROOT / "archive" / "paper", ROOT / "claims"),
           ("default", FIFTEEN, ROOT / "archive" / "default", ROOT / "claims"),
           ("cnn", EXAMPLE / "reports", EXAMPLE / "archive", EXAMPLE)]
# What depends on when and with which commit the report was drawn, not on the runs.
DRAWN = ("| code version (report) |", "| report written |", "| report wall time |")


def without_drawing(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if not line.startswith(DRAWN)]


@pytest.mark.parametrize(("profile", "report", "archived", "claims"), REPORTS, ids=[r[0] for r in REPORTS])
def test_a_committed_report_is_drawn_again_from_its_archive_alone(tmp_path: Path, profile: str, report: Path,
                                                                  archived: Path, claims: Path) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(archived, archive)  # a copy: drawing must not write into the repository
    out = tmp_path / profile / "CLAIMS.md"
    drawn = subprocess.run([sys.executable, "-m", "tdlib", "report", str(out), "--profile", profile, "--cache",
                            str(tmp_path / "cache"), "--archive", str(archive), "--claims", str(claims)],
                           capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    assert not list((tmp_path / "cache").glob("*/model.pt"))  # drawn without a single weight
    committed, again = (json.loads((d / "claims.json").read_text()) for d in (report, out.parent))
    assert [(c["id"], c["verdict"]) for c in again["claims"]] == [(c["id"], c["verdict"]) for c in committed["claims"]]
    committed.pop("provenance"), again.pop("provenance")
    assert again == committed
    assert without_drawing(out.read_text()) == without_drawing((report / "CLAIMS.md").read_text())
    assert (out.parent / "evidence.csv").read_bytes() == (report / "evidence.csv").read_bytes()


def test_the_readmes_findings_blocks_are_the_committed_reports() -> None:
    # The README's verdicts are written by `findings` from reports/; a report drawn again without its block
    # (or a hand edit) leaves them stale, which this catches.
    readme = (ROOT / "README.md").read_text()
    for name, report in (("", ROOT / "reports" / "claims.json"), ("paper", ROOT / "reports" / "paper" / "claims.json")):
        start, end = markers(name)
        assert readme[readme.index(start):readme.index(end) + len(end)] == block(report, ROOT, name), name


@pytest.mark.parametrize(("profile", "report", "archived", "claims"), REPORTS, ids=[r[0] for r in REPORTS])
def test_every_verdict_of_a_committed_report_is_derived_again_from_its_per_seed_values(
        profile: str, report: Path, archived: Path, claims: Path, isolated_registries: None) -> None:
    """From ``claims.json`` alone (every comparison's values, in sequence order, with its seeds, threshold, side
    and its part's combination), the engine reaches the committed report's verdicts and p-values again."""
    from tdlib.claims.cli import load_study
    from tdlib.claims.profiles import PROFILES

    load_study(claims)  # the example's profile is registered by its conftest.py
    from tdlib.claims.stats import Comparison, Part, combine, judge_parts

    data = json.loads((report / "claims.json").read_text())
    parts = [Part(p["name"], tuple(Comparison(c["name"], c["values"], c["threshold"], c["side"], seeds=c["seeds"])
                                   for c in p["comparisons"]), p["how"])
             for claim in data["claims"] for p in claim["parts"]]
    judged = judge_parts(parts, family=sum(f["parts"] for f in data["family"]), alpha=PROFILES[profile].alpha)
    committed = [p for claim in data["claims"] for p in claim["parts"]]
    assert [j.verdict.value for j in judged] == [p["verdict"] for p in committed]
    assert [(j.p_support, j.p_refute) for j in judged] == [(p["p_support"], p["p_refute"]) for p in committed]
    by_claim = iter(judged)
    for claim in data["claims"]:
        assert combine([next(by_claim).verdict for _ in claim["parts"]]).value == claim["verdict"]
    assert max(len(c["values"]) for p in committed for c in p["comparisons"]) > len(data["profile"]["seeds"])
