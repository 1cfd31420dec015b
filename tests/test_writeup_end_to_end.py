"""The writeup's whole claims suite, end to end, once per test session: ``pytest claims`` trained and judged
under the smoke profile with a report and a run archive, as CI and a newcomer run it; then the same report
drawn again from the archive alone in an empty cache, and a ``-k`` subset judged from the same cache.

The run is a session fixture, so that the one end-to-end run serves every test that reads it. Each pytest
run is a subprocess: torch registers some operator libraries once per process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = "3"  # the fewest seeds that decide anything: with two, every verdict is INCONCLUSIVE


@dataclass(frozen=True)
class Session:
    """One ``pytest claims`` run: its exit status and output, and where it wrote."""

    returncode: int
    out: str
    err: str
    cache: Path
    report: Path | None

    def verdicts(self) -> dict[str, str]:
        """Claim id -> verdict, from the plugin's terminal summary."""
        lines = self.out.split("claims: verdicts", 1)[1].splitlines()
        return {words[0]: words[1] for words in (line.split() for line in lines)
                if words and words[0][:1] == "C" and words[0][1:].isdigit()}

    def claims(self) -> list[dict]:
        assert self.report is not None
        return json.loads((self.report.parent / "claims.json").read_text())["claims"]


def claims_session(cache: Path, *args: str, report: Path | None = None) -> Session:
    command = [sys.executable, "-m", "pytest", "claims", "-p", "no:cacheprovider", "--claims-profile", "smoke",
               "--claims-seeds", SEEDS, "--claims-cache", str(cache), *args]
    if report is not None:
        command += ["--claims-report", str(report)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    return Session(done.returncode, done.stdout, done.stderr, cache, report)


@pytest.fixture(scope="session")
def whole(tmp_path_factory: pytest.TempPathFactory) -> tuple[Session, Path]:
    """The whole writeup under the smoke profile, with its report and run archive: (the session, the archive)."""
    root = tmp_path_factory.mktemp("writeup")
    archive = root / "archive"
    session = claims_session(root / "cache", "--claims-archive", str(archive), report=root / "report" / "CLAIMS.md")
    assert session.returncode == 0, session.out[-3000:] + session.err[-3000:]
    return session, archive


def test_the_whole_writeup_trains_is_judged_and_reported(whole: tuple[Session, Path]) -> None:
    session, archive = whole
    assert "13 passed" in session.out
    verdicts = session.verdicts()
    assert sorted(verdicts, key=lambda c: int(c[1:])) == [f"C{i}" for i in range(1, 14)]
    assert set(verdicts.values()) <= {"SUPPORTED", "REFUTED", "INCONCLUSIVE"}
    # Three seeds decide nothing under the typical-run test (smallest p 0.27): never certainty from too few seeds.
    assert set(verdicts.values()) == {"INCONCLUSIVE"}
    claims = session.claims()
    assert [c["verdict"] for c in claims] == [verdicts[c["id"]] for c in claims]
    text = session.report.read_text()
    for heading in ("## C1", "## C13", "What pruning buys", "speed-up timing"):
        assert heading in text
    figures = {p.name for p in (session.report.parent / "figures").glob("*.png")}
    assert {"sweeps.png", "weights.png", "speedup.png"} <= figures
    # Every finished run of the session is archived with its measurements.
    trained = {p.parent.name for p in session.cache.glob("*/record.json")}
    assert trained and {p.parent.name for p in archive.glob("*/record.json")} == trained


def test_the_report_is_drawn_again_from_the_archive_alone_in_an_empty_cache(whole: tuple[Session, Path],
                                                                            tmp_path: Path) -> None:
    session, archive = whole
    again = claims_session(tmp_path / "elsewhere", "--claims-archive", str(archive), "--claims-stored-only",
                           report=tmp_path / "again" / "CLAIMS.md")
    assert again.returncode == 0, again.out[-3000:] + again.err[-3000:]
    runs = len(list(archive.glob("*/record.json")))
    for line in (f"archive {archive}: {runs} runs or their measurements taken into the cache, 0 already there",
                 f"{runs} runs, all cached", f"archive {archive}: 0 runs written or grown, {runs} unchanged"):
        assert line in again.out
    assert not list((tmp_path / "elsewhere").glob("*/model.pt"))  # drawn without a single weight
    assert again.claims() == session.claims()
    assert (tmp_path / "again" / "evidence.csv").read_text() == (session.report.parent / "evidence.csv").read_text()


def test_the_writeups_claims_get_the_same_or_weaker_verdicts_when_selected(whole: tuple[Session, Path],
                                                                         tmp_path: Path) -> None:
    """``-k "C1 or C5"`` judges the claims it selects as members of all 13 registered claims: never more
    strongly than the full run, from the same seeds and cache; and a subset trains only what its claims
    need."""
    session, _ = whole
    subset = claims_session(session.cache, "-k", "C1 or C5")
    assert subset.returncode == 0, subset.out[-3000:]
    assert "6 passed, 7 deselected" in subset.out  # "C1" also matches C10 to C13
    assert "6 of 13 registered claims;" in subset.out and "runs, all cached" in subset.out
    assert "PARTIAL: 6 of 13 claims" in subset.out
    whole_verdicts, part = session.verdicts(), subset.verdicts()
    assert sorted(part) == ["C1", "C10", "C11", "C12", "C13", "C5"]
    for cid, verdict in part.items():
        assert verdict in ("INCONCLUSIVE", whole_verdicts[cid]), (cid, verdict, whole_verdicts[cid])
    only_b = claims_session(tmp_path / "only-b", "-k", "c1_")
    assert only_b.returncode == 0 and "1 passed, 12 deselected" in only_b.out
    assert {d.name.split("-")[0] for d in (tmp_path / "only-b").iterdir() if (d / "record.json").exists()} == {"B"}
