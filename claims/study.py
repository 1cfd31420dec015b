"""The writeup's study, beside its claims: what only this study uses.

Loaded by ``claims/conftest.py`` before the claims are collected (and by ``python -m tdlib train`` through
it), it registers, in tdlib's registries:

- the conditions of ``claims.md`` beyond the library's standard ones (TW90 and TU80, for C13) and the
  gamma x alpha map's cells;
- the figures the claims name beyond the library's (``activations``, ``small-weights``, ``dead-units``);
- the report's sections after the claims: the gamma x alpha map, "What pruning buys" for the pruned
  models the claims discuss, and what a run cannot tell;
- the report's title.

It also holds C8's measurements (:func:`unit_movement`, :func:`dead_unit_masks`). Every figure and
section reads what it shows from stored evidence (``ev.measure``, ``ev.measure_group``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from tdlib.claims import by_length, report, savings_report
from tdlib.claims.conditions import CONDITIONS, Condition, register
from tdlib.claims.evidence import Evidence
from tdlib.claims.findings import anchor
from tdlib.claims.profiles import PROFILES, Profile
from tdlib.claims.report import ReportContext, Section, SectionOutput, register_figure, register_section, set_title
from tdlib.claims.sequences import smallest_p
from tdlib.dropout import TargetedDropout
from tdlib.metrics import activation_stats, incoming, weight_stats
from tdlib.model import MLP
from tdlib.runs import Run
from tdlib.spec import RunSpec

set_title("Claims report: pruning and targeted dropout on Fashion-MNIST")

# ---------------------------------------------------------------- conditions

register(Condition("TW90", "weight-level targeted dropout, gamma = 0.9, alpha = 0.5 (targeting matched to 90% "
                   "weight pruning; C13)", targeted=TargetedDropout.constant("weight", 0.9, 0.5)))
register(Condition("TU80", "unit-level targeted dropout, gamma = 0.8, alpha = 0.5 (targeting matched to 80% unit "
                   "pruning; a dropped unit loses its bias too; C13)",
                   targeted=TargetedDropout.constant("unit", 0.8, 0.5)))

# The gamma x alpha map of claims.md (descriptive, not judged): one condition per cell, except where a
# registered condition already trains that recipe (TW, TU, TW90), whose run the cell reuses.
MAP_GAMMAS = (0.5, 0.7, 0.9)
MAP_ALPHAS = (0.25, 0.5, 0.75)


def map_condition(level: str, gamma: float, alpha: float) -> str:
    """The registered condition of a map cell (registering it if it is new)."""
    targeted = TargetedDropout.constant(level, gamma, alpha)  # type: ignore[arg-type]
    for known in CONDITIONS.values():
        if known.targeted == targeted and known.bias and not known.dropout:
            return known.name
    name = f"T{level[0].upper()}-g{round(100 * gamma)}-a{round(100 * alpha)}"
    register(Condition(name, f"{level}-level targeted dropout, gamma = {gamma:g}, alpha = {alpha:g} (map cell)",
                       targeted=targeted, group="map"))
    return name


MAP: dict[tuple[str, float, float], str] = {
    (level, gamma, alpha): map_condition(level, gamma, alpha)
    for level in ("weight", "unit") for gamma in MAP_GAMMAS for alpha in MAP_ALPHAS
}

# ---------------------------------------------------------------- the 100-epoch sequence

# Registered 2026-12-04, before any 100-epoch run beyond seeds 0-4. At 100 epochs every condition goes on
# along its profile's sequence (seeds 0-4, then 100, 101, ...; ``Profile.sequence``) up to the profile's
# budget of 20 seeds, in this order of value: B alone reads C1, C2, C5-C8, C11 and C12; TWR with B decides
# C3; TW90 and TU80 decide C13; D decides C9; B0 C10; TW and TU C4. A condition stops early once no open part
# reads it; seeds are never skipped, and a seed once trained is always judged.
SEQUENCE_ORDER = ("B", "TWR", "TW90", "TU80", "D", "B0", "TW", "TU")

# ---------------------------------------------------------------- C8's measurements


def dead_unit_masks(ev: Evidence, model: MLP) -> list[torch.Tensor]:
    """Per hidden layer, (units,) True where the unit is 0 on every test image."""
    return [s.dead for s in activation_stats(model, ev.data.test_x)]


def unit_movement(ev: Evidence, run: Run, model: MLP, since: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(how far each hidden unit's incoming weights and bias moved from epoch ``since`` to the end, whether
    it is dead), both (all hidden units,), pooled over layers."""
    moved = [(a - b).norm(dim=1) for a, b in zip(incoming(model), incoming(run.checkpoint(since)))]
    return torch.cat(moved), torch.cat(dead_unit_masks(ev, model))


