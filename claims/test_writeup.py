"""The writeup's claims, C1 to C13 of ``claims.md``, each judged by a rule fixed before the runs.

What only this study uses (its conditions beyond tdlib's presets, its figures, the report's sections, C8's
measurements) is in ``study.py`` beside this file, loaded by ``conftest.py``.

Accuracies are top-1 on the profile's test images, in percent; a loss is in percentage points (pp).
Every comparison pairs conditions by seed. See ``tdlib.claims.stats`` for how a verdict is reached.
"""

from __future__ import annotations

import numpy as np
import torch
from study import dead_unit_masks, unit_movement  # beside this file (claims/ is on sys.path under pytest)

from tdlib.claims.claim import Comparison, Finding, Part, claim, values
from tdlib.claims.evidence import Evidence
from tdlib.metrics import accuracy, weight_stats


def greater(
    name: str, array: np.ndarray, threshold: float = 0.0, unit: str = "pp", seeds: tuple[int, ...] = ()
) -> Comparison:
    return Comparison(name, values(array), threshold, "greater", unit, seeds)


def less(name: str, array: np.ndarray, threshold: float, unit: str = "pp", seeds: tuple[int, ...] = ()) -> Comparison:
    return Comparison(name, values(array), threshold, "less", unit, seeds)


def where_defined(
    ev: Evidence, array: np.ndarray, part: str, why: str
) -> tuple[np.ndarray, tuple[int, ...], tuple[str, ...]]:
    """``array``'s defined (not NaN) values, their seeds, and a note naming each seed left out of ``part``."""
    defined = ~np.isnan(array)
    seeds = tuple(s for s, ok in zip(ev.seeds, defined) if ok)
    notes = tuple(f"Seed {s} is left out of {part}: {why}." for s, ok in zip(ev.seeds, defined) if not ok)
    return array[defined], seeds, notes


def keeps_more(ev: Evidence, better: str, worse: str, kind: str, k: float) -> Comparison:
    """``better`` keeps more accuracy than ``worse`` after the same pruning: the paired difference > 0."""
    return greater(f"{better} - {worse}, {kind} {k:g}%", ev.pruned(better, kind, k) - ev.pruned(worse, kind, k))


@claim(
    "C1",
    quote="only a small minority of the network is doing the heavy lifting",
    rule="B under global weight pruning at 75% loses < 2 pp",
    conditions=("B",),
    figures=("sweeps",),
)
def test_c1_a_small_minority_does_the_work(ev: Evidence) -> Finding:
    loss = ev.accuracy("B") - ev.pruned("B", "global", 75)
    return Finding([Part("global 75% loses < 2 pp", (less("B: dense - global 75%", loss, 2.0),))])


@claim(
    "C2",
    quote="how do we know which unimportant weights are suited for removal? (by magnitude)",
    rule="at equal sparsity (weight 80%, unit 50%) magnitude pruning keeps more accuracy than pruning the "
    "same count at random",
    conditions=("B",),
    figures=("sweeps",),
    parts=("weight 80%", "unit 50%"),
)
def test_c2_magnitude_beats_random(ev: Evidence) -> Finding:
    weight = greater(
        "B: weight 80% - random weight 80%", ev.pruned("B", "weight", 80) - ev.pruned("B", "random_weight", 80)
    )
    unit = greater("B: unit 50% - random unit 50%", ev.pruned("B", "unit", 50) - ev.pruned("B", "random_unit", 50))
    return Finding([Part("weight 80%", (weight,)), Part("unit 50%", (unit,))])


