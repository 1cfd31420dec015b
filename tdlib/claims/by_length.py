"""Verdicts by training length: the claims judged on B alone, measured as if training had stopped at each
of :data:`tdlib.claims.profiles.MARKS` that a run reaches. Descriptive: shown beside the judged verdicts, never
judged itself (it would add comparisons to the registered family after the fact)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from tdlib.claims.claim import ClaimResult, Finding
from tdlib.claims.evidence import Evidence, NotStored
from tdlib.claims.profiles import MARKS
from tdlib.claims.stats import Comparison, mean_interval

Key = tuple[str, str, str]  # (claim id, part, comparison)


@dataclass(frozen=True)
class Point:
    """One comparison at one training length: its mean and unadjusted 95% interval over the seeds."""

    epoch: int
    n: int
    mean: float
    low: float
    high: float


class Lengths(dict[Key, list[Point]]):
    """Each comparison's points by training length, under its judged (last mark's) name, and the cells
    that could not be measured, as "C7 at epoch 30: KeyError: ..."."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[str] = []


def marks(ev: Evidence) -> list[int]:
    return [m for m in MARKS if m <= ev.trained.epochs]


def measure(results: list[ClaimResult], functions: dict[str, Callable[[Evidence], Finding]],
            ev: Evidence) -> Lengths:
    """Each comparison of each claim on B alone, at each mark (none when a run reaches fewer than two).

    A comparison is followed by its place in its part, and named as it was judged: a claim about training
    time names the epochs it compares ("epoch 100 - epoch 10"), which differ at every mark. A claim that
    fails at a mark leaves that cell empty and is listed in ``failed``; evidence that is not stored
    (:class:`NotStored`) is not a failure of the claim and is raised.
    """
    points = Lengths()
    if not functions or not results or len(marks(ev)) < 2:
        return points
    for r in results:
        if r.error or set(r.claim.conditions) != {"B"} or r.claim.id not in functions:
            continue
        judged = {p.part.name: [j.comparison.name for j in p.judgements] for p in r.parts}
        for epoch in marks(ev):
            try:
                finding = functions[r.claim.id](ev.at_epoch(epoch))
            except NotStored:
                raise
            except Exception as error:  # e.g. a checkpoint the runs did not keep: that cell stays empty
                points.failed.append(f"{r.claim.id} at epoch {epoch}: {type(error).__name__}: {error}")
                warnings.warn(points.failed[-1], stacklevel=2)
                continue
            for part in finding.parts:
                names = judged.get(part.name, [])
                for i, c in enumerate(part.comparisons):
                    name = names[i] if len(names) == len(part.comparisons) else c.name
                    low, high = mean_interval(c.values)
                    mean = sum(c.values) / len(c.values) if c.values else math.nan
                    points.setdefault((r.claim.id, part.name, name), []).append(
                        Point(epoch, len(c.values), mean, low, high))
    return points


def _comparisons(results: list[ClaimResult]) -> dict[Key, Comparison]:
    return {(r.claim.id, p.part.name, j.comparison.name): j.comparison
            for r in results for p in r.parts for j in p.judgements}


def mean_rule(c: Comparison) -> str:
    """The comparison's rule read for the mean, which this section describes (the verdicts judge the typical
    seed)."""
    return c.rule.replace("typical seed", "mean", 1)


def _rules(results: list[ClaimResult]) -> dict[Key, tuple[str, float]]:
    return {key: (mean_rule(c), c.threshold) for key, c in _comparisons(results).items()}


def _place(point: Point, threshold: float) -> str:
    """Where a point's 95% interval lies against a threshold: above it, below it, or across it."""
    if point.low > threshold:
        return "above"
    if point.high < threshold:
        return "below"
    return "across"


