"""The claims report: ``CLAIMS.md``, ``claims.json`` and ``figures/*.png``, from judged claims and their runs."""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from tdlib import by_length, followup_report
from tdlib.claim import ClaimResult, Finding, Judged
from tdlib.conditions import CONDITIONS
from tdlib.evidence import SWEEP_KINDS, Evidence
from tdlib.findings import heading_anchor
from tdlib.followup import FollowUp
from tdlib.metrics import SWEEP
from tdlib.model import MLP
from tdlib.profiles import Profile
from tdlib.provenance import provenance
from tdlib.registry import Registry
from tdlib.runs import Run
from tdlib.spec import RunSpec
from tdlib.stats import MAX_FEASIBLE_SEEDS, MIN_SEEDS, POWER, JudgedPart, Judgement, Verdict, mean_interval

SWEEP_TITLES = {
    "weight": "weight magnitude, per layer",
    "unit": "unit L2 norm (whole unit)",
    "random_weight": "random weights (control)",
    "global": "weight magnitude, global",
}


def colour(condition: str) -> tuple[float, ...]:
    """A condition's colour, the same in every figure, for as many conditions as are registered."""
    names = list(CONDITIONS)
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    return palette[names.index(condition) % len(palette)] if condition in names else (0.3, 0.3, 0.3)


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def effect(j: Judgement) -> str:
    unit = f" {j.comparison.unit}" if j.comparison.unit not in ("", "x") else ""
    return f"{fmt(j.mean)}{unit} [{fmt(j.ci95[0])}, {fmt(j.ci95[1])}]"


def seeds_cell(vals: tuple[float, ...], seeds: tuple[int, ...] = (), all_seeds: tuple[int, ...] = ()) -> str:
    """The values in seed order; with ``seeds`` (each value's seed), a dash for each seed left out."""
    if not seeds:
        return ", ".join(fmt(v) for v in vals)
    by_seed = dict(zip(seeds, vals))
    return ", ".join(fmt(by_seed[s]) if s in by_seed else "–" for s in all_seeds)


# ---------------------------------------------------------------- figures


