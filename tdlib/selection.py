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


def smallest_mask(scores: Tensor, count: int) -> Tensor:
    """Boolean mask of the ``count`` smallest entries of ``scores`` (any shape), ties by flat index."""
    if not 0 <= count <= scores.numel():
        raise ValueError(f"count must lie in [0, {scores.numel()}], got {count}")
    flat = scores.reshape(-1)
    order = torch.sort(flat, stable=True).indices[:count]
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=scores.device)
    mask[order] = True
    return mask.view(scores.shape)


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


class WarmRowSelector:
    """``smallest_mask_rows`` made cheap for scores that move a little between calls.

    A full per-row sort costs as much as a whole training step of the MLP. Between two steps of
    training, each row's k-th smallest |w| moves by at most the largest change of any weight in the
    row (an order statistic is 1-Lipschitz in the max-norm), so it lies in a narrow band around the
    previous value. Counting the entries below the band and sorting only the few inside it gives the
    same mask as the full sort. Rows whose k-th value left the band fall back to the full sort, so
    the result is always exact; the warm state only decides how fast it is.
    """

    def __init__(self) -> None:
        self.kth: Tensor | None = None  # (R,) the k-th smallest value per row at the last call
        self.width: Tensor | None = None  # (R,) half-width of the band searched around ``kth``

    def __call__(self, scores: Tensor, count: int) -> Tensor:
        """Mask (R, n) of the ``count`` smallest entries of each row of ``scores`` (R, n) >= 0."""
        rows, n = scores.shape
        if count == 0 or count == n or self.kth is None or self.kth.shape[0] != rows:
            mask, kth = smallest_mask_rows(scores, count)
            self._remember(kth)
            return mask
        lo = (self.kth - self.width).unsqueeze(1)
        hi = (self.kth + self.width).unsqueeze(1)
        below = scores < lo
        band = (scores <= hi).logical_xor_(below)
        need = count - _row_counts(below)  # rank of the k-th value inside the band, 1-based
        in_band = _row_counts(band)
        ok = (need >= 1) & (need <= in_band)
        bad = torch.nonzero(~ok).squeeze(1)
        if len(bad) > rows // 4:
            mask, kth = smallest_mask_rows(scores, count)
            self._remember(kth)
            return mask
        if len(bad):  # these rows' k-th value left its band: leave them out here, sort them below
            band[bad] = False
            need[bad], in_band[bad] = 1, 0
        r, c = band.nonzero(as_tuple=True)  # row-major, so columns ascend within a row
        v = scores[r, c]
        # One stable sort on (row, value): non-negative floats order like their int32 bit patterns.
        order = torch.sort((r << 32) | v.view(torch.int32).long(), stable=True).indices
        r, c, v = r[order], c[order], v[order]
        start = torch.cumsum(in_band, 0) - in_band
        rank = torch.arange(r.numel(), device=r.device) - start[r]
        take = rank < need[r]
        below[r[take], c[take]] = True
        kth = torch.empty_like(self.kth)
        kth[ok] = v[(start + need - 1)[ok].long()]
        if len(bad):
            below[bad], kth[bad] = smallest_mask_rows(scores[bad], count)
        self._remember(kth)
        return below

    def _remember(self, kth: Tensor) -> None:
        if self.kth is not None and self.kth.shape == kth.shape:
            # Twice each row's last move, and at least the layer's mean move, so that a row that
            # stood still for a step keeps a band wide enough for the next one.
            moved = (kth - self.kth).abs()
            self.width = 2.0 * moved + 4.0 * float(moved.mean()) + 1e-30
        else:
            self.width = torch.zeros_like(kth)
        self.kth = kth


def _row_counts(mask: Tensor) -> Tensor:
    """Number of True entries in each row of a bool (R, n) tensor, as int32 (R,).

    Summing the bytes is several times faster than ``Tensor.sum`` on bool, which widens to int64 first.
    """
    return mask.view(torch.uint8).sum(1, dtype=torch.int32)
