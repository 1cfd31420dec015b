"""Training conditions as data: a registry of named recipes, each a set of :class:`RunSpec` fields.

A condition says how it trains (bias, standard dropout, targeted dropout, checkpoints); a profile says
how long, on what data, with which seeds. ``Profile.spec(condition, seed)`` joins the two. Adding a
condition is one :func:`register` call, in tdlib or in a user's own claim file::

    register(Condition("TW70", "weight-level targeted dropout, gamma 0.7, alpha 0.5",
                       targeted=TargetedDropout.constant("weight", 0.7, 0.5)))

The standard conditions of ``claims.md`` (B, B0, D, TW, TU, TWR, TW90, TU80) are registered here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdlib.dropout import TargetedDropout
from tdlib.registry import Registry
from tdlib.schedules import paper_alpha, paper_gamma


@dataclass(frozen=True)
class Condition:
    """A named training recipe: the :class:`RunSpec` fields that differ from a plain baseline."""

    name: str
    description: str
    bias: bool = True
    dropout: float = 0.0  # standard dropout on hidden units
    targeted: TargetedDropout | None = None
    checkpoints: bool = False  # keep the profile's checkpoints (B's, for the claims about training time)
    group: str = "claims"  # "claims": the conditions of claims.md; "map": the gamma x alpha map's

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
    Condition("TW90", "weight-level targeted dropout, gamma = 0.9, alpha = 0.5 (targeting matched to 90% weight "
              "pruning; C13)", targeted=TargetedDropout.constant("weight", 0.9, 0.5)),
    Condition("TU80", "unit-level targeted dropout, gamma = 0.8, alpha = 0.5 (targeting matched to 80% unit "
              "pruning; a dropped unit loses its bias too; C13)", targeted=TargetedDropout.constant("unit", 0.8, 0.5)),
):
    register(_standard)


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
