"""The report's "What pruning buys" section: pruned models of the claims' runs, compressed and measured."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tdlib.claims.evidence import Evidence
from tdlib.claims.report import ReportContext, Section, SectionOutput
from tdlib.metrics import SWEEP, PruneKind, masks_for
from tdlib.model import MLP
from tdlib.runs import Run
from tdlib.savings import MIN_RUN_TIME, Saving, Speed, saving, speedup_curve

Model = tuple[str, PruneKind, float]  # (condition, pruning kind, percent pruned); percent 0 is the control
BATCHES = (1, 256)
THREADS = 1  # one thread: the steadiest timings, and the setting of the reference figures
CURVE_KINDS: tuple[PruneKind, ...] = ("weight", "unit")
KIND_NAMES = {"weight": "weights (per layer)", "unit": "units (whole)"}


@dataclass(frozen=True)
class PrunedModel:
    condition: str
    kind: PruneKind
    k: float
    per_seed: tuple[Saving, ...]  # in seed order; only the first seed's is timed

    @property
    def name(self) -> str:
        if self.k == 0:
            return f"{self.condition}, unpruned (control)"
        return f"{self.condition}, {KIND_NAMES[self.kind]} {self.k:g}%"

    def mean(self, field: str, key: str) -> float:
        return float(np.mean([getattr(s, field)[key] for s in self.per_seed]))


@dataclass(frozen=True)
class Savings:
    models: tuple[PrunedModel, ...]
    curves: dict[tuple[PruneKind, int], dict[float, Speed]]  # (kind, batch) -> k -> speed, B's first seed
    seconds: float  # wall time of measuring all of it, when it was measured (stored with the numbers)


def _speed_values(speed: Speed, head: str = "") -> dict[str, float]:
    """A :class:`Speed` as stored evidence, under names starting ``head`` (layouts as 1 for CSR, 0 for dense)."""
    return {f"{head}speedup": speed.speedup, f"{head}flop_ratio": speed.flop_ratio, f"{head}fused": float(speed.fused),
            **{f"{head}layer{i}:csr": float(layout == "csr") for i, layout in enumerate(speed.layouts)}}


def _speed_from(values: dict[str, float], head: str, batch: int) -> Speed:
    layers = sum(1 for name in values if name.startswith(f"{head}layer") and name.endswith(":csr"))
    return Speed(batch=batch, speedup=values[f"{head}speedup"], flop_ratio=values[f"{head}flop_ratio"],
                 layouts=tuple("csr" if values[f"{head}layer{i}:csr"] else "dense" for i in range(layers)),
                 fused=bool(values[f"{head}fused"]))


def _saving_values(measured: Saving) -> dict[str, float]:
    values = {f"{field}:{key}": float(v) for field in ("accuracy", "differing_predictions", "kib", "parameters")
              for key, v in getattr(measured, field).items()}
    for speed in measured.speeds:
        values.update(_speed_values(speed, f"batch{speed.batch}:"))
    return values


def _saving_from(values: dict[str, float]) -> Saving:
    def field(name: str, kind: type = float) -> dict:
        return {key.split(":", 1)[1]: kind(v) for key, v in values.items() if key.startswith(name + ":")}

    return Saving(accuracy=field("accuracy"), differing_predictions=field("differing_predictions", int),
                  kib=field("kib"), parameters=field("parameters", int),
                  speeds=tuple(_speed_from(values, f"batch{b}:", b) for b in BATCHES if f"batch{b}:speedup" in values))


def _timed(measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    started = time.perf_counter()
    values = measure()
    return {**values, "seconds": time.perf_counter() - started}


def _curve_values(run: Run, model: MLP, kind: PruneKind, batch: int, timing: float) -> dict[str, float]:
    """B's measured speed-up at every sparsity of the sweep, under ``<k>:``, and the seconds it took; each
    timing ``timing`` times as long as a report's (:attr:`Profile.timing`)."""
    seconds = MIN_RUN_TIME * timing
    return _timed(lambda: {name: v for k, speed in speedup_curve(model, kind, SWEEP, batch, THREADS, seconds).items()
                           for name, v in _speed_values(speed, f"{k:g}:").items()})


