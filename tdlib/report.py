"""The claims report: ``CLAIMS.md``, ``claims.json`` and ``figures/*.png``, from judged claims and their runs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from tdlib import savings_report
from tdlib.claim import ClaimResult
from tdlib.conditions import CONDITIONS
from tdlib.evidence import SWEEP_KINDS, Evidence
from tdlib.metrics import SWEEP, activation_stats, weight_stats
from tdlib.provenance import provenance
from tdlib.stats import ALPHA, MIN_SEEDS, Judgement

SWEEP_TITLES = {
    "weight": "weight magnitude, per layer",
    "unit": "unit L2 norm (whole unit)",
    "random_weight": "random weights (control)",
    "global": "weight magnitude, global",
}
COLOURS = dict(zip(CONDITIONS, plt.get_cmap("tab10").colors))


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


def sweeps_figure(ev: Evidence, path: Path) -> None:
    """Accuracy against sparsity, one panel per pruning kind, a line (mean) and band (range) per condition."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharey=True)
    positions = np.arange(len(SWEEP))
    for ax, kind in zip(axes.flat, SWEEP_KINDS):
        title = SWEEP_TITLES[kind]
        for condition in CONDITIONS:
            curves = np.stack([ev.pruned(condition, kind, k) for k in SWEEP], axis=1)  # (seeds, ks)
            ax.plot(positions, curves.mean(0), marker="o", ms=3, color=COLOURS[condition], label=condition)
            ax.fill_between(positions, curves.min(0), curves.max(0), color=COLOURS[condition], alpha=0.2)
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
    plt.close(fig)


def activations_figure(ev: Evidence, path: Path) -> None:
    """B's hidden activations on the test set: per layer, % exactly 0 and % dead units; a histogram."""
    per_seed = [activation_stats(ev.model("B", s), ev.data.test_x) for s in ev.seeds]
    layers = np.arange(len(per_seed[0]))
    zero = np.array([[100 * layer.zero_fraction for layer in stats] for stats in per_seed])
    dead = np.array([[100 * layer.dead_fraction for layer in stats] for stats in per_seed])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for offset, (label, data) in zip((-0.2, 0.2), (("activations exactly 0", zero), ("dead units", dead))):
        left.bar(
            layers + offset,
            data.mean(0),
            width=0.4,
            label=label,
            yerr=[data.mean(0) - data.min(0), data.max(0) - data.mean(0)],
            capsize=3,
        )
    left.set_xticks(layers, [f"hidden {i + 1}" for i in layers])
    left.set_ylabel("% (mean over seeds, bars = range)")
    left.legend()
    left.set_title("B: zero activations and dead units per layer")
    with torch.no_grad():
        hidden = ev.model("B", ev.seeds[0]).hidden_activations(ev.data.test_x)
    for i, h in enumerate(hidden):
        right.hist(h.flatten().numpy(), bins=80, histtype="step", log=True, label=f"hidden {i + 1}")
    right.set_xlabel("activation")
    right.set_ylabel("count (log)")
    right.set_title(f"B seed {ev.seeds[0]}: hidden activations on the test set")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def weights_figure(ev: Evidence, path: Path) -> None:
    """Histograms of hidden |w| for each condition (first seed), on a log axis."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.logspace(-8, 0.5, 90)
    for condition in CONDITIONS:
        model = ev.model(condition, ev.seeds[0])
        weights = torch.cat([layer.weight.detach().abs().flatten() for layer in model.hidden_layers]).numpy()
        ax.hist(np.clip(weights, 1e-8, None), bins=bins, histtype="step", color=COLOURS[condition], label=condition)
    ax.set_xscale("log")
    ax.axvline(1e-3, color="grey", ls="--", lw=1)
    ax.set_xlabel("|w| of hidden weights")
    ax.set_ylabel("count")
    ax.set_title(f"Hidden weight magnitudes after training (seed {ev.seeds[0]})")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def small_weights_figure(ev: Evidence, path: Path) -> None:
    """C7: the fraction of hidden |w| < 1e-3 at each checkpoint of B, one line per seed."""
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = ev.profile.checkpoints
    per_epoch = [ev.small_weights("B", e) for e in epochs]  # (seeds,) each, the same evidence C7 judges
    for i, seed in enumerate(ev.seeds):
        ax.plot(epochs, [v[i] for v in per_epoch], marker="o", ms=3, label=f"seed {seed}")
    ax.axvline(ev.profile.tenth, color="grey", ls="--", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("% of hidden |w| < 1e-3")
    ax.set_title("B: small weights over training (dashed: a tenth of training)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dead_units_figure(ev: Evidence, path: Path) -> None:
    """C8: how far dead and live units' incoming weights moved in the last half, and their norms."""
    half = ev.profile.half
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, run in enumerate(ev.runs("B")):
        model = ev.model("B", run.spec.seed)
        moved, dead = ev.unit_movement(run, model, since=half)
        norms = torch.cat([stats.row_norms for stats in weight_stats(model)])
        for ax, values in ((left, moved), (right, norms)):
            jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(values))
            ax.scatter(
                i + jitter[~dead.numpy()],
                values[~dead].numpy(),
                s=2,
                color="tab:blue",
                alpha=0.3,
                label="live" if i == 0 else None,
            )
            ax.scatter(
                i + jitter[dead.numpy()],
                values[dead].numpy(),
                s=4,
                color="tab:red",
                alpha=0.7,
                label="dead" if i == 0 else None,
            )
    left.set_title(f"B: movement of incoming weights and bias, epochs {half} to {ev.profile.epochs}")
    right.set_title("B: incoming weight norm at the end")
    for ax in (left, right):
        ax.set_xticks(range(len(ev.seeds)), [f"seed {s}" for s in ev.seeds])
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIGURES = {
    "sweeps": (sweeps_figure, "Accuracy against sparsity for every condition"),
    "activations": (activations_figure, "Hidden activations and dead units of B"),
    "weights": (weights_figure, "Hidden weight magnitudes"),
    "small-weights": (small_weights_figure, "Small weights over training"),
    "dead-units": (dead_units_figure, "Dead and live units"),
}


