"""The condition registry: the standard conditions of claims.md, the study's own, and adding one as data."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace

import pytest

from tdlib.claims.conditions import CONDITIONS, Condition, register
from tdlib.claims.profiles import PROFILES
from tdlib.dropout import TargetedDropout


def test_the_registered_conditions_are_claims_md_s(study: ModuleType) -> None:
    assert list(CONDITIONS)[:8] == ["B", "B0", "D", "TW", "TU", "TWR", "TW90", "TU80"]  # the presets, then the study's
    default = PROFILES["default"]
    tw90, tu80 = default.spec("TW90", 0), default.spec("TU80", 0)
    assert tw90.targeted == TargetedDropout.constant("weight", 0.9, 0.5)
    assert tu80.targeted == TargetedDropout.constant("unit", 0.8, 0.5)
    assert default.spec("B", 0).checkpoints == default.checkpoints
    assert default.spec("B0", 0).bias is False and default.spec("D", 0).dropout == 0.5
    assert all(default.spec(name, 0).checkpoints == () for name in CONDITIONS if name != "B")
    assert not default.spec("TWR", 0).length_independent and default.spec("TU80", 0).length_independent


def test_the_studys_runs_keep_the_keys_they_were_cached_under(study: ModuleType) -> None:
    """A run's key hashes its description, never where in the code its condition is registered: moving TW90
    and TU80 from tdlib into the study left the keys of the cached default runs as they were."""
    default = PROFILES["default"]
    assert default.spec("TW90", 0).name == "TW90-s0-d3592f251f393985"
    assert default.spec("TU80", 0).name == "TU80-s0-c2f2fa38c923ef16"
    assert default.spec("TWR", 0).name == "TWR-s0-bc642e5ab274b338"


def test_a_condition_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tdlib.claims.conditions.CONDITIONS", CONDITIONS.copy())
    from tdlib.claims import conditions

    tw70 = register(Condition("TW70", "weight level, gamma 0.7", targeted=TargetedDropout.constant("weight", 0.7, 0.5)))
    assert conditions.CONDITIONS["TW70"] is tw70
    spec = PROFILES["smoke"].spec("TW70", 3)
    assert (spec.condition, spec.seed, spec.targeted) == ("TW70", 3, tw70.targeted)
    register(tw70)  # the same condition twice is harmless
    with pytest.raises(ValueError, match="'TW70' is already registered"):
        register(Condition("TW70", "something else"))
    with pytest.raises(ValueError, match="name is letters"):
        Condition("TW 70", "a space")


def test_the_default_runs_are_the_first_epochs_of_the_paper_runs() -> None:
    """Every condition whose schedule does not ramp over the run, and that keeps no checkpoints, continues
    from the default run to the paper's 100 epochs. B keeps its tenths of 100, the marks 15, 30 and 50, and
    a tenth and a half of each (for C7 and C8 by training length); it wants epoch 5, which the default B
    never kept, so it trains from scratch. The default B keeps what it kept."""
    default, paper = PROFILES["default"], PROFILES["paper"]
    for name in CONDITIONS:
        longer, shorter = paper.spec(name, 3), default.spec(name, 3)
        assert longer.continues(shorter) == (name not in ("TWR", "B")), name
    assert paper.checkpoints == (0, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100)
    assert default.checkpoints == (0, 2, 3, 4, 6, 8, 9, 10, 12, 14, 15)  # as the committed runs kept them


def test_the_gamma_alpha_map_has_a_condition_per_cell_and_reuses_the_claims(study: ModuleType) -> None:
    MAP = study.MAP
    assert len(MAP) == 18 and len(set(MAP.values())) == 18
    assert (MAP[("weight", 0.5, 0.5)], MAP[("unit", 0.5, 0.5)], MAP[("weight", 0.9, 0.5)]) == ("TW", "TU", "TW90")
    cell = CONDITIONS[MAP[("unit", 0.7, 0.25)]]
    assert cell.group == "map" and cell.targeted == TargetedDropout.constant("unit", 0.7, 0.25)
    assert [c.name for c in CONDITIONS.values() if c.group == "claims"] == ["B", "B0", "D", "TW", "TU", "TWR", "TW90",
                                                                             "TU80"]


def test_the_map_is_trained_at_the_default_length_and_a_longer_report_points_to_it(study: ModuleType) -> None:
    """The map's runs at the smoke and default profiles, none at 100 epochs, whose report says how many
    runs it would have added."""
    assert [len(study._map_runs(PROFILES[name], "cpu")) for name in ("smoke", "default")] == [18, 18]
    assert study._map_runs(PROFILES["paper"], "cpu") == []
    claims = ["B", "B0", "D", "TW", "TU", "TWR", "TW90", "TU80"]
    context = SimpleNamespace(ev=SimpleNamespace(profile=PROFILES["paper"]), conditions=claims)
    text = " ".join(study._map(context).markdown)
    assert "would add 15 runs of 100 epochs" in text
    assert "[the default report's map](../CLAIMS.md#the-gamma-x-alpha-map-descriptive-not-judged)" in text


def test_a_profiles_sequence_is_its_own_seeds_then_the_fresh_seeds_in_order_up_to_its_budget() -> None:
    paper = PROFILES["paper"]
    assert paper.sequence() == (0, 1, 2, 3, 4, *range(100, 115))  # the registered budget: 20 seeds
    assert paper.sequence(3) == (0, 1, 2)
    assert paper.with_seeds((0, 1)).sequence(4) == (0, 1, 100, 101)
    assert PROFILES["smoke"].sequence() == PROFILES["smoke"].seeds
    with pytest.raises(ValueError, match="at least 0"):
        paper.sequence(-1)


def test_the_reports_the_readme_shows_share_the_five_percent() -> None:
    """The 15-epoch and the 100-epoch reports stand side by side in the README: their shares of the chance of
    any wrong verdict add up to the study's 0.05, fixed before either is judged by the typical-run test."""
    assert PROFILES["default"].alpha + PROFILES["paper"].alpha == pytest.approx(0.05)
    assert PROFILES["default"].alpha == PROFILES["paper"].alpha == 0.025
