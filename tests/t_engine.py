"""The t-based engine the reports used until the convention of 2026-12-04 (one-sided t tests of each
comparison's mean; the sign test where every seed agrees; the sign-flip test as well where a Grubbs-type
test flags an outlier), kept only so that the simulations can show, on the same families, why it was
replaced: on skewed and collapsing seeds it breaks the 5% guarantee (``test_sequences.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

MIN_SEEDS = 3
OUTLIER_LEVEL = 0.01  # normal seeds are flagged as holding an outlier at most this often
SIGN_FLIP_EXACT_UP_TO = 16  # seeds; above, 2**16 random sign patterns from a fixed generator


def one_sided_p(values: np.ndarray | Sequence[float], threshold: np.ndarray | float = 0.0) -> tuple:
    """(p that the mean > threshold, p that it is < threshold), for samples along the last axis.

    A one-sample t test; where every value is the same (a zero spread) the sign test instead, whose p
    is 2**-n on the side the values lie (1 on the other, and 1 both ways at the threshold itself).
    Fewer than 2 values give (1, 1). Returns floats for a 1-D input, arrays of shape ``(...)`` otherwise.
    """
    x = np.asarray(values, dtype=float)
    scalar = x.ndim == 1
    x = np.atleast_2d(x) - np.asarray(threshold, dtype=float)[..., None]
    n = x.shape[-1]
    if n < 2:
        ones = np.ones(x.shape[:-1])
        return (1.0, 1.0) if scalar else (ones, ones)
    scale = np.abs(x).max(-1, keepdims=True)
    # Scaled so that squaring tiny differences cannot underflow to a false zero spread.
    z = np.divide(x, scale, out=np.zeros_like(x), where=scale > 0)
    mean, sd = z.mean(-1), z.std(-1, ddof=1)
    constant = np.ptp(z, axis=-1) == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(constant, 0.0, mean / (sd / math.sqrt(n)))
    p_greater, p_less = stats.t.sf(t, n - 1), stats.t.cdf(t, n - 1)
    floor = 0.5**n
    p_greater = np.where(constant, np.where(mean > 0, floor, 1.0), p_greater)
    p_less = np.where(constant, np.where(mean < 0, floor, 1.0), p_less)
    if scalar:
        return float(p_greater[0]), float(p_less[0])
    return p_greater, p_less


def outliers(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Booleans (same shape, along the last axis): the values a Grubbs-type test at ``OUTLIER_LEVEL`` calls
    outliers. Each value's externally studentised residual, (x_i - mean of the others) / (sd of the
    others * sqrt(1 + 1/(n - 1))), follows t with n - 2 degrees of freedom under normality; a value is
    flagged past the Bonferroni critical value over the n seeds, so that normal seeds are flagged at most
    ``OUTLIER_LEVEL`` of the time. A value off a set of otherwise identical ones is always flagged.
    Needs 3 values; fewer are never flagged."""
    x = np.asarray(values, dtype=float)
    n = x.shape[-1]
    if n < 3:
        return np.zeros(x.shape, dtype=bool)
    centre = x - x.mean(-1, keepdims=True)
    scale = np.abs(centre).max(-1, keepdims=True)
    z = np.divide(centre, scale, out=np.zeros_like(centre), where=scale > 0)
    others_mean = (z.sum(-1, keepdims=True) - z) / (n - 1)
    others_ss = (z**2).sum(-1, keepdims=True) - z**2 - (n - 1) * others_mean**2
    others_sd = np.sqrt(np.maximum(others_ss, 0.0) / (n - 2))
    off = np.abs(z - others_mean)
    critical = stats.t.ppf(1 - OUTLIER_LEVEL / (2 * n), n - 2) * math.sqrt(1 + 1 / (n - 1))
    tiny = 1e-9  # relative to the largest deviation: otherwise-identical values
    with np.errstate(divide="ignore", invalid="ignore"):
        flagged = np.where(others_sd > tiny, off / others_sd > critical, off > tiny)
    return flagged


def _sign_patterns(n: int) -> np.ndarray:
    """(patterns, n) signs: all 2**n for small n, else 2**16 from a fixed generator (with identity)."""
    if n <= SIGN_FLIP_EXACT_UP_TO:
        codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        return 1.0 - 2.0 * codes
    rng = np.random.default_rng(20261125)
    signs = rng.choice([-1.0, 1.0], size=(2**16, n))
    signs[0] = 1.0
    return signs


def sign_flip_p(values: np.ndarray | Sequence[float], threshold: np.ndarray | float = 0.0) -> tuple:
    """(p that the mean > threshold, p that it is < threshold) by the sign-flip randomisation test,
    valid when the values' distribution is symmetric about the threshold under the null. Its smallest
    p with n seeds is 2**-n."""
    x = np.asarray(values, dtype=float)
    scalar = x.ndim == 1
    x = np.atleast_2d(x) - np.asarray(threshold, dtype=float)[..., None]
    signs = _sign_patterns(x.shape[-1])
    observed = x.sum(-1, keepdims=True)
    flipped = x @ signs.T  # (..., patterns)
    tolerance = 1e-12 * np.abs(x).sum(-1, keepdims=True)
    p_greater = (flipped >= observed - tolerance).mean(-1)
    p_less = (flipped <= observed + tolerance).mean(-1)
    if scalar:
        return float(p_greater[0]), float(p_less[0])
    return p_greater, p_less


def comparison_p(values: np.ndarray, threshold: np.ndarray | float, side: np.ndarray | str) -> dict[str, np.ndarray]:
    """The per-comparison tests, for samples ``values`` of shape (..., n): p_support, p_refute (on the
    claim's side and the other), and whether an outlier was flagged. Untestable (n < MIN_SEEDS) gives 1."""
    x = np.asarray(values, dtype=float)
    p_greater, p_less = (np.asarray(p, dtype=float) for p in one_sided_p(np.atleast_2d(x), threshold))
    flagged = outliers(np.atleast_2d(x)).any(-1)
    if flagged.any():
        xs = np.atleast_2d(x)
        thr = np.broadcast_to(np.asarray(threshold, dtype=float), xs.shape[:-1])
        flip_greater, flip_less = sign_flip_p(xs[flagged], thr[flagged])
        p_greater, p_less = p_greater.copy(), p_less.copy()
        p_greater[flagged] = np.maximum(p_greater[flagged], flip_greater)
        p_less[flagged] = np.maximum(p_less[flagged], flip_less)
    greater = np.asarray(side) == "greater"
    p_support, p_refute = np.where(greater, p_greater, p_less), np.where(greater, p_less, p_greater)
    if x.shape[-1] < MIN_SEEDS:
        p_support, p_refute = np.ones_like(p_support), np.ones_like(p_refute)
    return {"p_support": p_support, "p_refute": p_refute, "flagged": flagged}