# ---------------------------------------------------------------- markdown


def _claim_section(result: ClaimResult, seeds: tuple[int, ...]) -> list[str]:
    c = result.claim
    lines = [
        f"### {c.id}: {result.verdict.value}",
        "",
        f"> {c.quote}",
        "",
        f"**Rule (fixed before the runs):** {c.rule}",
        "",
    ]
    lines += [
        "| part | comparison | per seed (" + ", ".join(map(str, seeds)) + ") | mean [95% CI] | rule | "
        "p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in result.parts:
        for j in part.judgements:
            verdict = j.verdict.value + (f" ({j.note})" if j.note else "")
            lines.append(
                f"| {cell(part.part.name)} ({part.verdict.value}) | {cell(j.comparison.name)} | "
                f"{seeds_cell(j.comparison.values, j.comparison.seeds, seeds)} | {effect(j)} | "
                f"{cell(j.comparison.rule)} | {j.p_holm:.3g} | {verdict} |"
            )
    if result.finding.info:
        lines += ["", "Reported beside the rule, not judged:", "", "| measure | per seed | mean |", "|---|---|---|"]
        lines += [
            f"| {cell(label)} | {seeds_cell(v)} | {fmt(float(np.mean(v)))} |"
            for label, v in result.finding.info.items()
        ]
    lines += [f"- {note}" for note in result.finding.notes]
    for name in c.figures:
        lines += ["", f"![{FIGURES[name][1]}](figures/{name}.png)"]
    return [*lines, ""]


def render(
    results: list[ClaimResult],
    ev: Evidence,
    prov: dict[str, str],
    savings: savings_report.Savings,
    seconds: dict[str, float],
) -> str:
    records = ev.run_records()
    versions = sorted({r["provenance"]["code_version"] for r in records})
    dates = sorted(r["provenance"]["date"] for r in records)
    profile = ev.profile.describe()
    lines = [
        "# Claims report: pruning and targeted dropout on Fashion-MNIST",
        "",
        "Generated by `pytest claims` (`conftest.py` and `tdlib/report.py`); do not edit by hand.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {', '.join(map(str, v)) if isinstance(v, list) else v} |" for k, v in profile.items()),
        f"| code version (report) | {prov['code_version']} |",
        f"| code version (runs) | {', '.join(versions)} |",
        f"| runs trained | {dates[0] if dates else 'n/a'} to {dates[-1] if dates else 'n/a'} |",
        f"| report written | {prov['date']} |",
        f"| torch | {prov['torch']} (Python {prov['python']}) |",
        f"| machine | {prov['machine']} |",
        f"| training wall time | {seconds['training'] / 60:.1f} min over {len(records)} runs (from their records) |",
        f"| report wall time | {seconds['session']:.0f} s for this session (measuring, judging, drawing) |",
        "",
        "## Summary",
        "",
        "| claim | the writeup says | rule | verdict | effect: mean [95% CI] per comparison |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        effects = "<br>".join(f"{cell(j.comparison.name)}: {effect(j)}" for p in r.parts for j in p.judgements)
        lines.append(
            f"| {r.claim.id} | {cell(r.claim.quote)} | {cell(r.claim.rule)} | **{r.verdict.value}** | {effects} |"
        )
    lines += [
        "",
        "## How a verdict is reached",
        "",
        f"Each comparison holds one number per seed (paired by seed where two conditions meet). A one-sided "
        f"t test asks whether its mean lies on the claim's side of the threshold, and another whether it lies "
        f"on the other side. The smaller p of each comparison is adjusted by Holm's method over all "
        f"{sum(len(p.judgements) for r in results for p in r.parts)} comparisons of this run, at alpha = {ALPHA}: "
        f"SUPPORTED or REFUTED when the adjusted p is below alpha, INCONCLUSIVE otherwise, and always with "
        f"fewer than {MIN_SEEDS} seeds. A part is SUPPORTED when all its comparisons are (or any, for "
        f'"some layer" rules) and REFUTED when any is; a claim likewise from its parts. The interval '
        f"shown is the two-sided 95% t interval of the mean, unadjusted.",
        "",
        "## Training conditions",
        "",
        "| id | what |",
        "|---|---|",
        *(f"| {k} | {v.description} |" for k, v in CONDITIONS.items()),
        "",
        "## Claims",
        "",
    ]
    for r in results:
        lines += _claim_section(r, ev.seeds)
    lines += ["### Weight magnitudes", "", "![Hidden weight magnitudes](figures/weights.png)", ""]
    lines += savings_report.markdown(savings, ev)
    lines += [
        "## What this run cannot tell",
        "",
        f"- **Training length.** {ev.profile.epochs} epochs against the writeup's 100: claims about what long "
        "training does (C7, C8) are tested on a shorter run, and the ramped TWR schedule is compressed "
        "into the same fraction of fewer steps.",
        "- **Network.** One 784-1000-1000-500-200-10 MLP on Fashion-MNIST; the paper's figures come from "
        "ResNet-32 on CIFAR-10 and a Transformer on WMT, so a verdict here says nothing about those.",
        f"- **Seeds.** {len(ev.seeds)} seeds; a small effect can stay INCONCLUSIVE, and with fewer than "
        f"{MIN_SEEDS} seeds every verdict is INCONCLUSIVE by construction.",
        "- **Implementation choices.** Unit-level targeted dropout drops whole units and their biases (the "
        "official code drops weights inside targeted units); weight-level targeting is per unit, as in the "
        "official code; pruning never touches the output layer.",
        "",
    ]
    return "\n".join(lines)


def write_report(path: Path, results: list[ClaimResult], ev: Evidence, session_seconds: float) -> None:
    """Write ``path`` (markdown), ``claims.json`` and ``figures/`` beside it."""
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure_dir = path.parent / "figures"
    figure_dir.mkdir(exist_ok=True)
    wanted = {name for r in results for name in r.claim.figures} | {"weights"}
    for name in sorted(wanted):
        FIGURES[name][0](ev, figure_dir / f"{name}.png")
    savings = savings_report.measure(ev)
    savings_report.figure(savings, ev, figure_dir / "speedup.png")
    seconds = {"training": ev.training_seconds(), "session": session_seconds + time.perf_counter() - started}
    prov = provenance()  # once, so that CLAIMS.md and claims.json name the same date and code version
    path.write_text(render(results, ev, prov, savings, seconds))
    payload = {
        "profile": ev.profile.describe(),
        "provenance": prov,
        "runs": [
            {
                "name": r["name"],
                "code_version": r["provenance"]["code_version"],
                "date": r["provenance"]["date"],
                "wall_seconds": r["wall_seconds"],
            }
            for r in ev.run_records()
        ],
        "claims": [
            {
                "id": r.claim.id,
                "quote": r.claim.quote,
                "rule": r.claim.rule,
                "verdict": r.verdict.value,
                "parts": [
                    {
                        "name": p.part.name,
                        "verdict": p.verdict.value,
                        "comparisons": [
                            {
                                "name": j.comparison.name,
                                "values": list(j.comparison.values),
                                "seeds": list(j.comparison.seeds or ev.seeds),
                                "rule": j.comparison.rule,
                                "mean": j.mean,
                                "ci95": list(j.ci95),
                                "p_support": j.p_support,
                                "p_refute": j.p_refute,
                                "p_holm": j.p_holm,
                                "verdict": j.verdict.value,
                                "note": j.note,
                            }
                            for j in p.judgements
                        ],
                    }
                    for p in r.parts
                ],
                "info": {k: list(v) for k, v in r.finding.info.items()},
            }
            for r in results
        ],
        "what_pruning_buys": savings_report.as_json(savings, ev),
    }
    (path.parent / "claims.json").write_text(json.dumps(payload, indent=1, default=str))
