"""Exact selection of the smallest entries, with ties broken by position.

Everything that ranks weights or units goes through here, so pruning and targeted dropout agree on
what "the k smallest" means: exactly ``count`` entries, and among equal values the one with the lower
(flattened, row-major) index is taken first.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_fraction(name: str, value: float) -> float:
    """Return ``value`` if it is a real number in [0, 1], else raise ``ValueError`` naming ``name``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def count_for(fraction: float, n: int) -> int:
    """How many of ``n`` entries a ``fraction`` selects: ``round(fraction * n)``, half to even.

    This is the same expression ``torch.nn.utils.prune`` uses for a float ``amount``.
    """
    return round(fraction * n)


def ranks(scores: Tensor) -> Tensor:
    """Each entry's place (0 = smallest) in the ascending order of ``scores``, ties by flat index.

    The ``count`` smallest entries are exactly those of rank < ``count``, for every count at once.
    """
    flat = scores.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    place = torch.empty_like(order)
    place[order] = torch.arange(len(order), device=scores.device)
    return place.view(scores.shape)


def smallest_mask(scores: Tensor, count: int) -> Tensor:
    """Boolean mask of the ``count`` smallest entries of ``scores`` (any shape), ties by flat index."""
    if not 0 <= count <= scores.numel():
        raise ValueError(f"count must lie in [0, {scores.numel()}], got {count}")
    return ranks(scores) < count


def smallest_mask_rows(scores: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Per row of ``scores`` (R, n), the mask of its ``count`` smallest entries, ties by column.

    Returns the mask (R, n) and each row's ``count``-th smallest value (R,), or -inf when count is 0.
    """
    rows, n = scores.shape
    if not 0 <= count <= n:
        raise ValueError(f"count must lie in [0, {n}], got {count}")
    values, order = torch.sort(scores, dim=1, stable=True)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    kth = values[:, count - 1] if count else scores.new_full((rows,), -math.inf)
    return mask, kth
