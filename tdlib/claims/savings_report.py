"""The report's "What pruning buys" section: pruned models of the claims' runs, compressed and measured."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tdlib.claims.evidence import Evidence
from tdlib.claims.fingerprint import follows_methods
from tdlib.claims.report import ReportContext, Section, SectionOutput
from tdlib.compress import compress
from tdlib.data import FashionMNIST
from tdlib.metrics import SWEEP, PruneKind, masks_at, masks_for
from tdlib.model import MLP
from tdlib.runs import Run
from tdlib.savings import (
    DENSE_RUNTIMES,
    MIN_RUN_TIME,
    RUNTIME_NAMES,
    TIMING_ROUNDS,
    TIMING_SECONDS,
    Form,
    Saving,
    Speed,
    Timing,
    saving,
    speedup_curve,
    timings,
)

Model = tuple[str, PruneKind, float]  # (condition, pruning kind, percent pruned); percent 0 is the control
BATCHES = (1, 256)
THREADS = 1  # one thread: the steadiest timings, and the setting of the reference figures
CHOICE_IMAGES = 256  # training images the compressed forms are chosen on
CURVE_KINDS: tuple[PruneKind, ...] = ("weight", "unit")
KIND_NAMES = {"weight": "weights (per layer)", "unit": "units (whole)"}


@dataclass(frozen=True)
class PrunedModel:
    condition: str
    kind: PruneKind
    k: float
    per_seed: tuple[Saving, ...]  # in seed order (their ``speeds`` are not read: see :func:`measure`)
    timings: tuple[Timing, ...]  # the first seed's, one per batch size (none where it was not timed)
    legacy: tuple[Speed, ...] = ()  # or its speed-ups as timed before the dense runtimes were (see _curve_values)

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
    curves: dict[tuple[PruneKind, int], dict[float, Timing]]  # (kind, batch) -> k -> timing, B's first seed
    seconds: float  # wall time of measuring all of it, when it was measured (stored with the numbers)
    legacy_curves: dict[tuple[PruneKind, int], dict[float, Speed]] = field(default_factory=dict)  # or these

    @property
    def legacy(self) -> bool:
        """Whether the speed-ups are those timed before the dense runtimes were (see :func:`measure`)."""
        return bool(self.legacy_curves)


def _form_values(form: Form, head: str) -> dict[str, float]:
    return {f"{head}flop_ratio": form.flop_ratio, f"{head}fused": float(form.fused), f"{head}tiled": float(form.tiled),
            **{f"{head}layer{i}:csr": float(layout == "csr") for i, layout in enumerate(form.layouts)}}


def _rounds(seconds: Sequence[float], head: str) -> dict[str, float]:
    return {f"{head}seconds{r}": t for r, t in enumerate(seconds)}


def _timing_values(timing: Timing, head: str, dense: bool = True) -> dict[str, float]:
    """A :class:`Timing` as stored evidence, under names starting ``head``: each runtime's time in each round
    (``<runtime>:seconds<r>``; the dense runtimes' only if ``dense``) and the compressed form."""
    runtimes = [r for r in timing.seconds if dense or r == "compressed"]
    return {k: v for r in runtimes for k, v in _rounds(timing.seconds[r], f"{head}{r}:").items()} | _form_values(
        timing.form, head)


def _timing_from(values: dict[str, float], head: str, batch: int, dense_head: str | None = None) -> Timing:
    """The :class:`Timing` stored under ``head`` (its dense runtimes' under ``dense_head``, by default ``head``)."""
    dense_head = head if dense_head is None else dense_head

    def rounds(prefix: str) -> tuple[float, ...]:
        pattern = re.compile(re.escape(prefix) + r"seconds(\d+)")
        found = {int(m[1]): v for key, v in values.items() if (m := pattern.fullmatch(key))}
        return tuple(found[r] for r in range(len(found)))

    seconds = {r: rounds(f"{dense_head}{r}:") for r in DENSE_RUNTIMES} | {"compressed": rounds(f"{head}compressed:")}
    layers = sum(1 for name in values if re.fullmatch(re.escape(head) + r"layer\d+:csr", name))
    form = Form(flop_ratio=values[f"{head}flop_ratio"],
                layouts=tuple("csr" if values[f"{head}layer{i}:csr"] else "dense" for i in range(layers)),
                fused=bool(values[f"{head}fused"]), tiled=bool(values[f"{head}tiled"]))
    return Timing(batch, {r: t for r, t in seconds.items() if t}, form)


# _model_values's code, and so these two functions', is the identity of the archived runs' stored sizes and
# accuracies (tdlib.claims.fingerprint): they stay as they measured them.
def _speed_values(speed: Speed, head: str = "") -> dict[str, float]:
    """A :class:`Speed` as stored evidence, under names starting ``head`` (layouts as 1 for CSR, 0 for dense)."""
    return {f"{head}speedup": speed.speedup, f"{head}flop_ratio": speed.flop_ratio, f"{head}fused": float(speed.fused),
            **{f"{head}layer{i}:csr": float(layout == "csr") for i, layout in enumerate(speed.layouts)}}


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
                  kib=field("kib"), parameters=field("parameters", int), speeds=())