@claim(
    "C3",
    quote="reducing the network by 99.1% while seeing a mere 4% decrease in accuracy",
    rule="TWR pruned to 99.1% of hidden weights (layerwise) loses < 5 pp against B of the same seed",
    conditions=("TWR", "B"),
    figures=("sweeps",),
)
def test_c3_extreme_sparsity_with_ramped_targeted_dropout(ev: Evidence) -> Finding:
    pruned = ev.pruned("TWR", "weight", 99.1)
    dense = ev.accuracy("TWR")
    notes = ()
    if dense.mean() < pruned.mean():
        notes = (f"TWR is more accurate pruned to 99.1% ({pruned.mean():.1f}%) than dense ({dense.mean():.1f}%). "
                 "Its schedule drops almost every weight with probability 0.99 through most of training, without "
                 "rescaling, so those weights receive few updates: the dense network adds them back, little "
                 "trained, to the 0.9% it keeps.",)
    return Finding(
        [Part("loss against B < 5 pp", (less("B dense - TWR weight 99.1%", ev.accuracy("B") - pruned, 5.0),))],
        notes=notes,
        info={
            "TWR dense - TWR weight 99.1% (pp)": values(ev.accuracy("TWR") - pruned),
            "B dense - B weight 99.1% (pp)": values(ev.accuracy("B") - ev.pruned("B", "weight", 99.1)),
            "TWR weight 99.1% accuracy (%)": values(pruned),
        },
    )


@claim(
    "C4",
    quote="targeted dropout makes a network robust to post-hoc pruning",
    rule="TW keeps more accuracy than B at weight pruning 80% and 90%; TU keeps more than B at unit pruning "
    "70% and 80%",
    conditions=("TW", "TU", "B"),
    figures=("sweeps",),
    parts=("TW, weight pruning", "TU, unit pruning"),
)
def test_c4_targeted_dropout_is_robust_to_pruning(ev: Evidence) -> Finding:
    return Finding(
        [
            Part("TW, weight pruning", tuple(keeps_more(ev, "TW", "B", "weight", k) for k in (80, 90))),
            Part("TU, unit pruning", tuple(keeps_more(ev, "TU", "B", "unit", k) for k in (70, 80))),
        ]
    )


@claim(
    "C5",
    quote="we should expect a not insignificant number of these units to output zero",
    rule="in B, >= 25% of hidden activations on the test set are exactly 0, and >= 1% of hidden units are "
    "dead (0 on every test input)",
    conditions=("B",),
    figures=("activations",),
    parts=("zero activations >= 25%", "dead units >= 1%"),
)
def test_c5_many_units_output_zero(ev: Evidence) -> Finding:
    zero, dead = ev.activation_fractions("B")
    return Finding(
        [
            Part("zero activations >= 25%", (greater("B: % of hidden activations exactly 0", zero, 25.0, "%"),)),
            Part("dead units >= 1%", (greater("B: % of hidden units dead", dead, 1.0, "%"),)),
        ]
    )


@claim(
    "C6",
    quote="subnetworks with linear activations ... the hidden layers could be condensed into the weights "
    "of the input layers",
    rule="some hidden layer is condensable: replacing its ReLU by the identity costs < 1 pp",
    conditions=("B",),
)
def test_c6_a_hidden_layer_is_nearly_linear(ev: Evidence) -> Finding:
    x, y = ev.data.test_x, ev.data.test_y
    costs = []
    for layer in range(len(ev.trained.spec("B", ev.seeds[0]).hidden)):  # from the description: no weights needed
        linear = ev.measure(
            "B",
            f"identity-layer:{layer}",
            lambda run, model, layer=layer: 100 * accuracy(model.with_identity_activation(layer), x, y),
        )
        costs.append(less(f"B: dense - layer {layer + 1} linear", ev.accuracy("B") - linear, 1.0))
    return Finding([Part("some layer costs < 1 pp", tuple(costs), how="any")])


@claim(
    "C7",
    quote="trained the network for 100 epochs to encourage weight values to set themselves to 0",
    rule="the fraction of hidden weights with |w| < 1e-3 is larger at the end of training than at a tenth of it",
    conditions=("B",),
    figures=("small-weights",),
)
def test_c7_training_longer_makes_weights_small(ev: Evidence) -> Finding:
    tenth, end = ev.profile.tenth, ev.profile.epochs
    early, late = ev.small_weights("B", tenth), ev.small_weights("B", end)
    return Finding(
        [
            Part(
                "more small weights at the end",
                (greater(f"B: % |w| < 1e-3, epoch {end} - epoch {tenth}", late - early),),
            )
        ],
        info={f"% of hidden |w| < 1e-3 at epoch {tenth}": values(early), f"... at epoch {end}": values(late)},
    )


