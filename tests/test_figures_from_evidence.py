"""The report's figures and its "What pruning buys" numbers come from stored evidence: drawn a second time
from the same runs, they load no model, measure nothing, and come out the same, timings included."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tdlib.claims import report, savings_report
from tdlib.claims.evidence import Evidence, Reading
from tdlib.claims.profiles import PROFILES, Profile
from tdlib.runs import RunCache
from tdlib.spec import DataSpec

TINY = Profile("tiny", epochs=10, seeds=(0, 1), batch_size=100, data=DataSpec(500, 500, 0), accuracy_floor=0.1,
               timing=0.01, hidden=PROFILES["smoke"].hidden)
CONDITIONS = ["B", "TU"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> RunCache:
    return RunCache(tmp_path_factory.mktemp("figures"), progress=False)


def forbid_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Evidence, condition: str, seed: int) -> None:
        raise AssertionError(f"drawing again loaded the model of {condition} seed {seed}")

    monkeypatch.setattr(Evidence, "model", refuse)


def test_every_figure_is_drawn_again_from_stored_evidence_alone(cache: RunCache, tmp_path: Path, study: ModuleType,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's figures and the study's."""
    assert {"sweeps", "weights", "activations", "small-weights", "dead-units"} <= set(report.FIGURES)
    drawn = {}
    ev = Evidence(TINY, cache)
    for name, entry in report.FIGURES.items():
        entry.draw(ev, tmp_path / f"{name}.png", CONDITIONS)
        drawn[name] = (tmp_path / f"{name}.png").read_bytes()
    keys = {row["key"].split(":")[0] for row in ev.rows()}
    assert {"activations-figure", "weight-histogram", "dead-units-figure"} <= keys  # in evidence.csv too
    forbid_models(monkeypatch)
    again = Evidence(TINY, cache)
    for name, entry in report.FIGURES.items():
        entry.draw(again, tmp_path / f"{name}-again.png", CONDITIONS)
        assert (tmp_path / f"{name}-again.png").read_bytes() == drawn[name], name


def test_what_pruning_buys_is_measured_once_then_read_with_its_timings(cache: RunCache,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A small version of the section: two models, one curve at one batch size, three sparsities.
    models = (("B", "unit", 50.0), ("TU", "unit", 80.0))
    monkeypatch.setattr(savings_report, "SWEEP", (0, 50, 90))
    monkeypatch.setattr(savings_report, "BATCHES", (1,))
    monkeypatch.setattr(savings_report, "CURVE_KINDS", ("unit",))
    ev = Evidence(TINY, cache)
    measured = savings_report.measure(ev, models)
    b50, tu80 = measured.models
    assert b50.timings == (measured.curves[("unit", 1)][50],)  # on the curve: one measurement shown
    assert [t.batch for t in tu80.timings] == [1]  # timed on the first seed only, by its own measurement
    assert all(s.speeds == () for m in measured.models for s in m.per_seed)  # sizes and accuracies time nothing
    rounds = tu80.timings[0].seconds
    assert set(rounds) >= {"module", "control", "compressed"} and {len(r) for r in rounds.values()} == {21}
    rows = {(row["run"], row["key"]): row["value"] for row in ev.rows()}
    first_tu, second_tu = (run.spec.name for run in ev.runs("TU"))
    assert rows[(first_tu, "timing:unit:80:batch1:compressed:seconds20")] == rounds["compressed"][20]
    assert not any(run == second_tu and key.startswith("timing:") for run, key in rows)
    forbid_models(monkeypatch)
    assert savings_report.measure(Evidence(TINY, cache), models) == measured  # timings too: nothing was timed again


def test_every_figure_draws_when_every_seed_has_the_same_numbers(tmp_path: Path, study: ModuleType,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """As when one finished run stands in for the others (``--claims-measure-finished``): five equal values,
    whose mean can round a hair past them, make ranges of zero width."""
    one = RunCache(tmp_path / "one", progress=False)
    for condition in CONDITIONS:
        one.get(TINY.spec(condition, 0))
    ev = Evidence(TINY.with_seeds((0, 1, 2, 3, 4)), one, reading=Reading.FINISHED)
    measured = study.activation_data

    def rounding(ev: Evidence) -> dict:  # five copies of a value whose float mean exceeds it by 7e-15
        return {seed: {k: 54.362499146542284 if k.endswith((":zero", ":dead")) else v for k, v in values.items()}
                for seed, values in measured(ev).items()}

    monkeypatch.setattr(study, "activation_data", rounding)
    for name, entry in report.FIGURES.items():
        entry.draw(ev, tmp_path / f"{name}.png", CONDITIONS)
        assert (tmp_path / f"{name}.png").stat().st_size > 0
