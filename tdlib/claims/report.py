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
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from tdlib.claims import by_length
from tdlib.claims.claim import ClaimResult, Finding, Judged
from tdlib.claims.conditions import CONDITIONS
from tdlib.claims.evidence import Evidence
from tdlib.claims.findings import heading_anchor
from tdlib.claims.profiles import Profile
from tdlib.claims.sequences import smallest_p
from tdlib.claims.stats import JudgedPart, Judgement, Verdict, mean_interval
from tdlib.claims.sweeps import SWEEPS
from tdlib.files import with_umask
from tdlib.metrics import SWEEP
from tdlib.model import MLP
from tdlib.plan import seed_ranges
from tdlib.provenance import provenance
from tdlib.registry import Registry
from tdlib.runs import Run
from tdlib.spec import RunSpec


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


def unit_of(j: Judgement) -> str:
    return f" {j.comparison.unit}" if j.comparison.unit not in ("", "x") else ""


def effect(j: Judgement) -> str:
    """The mean with its unadjusted 95% interval: description beside the verdict, never what decides it."""
    return f"{fmt(j.mean)}{unit_of(j)} [{fmt(j.ci95[0])}, {fmt(j.ci95[1])}]"


def typical(j: Judgement) -> str:
    """What decides: the seeds on the claim's side, and the median."""
    return f"{j.k_support} of {j.n} seeds; median {fmt(j.median)}{unit_of(j)}"


def seeds_cell(vals: tuple[float, ...], seeds: tuple[int, ...] = (), all_seeds: tuple[int, ...] = ()) -> str:
    """The values in seed order; with ``seeds`` (each value's seed), a dash for each seed left out."""
    if not seeds:
        return ", ".join(fmt(v) for v in vals)
    by_seed = dict(zip(seeds, vals))
    return ", ".join(fmt(by_seed[s]) if s in by_seed else "–" for s in all_seeds)


# ---------------------------------------------------------------- figures


def sweeps_figure(ev: Evidence, path: Path, conditions: list[str]) -> None:
    """Accuracy against sparsity, one panel per pruning kind, a line (mean) and band (range) per condition."""
    rows = math.ceil(len(SWEEPS) / 2)
    fig = Figure(figsize=(12, 4.25 * rows))
    axes = fig.subplots(rows, 2, sharey=True, squeeze=False)
    positions = np.arange(len(SWEEP))
    for ax in axes.flat[len(SWEEPS):]:  # an odd number of kinds leaves one panel empty
        ax.set_visible(False)
    for ax, (kind, title) in zip(axes.flat, SWEEPS.items()):
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
    fig = Figure(figsize=(max(3.4 * columns, 6.8), 2.7 * rows))  # wide enough for the title with one panel
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
    drawn: Drawn | None = None  # for the document's own sections: what it is drawn with

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


# Offered to a study of the MLP, which registers them (they read its hidden layers, and B's checkpoints).
WEIGHTS_SECTION = Section("weights", "hidden weight magnitudes of every condition", _weights_section, whole_only=False)
BY_LENGTH_SECTION = Section("by_length", "the claims on B alone at each training length a run reaches",
                            _by_length_section)

TITLE = ["Claims report"]  # the report's heading; a study sets its own with set_title


def set_title(title: str) -> None:
    """The heading of every report from now on."""
    TITLE[0] = title


# ---------------------------------------------------------------- markdown


def guarantee(judged: Judged) -> str:
    """The report's guarantee, in one paragraph, truthful for this run (partial or whole)."""
    m, alpha = judged.family_parts, judged.alpha
    text = (
        f"Guarantee: the chance of any wrong verdict (a part or claim SUPPORTED when false, or REFUTED when true) "
        f"is at most {alpha:g} (this report's share of the study's 0.05) over the {len(judged.family)} registered "
        f"claims ({m} parts), assuming only that seeds are independent; each comparison is an exact, anytime-valid "
        f"test of whether the typical seed lands on the claim's side, and Holm runs over the {m} parts at "
        f"{alpha / 2:g} for each direction."
    )
    if judged.partial:
        text += (
            f" PARTIAL: {len(judged.family) - len(judged.missing)} of {len(judged.family)} claims judged (missing: "
            f"{', '.join(c.id for c in judged.missing)}); the others count as undecided, so no verdict here is "
            "stronger than in a full run."
        )
    return text


