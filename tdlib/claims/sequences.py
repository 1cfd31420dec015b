"""An exact, anytime-valid test of the rate at which a comparison's seeds land on the claim's side.

**The estimand** (``claims.md``, convention of 2026-12-04). A comparison holds when the *typical run* lands
on the claim's side of its threshold: when the rate ``q`` = P(a seed lands strictly on the claim's side)
exceeds 1/2, so that the median seed lies on the claim's side. A seed exactly at the threshold counts
against whichever side is being supported.

**The test.** Seed ``i`` of the sequence gives ``x_i = 1`` if it lands strictly on the tested side, else 0.
Under the null ``q <= 1/2``, the likelihood ratio of a rate ``r`` against 1/2, averaged over ``r`` uniform
on [1/2, 1],

    E_n = 2 * integral over [1/2, 1] of prod_{i <= n} (2r)^{x_i} (2(1 - r))^{1 - x_i} dr
        = 2^{n+1} * integral over [1/2, 1] of r^k (1 - r)^{n-k} dr        (k = x_1 + ... + x_n)
        = 2^{n+1} * B(k + 1, n - k + 1) * I_{1/2}(n - k + 1, k + 1)

(``B`` the beta function, ``I`` the regularised incomplete beta), is a nonnegative supermartingale with
``E_0 = 1`` under every null rate: for ``q0 <= 1/2`` and ``r >= 1/2`` one seed's factor has expectation
``q0 * 2r + (1 - q0) * 2(1 - r) = 1 - (2r - 1)(1 - 2 q0) <= 1``, and averaging over ``r`` keeps it so.
Ville's inequality then gives ``P(sup_n E_n >= 1/a) <= a``, so

    p_n = min(1, 1 / max_{t <= n} E_t)

is a p-value that stays valid however many seeds are added and whenever one looks, with any stopping rule
that reads the seeds so far, and for *any* distribution of the per-seed values (collapses, ties, skew):
only the seeds' independence is assumed. The two directions (the claim's side, and the other side) are two
such tests, one on ``x_i`` and one on "strictly on the other side".

**What it can reach.** With every one of ``n`` seeds on one side, ``E_n = (2^{n+1} - 1) / (n + 1)``, so the
smallest p with ``n`` seeds is ``(n + 1) / (2^{n+1} - 1)`` (:func:`smallest_p`): 0.095 at 5 seeds, 5.4e-3 at
10, 8.5e-4 at 13, 4.6e-4 at 14, 2.4e-4 at 15. Fewer seeds can never decide at a level below that, whatever
they show: the first Holm step over 21 parts at 0.025 a direction (1.2e-3) needs 13 seeds all on one side,
and at half that level, 14.

Everything works on arrays of shape ``(..., n)``, seeds in sequence order along the last axis, so that the
simulation tests run the same code on many thousands of synthetic sequences at once.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

LN2 = math.log(2.0)


def log_e_values(hits: np.ndarray) -> np.ndarray:
    """``log E_t`` after each seed ``t = 1..n``, for 0/1 ``hits`` of shape (..., n) in sequence order; same shape."""
    x = np.asarray(hits, dtype=float)
    if x.size and not np.isin(x, (0.0, 1.0)).all():
        raise ValueError("hits must be 0 or 1, one per seed")
    k = np.cumsum(x, -1)
    t = np.arange(1, x.shape[-1] + 1, dtype=float)
    with np.errstate(divide="ignore"):
        return (t + 1) * LN2 + special.betaln(k + 1, t - k + 1) + np.log(special.betainc(t - k + 1, k + 1, 0.5))


def anytime_p(hits: np.ndarray) -> np.ndarray:
    """The anytime-valid p-value after the last seed, ``min(1, 1 / max_t E_t)``, for ``hits`` (..., n);
    shape (...). No seeds give 1."""
    x = np.asarray(hits, dtype=float)
    if x.shape[-1] == 0:
        return np.ones(x.shape[:-1])
    return np.minimum(1.0, np.exp(-np.maximum(log_e_values(x).max(-1), 0.0)))


def rate_p(values: np.ndarray, threshold: np.ndarray | float, side: np.ndarray | str) -> dict[str, np.ndarray]:
    """Both directions of a comparison, for per-seed ``values`` of shape (..., n) in sequence order:
    ``p_support`` (the typical seed lands strictly on the claim's ``side`` of ``threshold``), ``p_refute``
    (strictly on the other side), and ``k_support``/``k_refute``, how many seeds land strictly on each.
    ``threshold`` and ``side`` broadcast against the leading shape."""
    x = np.asarray(values, dtype=float)
    thr = np.asarray(threshold, dtype=float)[..., None]
    greater = (np.asarray(side) == "greater")[..., None]
    above, below = x > thr, x < thr
    support, refute = np.where(greater, above, below), np.where(greater, below, above)
    return {"p_support": anytime_p(support), "p_refute": anytime_p(refute),
            "k_support": support.sum(-1), "k_refute": refute.sum(-1)}


def smallest_p(n: int) -> float:
    """The smallest p that ``n`` seeds can give: every one of them on the tested side."""
    return 1.0 if n <= 0 else min(1.0, (n + 1) / (2.0 ** (n + 1) - 1))


def seeds_to_decide(k: int, n: int, level: float, cap: int = 200) -> int | None:
    """How many seeds in all (``n`` and more) would reach ``p <= level`` if the seeds went on landing on the
    tested side at the observed rate ``k / n`` (the further seeds split as evenly as that rate allows, each
    new seed counted on the tested side while the running share is below the rate). ``None`` when even
    ``cap`` seeds would not: a split near even is not decidable at any feasible count."""
    if n <= 0 or not 0 < level < 1:
        return None
    rate = k / n
    hits = [1.0] * k + [0.0] * (n - k)
    if anytime_p(np.array(hits)) <= level:
        return n
    ones = k
    for total in range(n + 1, cap + 1):
        hit = ones + 1 <= rate * total + 1e-9
        ones += hit
        hits.append(float(hit))
        if anytime_p(np.array(hits)) <= level:
            return total
    return None