def sweeps_figure(ev: Evidence, path: Path, conditions: list[str]) -> None:
    """Accuracy against sparsity, one panel per pruning kind, a line (mean) and band (range) per condition."""
    fig = Figure(figsize=(12, 8.5))
    axes = fig.subplots(2, 2, sharey=True)
    positions = np.arange(len(SWEEP))
    for ax, kind in zip(axes.flat, SWEEP_KINDS):
        title = SWEEP_TITLES[kind]
        for condition in conditions:
            curves = np.stack([ev.pruned(condition, kind, k) for k in SWEEP], axis=1)  # (seeds, ks)
            ax.plot(positions, curves.mean(0), marker="o", ms=3, color=colour(condition), label=condition)
            ax.fill_between(positions, curves.min(0), curves.max(0), color=colour(condition), alpha=0.2)
        ax.set_title(title)
        ax.set_xticks(positions, [f"{k:g}" for k in SWEEP], fontsize=8)
        ax.set_xlabel("pruned (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(ncol=3, fontsize=8)
    fig.suptitle(
        f"Accuracy after post-hoc pruning ({ev.profile.name} profile, {len(ev.seeds)} seeds: mean, band = range)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# |w| histogram edges; stored counts are only comparable under the same edges, so a change needs a new key
WEIGHT_BINS = np.logspace(-8, 0.5, 90)
WEIGHT_HISTOGRAM = "weight-histogram:logspace(-8,0.5,90)"


def weight_histograms(ev: Evidence, condition: str) -> np.ndarray:
    """Stored counts of the hidden weights' |w| in :data:`WEIGHT_BINS` (|w| under 1e-8 in the first bin),
    (seeds, bins)."""

    def compute(run: Run, model: MLP) -> dict[str, float]:
        weights = torch.cat([layer.weight.detach().abs().flatten() for layer in model.hidden_layers]).numpy()
        counts, _ = np.histogram(np.clip(weights, 1e-8, None), bins=WEIGHT_BINS)
        return {f"{j:02d}": c for j, c in enumerate(counts)}

    groups = ev.measure_group(condition, WEIGHT_HISTOGRAM, compute)
    return np.array([[groups[s][f"{j:02d}"] for j in range(len(WEIGHT_BINS) - 1)] for s in ev.seeds])


def weights_figure(ev: Evidence, path: Path, conditions: list[str]) -> None:
    """Histograms of hidden |w| (first seed), one panel per condition with B's outline in each, log axes."""
    columns = min(4, len(conditions))
    rows = -(-len(conditions) // columns)
    fig = Figure(figsize=(3.4 * columns, 2.7 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).flat
    baseline = weight_histograms(ev, "B")[0] if "B" in conditions else None
    for ax, condition in zip(axes, conditions):
        if baseline is not None and condition != "B":
            ax.stairs(baseline, WEIGHT_BINS, color="grey", lw=0.8, label="B")
        ax.stairs(weight_histograms(ev, condition)[0], WEIGHT_BINS, fill=True, alpha=0.6, color=colour(condition),
                  label=condition)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(1e-3, color="black", ls="--", lw=0.8)
        ax.set_title(condition)
        ax.legend(fontsize=7)
    for ax in axes:
        ax.set_visible(False)  # the panels left over in the last row
    fig.supxlabel("|w| of hidden weights (dashed: 1e-3)")
    fig.supylabel("count")
    fig.suptitle(f"Hidden weight magnitudes after training (seed {ev.seeds[0]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@dataclass(frozen=True)
class FigureEntry:
    """A figure a claim can name (``@claim(..., figures=(name,))``): drawn once per report, shown under the
    first claim that names it."""

    name: str
    description: str  # the caption
    draw: Callable[[Evidence, Path, list[str]], None]  # (evidence, where, the report's conditions)


FIGURES: Registry[FigureEntry] = Registry("figure", "figure")


def register_figure(name: str, caption: str) -> Callable[[Callable], Callable]:
    """Register the decorated ``draw(ev, path, conditions)`` as the figure ``name``; it must read what it
    draws from stored evidence (``ev.measure``, ``ev.measure_group``), so that a report drawn again from
    the same runs shows the same figure."""

    def decorate(draw: Callable[[Evidence, Path, list[str]], None]) -> Callable[[Evidence, Path, list[str]], None]:
        FIGURES.register(FigureEntry(name, caption, draw))
        return draw

    return decorate


register_figure("sweeps", "Accuracy against sparsity for every condition")(sweeps_figure)
register_figure("weights", "Hidden weight magnitudes")(weights_figure)


@dataclass(frozen=True)
class ReportContext:
    """What a report section sees: the evidence, the judged claims, their functions, where figures go."""

    ev: Evidence
    judged: Judged
    functions: dict[str, Callable[[Evidence], Finding]]
    figures: Path  # the report's figures/ directory
    conditions: list[str]  # the conditions the judged claims use, in registration order

    @property
    def results(self) -> list[ClaimResult]:
        return [r for r in self.judged.results if not r.error]

    @cached_property
    def lengths(self) -> by_length.Lengths:
        """The claims on B alone at each training length (:func:`by_length.measure`), measured once for all
        the sections that show them."""
        return by_length.measure(self.results, self.functions, self.ev)


@dataclass(frozen=True)
class SectionOutput:
    """A section's markdown (shown after the claims, in registration order) and its data for claims.json."""

    markdown: list[str]
    data: object = None


@dataclass(frozen=True)
class Section:
    """A part of the report beyond the claims: its own runs, measurements, figures and text.

    ``write`` measures through the context's evidence (so its numbers are stored), draws into
    ``context.figures`` and returns the markdown; ``runs(profile, device)`` names the runs it needs beyond
    the claims', which are trained first with them. With ``whole_only`` it appears only in a report of
    the whole registered family (a partial one trains only what its claims need).
    """

    name: str
    description: str
    write: Callable[[ReportContext], SectionOutput]
    runs: Callable[[Profile, str], list[RunSpec]] = lambda profile, device: []
    whole_only: bool = True


SECTIONS: Registry[Section] = Registry("report section", "section")


def register_section(section: Section) -> Section:
    """Add a section to every report from now on (after those registered before it)."""
    return SECTIONS.register(section)


def section_runs(profile: Profile, device: str = "cpu") -> list[RunSpec]:
    """The runs the registered sections of a whole report need, each once."""
    return list(dict.fromkeys(spec for s in SECTIONS.values() for spec in s.runs(profile, device)))


def _weights_section(context: ReportContext) -> SectionOutput:
    weights_figure(context.ev, context.figures / "weights.png", context.conditions)
    return SectionOutput(["### Weight magnitudes", "", "![Hidden weight magnitudes](figures/weights.png)", ""])


def _by_length_section(context: ReportContext) -> SectionOutput:
    lengths = context.lengths
    if not lengths:
        return SectionOutput(by_length.markdown(lengths, context.results, context.ev))  # failures, if any
    by_length.figure(lengths, context.results, context.figures / "by-length.png")
    data = [{"claim": k[0], "part": k[1], "comparison": k[2], "points": [dataclasses.asdict(p) for p in v]}
            for k, v in lengths.items()]
    return SectionOutput(by_length.markdown(lengths, context.results, context.ev), data)


register_section(Section("weights", "hidden weight magnitudes of every condition", _weights_section,
                         whole_only=False))
register_section(Section("by_length", "the claims on B alone at each training length a run reaches",
                         _by_length_section))

TITLE = ["Claims report"]  # the report's heading; a study sets its own with set_title


def set_title(title: str) -> None:
    """The heading of every report from now on."""
    TITLE[0] = title


# ---------------------------------------------------------------- markdown


def guarantee(judged: Judged) -> str:
    """The report's guarantee, in one paragraph, truthful for this run (partial or whole)."""
    m, alpha = judged.family_parts, judged.alpha
    total = alpha + (judged.follow_up.alpha if judged.follow_up is not None else 0.0)
    text = (
        f"Guarantee: the chance of any wrong verdict (a part or claim SUPPORTED when false, or REFUTED when true) "
        f"is at most {total:g} over the {len(judged.family)} registered claims ({m} parts), assuming roughly normal "
        f"per-seed values; Holm over the {m} parts at {alpha / 2:g} for each direction."
    )
    if judged.follow_up is not None:
        text += followup_report.guarantee_text(judged.follow_up)
    if judged.partial:
        text += (
            f" PARTIAL: {len(judged.family) - len(judged.missing)} of {len(judged.family)} claims judged; the "
            "others count as undecided, so no verdict here is stronger than in a full run."
        )
    return text


def decision_cell(j: Judgement) -> str:
    low, high = j.decision_interval
    if not math.isfinite(low):
        return "n/a"
    confidence = {round(100 * c, 3) for c in j.decision_confidence}
    label = " / ".join(f"{c:g}%" for c in sorted(confidence))
    return f"[{fmt(low)}, {fmt(high)}] ({label})"


def decide_cell(part: JudgedPart, j: Judgement, followed: str = "") -> str:
    """What would decide an undecided comparison (``followed``: what the follow-up made of its part)."""
    if followed:
        return f"followed on fresh seeds: {followed}"
    if part.verdict is not Verdict.INCONCLUSIVE:
        return "decided"
    if j.n < MIN_SEEDS:
        return f"at least {MIN_SEEDS} seeds"
    if j.seeds_needed is None:
        return "n/a"
    toward = "SUPPORTED" if j.toward == "support" else "REFUTED"
    if j.feasible:
        return f"~{j.seeds_needed} seeds toward {toward}"
    low, high = j.decision_interval
    return f"not decidable at a feasible seed count (> {MAX_FEASIBLE_SEEDS}); effect in [{fmt(low)}, {fmt(high)}]"


def _claim_section(result: ClaimResult, seeds: tuple[int, ...], shown: dict[str, str],
                   follow_up: FollowUp | None = None) -> list[str]:
    """A claim's section; ``shown`` (figure -> the claim that showed it) keeps each figure to one place."""
    c = result.claim
    lines = [f"### {c.id}: {c.title} ({result.verdict.value})", "", f"> {c.quote}", "",
             f"**Rule (fixed before the runs):** {c.rule}", ""]
    if result.error:
        return [*lines, f"**Not judged:** {cell(result.error)}", ""]
    lines += [
        "| part | comparison | per seed (" + ", ".join(map(str, seeds)) + ") | mean [95% CI] | "
        "decision-level interval | rule | part p, Holm (support / refute) | what would decide it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for part in result.parts:
        outcome = follow_up.part(c.id, part.part.name) if follow_up is not None else None
        followed = followup_report.outcome_text(follow_up, outcome) if outcome is not None else ""
        for j in part.judgements:
            note = f" ({cell(j.note)})" if j.note else ""
            lines.append(
                f"| {cell(part.part.name)}: **{part.verdict.value}** | {cell(j.comparison.name)}{note} | "
                f"{seeds_cell(j.comparison.values, j.comparison.seeds, seeds)} | {effect(j)} | {decision_cell(j)} | "
                f"{cell(j.comparison.rule)} | {part.p_support_holm:.3g} / {part.p_refute_holm:.3g} | "
                f"{decide_cell(part, j, followed)} |"
            )
    finding = result.finding
    if finding is not None and finding.info:
        lines += ["", "Reported beside the rule, not judged:", "", "| measure | per seed | mean |", "|---|---|---|"]
        lines += [f"| {cell(label)} | {seeds_cell(v)} | {fmt(float(np.mean(v)))} |"
                  for label, v in finding.info.items()]
    if finding is not None:
        lines += [f"- {note}" for note in finding.notes]
    for name in c.figures:
        if name in shown:
            lines += ["", f"Figure: {FIGURES.named(name).description.lower()}, under {shown[name]}."]
        else:
            shown[name] = c.id
            lines += ["", f"![{FIGURES.named(name).description}](figures/{name}.png)"]
    return [*lines, ""]


def summary_effect(result: ClaimResult) -> str:
    """The claim's effect, short: one comparison's mean and 95% interval, or every comparison's mean."""
    judgements = [j for p in result.parts for j in p.judgements]
    if not judgements:
        return "n/a"
    if len(judgements) == 1:
        return effect(judgements[0])
    return "; ".join(f"{fmt(j.mean)}" for j in judgements) + " (means)"


def how_judged(judged: Judged) -> list[str]:
    m, alpha = judged.family_parts, judged.alpha
    follow_up = judged.follow_up
    split = "" if follow_up is None else (
        f" ({alpha:g} for the pilot's seeds, judged as this section says, and {follow_up.alpha:g} for the follow-up "
        "on fresh seeds, whose section says how; `tests/test_sequential.py` checks the follow-up's share)")
    return [
        "## How a verdict is reached, and what it guarantees",
        "",
        f"**The guarantee.** The chance that this report holds *any* wrong verdict (a part or a claim SUPPORTED "
        f"when it is false, or REFUTED when it is true; at the exact threshold, either is wrong) is at most "
        f"{alpha + (follow_up.alpha if follow_up is not None else 0):g}{split}, over the {len(judged.family)} "
        f"registered claims and their {m} parts, whichever claims a run selects. It assumes that each "
        "comparison's per-seed values are roughly normal (they are means over "
        "thousands of test images); `tests/test_guarantee.py` checks it by simulation on families shaped like "
        "this one, with every comparison at its threshold, one at its threshold and the rest decisive, and with "
        "3, 5 and 10 seeds.",
        "",
        "**How.** Each comparison holds one number per seed, paired by seed where two conditions meet. Two "
        "one-sided t tests ask whether its mean lies on the claim's side of the threshold (support) or on the "
        "other (refute). A part whose comparisons must all hold is supported by intersection-union (its p is the "
        "largest of its comparisons', with no charge for needing them all) and refuted by Bonferroni over its "
        f"comparisons; a part that needs any one of them (C6) the other way round. Holm's method runs over the {m} "
        f"parts at {alpha / 2:g} for support and {alpha / 2:g} for refutation, so each direction's chance of any "
        f"error is at most {alpha / 2:g}. A claim is SUPPORTED when all its parts are and REFUTED when any is.",
        "",
        f"**Limits of the tests.** Fewer than {MIN_SEEDS} seeds never decide. Where every seed agrees exactly, a "
        "t test would claim certainty; the sign test is used instead, whose smallest p with n seeds is 2^-n "
        f"(0.031 at 5 seeds, against a first Holm step of {alpha / 2 / m:.2g}). A comparison whose seeds hold an "
        "outlier (a Grubbs-type test at 1%) is marked, and must pass the exact sign-flip test as well as the t "
        "test, since a t test's level is not assured there; with 2^-n as that test's floor, it waits for seeds.",
        "",
        f"**Reading an INCONCLUSIVE.** The *decision-level interval* holds the one-sided bounds the first Holm step "
        "uses: a part of one comparison is decided once it clears the threshold. The 95% interval beside it is "
        "unadjusted, for description: it may exclude the threshold while the decision-level one does not. *What "
        f"would decide it* gives the paired seeds at which a one-sided t test at that level would decide with "
        f"{100 * POWER:.0f}% power, at the observed mean and spread (noncentral t); above {MAX_FEASIBLE_SEEDS} "
        "seeds the comparison is not decidable at a feasible seed count.",
        "",
    ]


def render(
    judged: Judged,
    ev: Evidence,
    prov: dict[str, str],
    seconds: dict[str, float],
    conditions: list[str],
    sections: dict[str, SectionOutput] | None = None,
) -> str:
    results = judged.results
    records = ev.run_records()
    lineage = ev.run_records(lineage=True)  # with the shorter runs that trained a continued run's first epochs
    versions = sorted({r["provenance"]["code_version"] for r in lineage})
    dates = sorted(r["provenance"]["date"] for r in lineage)
    continued = sum(bool(r.get("extended_from")) for r in records)
    profile = ev.profile.describe()
    lines = [
        f"# {TITLE[0]}",
        "",
        "Generated by the claims suite's pytest plugin (`tdlib/plugin.py`, `tdlib/report.py`); do not edit by hand.",
        "",
    ]
    if judged.partial:
        lines += [
            f"**Partial report:** {len(judged.family) - len(judged.missing)} of the {len(judged.family)} registered "
            f"claims were judged (missing: {', '.join(c.id for c in judged.missing)}). Their parts count as "
            "undecided, so no verdict here is stronger than in a full run.",
            "",
        ]
    lines += [
        "| | |",
        "|---|---|",
        *(f"| {k} | {', '.join(map(str, v)) if isinstance(v, list) else v} |" for k, v in profile.items()),
        f"| code version (report) | {prov['code_version']} |",
        f"| code version (runs) | {', '.join(versions)}"
        + (f" ({continued} of the {len(records)} runs continue shorter runs: both counted)" if continued else "")
        + " |",
        *([f"| code version (follow-up runs) | {followup_report.versions(judged.follow_up.code_versions)} |"]
          if judged.follow_up is not None else []),
        f"| runs trained | {dates[0] if dates else 'n/a'} to {dates[-1] if dates else 'n/a'} |",
        f"| report written | {prov['date']} |",
        f"| torch | {prov['torch']} (Python {prov['python']}) |",
        f"| machine | {prov['machine']} |",
        f"| training time | {seconds['training'] / 60:.1f} min over {len(records)} runs (every epoch they hold, "
        "from their histories) |",
        f"| report wall time | {seconds['session']:.0f} s for this session (measuring, judging, drawing) |",
        "",
        "## Summary",
        "",
        guarantee(judged),
        "",
        "| claim | | verdict | effect |",
        "|---|---|---|---|",
        *(f"| [{r.claim.id}](#{anchor(r)}) | {cell(r.claim.title)} | "
          f"**{r.verdict.value if not r.error else 'NOT JUDGED'}** | {cell(summary_effect(r))} |" for r in results),
        "",
        "Effects are means over seeds, with the unadjusted 95% interval for a claim of one comparison; each "
        "claim's section has the rule, every comparison and what would decide it.",
        "",
        *how_judged(judged),
        "## Training conditions",
        "",
        f"| id | what | dense test accuracy (%), mean [95% CI] over seeds {', '.join(map(str, ev.seeds))} |",
        "|---|---|---|",
        *(f"| {k} | {CONDITIONS[k].description} | {_dense_cell(ev, k)} |" for k in conditions),
        "",
        "## Claims",
        "",
    ]
    shown: dict[str, str] = {}
    for r in results:
        lines += _claim_section(r, ev.seeds, shown, judged.follow_up)
    if judged.follow_up is not None:
        lines += followup_report.markdown(judged.follow_up, ev.seeds)
    for output in (sections or {}).values():
        lines += output.markdown
    return "\n".join(lines)


def _dense_cell(ev: Evidence, condition: str) -> str:
    values = ev.accuracy(condition)
    low, high = mean_interval(values)
    return f"{fmt(float(np.mean(values)))} [{fmt(low)}, {fmt(high)}]"


def anchor(result: ClaimResult) -> str:
    """GitHub's anchor for a claim's section heading."""
    return heading_anchor(result.claim.id, result.claim.title, result.verdict.value)


class ReportError(ValueError):
    """The report cannot be written where it was asked to be."""


REPORT_FILES = ("claims.json", "evidence.csv", "figures")


def check_report_path(text: str | Path) -> Path:
    """The report's path, checked before any work: a ``.md`` file in a directory that is writable and holds
    nothing but reports (its own files, and subdirectories that are reports themselves), since the whole
    directory is swapped in when the report is written."""
    if not str(text).strip():
        raise ReportError("needs a markdown file's path, such as reports/CLAIMS.md")
    path = Path(text).expanduser().absolute()
    if path.suffix.lower() != ".md":
        raise ReportError("the report is a markdown file: give a path ending in .md, such as reports/CLAIMS.md")
    directory = path.parent
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ReportError(f"{existing} is not a directory this process can write to")
    if directory.exists():
        if not os.access(directory.parent, os.W_OK | os.X_OK):
            raise ReportError(f"{directory.parent} is not writable, and the report directory is swapped in there")
        foreign = [p.name for p in directory.iterdir()
                   if p.name not in (path.name, *REPORT_FILES) and not (p.is_dir() and (p / "claims.json").exists())]
        if foreign:
            raise ReportError(
                f"{directory} holds other files ({', '.join(sorted(foreign)[:5])}); a report is written into a "
                "directory of its own (e.g. reports/), which is replaced whole"
            )
    return path


T = TypeVar("T")


def write_report(path: Path, judged: Judged, ev: Evidence, session_seconds: float,
                 functions: dict[str, Callable[[Evidence], Finding]] | None = None,
                 timings: list[tuple[str, float, str]] | None = None) -> None:
    """Write ``path`` (markdown), ``claims.json``, ``evidence.csv`` (every stored measurement of the runs
    used, one per row) and ``figures/`` beside it, all at once.

    Everything is written into a temporary directory beside the report's, which is then swapped in, so a
    reader sees the old report or the new one, whole, never a mix; a failure leaves the old one as it was.
    Subdirectories that are reports of their own (``reports/paper/``) are carried over.

    With ``timings`` (how :func:`measure_report` measures), every part a whole report of the family could
    have is drawn (the figures of claims that failed too, and every section), each attempted whatever the
    others do, and (what, seconds, error or '') of each is appended to ``timings``, in the order drawn;
    nothing is swapped in.
    """
    started = time.perf_counter()
    path = check_report_path(path)
    directory = path.parent
    directory.parent.mkdir(parents=True, exist_ok=True)
    every = timings is not None
    results = [r for r in judged.results if every or not r.error]
    conditions = [c for c in CONDITIONS if any(c in r.claim.conditions for r in results)] or ["B"]

    def attempt(what: str, draw: Callable[[], T]) -> T | None:
        if timings is None:
            return draw()
        began = time.perf_counter()
        try:
            output, error = draw(), ""
        except Exception as failure:
            output, error = None, f"{type(failure).__name__}: {failure}"
        timings.append((what, time.perf_counter() - began, error))
        return output

    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.new-"))
    try:
        figure_dir = staging / "figures"
        figure_dir.mkdir()
        for name in sorted({name for r in results for name in r.claim.figures}):
            attempt(f"figure {name}", partial(FIGURES.named(name).draw, ev, figure_dir / f"{name}.png", conditions))
        context = ReportContext(ev, judged, functions or {}, figure_dir, conditions)
        attempted = {s.name: attempt(f"section {s.name}", partial(s.write, context)) for s in SECTIONS.values()
                     if every or not s.whole_only or (results and not judged.partial)}
        sections = {name: output for name, output in attempted.items() if output is not None}

        def document() -> None:  # its tables read measurements too
            seconds = {"training": ev.training_seconds(), "session": session_seconds + time.perf_counter() - started}
            prov = provenance()  # once, so that CLAIMS.md and claims.json name the same date and code version
            (staging / path.name).write_text(render(judged, ev, prov, seconds, conditions, sections))
            payload = as_json(judged, ev, prov)
            payload.update({name: output.data for name, output in sections.items() if output.data is not None})
            (staging / "claims.json").write_text(json.dumps(plain_json(payload), indent=1, default=str,
                                                            allow_nan=False))
            with open(staging / "evidence.csv", "w", newline="") as table:  # every stored measurement, one per row
                writer = csv.DictWriter(table, fieldnames=["condition", "seed", "epochs", "run", "key", "value"])
                writer.writeheader()
                writer.writerows(ev.rows())

        if timings is not None and len(sections) < len(attempted):  # a section failed: no document to draw
            timings.append(("the report", 0.0, "not drawn: a section above failed"))
            return
        attempt("the report", document)
        if timings is not None:  # measured, not kept
            return
        if directory.exists():
            for nested in directory.iterdir():  # other reports inside this one's directory
                if nested.is_dir() and nested.name != "figures" and (nested / "claims.json").exists():
                    shutil.copytree(nested, staging / nested.name)
        _swap_in(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def measure_report(judged: Judged, ev: Evidence, functions: dict[str, Callable[[Evidence], Finding]]
                   ) -> list[tuple[str, float, str]]:
    """Measure all that a whole report of the family would, without keeping it: every figure a claim names
    and every registered section, each attempted whatever the others do, then the report itself (its
    tables read measurements too), all drawn into a scratch directory that is thrown away.

    Returns (what, seconds, error or '') for each part, in the order drawn.
    """
    done: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="claims-measured-") as scratch:
        write_report(Path(scratch) / "report" / "CLAIMS.md", judged, ev, 0.0, functions, timings=done)
    return done


def plain_json(value: object) -> object:
    """``value`` with every NaN or infinite float as None (null): JSON has neither, and strict readers
    (JavaScript's ``JSON.parse``) reject the ``NaN`` Python writes by default."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    return value


def _swap_in(staging: Path, directory: Path) -> None:
    """Make ``staging`` the new ``directory``: one atomic exchange where the system offers it (Linux's
    renameat2 with RENAME_EXCHANGE), else two renames; the old directory ends up at ``staging``."""
    if not directory.exists():
        os.replace(staging, directory)
        staging.mkdir()  # so the caller's clean-up finds something to remove
        return
    if _exchange(staging, directory):
        return
    aside = staging.with_name(staging.name + "-old")
    os.replace(directory, aside)
    os.replace(staging, directory)
    os.replace(aside, staging)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def as_json(judged: Judged, ev: Evidence, prov: dict[str, str]) -> dict:
    """Everything the markdown shows but the sections' data, and the per-seed numbers behind it, as plain
    data."""
    return {
        "profile": ev.profile.describe(),
        "provenance": prov,
        "guarantee": guarantee(judged),
        "family": [{"id": c.id, "parts": c.n_parts} for c in judged.family],
        "partial": judged.partial,
        "runs": [
            {
                "name": r["name"],
                "code_version": r["provenance"]["code_version"],
                "date": r["provenance"]["date"],
                "wall_seconds": r["wall_seconds"],  # of its last sitting
                "extended_from": r.get("extended_from"),  # the shorter run it continues, if any
            }
            for r in ev.run_records()
        ],
        "claims": [
            {
                "id": r.claim.id,
                "title": r.claim.title,
                "quote": r.claim.quote,
                "rule": r.claim.rule,
                "verdict": r.verdict.value,
                "effect": summary_effect(r),  # as the summary table shows it, unit included
                "error": r.error,
                "parts": [
                    {
                        "name": p.part.name,
                        "how": p.part.how,
                        "verdict": p.verdict.value,
                        "p_support": p.p_support,
                        "p_refute": p.p_refute,
                        "p_support_holm": p.p_support_holm,
                        "p_refute_holm": p.p_refute_holm,
                        "comparisons": [
                            {
                                "name": j.comparison.name,
                                "values": list(j.comparison.values),
                                "seeds": list(j.comparison.seeds or ev.seeds),
                                "rule": j.comparison.rule,
                                "mean": j.mean,
                                "ci95": list(j.ci95),
                                "decision_interval": list(j.decision_interval),
                                "decision_confidence": list(j.decision_confidence),
                                "p_support": j.p_support,
                                "p_refute": j.p_refute,
                                "outlier_seeds": list(j.flagged),
                                "seeds_needed": j.seeds_needed,
                                "toward": j.toward,
                                "note": j.note,
                            }
                            for j in p.judgements
                        ],
                    }
                    for p in r.parts
                ],
                "info": {k: list(v) for k, v in r.finding.info.items()} if r.finding is not None else {},
            }
            for r in judged.results
        ],
        "follow_up": followup_report.as_json(judged.follow_up) if judged.follow_up is not None else None,
    }