# ---------------------------------------------------------------- figures


ACTIVATION_BINS = 80  # equal bins from the lowest to the highest activation, per layer
UNIT_QUANTILES = (0, 5, 25, 50, 75, 95, 100)  # the box plots of dead and live units: ends, whiskers, box


def activation_data(ev: Evidence) -> dict[int, dict[str, float]]:
    """Per seed of B, stored: each hidden layer's % of activations exactly 0 and % of dead units on the test
    set (``layer<i>:zero``, ``layer<i>:dead``), and a histogram of its activations (``layer<i>:histogram:``
    ``low``, ``high`` and :data:`ACTIVATION_BINS` counts)."""
    x = ev.data.test_x

    def compute(run: Run, model: MLP) -> dict[str, float]:
        values = {}
        for i, layer in enumerate(activation_stats(model, x), 1):
            values[f"layer{i}:zero"], values[f"layer{i}:dead"] = 100 * layer.zero_fraction, 100 * layer.dead_fraction
        with torch.no_grad():
            hidden = model.hidden_activations(x)
        for i, h in enumerate(hidden, 1):
            counts, edges = np.histogram(h.flatten().numpy(), bins=ACTIVATION_BINS)
            values[f"layer{i}:histogram:low"], values[f"layer{i}:histogram:high"] = edges[0], edges[-1]
            values.update({f"layer{i}:histogram:{j:02d}": c for j, c in enumerate(counts)})
        return values

    return ev.measure_group("B", "activations-figure", compute)


def _layers(values: dict[str, float]) -> list[int]:
    return sorted(int(name[5:].split(":")[0]) for name in values if name.endswith(":zero"))


@register_figure("activations", "Hidden activations and dead units of B")
def activations_figure(ev: Evidence, path: Path, conditions: list[str]) -> None:
    """B's hidden activations on the test set: per layer, % exactly 0 and % dead units; a histogram."""
    data = activation_data(ev)
    layers = _layers(data[ev.seeds[0]])
    zero = np.array([[data[s][f"layer{i}:zero"] for i in layers] for s in ev.seeds])  # (seeds, layers)
    dead = np.array([[data[s][f"layer{i}:dead"] for i in layers] for s in ev.seeds])
    positions = np.arange(len(layers))
    fig = Figure(figsize=(12, 4.2))
    left, right = fig.subplots(1, 2)
    for offset, (label, values) in zip((-0.2, 0.2), (("activations exactly 0", zero), ("dead units", dead))):
        left.bar(
            positions + offset,
            values.mean(0),
            width=0.4,
            label=label,
            # clipped: where every seed has the same value, the mean can round a hair past it
            yerr=np.clip([values.mean(0) - values.min(0), values.max(0) - values.mean(0)], 0, None),
            capsize=3,
        )
    left.set_xticks(positions, [f"hidden {i}" for i in layers])
    left.set_ylabel("% (mean over seeds, bars = range)")
    left.legend()
    left.set_title("B: zero activations and dead units per layer")
    first = data[ev.seeds[0]]
    for i in layers:
        counts = [first[f"layer{i}:histogram:{j:02d}"] for j in range(ACTIVATION_BINS)]
        edges = np.linspace(first[f"layer{i}:histogram:low"], first[f"layer{i}:histogram:high"], ACTIVATION_BINS + 1)
        right.stairs(counts, edges, label=f"hidden {i}")
    right.set_yscale("log")
    right.set_xlabel("activation")
    right.set_ylabel("count (log)")
    right.set_title(f"B seed {ev.seeds[0]}: hidden activations on the test set")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@register_figure("small-weights", "Small weights over training")