def _timed(measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    started = time.perf_counter()
    values = measure()
    return {**values, "seconds": time.perf_counter() - started}


def _time(model: MLP, pruned: dict[str, object], batch: int, data: FashionMNIST, timing: float) -> dict[str, Timing]:
    """:func:`tdlib.savings.timings` on the test images, the forms chosen on training images, for ``timing``
    times a report's time (:attr:`Profile.timing`)."""
    return timings(model, pruned, batch, data.test_x, THREADS, sample=data.train_x[:CHOICE_IMAGES],
                   seconds=TIMING_SECONDS * timing, rounds=TIMING_ROUNDS)


@follows_methods  # what a timing measures is the speed of kernels that methods call
def _timing_curve_values(run: Run, model: MLP, kind: PruneKind, batch: int, timing: float, data: FashionMNIST
                  ) -> dict[str, float]:
    """B compressed at every sparsity of the sweep and its dense runtimes, timed together at ``batch``: the
    dense runtimes' rounds once, each sparsity's under ``<k>:``, and the seconds it took."""
    def measure() -> dict[str, float]:
        pruned = {f"{k:g}": compress(model, masks, "dense") for k, masks in masks_at(model, kind, SWEEP)}
        measured = _time(model, pruned, batch, data, timing)
        dense = next(iter(measured.values())).seconds  # shared by every sparsity's timing
        values = {k: v for r in DENSE_RUNTIMES if r in dense for k, v in _rounds(dense[r], f"{r}:").items()}
        for name, t in measured.items():
            values.update(_timing_values(t, f"{name}:", dense=False))
        return values

    return _timed(measure)


# Speed-ups as timed before the dense runtimes were (the torch module against the compressed model, as a ratio
# of medians of five rounds on random inputs): still read where the first seed's runs are archived without
# weights that this machine reproduces, so that their report is drawn as it was; never measured anew.
def _curve_values(run: Run, model: MLP, kind: PruneKind, batch: int, timing: float) -> dict[str, float]:
    """B's measured speed-up at every sparsity of the sweep, under ``<k>:``, and the seconds it took; each
    timing ``timing`` times as long as a report's (:attr:`Profile.timing`)."""
    seconds = MIN_RUN_TIME * timing
    return _timed(lambda: {name: v for k, speed in speedup_curve(model, kind, SWEEP, batch, THREADS, seconds).items()
                           for name, v in _speed_values(speed, f"{k:g}:").items()})


def _speed_from(values: dict[str, float], head: str, batch: int) -> Speed:
    layers = sum(1 for name in values if name.startswith(f"{head}layer") and name.endswith(":csr"))
    return Speed(batch=batch, speedup=values[f"{head}speedup"], flop_ratio=values[f"{head}flop_ratio"],
                 layouts=tuple("csr" if values[f"{head}layer{i}:csr"] else "dense" for i in range(layers)),
                 fused=bool(values[f"{head}fused"]))


@follows_methods
def _model_timing_values(run: Run, model: MLP, kind: PruneKind, k: float, timing: float, data: FashionMNIST
                         ) -> dict[str, float]:
    """One pruned model and its dense runtimes timed at each batch size, under ``batch<b>:``."""
    if run.stand_in:  # a stand-in's numbers are thrown away (Evidence.stand_ins): it is not timed
        return {"seconds": 0.0}
    small = compress(model, masks_for(model, kind, k, run.spec.seed), "dense")
    return _timed(lambda: {key: v for batch in BATCHES
                           for key, v in _timing_values(_time(model, {"": small}, batch, data, timing)[""],
                                                        f"batch{batch}:").items()})


def _model_values(run: Run, model: MLP, kind: PruneKind, k: float, batches: tuple[int, ...], ev: Evidence
                  ) -> dict[str, float]:
    """One pruned model's :class:`Saving`, timed at ``batches`` on the first seed only."""
    # A stand-in's numbers are thrown away (Evidence.stand_ins): it is not timed.
    batches = batches if run.spec.seed == ev.seeds[0] and not run.stand_in else ()
    masks = masks_for(model, kind, k, run.spec.seed)
    return _timed(lambda: _saving_values(saving(model, masks, ev.data.test_x, ev.data.test_y, batches, THREADS,
                                                MIN_RUN_TIME * ev.profile.timing)))


def _on_curve(condition: str, kind: PruneKind, k: float) -> bool:
    return condition == "B" and kind in CURVE_KINDS and k in SWEEP


def measure(ev: Evidence, models: Sequence[Model]) -> Savings:
    """Compress and measure ``models`` on every seed, and time them and B's speed-up curves on the first seed.

    Every number, the timings included, is stored evidence of the run it measured (``saving:...``,
    ``timing:...`` and ``timing-curve:...``), so a report drawn again from the same runs shows the same
    numbers, and what this machine measured stays in ``evidence.csv``. Timing never trains a run again: where
    a first seed's timing is neither stored nor measurable (its run archived without weights here), the
    speed-ups are read as they were timed before the dense runtimes were (``speedup-curve:...`` and the
    ``saving:...`` values' own), for every model alike."""
    first = ev.seeds[0]
    curve_timing = {(kind, batch): partial(_timing_curve_values, kind=kind, batch=batch, timing=ev.profile.timing,
                                           data=ev.data) for kind in CURVE_KINDS for batch in BATCHES}
    model_timing = {model: partial(_model_timing_values, kind=model[1], k=model[2], timing=ev.profile.timing,
                                   data=ev.data) for model in models if not _on_curve(*model)}
    timed_here = (all(ev.group_at_hand("B", f"timing-curve:{kind}:batch{batch}", compute, [first])
                      for (kind, batch), compute in curve_timing.items())
                  and all(ev.group_at_hand(condition, f"timing:{kind}:{k:g}", compute, [first])
                          for (condition, kind, k), compute in model_timing.items()))
    seconds = 0.0
    curves: dict[tuple[PruneKind, int], dict[float, Timing]] = {}
    legacy_curves: dict[tuple[PruneKind, int], dict[float, Speed]] = {}
    for (kind, batch), compute in curve_timing.items():
        if timed_here:
            stored = ev.measure_group("B", f"timing-curve:{kind}:batch{batch}", compute, seeds=[first])[first]
            curves[(kind, batch)] = {k: _timing_from(stored, f"{k:g}:", batch, dense_head="") for k in SWEEP}
        else:
            compute = partial(_curve_values, kind=kind, batch=batch, timing=ev.profile.timing)
            stored = ev.measure_group("B", f"speedup-curve:{kind}:batch{batch}", compute, seeds=[first])[first]
            legacy_curves[(kind, batch)] = {k: _speed_from(stored, f"{k:g}:", batch) for k in SWEEP}
        seconds += stored["seconds"]
    measured_models = []
    for condition, kind, k in models:
        # Sizes and accuracies (saving:...) never time anything: the timings are their own measurement,
        # taken on the first seed only. (_model_values still takes batch sizes, always none here, so that its
        # code, and so the stored values' identity, stays that of the archived runs' measurements.)
        compute = partial(_model_values, kind=kind, k=k, batches=(), ev=ev)
        groups = ev.measure_group(condition, f"saving:{kind}:{k:g}", compute)
        per_seed = tuple(_saving_from(groups[seed]) for seed in ev.seeds)
        seconds += sum(groups[seed]["seconds"] for seed in ev.seeds)
        timed: tuple[Timing, ...] = ()
        legacy: tuple[Speed, ...] = ()
        if _on_curve(condition, kind, k):  # on B's curves: one timing shown
            timed = tuple(curves[(kind, batch)][k] for batch in BATCHES) if timed_here else ()
            legacy = () if timed_here else tuple(legacy_curves[(kind, batch)][k] for batch in BATCHES)
        elif timed_here:
            stored = ev.measure_group(condition, f"timing:{kind}:{k:g}", model_timing[(condition, kind, k)],
                                      seeds=[first])[first]
            seconds += stored["seconds"]
            timed = tuple(_timing_from(stored, f"batch{batch}:", batch) for batch in BATCHES
                          if f"batch{batch}:flop_ratio" in stored)
        else:
            legacy = tuple(_speed_from(groups[first], f"batch{batch}:", batch) for batch in BATCHES
                           if f"batch{batch}:speedup" in groups[first])
        measured_models.append(PrunedModel(condition, kind, k, per_seed, timed, legacy))
    return Savings(tuple(measured_models), curves, seconds, legacy_curves)


def figure(savings: Savings, ev: Evidence, path: Path) -> None:
    """Measured speed-up over the fastest dense runtime (the one each compressed model gains least over; solid,
    the quartiles of its rounds' ratios shaded) and over the torch module (dotted), and the FLOP ratio (dashed), against
    sparsity, one panel per batch size."""
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, len(BATCHES), sharey=True)
    colours = {"weight": "tab:blue", "unit": "tab:orange"}
    for ax, batch in zip(axes, BATCHES):
        for kind in CURVE_KINDS:
            if savings.legacy:
                legacy = savings.legacy_curves[(kind, batch)]
                positions = np.arange(len(legacy))  # evenly spaced, as in the sweeps figure
                ax.plot(positions, [s.speedup for s in legacy.values()], ls=":", marker="o", ms=3,
                        color=colours[kind], label=f"{KIND_NAMES[kind]}: over the torch module")
                flops, ks = [s.flop_ratio for s in legacy.values()], list(legacy)
            else:
                curve = savings.curves[(kind, batch)]
                positions = np.arange(len(curve))
                fastest = [t.fastest_dense for t in curve.values()]
                spread = np.array([t.spread(r) for t, r in zip(curve.values(), fastest)])
                names = " or ".join(RUNTIME_NAMES[r] for r in dict.fromkeys(fastest))
                ax.plot(positions, [t.speedup(r) for t, r in zip(curve.values(), fastest)], marker="o", ms=3,
                        color=colours[kind], label=f"{KIND_NAMES[kind]}: over the fastest dense ({names})")
                ax.fill_between(positions, spread[:, 0], spread[:, 1], color=colours[kind], alpha=0.25, lw=0)
                ax.plot(positions, [t.speedup("module") for t in curve.values()], ls=":", color=colours[kind],
                        label=f"{KIND_NAMES[kind]}: over the torch module")
                flops, ks = [t.form.flop_ratio for t in curve.values()], list(curve)
            ax.plot(positions, flops, ls="--", color=colours[kind], label=f"{KIND_NAMES[kind]}: FLOP ratio")
            ax.set_xticks(positions, [f"{k:g}" for k in ks], fontsize=8)
        ax.axhline(1, color="grey", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("pruned (%)")
        ax.set_title(f"batch {batch}, {THREADS} thread")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)  # each panel's own: the fastest dense runtime depends on the batch size
    axes[0].set_ylabel("speed-up of the compressed model (x)")
    fig.suptitle(f"Compressed B (seed {ev.seeds[0]}): measured speed-up over dense runtimes, and FLOP ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _microseconds(timing: Timing, runtime: str) -> str:
    return f"{1e6 * timing.fastest(runtime):,.{0 if timing.fastest(runtime) >= 1e-4 else 1}f}" \
        if runtime in timing.seconds else "-"


_DENSE_DESCRIBED = {
    "module": "the dense **torch module** (a model masked by `torch.nn.utils.prune` is slower still)",
    "onnxruntime": "**ONNX Runtime** (the same dense layers exported, CPU, its threads not spinning)",
    "control": "the **compressed control** (the unpruned model in the compressed form, in its fastest form)",
}


def _dense_named(dense: Sequence[str]) -> str:
    """The dense runtimes timed, described, as one phrase (ONNX Runtime is absent where it was not installed)."""
    described = [_DENSE_DESCRIBED[r] for r in dense]
    missing = "" if "onnxruntime" in dense else " (ONNX Runtime was not installed where this was measured)"
    return (", ".join(described[:-1]) + " and " + described[-1] if len(described) > 1 else described[0]) + missing


def _speedup_cell(timing: Timing, over: str) -> str:
    if over not in timing.seconds:
        return "-"
    speedup, (lower, upper) = timing.speedup(over), timing.spread(over)
    figure = f"{speedup:.2f}x" if speedup < 10 else f"{speedup:.1f}x"
    return f"{f'**{figure}**' if over == timing.fastest_dense else figure} ({lower:.2f}-{upper:.2f})"


def markdown(savings: Savings, ev: Evidence) -> list[str]:
    lines = [
        "## What pruning buys",
        "",
        "A model pruned with `torch.nn.utils.prune` keeps every weight, a mask beside it, and the dense "
        "cost. `tdlib.compress` removes each unit whose incoming weights are all pruned (folding what it "
        "still outputs into the next layer's bias) and runs each remaining layer dense or as CSR, or the "
        "whole network as one compiled chain of such layers, whichever it measures to be faster at the batch size "
        f"served. Accuracy, sizes and parameters are means over the {len(ev.seeds)} seeds.",
        "",
        "| pruned model | accuracy (%): masked / compressed | test predictions that differ (dense, CSR, fused) | "
        "KiB on disk: dense / torch.prune-masked / compressed | parameters: dense / compressed |",
        "|---|---|---|---|---|",
    ]
    for m in savings.models:
        differing = " / ".join(
            str(sum(s.differing_predictions[form] for s in m.per_seed)) for form in ("dense", "csr", "fused")
        )
        lines.append(
            f"| {m.name} | {100 * m.mean('accuracy', 'masked'):.2f} / {100 * m.mean('accuracy', 'compressed'):.2f} "
            f"| {differing} of {len(ev.data.test_y) * len(ev.seeds)} "
            f"| {m.mean('kib', 'dense'):,.0f} / {m.mean('kib', 'masked'):,.0f} / {m.mean('kib', 'compressed'):,.0f} "
            f"| {m.mean('parameters', 'dense'):,.0f} / {m.mean('parameters', 'compressed'):,.0f} |"
        )
    lines += _legacy_speed(savings, ev) if savings.legacy else _speed(savings, ev)
    lines += [
        *_above_flop_ratio(savings),
        "![Measured speed-up against sparsity](figures/speedup.png)",
        "",
    ]
    return lines


def _speed(savings: Savings, ev: Evidence) -> list[str]:
    """The speed table: every pruned model against every dense runtime, with the method."""
    first = ev.seeds[0]
    dense = [r for r in DENSE_RUNTIMES if any(r in t.seconds for m in savings.models for t in m.timings)]
    lines = [
        "",
        "The control row is the unpruned model in the compressed form.",
        "",
        f"**Speed** (seed {first}, {THREADS} thread, Fashion-MNIST test images: at batch 1 the one with the median "
        "count of zero pixels, at larger batches the first ones). Each pruned model, compressed and run in the form "
        f"it measures fastest at the batch size (chosen on {CHOICE_IMAGES} training images), is timed against "
        f"every dense runtime of its network: {_dense_named(dense)}. All of them run in the same {TIMING_ROUNDS} "
        "rounds, a block of back-to-back calls on the same inputs each per round (about "
        f"{1000 * TIMING_SECONDS * ev.profile.timing / TIMING_ROUNDS:.2g} ms, and at least one call), in an order "
        "shuffled each round (`tdlib.savings.timings`): warm-cache timings, as of a model serving requests back to "
        "back. A time per call is the runtime's fastest round (whatever else runs on the machine only ever adds "
        "time, so the fastest round is the figure it touches least), and a speed-up the ratio of two runtimes' "
        "fastest rounds; in brackets, the quartiles of their ratios round by round, how much it moves within the "
        "sitting. The one in bold, over the dense runtime it gains least over, is what pruning itself buys; the "
        "one over the torch module also counts the per-call overhead that the compressed form removes from any "
        "network, pruned or not (the control row shows how much). The FLOP ratio counts multiply-adds as run: "
        "every entry of a dense layer, the non-zeros of a CSR one.",
        "",
        "| pruned model | batch | us per call: " + " / ".join(RUNTIME_NAMES[r] for r in dense) + " / compressed | "
        + "".join(f"speed-up over {RUNTIME_NAMES[r]} | " for r in dense) + "FLOP ratio | form |",
        "|---|---|---|" + "---|" * len(dense) + "---|---|",
    ]
    for m in savings.models:
        if not m.timings:
            lines.append(f"| {m.name} | - | not timed |" + " - |" * len(dense) + " - | - |")
        for t in m.timings:
            lines.append(
                f"| {m.name} | {t.batch} | {' / '.join(_microseconds(t, r) for r in [*dense, 'compressed'])} | "
                + "".join(f"{_speedup_cell(t, r)} | " for r in dense) + f"{t.form.flop_ratio:.1f} | {t.form.short} |"
            )
    return [
        *lines,
        "",
        "Form: the layers' layouts from the first layer to the output layer (C = CSR, D = dense) run layer by "
        "layer, or fused (one compiled chain), or tiled (the chain by rows of the batch, dense layers through a "
        "register-tiled kernel, CSR layers with the batch in the vector lanes"
        f"). Measuring took {savings.seconds:.0f} s; every number here, timings included, is stored "
        "evidence of its run (`evidence.csv`, each round's time), measured once. The timings are this machine's, "
        "on one thread; with more threads the dense runtimes gain more from threading than sparse products do, "
        "so the speed-ups shrink (`./dev bench` measures both).",
        "",
    ]


def _legacy_speed(savings: Savings, ev: Evidence) -> list[str]:
    """The speed-ups as timed before the dense runtimes were, said as such."""
    lines = [
        "",
        "The control row is the unpruned model in the compressed form, timed the same way.",
        "",
        f"**Speed** (seed {ev.seeds[0]}, {THREADS} thread, uniform random inputs), as timed before the dense "
        "runtimes were: the torch module against the compressed model only, as the ratio of their median times "
        "per call over five alternating rounds of blocks of about a millisecond (`tdlib.savings.speed`). This "
        "profile's first-seed runs are archived without weights this machine reproduces (a run's bits depend on "
        "the CPU it trained on), so they are not timed again against ONNX Runtime and the compressed control "
        "here. A speed-up over the torch module counts the per-call overhead that the compressed form removes "
        "from any network, pruned or not, as a gain of pruning: the control row shows how much.",
        "",
        "| pruned model | batch | speed-up over the torch module | FLOP ratio | form |",
        "|---|---|---|---|---|",
    ]
    for m in savings.models:
        for speed in m.legacy:
            form = Form(speed.flop_ratio, speed.layouts, speed.fused, tiled=False).short
            lines.append(f"| {m.name} | {speed.batch} | {speed.speedup:.1f}x | {speed.flop_ratio:.1f} | {form} |")
    return [
        *lines,
        "",
        "Form: the layers' layouts from the first layer to the output layer (C = CSR, D = dense) run layer by "
        f"layer, or fused (one compiled chain). Measuring took {savings.seconds:.0f} s; every number here is "
        "stored evidence of its run (`evidence.csv`), measured once.",
        "",
    ]


def _above_flop_ratio(savings: Savings) -> list[str]:
    """A word on the speed-ups over the fastest dense runtime that beat their FLOP ratio, rounds' lower
    quartile included, if any do. Not the control's: the fastest dense runtime it is set against is mostly
    the same network in the same form, so its ratio, about 1, says only how much the timing moves."""
    above = [(m.name, t) for m in savings.models if m.k != 0 for t in m.timings
             if math.isfinite(t.form.flop_ratio) and t.spread(t.fastest_dense)[0] > t.form.flop_ratio]
    if not above:
        return []
    cases = ", ".join(f"{name} at batch {t.batch} ({t.speedup(t.fastest_dense):.1f}x against {t.form.flop_ratio:.1f}x)"
                      for name, t in above)
    megabytes = 4 * savings.models[0].mean("parameters", "dense") / 1e6
    return [
        f"Some speed-ups over the fastest dense runtime exceed their FLOP ratio in three rounds of four: {cases}. "
        f"Fewer multiply-adds are not all that shrinks: the dense network's parameters take {megabytes:.1f} MB in "
        "float32, more than a core's own caches hold, while a pruned network's smaller matrices may fit in them, "
        "so each multiply-add waits "
        "less on memory.",
        "",
    ]


def _timing_json(timing: Timing) -> dict:
    return {"batch": timing.batch, "form": asdict(timing.form),
            "seconds_per_round": {r: list(t) for r, t in timing.seconds.items()},
            "fastest_seconds": {r: timing.fastest(r) for r in timing.seconds},
            "speedup": {r: timing.speedup(r) for r in DENSE_RUNTIMES if r in timing.seconds},
            "round_ratio_quartiles": {r: list(timing.spread(r)) for r in DENSE_RUNTIMES if r in timing.seconds},
            "fastest_dense": timing.fastest_dense}


def as_json(savings: Savings, ev: Evidence) -> dict:
    return {
        "threads": THREADS,
        "timed_seed": ev.seeds[0],
        "models": [
            {"name": m.name, "seeds": list(ev.seeds),
             "per_seed": [{k: v for k, v in asdict(s).items() if k != "speeds"} for s in m.per_seed],
             "timings": [_timing_json(t) for t in m.timings],
             **({"speeds_over_the_torch_module": [asdict(s) for s in m.legacy]} if savings.legacy else {})}
            for m in savings.models
        ],
        "curves": [
            {"model": f"B seed {ev.seeds[0]}", "kind": kind, "batch": batch,
             "points": [{"k": k, **_timing_json(t)} for k, t in curve.items()]}
            for (kind, batch), curve in savings.curves.items()
        ] + [
            {"model": f"B seed {ev.seeds[0]}", "kind": kind, "batch": batch, "timed_against": "the torch module only",
             "points": [{"k": k, **asdict(s)} for k, s in curve.items()]}
            for (kind, batch), curve in savings.legacy_curves.items()
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