@claim(
    "C8",
    quote="[dying units'] values stop changing ... they fall out of importance and are zeroed out",
    rule="(a) the incoming weights of dead units stop moving: their change over the last half of training is "
    "< 1% of live units'; (b) dead units' incoming norms lie below the live units' median (more than half "
    "of them do), so unit pruning removes them first",
    conditions=("B",),
    figures=("dead-units",),
    parts=("(a) dead units stop moving", "(b) dead norms below the live median"),
)
def test_c8_dead_units_stop_moving_and_shrink(ev: Evidence) -> Finding:
    half = ev.profile.half

    def movement_ratio(run, model) -> float:
        moved, dead = unit_movement(ev, run, model, since=half)
        return float(moved[dead].mean() / moved[~dead].mean()) if dead.any() else float("nan")

    def below_live_median(run, model) -> float:
        below = []
        for stats, dead in zip(weight_stats(model), dead_unit_masks(ev, model)):
            norms = stats.row_norms
            if dead.any() and (~dead).any():
                below.append(norms[dead] < norms[~dead].median())
        return 100 * float(torch.cat(below).float().mean()) if below else float("nan")

    # A seed without dead units (or without a layer holding both dead and live ones) has no such
    # statistic: it is left out of that part, with a note, rather than failing the claim.
    ratio, ratio_seeds, ratio_notes = where_defined(
        ev, ev.measure("B", f"dead-movement-ratio:{half}", movement_ratio, undefined_ok=True),
        "(a)", "it has no dead units on the test set",
    )
    below, below_seeds, below_notes = where_defined(
        ev, ev.measure("B", "dead-below-live-median", below_live_median, undefined_ok=True),
        "(b)", "no layer has both dead and live units",
    )
    def norms(run, model) -> dict[str, float]:
        dead_norms, live_norms = [], []
        for stats, dead in zip(weight_stats(model), dead_unit_masks(ev, model)):
            dead_norms.append(stats.row_norms[dead])
            live_norms.append(stats.row_norms[~dead])
        dead_all, live_all = torch.cat(dead_norms), torch.cat(live_norms)
        return {"dead-mean-norm": float(dead_all.mean()) if dead_all.numel() else float("nan"),
                "live-median-norm": float(live_all.median())}

    dead_norm = ev.measure_many("B", "dead-mean-norm", norms, undefined_ok=True)
    live_norm = ev.measure_many("B", "live-median-norm", norms)
    movement = f"B: dead / live movement, epochs {half}-{ev.profile.epochs}"
    return Finding(
        [
            Part("(a) dead units stop moving", (less(movement, ratio, 0.01, "x", ratio_seeds),)),
            Part(
                "(b) dead norms below the live median",
                (greater("B: % of dead units under the live median norm", below, 50.0, "%", below_seeds),),
            ),
        ],
        notes=ratio_notes + below_notes + (
            "For reference: PyTorch's default initialisation, uniform in +-1/sqrt(fan_in), gives a unit's incoming "
            "weights a norm of 1/sqrt(3) = 0.577 in expectation, and a unit whose weights stop moving early keeps "
            "a norm near it; the measured norms of dead and live units are reported beside the rule.",
        ),
        info={"mean incoming norm of dead units (weights)": values(dead_norm[~np.isnan(dead_norm)]),
              "median incoming norm of live units (weights)": values(live_norm)},
    )


@claim(
    "C9",
    quote="I did not employ any run-time dropout ... We want to encourage subnetwork interdependence",
    rule="B keeps more accuracy than D under weight pruning 90% and unit pruning 50%",
    conditions=("B", "D"),
    figures=("sweeps",),
    parts=("weight 90%", "unit 50%"),
)
def test_c9_no_dropout_prunes_better(ev: Evidence) -> Finding:
    return Finding(
        [
            Part("weight 90%", (keeps_more(ev, "B", "D", "weight", 90),)),
            Part("unit 50%", (keeps_more(ev, "B", "D", "unit", 50),)),
        ]
    )