def _model_values(run: Run, model: MLP, kind: PruneKind, k: float, batches: tuple[int, ...], ev: Evidence
                  ) -> dict[str, float]:
    """One pruned model's :class:`Saving`, timed at ``batches`` on the first seed only."""
    # A stand-in's numbers are thrown away (Evidence.stand_ins): it is not timed.
    batches = batches if run.spec.seed == ev.seeds[0] and not run.stand_in else ()
    masks = masks_for(model, kind, k, run.spec.seed)
    return _timed(lambda: _saving_values(saving(model, masks, ev.data.test_x, ev.data.test_y, batches, THREADS,
                                                MIN_RUN_TIME * ev.profile.timing)))


def measure(ev: Evidence, models: Sequence[Model]) -> Savings:
    """Compress and measure ``models`` on every seed, and B's speed-up curves on the first seed.

    Every number, the timings included, is stored evidence of the run it measured (``saving:...`` and
    ``speedup-curve:...``), so a report drawn again from the same runs shows the same numbers, and what
    this machine measured stays in ``evidence.csv``."""
    first = ev.seeds[0]
    seconds = 0.0
    curves: dict[tuple[PruneKind, int], dict[float, Speed]] = {}
    for kind in CURVE_KINDS:
        for batch in BATCHES:
            compute = partial(_curve_values, kind=kind, batch=batch, timing=ev.profile.timing)
            stored = ev.measure_group("B", f"speedup-curve:{kind}:batch{batch}", compute, seeds=[first])[first]
            curves[(kind, batch)] = {k: _speed_from(stored, f"{k:g}:", batch) for k in SWEEP}
            seconds += stored["seconds"]
    measured_models = []
    for condition, kind, k in models:
        # A model on B's curves (0 included: the control) is not timed again: the table and the figure show
        # one measurement.
        on_curve = condition == "B" and kind in CURVE_KINDS and k in SWEEP
        compute = partial(_model_values, kind=kind, k=k, batches=() if on_curve else BATCHES, ev=ev)
        groups = ev.measure_group(condition, f"saving:{kind}:{k:g}", compute)
        per_seed = []
        for seed in ev.seeds:
            measured = _saving_from(groups[seed])
            if seed == first and on_curve:
                measured = replace(measured, speeds=tuple(curves[(kind, batch)][k] for batch in BATCHES))
            per_seed.append(measured)
            seconds += groups[seed]["seconds"]
        measured_models.append(PrunedModel(condition, kind, k, tuple(per_seed)))
    return Savings(tuple(measured_models), curves, seconds)


