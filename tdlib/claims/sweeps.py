"""The pruning sweeps a report draws for every condition: which registered pruning kinds, and their titles.

Each kind here is measured at every sparsity of :data:`tdlib.metrics.SWEEP` at once (one ranking per run) and
drawn as a panel of the ``sweeps`` figure, as many panels as kinds. A study adds one with :func:`register_sweep`.
"""

from __future__ import annotations

from tdlib.prune import pruning

# kind -> the panel's title, in the order drawn
SWEEPS: dict[str, str] = {
    "weight": "weight magnitude, per layer",
    "unit": "unit L2 norm (whole unit)",
    "random_weight": "random weights (control)",
    "global": "weight magnitude, global",
}


def register_sweep(kind: str, title: str) -> None:
    """Draw the registered pruning ``kind`` in every report's sweeps, under ``title`` (``ValueError`` for a kind
    no one registered, or one drawn already under another title)."""
    pruning(kind)
    if SWEEPS.get(kind, title) != title:
        raise ValueError(f"sweep {kind!r} is already drawn as {SWEEPS[kind]!r}")
    SWEEPS[kind] = title
