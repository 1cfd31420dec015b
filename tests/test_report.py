"""The report is written whole or not at all: staged beside its directory, then swapped in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tdlib.claims import report
from tdlib.claims.claim import Judged


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """write_report with its drawing and rendering stubbed: what is under test is only how it writes."""
    calls = SimpleNamespace(fail=False)

    def weights(ev: object, path: Path, conditions: list[str]) -> None:
        path.write_bytes(b"new figure")
        if calls.fail:
            raise OSError("No space left on device")

    monkeypatch.setattr(report, "weights_figure", weights)
    only_weights = report.SECTIONS.copy()  # whatever a study registered elsewhere in this session
    only_weights.clear()
    only_weights.register(report.WEIGHTS_SECTION)
    monkeypatch.setattr(report, "SECTIONS", only_weights)
    monkeypatch.setattr(report, "render", lambda *a, **k: "new report")
    monkeypatch.setattr(report, "as_json", lambda *a, **k: {"new": True, "undefined": [float("nan"), -float("inf")]})
    return calls


EV = SimpleNamespace(used_runs=lambda: [], rows=lambda: [], profile=SimpleNamespace(baseline="B"))
JUDGED = Judged(results=[], family=[])


def old_report(directory: Path) -> None:
    (directory / "figures").mkdir(parents=True)
    (directory / "CLAIMS.md").write_text("old report")
    (directory / "claims.json").write_text("{}")
    (directory / "figures" / "weights.png").write_bytes(b"old figure")
    (directory / "paper").mkdir()
    (directory / "paper" / "claims.json").write_text('{"paper": 1}')


def test_a_new_report_replaces_the_old_whole_and_keeps_nested_reports(tmp_path: Path, fake: SimpleNamespace) -> None:
    old_report(tmp_path / "reports")
    report.write_report(tmp_path / "reports" / "CLAIMS.md", JUDGED, EV, 0.0)  # type: ignore[arg-type]
    assert (tmp_path / "reports" / "CLAIMS.md").read_text() == "new report"
    # Strict JSON: an undefined number is null, never Python's NaN or Infinity.
    assert json.loads((tmp_path / "reports" / "claims.json").read_text(), parse_constant=pytest.fail) == {
        "new": True, "undefined": [None, None]}
    assert (tmp_path / "reports" / "figures" / "weights.png").read_bytes() == b"new figure"
    assert (tmp_path / "reports" / "paper" / "claims.json").read_text() == '{"paper": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]  # no staging directory left


def test_a_failure_while_writing_leaves_the_old_report_as_it_was(tmp_path: Path, fake: SimpleNamespace) -> None:
    old_report(tmp_path / "reports")
    fake.fail = True
    with pytest.raises(OSError, match="No space left"):
        report.write_report(tmp_path / "reports" / "CLAIMS.md", JUDGED, EV, 0.0)  # type: ignore[arg-type]
    assert (tmp_path / "reports" / "CLAIMS.md").read_text() == "old report"
    assert (tmp_path / "reports" / "figures" / "weights.png").read_bytes() == b"old figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


@pytest.mark.parametrize("fail", [False, True])
def test_measuring_a_report_attempts_every_part_whatever_fails_and_keeps_nothing(
        tmp_path: Path, fake: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    fake.fail = fail
    drawn = []
    report.SECTIONS.register(report.Section("later", "", lambda context: drawn.append(1) or report.SectionOutput([])))
    monkeypatch.setattr(report.tempfile, "tempdir", str(tmp_path))
    done = report.measure_report(JUDGED, EV, {})  # type: ignore[arg-type]
    # The later section is whole-only: a report of no claims would leave it out, a measurement does not.
    assert [(what, error.split(":")[0]) for what, _, error in done] == [
        ("section weights", "OSError" if fail else ""), ("section later", ""),
        ("the report", "not drawn" if fail else "")]
    assert drawn == [1] and all(seconds >= 0 for _, seconds, _ in done)
    assert not list(tmp_path.iterdir())  # drawn in scratch, and nothing of it kept


def test_measuring_leaves_a_report_there_as_it_was(tmp_path: Path, fake: SimpleNamespace,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    old_report(tmp_path / "reports")
    monkeypatch.setattr(report.tempfile, "tempdir", str(tmp_path / "reports"))  # scratch beside it, even
    done = report.measure_report(JUDGED, EV, {})  # type: ignore[arg-type]
    assert [what for what, _, _ in done][-1] == "the report"
    assert (tmp_path / "reports" / "CLAIMS.md").read_text() == "old report"
    assert (tmp_path / "reports" / "figures" / "weights.png").read_bytes() == b"old figure"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["CLAIMS.md", "claims.json", "figures", "paper"]


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_in_with_and_without_an_atomic_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(report, "_exchange", lambda a, b: False)
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "CLAIMS.md").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "CLAIMS.md").write_text("new")
    report._swap_in(tmp_path / "new", tmp_path / "live")
    assert (tmp_path / "live" / "CLAIMS.md").read_text() == "new"
    assert (tmp_path / "new" / "CLAIMS.md").read_text() == "old"  # the old one, for the caller to remove


def test_a_swap_killed_between_its_two_renames_is_recovered_by_the_next_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: SimpleNamespace) -> None:
    # Where no atomic exchange exists, the old report is moved aside, then the new one in: killed between the
    # two, there is no report at its path until the next write puts the old one back (and then writes).
    live = tmp_path / "reports"
    live.mkdir()
    (live / "CLAIMS.md").write_text("old report")
    staging = tmp_path / ".reports.new-abc"
    staging.mkdir()
    (staging / "CLAIMS.md").write_text("half")
    monkeypatch.setattr(report, "_exchange", lambda a, b: False)
    real_replace, calls = os.replace, []

    def killed_after_the_first(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(a, b)

    monkeypatch.setattr(report.os, "replace", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        report._swap_in(staging, live)
    monkeypatch.setattr(report.os, "replace", real_replace)
    assert not live.exists() and (tmp_path / ".reports.new-abc-old" / "CLAIMS.md").read_text() == "old report"

    with pytest.warns(UserWarning, match=r"reports was missing, its last write killed mid-swap; put back from "
                                         r"\.reports\.new-abc-old"):
        report.recover_swap(live.parent / "elsewhere")  # nothing to put back there
        report.write_report(live / "CLAIMS.md", JUDGED, EV, 0.0)  # type: ignore[arg-type]
    assert not (tmp_path / ".reports.new-abc-old").exists() and not (tmp_path / "elsewhere").exists()
    assert (live / "CLAIMS.md").read_text() == "new report"


def test_a_first_report_creates_its_directory(tmp_path: Path, fake: SimpleNamespace) -> None:
    report.write_report(tmp_path / "a" / "reports" / "CLAIMS.md", JUDGED, EV, 0.0)  # type: ignore[arg-type]
    assert (tmp_path / "a" / "reports" / "CLAIMS.md").read_text() == "new report"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["reports"]


def test_importing_the_report_leaves_matplotlibs_backend_alone() -> None:
    import subprocess
    import sys

    code = "import matplotlib; matplotlib.use('svg'); import tdlib.claims.report, tdlib.claims.savings_report; " \
           "print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_the_sweeps_figure_draws_a_panel_for_every_registered_sweep(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from tdlib.claims import sweeps

    monkeypatch.setattr(sweeps, "SWEEPS", dict(sweeps.SWEEPS))
    monkeypatch.setattr(report, "SWEEPS", sweeps.SWEEPS)
    sweeps.register_sweep("unit_l1", "unit L1 norm, bias kept")
    with pytest.raises(ValueError, match="already drawn as"):
        sweeps.register_sweep("unit", "another title")
    with pytest.raises(ValueError, match="kind must be one of"):
        sweeps.register_sweep("no-such-kind", "x")
    saved = []
    monkeypatch.setattr(report.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    ev = SimpleNamespace(pruned=lambda c, kind, k: np.array([50.0, 60.0]), profile=SimpleNamespace(name="t"),
                         seeds=(0, 1))
    report.sweeps_figure(ev, tmp_path / "sweeps.png", ["B"])  # type: ignore[arg-type]
    shown = [ax.get_title() for ax in saved[0].axes if ax.get_visible()]
    assert shown == list(sweeps.SWEEPS.values()) and len(shown) == 5