def small_weights_figure(ev: Evidence, path: Path, conditions: list[str]) -> None:
    """C7: the fraction of hidden |w| < 1e-3 at each checkpoint of B, one line per seed."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
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


def dead_unit_data(ev: Evidence) -> dict[int, dict[str, float]]:
    """Per seed of B, stored: how many hidden units are dead and live (``dead``, ``live``), and the
    :data:`UNIT_QUANTILES` of how far their incoming weights and bias moved over the last half of training
    (``moved:<dead|live>:q<q>``) and of their incoming weights' norms at the end (``norm:...``); NaN for a
    group without units."""
    half = ev.profile.half

    def compute(run: Run, model: MLP) -> dict[str, float]:
        moved, dead = unit_movement(ev, run, model, since=half)
        norms = torch.cat([stats.row_norms for stats in weight_stats(model)])
        values = {"dead": float(dead.sum()), "live": float((~dead).sum())}
        for name, per_unit in (("moved", moved), ("norm", norms)):
            for group, chosen in (("dead", dead), ("live", ~dead)):
                chosen_values = per_unit[chosen].double().numpy()
                quantiles = np.percentile(chosen_values, UNIT_QUANTILES) if chosen_values.size else \
                    np.full(len(UNIT_QUANTILES), np.nan)
                values.update({f"{name}:{group}:q{q}": v for q, v in zip(UNIT_QUANTILES, quantiles)})
        return values

    return ev.measure_group("B", f"dead-units-figure:{half}", compute)


@register_figure("dead-units", "Dead and live units")
def dead_units_figure(ev: Evidence, path: Path, conditions: list[str]) -> None:
    """C8: how far dead and live units' incoming weights moved in the last half, and their norms, as box
    plots per seed."""
    from matplotlib.patches import Patch

    data = dead_unit_data(ev)
    fig = Figure(figsize=(12, 4.2))
    left, right = fig.subplots(1, 2)
    groups = (("live", -0.18, "tab:blue"), ("dead", 0.18, "tab:red"))
    for ax, name in ((left, "moved"), (right, "norm")):
        shown = []
        for i, seed in enumerate(ev.seeds):
            for group, offset, colour_ in groups:
                q = {p: data[seed][f"{name}:{group}:q{p}"] for p in UNIT_QUANTILES}
                if np.isnan(q[50]):
                    continue  # no unit in this group
                box = {"med": q[50], "q1": q[25], "q3": q[75], "whislo": q[5], "whishi": q[95],
                       "fliers": [q[0], q[100]]}
                shown += q.values()
                ax.bxp([box], positions=[i + offset], widths=0.3, patch_artist=True,
                       boxprops={"facecolor": colour_, "alpha": 0.5}, medianprops={"color": "black"},
                       flierprops={"marker": ".", "markerfacecolor": colour_, "markeredgecolor": colour_})
        ax.set_xticks(range(len(ev.seeds)),
                      [f"seed {s}\n{data[s]['dead']:.0f} dead" for s in ev.seeds])
        positive = [v for v in shown if v > 0]
        if positive and min(shown) <= 0:  # units that did not move at all: a log axis would drop their box,
            ax.set_yscale("symlog", linthresh=min(positive))  # so it turns linear below the least movement
            ax.set_ylim(bottom=0)  # (a distance: nothing below 0)
        else:
            ax.set_yscale("log")
        ax.legend([Patch(facecolor=c, alpha=0.5) for _, _, c in groups], [g for g, _, _ in groups])
    left.set_title(f"B: movement of incoming weights and bias, epochs {ev.profile.half} to {ev.profile.epochs}")
    left.set_ylabel("L2 distance moved, per unit (log; linear near 0)")
    right.set_title("B: incoming weight norm at the end")
    right.set_ylabel("L2 norm of incoming weights, per unit (log)")
    fig.supxlabel("boxes: quartiles; whiskers: 5th to 95th percentile; dots: least and greatest", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def map_values(ev: Evidence) -> dict[tuple[str, float, float], float]:
    """The gamma x alpha map: per cell, the first seed's accuracy after pruning at k = gamma (weights per layer
    at weight level, whole units at unit level) minus B's at the same k, in pp. Trains what it lacks."""
    first = ev.with_seeds(ev.seeds[:1])
    values = {}
    for (level, gamma, alpha), name in MAP.items():
        k = 100 * gamma
        values[(level, gamma, alpha)] = float(first.pruned(name, level, k)[0] - first.pruned("B", level, k)[0])
    return values