@claim(
    "C10",
    quote="these biases maybe negatively impacting my model by having biases toward weights that maybe getting deleted",
    rule="B0 keeps more accuracy than B under weight pruning 90% and unit pruning 80% (whole units judged; "
    "the weights-only variant reported)",
    conditions=("B0", "B"),
    figures=("sweeps",),
    parts=("weight 90%", "unit 80%"),
)
def test_c10_no_bias_prunes_better(ev: Evidence) -> Finding:
    weights_only = ev.pruned("B0", "unit", 80) - ev.pruned("B", "unit_weights_only", 80)
    return Finding(
        [
            Part("weight 90%", (keeps_more(ev, "B0", "B", "weight", 90),)),
            Part("unit 80%", (keeps_more(ev, "B0", "B", "unit", 80),)),
        ],
        info={"B0 - B, unit 80% with B's biases kept (pp)": values(weights_only)},
    )


@claim(
    "C11",
    quote="the two approaches, weight and unit",
    rule="B under weight pruning keeps more accuracy than under unit pruning at 50, 70 and 90%",
    conditions=("B",),
    figures=("sweeps",),
)
def test_c11_weight_pruning_beats_unit_pruning(ev: Evidence) -> Finding:
    comparisons = tuple(
        greater(f"B: weight {k}% - unit {k}%", ev.pruned("B", "weight", k) - ev.pruned("B", "unit", k))
        for k in (50, 70, 90)
    )
    return Finding([Part("weight beats unit", comparisons)])


@claim(
    "C12",
    quote="the notebook's pruning table: weight pruning leaves chance accuracy from k = 25%",
    rule="(a) with the notebook's criterion (per unit, prune w <= the 25th percentile of its signed weights) B "
    "falls below 20%; (b) with magnitude pruning, B at 25% loses < 1 pp. Both supported: the collapse is an "
    "artefact of the criterion",
    conditions=("B",),
    parts=("(a) notebook criterion collapses", "(b) magnitude pruning does not"),
)
def test_c12_the_notebook_collapse_is_its_criterion(ev: Evidence) -> Finding:
    info = {}
    for k in (25, 50, 70):
        info[f"B, unit {k}% by L1 norm, bias kept (%)"] = values(ev.pruned("B", "unit_l1", k))
        info[f"B, unit {k}% by L2 norm, bias kept (%)"] = values(ev.pruned("B", "unit_weights_only", k))
    return Finding(
        [
            Part(
                "(a) notebook criterion collapses",
                (less("B: notebook 25% accuracy", ev.pruned("B", "notebook", 25), 20.0, "%"),),
            ),
            Part(
                "(b) magnitude pruning does not",
                (less("B: dense - weight 25%", ev.accuracy("B") - ev.pruned("B", "weight", 25), 1.0),),
            ),
        ],
        info=info,
    )


@claim(
    "C13",
    quote="a network trained with targeted dropout is robust to post-hoc pruning at its targeted proportion",
    rule="(a) TW90 (weight level, gamma 0.9, alpha 0.5) pruned to 90% of hidden weights (layerwise) keeps more "
    "accuracy than B pruned the same way; (b) TU80 (unit level, gamma 0.8, alpha 0.5) pruned to 80% of hidden "
    "units (whole units) keeps more than B pruned the same way",
    conditions=("TW90", "TU80", "B"),
    figures=("sweeps",),
    parts=("(a) TW90, weight 90%", "(b) TU80, unit 80%"),
)
def test_c13_robust_at_the_targeted_proportion(ev: Evidence) -> Finding:
    b_dense = ev.accuracy("B")
    tw90, tu80 = ev.pruned("TW90", "weight", 90), ev.pruned("TU80", "unit", 80)
    return Finding(
        [
            Part("(a) TW90, weight 90%", (keeps_more(ev, "TW90", "B", "weight", 90),)),
            Part("(b) TU80, unit 80%", (keeps_more(ev, "TU80", "B", "unit", 80),)),
        ],
        info={
            "B dense - TW90 weight 90% (pp)": values(b_dense - tw90),
            "B dense - TU80 unit 80% (pp)": values(b_dense - tu80),
            "TW90 dense accuracy (%)": values(ev.accuracy("TW90")),
            "TU80 dense accuracy (%)": values(ev.accuracy("TU80")),
        },
    )