def decide_cell(part: JudgedPart, j: Judgement) -> str:
    """For a decided part, the seed at which the comparison reached what the verdict needed; for an undecided
    one, the seeds in all that would decide it if its seeds went on splitting as they have."""
    if part.verdict is not Verdict.INCONCLUSIVE:
        return f"decided at seed {j.decided_at}" if j.decided_at is not None else "not needed by the verdict"
    if part.to_decide is None:
        return "not decidable at a feasible seed count (the split is near even)"
    toward = "SUPPORTED" if part.toward == "support" else "REFUTED"
    return f"~{part.to_decide} seeds in all toward {toward}"


def _claim_section(result: ClaimResult, seeds: tuple[int, ...], shown: dict[str, str]) -> list[str]:
    """A claim's section; ``shown`` (figure -> the claim that showed it) keeps each figure to one place."""
    c = result.claim
    lines = [f"### {c.id}: {c.title} ({result.verdict.value})", "", f"> {c.quote}", "",
             f"**Rule (fixed before the runs):** {c.rule}", ""]
    if result.error:
        return [*lines, f"**Not judged:** {cell(result.error)}", ""]
    lines += [
        "| part | comparison | per seed | on the claim's side | mean [95% CI] | rule | "
        "part p, Holm (support / refute) | decided at, or what would decide it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for part in result.parts:
        for j in part.judgements:
            shown_seeds = j.comparison.seeds or seeds
            lines.append(
                f"| {cell(part.part.name)}: **{part.verdict.value}** | {cell(j.comparison.name)} | "
                f"{seeds_cell(j.comparison.values, shown_seeds, shown_seeds)} (seeds {seed_ranges(shown_seeds)}) | "
                f"{typical(j)} | {effect(j)} | {cell(j.comparison.rule)} | "
                f"{part.p_support_holm:.3g} / {part.p_refute_holm:.3g} | {decide_cell(part, j)} |"
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
    """The claim's effect, short: one comparison's seeds on the claim's side and median, or each
    comparison by name, its median with its unit, and its share of seeds on the claim's side."""
    judgements = [j for p in result.parts for j in p.judgements]
    if not judgements:
        return "n/a"
    if len(judgements) == 1:
        return typical(judgements[0])
    return "; ".join(f"{j.comparison.name}: {fmt(j.median)}{unit_of(j)} ({j.k_support}/{j.n})" for j in judgements) + (
        " (medians; seeds on the claim's side)")


def how_judged(judged: Judged) -> list[str]:
    m, alpha = judged.family_parts, judged.alpha
    anyway = sorted({r.claim.id for r in judged.results for p in r.parts if p.part.how == "any"})
    examples = f" ({', '.join(anyway)})" if anyway else ""
    return [
        "## How a verdict is reached, and what it guarantees",
        "",
        "**What a comparison claims.** That the *typical run* lands on the claim's side of its threshold: more "
        "than half of all runs of its training procedure land strictly on that side, so the median seed does (a "
        "seed exactly at the threshold counts against whichever side is supported). This is the convention "
        "registered on 2026-12-04 (`claims.md`); a mean, at the pruning cliff where single seeds collapse, no "
        "valid test could decide with the seeds a study can afford.",
        "",
        f"**The guarantee.** The chance that this report holds *any* wrong verdict (a part or a claim SUPPORTED "
        f"when it is false, or REFUTED when it is true; at the exact threshold, either is wrong) is at most "
        f"{alpha:g}, this report's share of the 0.05 that the study's reports share, over the "
        f"{len(judged.family)} registered claims and their {m} parts, whichever claims a run selects. It assumes "
        "only that seeds are independent, nothing of their values' distribution; `tests/test_sequences.py` "
        "checks it by simulation on normal, t(3), exponential, lognormal, collapsing and exactly tied seeds.",
        "",
        "**How.** The seeds form one sequence, fixed before they were trained (the profile's seeds, then fresh "
        "seeds from 100 in order); every seed stored for the conditions a part reads is used, none left out. Each "
        "comparison counts the seeds strictly on the claim's side, and each direction is an exact test of that "
        "rate against 1/2 that stays valid however many seeds are added and whenever one looks (a test "
        "martingale, `tdlib/claims/sequences.py`). A part whose comparisons must all hold is supported by "
        "intersection-union and refuted by Bonferroni over its comparisons; a part that needs any one of them"
        f"{examples} the other way round. Holm's method runs over the {m} parts at {alpha / 2:g} for support and "
        f"{alpha / 2:g} for refutation. A claim is SUPPORTED when all its parts are and REFUTED when any is.",
        "",
        f"**Limits of the tests.** With n seeds the smallest p is (n + 1) / (2^(n+1) - 1): {smallest_p(5):.3f} at "
        f"5 seeds, so five seeds decide nothing; the first Holm step ({alpha / 2 / m:.2g}) needs "
        f"{first_deciding(alpha / 2 / m)} seeds all on one side. The mean with its 95% interval is shown for "
        "description only.",
        "",
        "**Reading an INCONCLUSIVE.** *What would decide it* gives the seeds in all at which the part would be "
        "decided, at the level Holm's next step would ask of it, if its seeds went on splitting as they have; a "
        "split near even is not decidable at a feasible seed count. A decided part gives, per comparison, the "
        "seed of the sequence at which it reached what the verdict needed.",
        "",
    ]


def first_deciding(level: float) -> int:
    """The fewest seeds, all on one side, that reach ``level``."""
    n = 1
    while smallest_p(n) > level:
        n += 1
    return n


@dataclass(frozen=True)
class Drawn:
    """What the document's own sections read beyond the context: when and with what it is drawn, and the
    registered sections' outputs, drawn before it."""

    prov: dict[str, str]  # provenance(): the code version, date and machine drawing it
    seconds: dict[str, float]  # "training" (every epoch of the runs used), "session" (this session's)
    sections: dict[str, SectionOutput]  # the registered sections' outputs, shown after the claims


def _heading(context: ReportContext) -> SectionOutput:
    judged, profile = context.judged, context.ev.profile.describe()
    lines = [
        f"# {TITLE[0]}",
        "",
        "Generated by the claims suite's pytest plugin (`tdlib/claims/plugin.py`, `tdlib/claims/report.py`); do not "
        "edit by hand.",
        f"Profile {profile['profile']} ({profile['epochs']} epochs); the code, dates and machine are in the "
        "[provenance](#provenance), after the verdicts.",
        "",
    ]
    if judged.partial:
        lines += [
            f"**Partial report:** {len(judged.family) - len(judged.missing)} of the {len(judged.family)} registered "
            f"claims were judged (missing: {', '.join(c.id for c in judged.missing)}). Their parts count as "
            "undecided, so no verdict here is stronger than in a full run.",
            "",
        ]
    return SectionOutput(lines)


def _summary(context: ReportContext) -> SectionOutput:
    # The verdicts come first, the provenance after them: the first screen answers the question.
    return SectionOutput([
        "## Summary",
        "",
        "| claim | | verdict | effect |",
        "|---|---|---|---|",
        *(f"| [{r.claim.id}](#{anchor(r)}) | {cell(r.claim.title)} | "
          f"**{r.verdict.value if not r.error else 'NOT JUDGED'}** | {cell(summary_effect(r))} |"
          for r in context.judged.results),
        "",
        "Effects: how many seeds land on the claim's side and the median (what is judged); each claim's section "
        "has the rule, every seed, the mean with its 95% interval, and what decided it or would.",
        "",
        guarantee(context.judged),
        "",
    ])


def _provenance(context: ReportContext) -> SectionOutput:
    judged, ev, drawn = context.judged, context.ev, context.drawn
    assert drawn is not None
    prov, seconds = drawn.prov, drawn.seconds
    records = every_record(judged, ev)
    lineage = every_record(judged, ev, lineage=True)  # with the shorter runs that trained their first epochs
    versions = sorted({r["provenance"]["code_version"] for r in lineage})
    dates = sorted(r["provenance"]["date"] for r in lineage)
    continued = sum(bool(r.get("extended_from")) for r in records)
    cpus = Counter(r["provenance"].get("cpu", "not recorded (before 2026-12-06)") for r in records)
    return SectionOutput([
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {', '.join(map(str, v)) if isinstance(v, list) else v} |"
          for k, v in ev.profile.describe().items()),
        f"| code version (report) | {prov['code_version']} |",
        f"| code version (runs) | {', '.join(versions)}"
        + (f" ({continued} of the {len(records)} runs continue shorter runs: both counted)" if continued else "")
        + " |",
        f"| runs trained | {dates[0] if dates else 'n/a'} to {dates[-1] if dates else 'n/a'} |",
        f"| report written | {prov['date']} |",
        f"| torch | {prov['torch']} (Python {prov['python']}) |",
        f"| machine | {prov['machine']} |",
        f"| CPUs (runs) | {'; '.join(f'{cpu}: {n} runs' for cpu, n in sorted(cpus.items()))} (bits depend on the "
        "CPU; the seeds' values are realizations of the same training either way) |",
        f"| training time | {seconds['training'] / 60:.1f} min over {len(records)} runs (every epoch they hold, "
        "from their histories) |",
        f"| report wall time | {seconds['session']:.0f} s for this session (measuring, judging, drawing) |",
        "",
    ])


def _how_judged(context: ReportContext) -> SectionOutput:
    return SectionOutput(how_judged(context.judged))


def _conditions(context: ReportContext) -> SectionOutput:
    ev = context.ev
    return SectionOutput([
        "## Training conditions",
        "",
        f"| id | what | dense test accuracy (%), mean [95% CI] over seeds {', '.join(map(str, ev.seeds))} |",
        "|---|---|---|",
        *(f"| {k} | {CONDITIONS[k].description} | {_dense_cell(ev, k)} |" for k in context.conditions),
        "",
    ])


def _claims(context: ReportContext) -> SectionOutput:
    lines, shown = ["## Claims", ""], {}
    for r in context.judged.results:
        lines += _claim_section(r, context.ev.seeds, shown)
    return SectionOutput(lines)


def _sequence(context: ReportContext) -> SectionOutput:
    return SectionOutput(sequence_section(context.judged) if context.judged.sequence is not None else [])


def _registered(context: ReportContext) -> SectionOutput:
    assert context.drawn is not None
    return SectionOutput([line for output in context.drawn.sections.values() for line in output.markdown])


# The document, in order: its own sections, then the registered ones (drawn before it: their figures and data),
# all of one protocol. The sections after the claims are a study's (register_section).
DOCUMENT = (
    Section("heading", "the title, the profile, and whether the report is partial", _heading),
    Section("summary", "every claim's verdict and effect, and the guarantee", _summary),
    Section("provenance", "the profile, code versions, dates, machine and times", _provenance),
    Section("how_judged", "how a verdict is reached, and what it guarantees", _how_judged),
    Section("conditions", "the training conditions the claims read, with their dense accuracy", _conditions),
    Section("claims", "each claim: its rule, every seed, the verdict and what decided it", _claims),
    Section("sequence", "the sequence of seeds each condition was trained and judged along", _sequence),
    Section("registered", "the sections registered after the claims (register_section)", _registered),
)


def render(context: ReportContext) -> str:
    """The report's markdown: the :data:`DOCUMENT`'s sections in order, for ``context`` with what it is drawn
    with (``context.drawn``)."""
    return "\n".join(line for section in DOCUMENT for line in section.write(context).markdown)


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


Attempt = Callable[[str, Callable[[], Any]], Any]  # (what, draw) -> what draw gave (None: it failed)


def _strictly(what: str, draw: Callable[[], T]) -> T:
    """How a written report draws each part: a failure stops it (and the old report stays)."""
    return draw()


def _draw_parts(judged: Judged, ev: Evidence, functions: dict[str, Callable[[Evidence], Finding]],
                figure_dir: Path, every: bool, attempt: Attempt) -> tuple[dict[str, SectionOutput], bool]:
    """Draw into ``figure_dir`` every figure the claims name and every registered section that the report
    has (``every``: each one a whole report of the family could have, the failed claims' figures too), each
    through ``attempt``. Returns the sections' outputs by name, and whether every section attempted gave one."""
    results = [r for r in judged.results if every or not r.error]
    conditions = report_conditions(results, ev)
    for name in sorted({name for r in results for name in r.claim.figures}):
        attempt(f"figure {name}", partial(FIGURES.named(name).draw, ev, figure_dir / f"{name}.png", conditions))
    context = ReportContext(ev, judged, functions, figure_dir, conditions)
    attempted = {s.name: attempt(f"section {s.name}", partial(s.write, context)) for s in SECTIONS.values()
                 if every or not s.whole_only or (results and not judged.partial)}
    sections = {name: output for name, output in attempted.items() if output is not None}
    return sections, len(sections) == len(attempted)


def report_conditions(results: list[ClaimResult], ev: Evidence) -> list[str]:
    """The conditions a report shows: those its claims read, in registration order (else the baseline)."""
    return [c for c in CONDITIONS if any(c in r.claim.conditions for r in results)] or [ev.profile.baseline]


def _write_document(staging: Path, name: str, judged: Judged, ev: Evidence, sections: dict[str, SectionOutput],
                    session_seconds: float, every: bool = False) -> None:
    """The report's markdown ``name``, ``claims.json`` and ``evidence.csv`` into ``staging`` (their tables read
    measurements too; ``every``: the conditions of the failed claims too)."""
    seconds = {"training": sum(run.training_seconds for run in every_run(judged, ev)), "session": session_seconds}
    prov = provenance()  # once, so that CLAIMS.md and claims.json name the same date and code version
    conditions = report_conditions([r for r in judged.results if every or not r.error], ev)
    context = ReportContext(ev, judged, {}, staging / "figures", conditions, Drawn(prov, seconds, sections))
    (staging / name).write_text(render(context))
    payload = as_json(judged, ev, prov)
    payload.update({name: output.data for name, output in sections.items() if output.data is not None})
    (staging / "claims.json").write_text(json.dumps(plain_json(payload), indent=1, default=str, allow_nan=False))
    with open(staging / "evidence.csv", "w", newline="") as table:  # every stored measurement, one per row
        writer = csv.DictWriter(table, fieldnames=["condition", "seed", "epochs", "run", "key", "value"])
        writer.writeheader()
        writer.writerows(every_row(judged, ev))


def write_report(path: Path, judged: Judged, ev: Evidence, session_seconds: float,
                 functions: dict[str, Callable[[Evidence], Finding]] | None = None) -> None:
    """Write ``path`` (markdown), ``claims.json``, ``evidence.csv`` (every stored measurement of the runs
    used, one per row) and ``figures/`` beside it, all at once.

    Everything is written into a temporary directory beside the report's, which is then swapped in, so a
    reader sees the old report or the new one, whole, never a mix; a failure leaves the old one as it was.
    Subdirectories that are reports of their own (``reports/paper/``) are carried over.
    """
    started = time.perf_counter()
    path = check_report_path(path)
    directory = path.parent
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover_swap(directory)
    staging = with_umask(Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.new-")))
    try:
        (staging / "figures").mkdir()
        sections, _ = _draw_parts(judged, ev, functions or {}, staging / "figures", False, _strictly)
        _write_document(staging, path.name, judged, ev, sections, session_seconds + time.perf_counter() - started)
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
    (those of claims that failed too) and every registered section, each attempted whatever the others do,
    then the report itself (its tables read measurements too), all drawn into a scratch directory that is
    thrown away.

    Returns (what, seconds, error or '') for each part, in the order drawn.
    """
    done: list[tuple[str, float, str]] = []

    def recording(what: str, draw: Callable[[], T]) -> T | None:
        began = time.perf_counter()
        try:
            output, error = draw(), ""
        except Exception as failure:
            output, error = None, f"{type(failure).__name__}: {failure}"
        done.append((what, time.perf_counter() - began, error))
        return output

    with tempfile.TemporaryDirectory(prefix="claims-measured-") as scratch:
        (Path(scratch) / "figures").mkdir()
        sections, whole = _draw_parts(judged, ev, functions, Path(scratch) / "figures", True, recording)
        if not whole:  # a section failed: no document to draw
            done.append(("the report", 0.0, "not drawn: a section above failed"))
        else:
            recording("the report", partial(_write_document, Path(scratch), "CLAIMS.md", judged, ev, sections, 0.0,
                                            every=True))
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


ASIDE = "-old"  # the old report's name during a swap of two renames (a staging directory's name, then this)


def _swap_in(staging: Path, directory: Path) -> None:
    """Make ``staging`` the new ``directory``: one atomic exchange where the system offers it (Linux's
    renameat2 with RENAME_EXCHANGE, macOS's renamex_np with RENAME_SWAP), else two renames, with the old
    directory at ``<staging>-old`` between them (:func:`recover_swap` puts it back if the process dies
    there); the old directory ends up at ``staging``."""
    if not directory.exists():
        os.replace(staging, directory)
        staging.mkdir()  # so the caller's clean-up finds something to remove
        return
    if _exchange(staging, directory):
        return
    aside = staging.with_name(staging.name + ASIDE)
    os.replace(directory, aside)
    os.replace(staging, directory)
    os.replace(aside, staging)


def recover_swap(directory: Path) -> None:
    """Put back a report directory that a swap of two renames was killed in the middle of: nothing at
    ``directory``, and the old report aside as ``.<name>.new-*-old`` beside it. Called before a report is
    written, so that the next write finds the old report where it was (and a reader after it, the new)."""
    if directory.exists():
        return
    for aside in sorted(directory.parent.glob(f".{directory.name}.new-*{ASIDE}")):
        if (aside / "claims.json").exists() or any(aside.glob("*.md")):
            os.replace(aside, directory)
            warnings.warn(f"{directory} was missing, its last write killed mid-swap; put back from {aside.name}",
                          stacklevel=2)
            return


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2, macOS renamex_np); False where neither is available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    at_fdcwd, rename_exchange, rename_swap = -100, 2, 2
    if hasattr(libc, "renameat2"):
        return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    if hasattr(libc, "renamex_np"):
        return libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap) == 0
    return False


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
            for r in every_record(judged, ev)
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
                        "level": p.level,
                        "to_decide": p.to_decide,
                        "toward": p.toward,
                        "comparisons": [
                            {
                                "name": j.comparison.name,
                                "values": list(j.comparison.values),
                                "seeds": list(j.comparison.seeds or ev.seeds),
                                "rule": j.comparison.rule,
                                "threshold": j.comparison.threshold,
                                "side": j.comparison.side,
                                "k_support": j.k_support,
                                "k_refute": j.k_refute,
                                "median": j.median,
                                "mean": j.mean,
                                "ci95": list(j.ci95),
                                "p_support": j.p_support,
                                "p_refute": j.p_refute,
                                "decided_at": j.decided_at,
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
        "sequence": None if judged.sequence is None else {
            "seeds": list(judged.sequence.seeds), "stored": judged.sequence.stored,
            "trained": judged.sequence.trained, "rounds": judged.sequence.rounds, "ended": judged.sequence.ended,
            "errors": judged.sequence.errors, **({"cut": judged.sequence.cut} if judged.sequence.cut else {})},
    }


def sequence_section(judged: Judged) -> list[str]:
    """What each condition has stored of the sequence, and what continuing it did."""
    seq = judged.sequence
    lines = ["## The sequence of seeds", "",
             f"Every condition is trained and judged along one sequence, fixed before its runs: "
             f"{seed_ranges(seq.seeds)} (the profile's budget). A part is judged on the seeds stored for every "
             "condition it reads.", "", "| condition | seeds stored |", "|---|---|"]
    lines += [f"| {c} | {n} ({seed_ranges(seq.seeds[:n])}) |" for c, n in sorted(seq.stored.items())]
    if seq.rounds or seq.ended:
        lines += ["", f"Continued here: {len(seq.trained)} runs over {seq.rounds} round(s); ended: {seq.ended}."]
    if seq.errors:
        lines += ["", "Judged on the profile's own seeds only, since their further seeds failed: "
                  + "; ".join(f"{k}: {cell(v)}" for k, v in seq.errors.items()) + "."]
    if seq.cut:
        lines += ["", "Judged short of their stored seeds, and not continued: a later seed needs a measurement that "
                  "an archived run lacks, which only its weights give, and they were not at hand (trained again on "
                  "another CPU than its record's, a run does not reproduce its bits; a machine like the record's "
                  "can take it): " + "; ".join(f"{k}: {cell(v)}" for k, v in seq.cut.items()) + "."]
    return [*lines, ""]


def _evidences(judged: Judged, ev: Evidence) -> list[Evidence]:
    return [ev, *(judged.sequence.evidence if judged.sequence is not None else [])]


def every_row(judged: Judged, ev: Evidence) -> list[dict[str, object]]:
    """The stored measurements of every run the judging read, the sequence's further seeds included."""
    rows: dict[tuple[object, object], dict[str, object]] = {}
    for e in _evidences(judged, ev):
        rows.update({(row["run"], row["key"]): row for row in e.rows()})
    return sorted(rows.values(), key=lambda row: (str(row["condition"]), int(row["seed"]), str(row["key"])))  # type: ignore


def every_run(judged: Judged, ev: Evidence) -> list[Run]:
    """Every run the judging read, the sequence's further seeds included, each once."""
    return list({run.spec.name: run for e in _evidences(judged, ev) for run in e.used_runs()}.values())


def every_record(judged: Judged, ev: Evidence, lineage: bool = False) -> list[dict]:
    """The records of every run the judging read (with ``lineage``, the shorter runs they continue too)."""
    records = {r["name"]: r for run in every_run(judged, ev) for r in (run.lineage if lineage else [run.record])}
    return list(records.values())