def map_figure(values: dict[tuple[str, float, float], float], seed: int, path: Path) -> None:
    """Two heatmaps, weight and unit level: rows gamma, columns alpha, the difference in each cell."""
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    limit = max(1.0, max(abs(v) for v in values.values()))
    for ax, level in zip(axes, ("weight", "unit")):
        grid = np.array([[values[(level, g, a)] for a in MAP_ALPHAS] for g in MAP_GAMMAS])
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
        for (row, column), v in np.ndenumerate(grid):
            ax.text(column, row, f"{v:+.1f}", ha="center", va="center", fontsize=10,
                    color="white" if abs(v) > 0.6 * limit else "black")
        ax.set_xticks(range(len(MAP_ALPHAS)), [f"{a:g}" for a in MAP_ALPHAS])
        ax.set_yticks(range(len(MAP_GAMMAS)), [f"{g:g}" for g in MAP_GAMMAS])
        ax.set_xlabel("alpha (drop rate of the targeted)")
        ax.set_ylabel("gamma (targeted proportion)")
        kind = "weights per layer" if level == "weight" else "whole units"
        ax.set_title(f"{level} level: pruned {kind} at k = gamma")
        fig.colorbar(image, ax=ax, shrink=0.8, label="pp against B at the same k")
    fig.suptitle(f"Accuracy after pruning at the targeted proportion, minus B's (seed {seed}; descriptive)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


MAP_HEADING = "The gamma x alpha map (descriptive, not judged)"


def map_section(values: dict[tuple[str, float, float], float], seed: int) -> list[str]:
    lines = [
        f"## {MAP_HEADING}",
        "",
        "For each targeted-dropout setting, one run (seed "
        f"{seed}) pruned at k = gamma (weight level: weights per layer; unit level: whole units), minus B's "
        "accuracy at the same k, in pp. One seed per cell, so no cell is a verdict: it shows where targeting "
        "pays, for C4 and C13 to be read against. Cells whose recipe a claim's condition already trains reuse "
        "its run (TW, TU, TW90).",
        "",
    ]
    for level in ("weight", "unit"):
        lines += [f"| {level} level: gamma \\ alpha | " + " | ".join(f"{a:g}" for a in MAP_ALPHAS) + " |",
                  "|---|" + "---|" * len(MAP_ALPHAS)]
        lines += [f"| {g:g} | " + " | ".join(f"{values[(level, g, a)]:+.2f} ({MAP[(level, g, a)]})" for a in MAP_ALPHAS)
                  + " |" for g in MAP_GAMMAS]
        lines.append("")
    return [*lines, "![The gamma x alpha map](figures/gamma-alpha-map.png)", ""]




# The map's 15 runs of its own cost as much as three of the claims' conditions at five seeds: it is drawn in
# runs no longer than the default profile's, and a longer run's report points to the default report's map.
MAP_MAX_EPOCHS = PROFILES["default"].epochs


def _map_runs(profile: Profile, device: str) -> list[RunSpec]:
    if profile.epochs > MAP_MAX_EPOCHS or profile.group != "claims":  # another study's profile trains no map
        return []
    return [profile.spec(name, profile.seeds[0], device) for name in dict.fromkeys(MAP.values())]


def _map(context: ReportContext) -> SectionOutput:
    if context.ev.profile.epochs > MAP_MAX_EPOCHS:
        own = [name for name in dict.fromkeys(MAP.values()) if CONDITIONS[name].group != "claims"]
        return SectionOutput([
            f"## {MAP_HEADING}", "",
            f"Drawn in runs of at most {MAP_MAX_EPOCHS} epochs: see [the default report's map]"
            f"(../CLAIMS.md#{anchor(MAP_HEADING)}). Here it "
            f"would add {len(own)} runs of {context.ev.profile.epochs} epochs to the claims' own, for a picture "
            "of one seed that is not judged.", ""])
    values = map_values(context.ev)
    map_figure(values, context.ev.seeds[0], context.figures / "gamma-alpha-map.png")
    data = [{"level": lv, "gamma": g, "alpha": a, "pp_against_B": v} for (lv, g, a), v in values.items()]
    return SectionOutput(map_section(values, context.ev.seeds[0]), data)


# ---------------------------------------------------------------- sections

register_section(report.WEIGHTS_SECTION)
register_section(report.BY_LENGTH_SECTION)
register_section(Section("gamma_alpha_map", "targeted dropout's gain over B at k = gamma, per gamma and alpha",
                         _map, runs=_map_runs))

# The pruned models the claims discuss: TWR at C3's levels, TU and B at C4's and C10's; first, the
# control: B unpruned, in the compressed form, which shows what the form alone buys.
SAVINGS_MODELS: tuple[savings_report.Model, ...] = (
    ("B", "weight", 0.0),
    ("TWR", "weight", 99.0),
    ("TWR", "weight", 99.1),
    ("TU", "unit", 80.0),
    ("B", "weight", 90.0),
    ("B", "unit", 80.0),
)
register_section(savings_report.section(SAVINGS_MODELS))


WRITEUP_EPOCHS = 100  # the writeup trains for 100 epochs


def _training_length(context: ReportContext) -> list[str]:
    """The limits' bullet on training length: what a shorter run leaves untested, or, for a run long
    enough to be measured at several marks, what changed on the claims judged on B from the first mark."""
    epochs = context.ev.profile.epochs
    if epochs < WRITEUP_EPOCHS:
        return [f"- **Training length.** {epochs} epochs against the writeup's {WRITEUP_EPOCHS}: claims about "
                "what long training does (C7, C8) are tested on a shorter run, and the ramped TWR schedule is "
                "compressed into the same fraction of fewer steps."]
    lengths = context.lengths
    marks = sorted({p.epoch for series in lengths.values() for p in series})
    head = f"- **Training length.** {epochs} epochs, " + (
        "the writeup's." if epochs == WRITEUP_EPOCHS else f"more than the writeup's {WRITEUP_EPOCHS}.")
    lines = by_length.changes(lengths, context.results) if len(marks) >= 2 else []
    if not lines:
        return [head]
    table = "" if context.judged.partial else "\"Verdicts by training length\"; "  # a whole report's section
    return [head + f" From epoch {marks[0]} to {marks[-1]}, the claims judged on B alone (the same runs, {table}"
            "means and unadjusted 95% intervals, not judged):", *(f"  - {line}" for line in lines)]


def _limits(context: ReportContext) -> SectionOutput:
    ev = context.ev
    return SectionOutput([
        "## What this run cannot tell",
        "",
        *_training_length(context),
        "- **Network.** One 784-1000-1000-500-200-10 MLP on Fashion-MNIST; the paper's figures come from "
        "ResNet-32 on CIFAR-10 and a Transformer on WMT, so a verdict here says nothing about those.",
        f"- **Seeds.** The profile's {len(ev.seeds)} seeds, then its sequence's further seeds where stored; a "
        f"part whose seeds split near evenly stays INCONCLUSIVE, and with 5 seeds (smallest p "
        f"{smallest_p(5):.3f}) every verdict is INCONCLUSIVE by construction.",
        "- **Implementation choices.** Unit-level targeted dropout drops whole units and their biases (the "
        "official code drops weights inside targeted units); weight-level targeting is per unit, as in the "
        "official code; pruning never touches the output layer.",
        "",
    ])


register_section(Section("limits", "what a run of this study cannot tell", _limits, whole_only=False))
