"""The follow-up's part of a claims report: its design, what each look did, the runs it spent (markdown, JSON)."""

from __future__ import annotations

import dataclasses

from tdlib.followup import FollowUp, PartOutcome, Track
from tdlib.sequential import (
    ALPHA_PILOT,
    FRESH_SEEDS_FROM,
    FUTILITY_POWER,
    MAX_RUNS,
)
from tdlib.stats import Verdict


def _fmt(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


def versions(counts: dict[str, int]) -> str:
    """``{"7ca74dc": 61, "f54d4c8": 30}`` as "7ca74dc (61 runs), f54d4c8 (30 runs)"."""
    return ", ".join(f"{version} ({n} run{'s' if n != 1 else ''})" for version, n in counts.items()) or "n/a"


def outcome_text(result: FollowUp, part: PartOutcome) -> str:
    """What the fresh seeds made of a followed part, in a few words."""
    if part.status == "decided":
        return f"{part.verdict.value} at look {part.look + 1} ({result.looks[part.look]} fresh seeds)"
    if part.status == "dropped for futility":
        return f"dropped for futility at look {part.look + 1} ({result.looks[part.look]} fresh seeds)"
    return part.status


def _look_cell(track: Track) -> str:
    if not track.looks:
        return "no look"
    last = track.looks[-1]
    return (f"{_fmt(last.mean)} [{_fmt(last.ci95[0])}, {_fmt(last.ci95[1])}], n = {last.n}; "
            f"p {last.p_support:.2g} / {last.p_refute:.2g}")


def _track_outcome(track: Track) -> str:
    if not track.looks:
        return track.stopped or "open"
    last = track.looks[-1]
    if track.stopped == "decided":
        side = "SUPPORTED" if last.code > 0 else "REFUTED"
        return f"crossed toward {side} at look {last.index + 1}"
    if track.stopped == "dropped for futility":
        return f"dropped for futility at look {last.index + 1}"
    if track.stopped == "its part settled":
        return f"stopped at look {last.index + 1}: its part was settled"
    return track.stopped or f"open after look {last.index + 1}"


def markdown(result: FollowUp, pilot_seeds: tuple[int, ...]) -> list[str]:
    """The report's section on the follow-up."""
    m = len(result.parts)
    looks = ", ".join(map(str, result.looks))
    lines = [
        "## The follow-up on fresh seeds",
        "",
        f"**The design** (`tdlib/sequential.py`, committed before any follow-up run). The seeds "
        f"{', '.join(map(str, pilot_seeds))} are the *pilot*: judged at {ALPHA_PILOT:g} over the whole family "
        f"(Holm), they choose what to follow. Every part they leave INCONCLUSIVE is followed on *fresh* seeds "
        f"(from {FRESH_SEEDS_FROM} on), which never meet the pilot's in a test, at a level of {result.alpha:g} of "
        f"its own, so the combined report's chance of any wrong verdict is at most {ALPHA_PILOT + result.alpha:g}. "
        f"Looks come at {looks} fresh seeds. Bonferroni splits {result.alpha:g} over the {m} followed parts (each "
        "direction half of it), and a part's comparisons share its level as the family's judging shares it; each "
        "comparison spends its level over the looks through one nominal p-level at every look (Pocock-shaped), "
        "calibrated by simulating the t statistics across the looks. A comparison that crosses stops; after a "
        f"first look, one whose chance of crossing by the last look is under {FUTILITY_POWER:g} at the observed "
        f"effect is dropped; only the conditions that open comparisons need are trained; the budget is "
        f"{MAX_RUNS} runs.",
        "",
        f"**What it spent.** {len(result.runs)} runs of fresh seeds "
        f"({result.training_seconds / 3600:.1f} CPU hours of training, from their histories), over "
        f"{result.looks_taken} look(s), trained at code {versions(result.code_versions)}. It ended at: "
        f"{result.ended}.",
        "",
        "| claim | part | verdict of the fresh seeds |",
        "|---|---|---|",
        *(f"| {p.claim} | {p.part} | {outcome_text(result, p)} |" for p in result.parts),
        "",
        "| comparison | conditions trained | levels over all looks (support / refute) | boundary per look | "
        "last look: mean [95% CI], n; p (support / refute) | outcome |",
        "|---|---|---|---|---|---|",
        *(f"| {t.key[0]} {t.key[1]}: {t.key[2]} | {', '.join(t.conditions)} | {t.levels[0]:.2g} / "
          f"{t.levels[1]:.2g} | p <= {t.boundary[0]:.2g} / {t.boundary[1]:.2g} | {_look_cell(t)} | "
          f"{_track_outcome(t)} |" for t in result.tracks),
        "",
    ]
    if result.errors:
        lines += [f"- **{claim}** could not be followed: {error}" for claim, error in result.errors.items()] + [""]
    return lines


def guarantee_text(result: FollowUp) -> str:
    return (f" The pilot's seeds are judged at {ALPHA_PILOT:g} (Holm), and the {len(result.parts)} parts they left "
            f"undecided were followed on fresh seeds at {result.alpha:g} (Bonferroni, Pocock-shaped looks at "
            f"{', '.join(map(str, result.looks))} seeds), so the total is at most {ALPHA_PILOT + result.alpha:g}.")


def as_json(result: FollowUp) -> dict:
    data = dataclasses.asdict(result)
    for part in data["parts"]:
        part["verdict"] = Verdict(part["verdict"]).value
    return data