def changes(points: dict[Key, list[Point]], results: list[ClaimResult]) -> list[str]:
    """What changed between the first and the last mark, one line per comparison whose mean moved to the
    other side of its rule (met, or not: a mean at the threshold does not meet it) or whose 95% interval
    moved against the threshold (above, across or below), then a line for those measured at fewer than two
    marks and one for the ones that kept their place. Descriptive, as the table it summarises."""
    comparisons = _comparisons(results)
    moved: list[str] = []
    kept = short = 0
    for key, series in points.items():
        comparison = comparisons.get(key)
        if comparison is None or len(series) < 2:
            short += 1
            continue
        t = comparison.threshold
        first, last = min(series, key=lambda p: p.epoch), max(series, key=lambda p: p.epoch)
        meets = [(p.mean > t) if comparison.side == "greater" else (p.mean < t) for p in (first, last)]
        was, now = _place(first, t), _place(last, t)
        if meets[0] == meets[1] and was == now:
            kept += 1
            continue
        if meets[0] != meets[1]:
            mean = "its mean now meets the rule" if meets[1] else "its mean no longer meets the rule"
        else:
            mean = f"its mean {'meets' if meets[1] else 'misses'} the rule at both"
        interval = (f"its interval stayed {now} the threshold" if was == now
                    else f"its interval went from {was} the threshold to {now} it")
        moved.append(f"{key[0]} {key[1]}, {key[2]} ({mean_rule(comparison)}): {first.mean:.2f} [{first.low:.2f}, "
                     f"{first.high:.2f}] at epoch {first.epoch}, {last.mean:.2f} [{last.low:.2f}, {last.high:.2f}] "
                     f"at epoch {last.epoch}; {mean}, and {interval}.")
    if short:
        moved.append(f"{short} comparison{'s' if short != 1 else ''} measured at fewer than two marks "
                     f"{'are' if short != 1 else 'is'} left out.")
    if kept:
        plural = "s" if kept != 1 else ""
        who = f"{'The' if moved or kept == 1 else 'All'} {kept}{' other' if moved else ''} comparison{plural}"
        moved.append(f"{who} kept the side of the mean and the place of the interval against the threshold.")
    return moved


def markdown(points: Lengths, results: list[ClaimResult], ev: Evidence) -> list[str]:
    failed = [f"Not measured (their cells are n/a): {'; '.join(points.failed)}.", ""] if points.failed else []
    if not points:
        return ["## Verdicts by training length", "", *failed] if failed else []
    epochs = marks(ev)
    rules = _rules(results)

    def cell(key: Key, epoch: int) -> str:
        point = next((p for p in points[key] if p.epoch == epoch), None)
        return "n/a" if point is None else f"{point.mean:.2f} [{point.low:.2f}, {point.high:.2f}]"

    return [
        "## Verdicts by training length",
        "",
        f"The claims judged on B alone, measured as if training had stopped at epochs {', '.join(map(str, epochs))} "
        "(B's kept checkpoints of the same runs; a claim about training time compares a tenth and a half of "
        "each length with its end). Means over the seeds with unadjusted 95% intervals: descriptive, not "
        f"judged; the verdicts above are the {ev.trained.epochs}-epoch ones. A comparison is named as it "
        f"was judged, at epoch {ev.trained.epochs}.",
        "",
        "| claim | comparison | rule | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
        "|---|---|---|" + "---|" * len(epochs),
        *(f"| {key[0]} {key[1]} | {key[2]} | {rules.get(key, ('', 0.0))[0]} | "
          + " | ".join(cell(key, e) for e in epochs) + " |" for key in points),
        "",
        "![Each comparison of the claims on B by training length](figures/by-length.png)",
        "",
        *failed,
    ]


def figure(points: dict[Key, list[Point]], results: list[ClaimResult], path: Path) -> None:
    """One panel per comparison: mean and 95% interval against epochs, the rule's threshold dashed; each
    panel's y axis in the comparison's unit, one legend for the figure."""
    rules = _rules(results)
    comparisons = _comparisons(results)
    keys = list(points)
    columns = 3
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(4.2 * columns, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        series = sorted(points[key], key=lambda p: p.epoch)
        x = [p.epoch for p in series]
        n = sorted({p.n for p in series})
        ax.plot(x, [p.mean for p in series], "o-", color="tab:blue",
                label=f"mean over {'/'.join(map(str, n))} seeds")
        ax.fill_between(x, [p.low for p in series], [p.high for p in series], color="tab:blue", alpha=0.2,
                        label="95% interval of the mean")
        if key in rules:
            ax.axhline(rules[key][1], color="black", linestyle="--", linewidth=1, label="the rule's threshold")
        ax.set_title(f"{key[0]}: {key[2]}", fontsize=8)
        ax.set_xlabel("epochs trained")
        unit = comparisons[key].unit if key in comparisons else ""
        ax.set_ylabel({"pp": "percentage points", "%": "%", "x": "ratio", "": "value"}.get(unit, unit), fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks(x, [str(e) for e in x])
        ax.minorticks_off()  # under a decade, the log axis would label its minor ticks over the marks
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if keys:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    fig.savefig(path, dpi=110)
