"""Training conditions as data: a registry of named recipes, each a set of :class:`RunSpec` fields.

A condition says what it trains and how (its registered network and data set, bias, standard dropout,
targeted dropout, checkpoints); a profile says how long, on how much of the data, with which seeds.
``Profile.spec(condition, seed)`` joins the two. Adding a condition is one :func:`register` call, in tdlib
or in a user's own claim file::

    register(Condition("TW70", "weight-level targeted dropout, gamma 0.7, alpha 0.5",
                       targeted=TargetedDropout.constant("weight", 0.7, 0.5)))

The library's standard conditions, the presets of ``claims.md`` (B, B0, D, TW, TU, TWR), are registered
here; a study registers its own beside its claims (this writeup's TW90, TU80 and map cells are in
``claims/study.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tdlib.dropout import TargetedDropout
from tdlib.registry import Registry
from tdlib.schedules import paper_alpha, paper_gamma
from tdlib.spec import DEFAULT_DATASET, DEFAULT_MODEL


@dataclass(frozen=True)
class Condition:
    """A named training recipe: the :class:`RunSpec` fields that differ from a plain baseline."""

    name: str
    description: str
    bias: bool = True
    dropout: float = 0.0  # standard dropout on hidden units
    targeted: TargetedDropout | None = None
    checkpoints: bool = False  # keep the profile's checkpoints (B's, for the claims about training time)
    group: str = "claims"  # "claims": trained on every seed of a profile; any other: a report section's own
    model: str = DEFAULT_MODEL  # a registered network (tdlib.factories.register_model)
    dataset: str = DEFAULT_DATASET  # a registered data set (tdlib.factories.register_dataset)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a condition's name is letters, digits, - and _, got {self.name!r}")


CONDITIONS: Registry[Condition] = Registry("condition", "condition", sorted)


def register(condition: Condition, replace: bool = False) -> Condition:
    """Add ``condition`` to :data:`CONDITIONS`; a second, different condition of the same name is refused
    unless ``replace``. Registering the same condition twice is harmless."""
    return CONDITIONS.register(condition, replace)


def condition(name: str) -> Condition:
    """The registered condition ``name``; ``ValueError`` naming the registered ones otherwise."""
    return CONDITIONS.named(name)


for _standard in (
    Condition("B", "baseline, with biases, no dropout", checkpoints=True),
    Condition("B0", "baseline without any bias", bias=False),
    Condition("D", "standard dropout, p = 0.5, on hidden units", dropout=0.5),
    Condition("TW", "weight-level targeted dropout, gamma = 0.5, alpha = 0.5",
              targeted=TargetedDropout.constant("weight", 0.5, 0.5)),
    Condition("TU", "unit-level targeted dropout, gamma = 0.5, alpha = 0.5 (a dropped unit loses its bias too)",
              targeted=TargetedDropout.constant("unit", 0.5, 0.5)),
    Condition("TWR", "weight-level targeted dropout ramped to gamma = 0.99, alpha = 0.99 (the official piecewise "
              "ramp: gamma 95% of the way by 20% of the run and all of it by 40%, alpha linearly by 40%)",
              targeted=TargetedDropout("weight", paper_gamma(0.99), paper_alpha(0.99))),
):
    register(_standard)