def figure(savings: Savings, ev: Evidence, path: Path) -> None:
    """Measured speed-up (solid) and FLOP ratio (dashed) against sparsity, one panel per batch size."""
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, len(BATCHES), sharey=True)
    colours = {"weight": "tab:blue", "unit": "tab:orange"}
    for ax, batch in zip(axes, BATCHES):
        for kind in CURVE_KINDS:
            curve = savings.curves[(kind, batch)]
            positions = np.arange(len(curve))  # evenly spaced, as in the sweeps figure
            ax.plot(positions, [s.speedup for s in curve.values()], marker="o", ms=3, color=colours[kind],
                    label=f"{KIND_NAMES[kind]}: measured")
            ax.plot(positions, [s.flop_ratio for s in curve.values()], ls="--", color=colours[kind],
                    label=f"{KIND_NAMES[kind]}: FLOP ratio")
            ax.set_xticks(positions, [f"{k:g}" for k in curve], fontsize=8)
        ax.axhline(1, color="grey", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("pruned (%)")
        ax.set_title(f"batch {batch}, {THREADS} thread")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("speed-up over the dense model (x)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Compressed B (seed {ev.seeds[0]}) against dense: measured speed-up and FLOP ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _speed_cell(speed: Speed) -> str:
    return f"{speed.speedup:.1f}x ({speed.flop_ratio:.1f})"


def markdown(savings: Savings, ev: Evidence) -> list[str]:
    first = ev.seeds[0]
    lines = [
        "## What pruning buys",
        "",
        "A model pruned with `torch.nn.utils.prune` keeps every weight, a mask beside it, and the dense "
        "cost. `tdlib.compress` removes each unit whose incoming weights are all pruned (folding what it "
        "still outputs into the next layer's bias) and runs each remaining layer dense or as CSR, or the "
        "whole network as one compiled chain of such layers, whichever it measures to be faster at the batch size "
        "served. Accuracy, sizes and parameters are means over "
        f"the {len(ev.seeds)} seeds; speed is measured on seed {first}, {THREADS} thread, random inputs, as "
        "the ratio of the dense and the compressed model's median times per call, measured in five "
        "alternating rounds of blocks of about a millisecond (`tdlib.savings.speed`). The FLOP ratio counts "
        "multiply-adds as run: every entry of a dense layer, the non-zeros of a CSR one.",
        "",
        "| pruned model | accuracy (%): masked / compressed | test predictions that differ (dense, CSR, fused) | "
        "KiB on disk: dense / torch.prune-masked / compressed | parameters: dense / compressed | "
        + "".join(f"batch {b}: speed-up (FLOP ratio) | " for b in BATCHES)
        + f"layers (batch {' / '.join(map(str, BATCHES))}) |",
        "|---|---|---|---|---|---|" + "---|" * len(BATCHES),
    ]
    for m in savings.models:
        speeds = m.per_seed[0].speeds
        layouts = " / ".join("fused" if s.fused else "".join(x[0].upper() for x in s.layouts) for s in speeds)
        differing = " / ".join(
            str(sum(s.differing_predictions[form] for s in m.per_seed)) for form in ("dense", "csr", "fused")
        )
        lines.append(
            f"| {m.name} | {100 * m.mean('accuracy', 'masked'):.2f} / {100 * m.mean('accuracy', 'compressed'):.2f} "
            f"| {differing} of {len(ev.data.test_y) * len(ev.seeds)} "
            f"| {m.mean('kib', 'dense'):,.0f} / {m.mean('kib', 'masked'):,.0f} / {m.mean('kib', 'compressed'):,.0f} "
            f"| {m.mean('parameters', 'dense'):,.0f} / {m.mean('parameters', 'compressed'):,.0f} "
            f"| {' | '.join(_speed_cell(s) for s in speeds)} | {layouts} |"
        )
    lines += [
        "",
        "The control row is the unpruned model in the compressed form, timed the same way. "
        "Layers: C = CSR, D = dense, from the first layer to the output layer, or fused (one compiled CSR "
        f"chain), as chosen by measurement for each batch size. Measuring took {savings.seconds:.0f} s; every "
        "number here, timings included, is stored evidence of its run (`evidence.csv`), measured once. "
        "The speed-ups are this machine's, on one thread; with more threads the dense model gains more "
        "from threading than sparse products do, so the speed-ups shrink (`./dev bench` measures both).",
        "",
        *_above_flop_ratio(savings),
        "![Measured speed-up against sparsity](figures/speedup.png)",
        "",
    ]
    return lines


def _above_flop_ratio(savings: Savings) -> list[str]:
    """A word on the speed-ups that beat their FLOP ratio, if any do."""
    above = [(m.name, s) for m in savings.models for s in m.per_seed[0].speeds
             if math.isfinite(s.flop_ratio) and s.speedup > s.flop_ratio]
    if not above:
        return []
    cases = ", ".join(f"{name} at batch {s.batch} ({s.speedup:.1f}x against {s.flop_ratio:.1f}x)" for name, s in above)
    megabytes = 4 * savings.models[0].mean("parameters", "dense") / 1e6
    return [
        f"Some speed-ups exceed their FLOP ratio: {cases}. Fewer multiply-adds are not all that shrinks: the "
        f"dense network's parameters take {megabytes:.1f} MB in float32, more than a CPU core's caches hold, "
        "while a unit-pruned network's smaller matrices fit in them, so each multiply-add waits less on "
        "memory; and a smaller network spends fewer calls on per-layer overhead.",
        "",
    ]


def as_json(savings: Savings, ev: Evidence) -> dict:
    return {
        "threads": THREADS,
        "timed_seed": ev.seeds[0],
        "models": [
            {"name": m.name, "seeds": list(ev.seeds), "per_seed": [asdict(s) for s in m.per_seed]}
            for m in savings.models
        ],
        "curves": [
            {"model": f"B seed {ev.seeds[0]}", "kind": kind, "batch": batch,
             "points": [{"k": k, **asdict(s)} for k, s in curve.items()]}
            for (kind, batch), curve in savings.curves.items()
        ],
    }


def section(models: Sequence[Model]) -> Section:
    """The report section "What pruning buys" for ``models``, shown when the report's claims use every
    condition the models name (register it with :func:`tdlib.claims.report.register_section`)."""
    models = tuple(models)

    def write(context: ReportContext) -> SectionOutput:
        if not all(condition in context.conditions for condition, _, _ in models):
            return SectionOutput([])
        savings = measure(context.ev, models)
        figure(savings, context.ev, context.figures / "speedup.png")
        return SectionOutput(markdown(savings, context.ev), as_json(savings, context.ev))

    return Section("what_pruning_buys", "pruned models compressed: accuracy, size and measured speed", write,
                   whole_only=False)
