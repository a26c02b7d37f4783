"""Upper tail probabilities of the detector's tests, vectorised over many tests at once.

Log-space sums of exact terms (binomial, beta-binomial, Poisson), so tails down to 1e-300 keep
their relative precision: the detector reports -log10(p), and its critical threshold is 1e-10,
where `1 - cdf` (what scipy.stats' beta-binomial `sf` computes) has no digits left. scipy is not
a run-time dependency; tests/unit/test_statistics.py checks every function here against
scipy.special and scipy.stats.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_HALF_LOG_2PI: Final = 0.5 * math.log(2.0 * math.pi)
_LANCZOS_G: Final = 7.0
_LANCZOS: Final = (
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
)


def lgamma(x: npt.ArrayLike) -> FloatArray:
    """log Gamma(x) for x > 0 (Lanczos, g=7; relative error ~1e-15 on Gamma)."""
    x_ = np.atleast_1d(np.asarray(x, dtype=np.float64))
    below_one = x_ < 1.0
    z = np.where(below_one, x_, x_ - 1.0)  # Gamma(x) = Gamma(x + 1) / x below one
    acc = np.full_like(z, _LANCZOS[0])
    for i, c in enumerate(_LANCZOS[1:], start=1):
        acc += c / (z + i)
    t = z + _LANCZOS_G + 0.5
    out: FloatArray = _HALF_LOG_2PI + (z + 0.5) * np.log(t) - t + np.log(acc)
    if below_one.any():
        out = out - np.where(below_one, np.log(x_), 0.0)
    return out


_log_factorial_table: FloatArray = np.zeros(1)


def log_factorial(n: IntArray) -> FloatArray:
    """log(n!) by table lookup (the table grows to the largest n asked for)."""
    global _log_factorial_table
    top = int(n.max(initial=0))
    if top >= len(_log_factorial_table):
        size = max(top + 1, 2 * len(_log_factorial_table))
        _log_factorial_table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size)))])
    result: FloatArray = _log_factorial_table[n]
    return result


def _upper_tails(k: IntArray, n_terms: IntArray, log_pmf: Any) -> FloatArray:
    """Sum exp(log_pmf(segment, j)) for j = k..k+n_terms-1 of every segment, in log space."""
    m = len(k)
    if m == 0:
        return np.zeros(0)
    n_terms = np.maximum(n_terms, 0)
    starts = np.cumsum(n_terms) - n_terms
    total = int(n_terms.sum())
    out = np.zeros(m)
    if total == 0:
        return out
    seg = np.repeat(np.arange(m), n_terms)
    j = k[seg] + (np.arange(total) - starts[seg])
    logs: FloatArray = log_pmf(seg, j)
    present = n_terms > 0
    idx = starts[present]
    peak = np.maximum.reduceat(logs, idx)
    sums = np.add.reduceat(np.exp(logs - np.repeat(peak, n_terms[present])), idx)
    out[present] = np.minimum(1.0, np.exp(peak) * sums)
    return out


def binomial_sf(k: npt.ArrayLike, n: npt.ArrayLike, p: npt.ArrayLike) -> FloatArray:
    """P(X >= k) for X ~ Binomial(n, p), elementwise."""
    k_, n_ = np.broadcast_arrays(_as_int(k), _as_int(n))
    p_ = np.clip(np.broadcast_to(np.asarray(p, dtype=np.float64), k_.shape), 1e-300, 1.0)
    lo = np.maximum(k_, 0)
    log_p, log_q = np.log(p_), np.log1p(-np.minimum(p_, 1.0 - 1e-16))
    log_n1 = log_factorial(n_)

    def log_pmf(seg: IntArray, j: IntArray) -> FloatArray:
        rest = n_[seg] - j
        logs: FloatArray = (
            log_n1[seg]
            - log_factorial(j)
            - log_factorial(rest)
            + j * log_p[seg]
            + rest * log_q[seg]
        )
        return logs

    out = _upper_tails(lo, n_ - lo + 1, log_pmf)
    out[k_ <= 0] = 1.0
    return out


def beta_binomial_sf(
    k: npt.ArrayLike, n: npt.ArrayLike, a: npt.ArrayLike, b: npt.ArrayLike
) -> FloatArray:
    """P(X >= k) for X ~ BetaBinomial(n, a, b), elementwise (a, b > 0)."""
    k_, n_ = np.broadcast_arrays(_as_int(k), _as_int(n))
    a_ = np.broadcast_to(np.asarray(a, dtype=np.float64), k_.shape)
    b_ = np.broadcast_to(np.asarray(b, dtype=np.float64), k_.shape)
    lo = np.maximum(k_, 0)
    m = len(k_)
    g = lgamma(np.concatenate([a_ + b_, a_, b_, n_ + a_ + b_]))
    const = log_factorial(n_) + g[:m] - g[m : 2 * m] - g[2 * m : 3 * m] - g[3 * m :]

    def log_pmf(seg: IntArray, j: IntArray) -> FloatArray:
        rest = n_[seg] - j
        both = lgamma(np.concatenate([j + a_[seg], rest + b_[seg]]))
        return const[seg] - log_factorial(j) - log_factorial(rest) + both[: len(j)] + both[len(j) :]

    out = _upper_tails(lo, n_ - lo + 1, log_pmf)
    out[k_ <= 0] = 1.0
    return out


def poisson_sf(k: npt.ArrayLike, lam: npt.ArrayLike) -> FloatArray:
    """P(X >= k) for X ~ Poisson(lam), elementwise."""
    k_ = _as_int(k)
    lam_ = np.maximum(np.broadcast_to(np.asarray(lam, dtype=np.float64), k_.shape), 1e-300)
    out = np.ones(len(k_))

    def terms(select: npt.NDArray[np.bool_]) -> Any:
        lam_s = lam_[select]
        return lambda seg, j: j * np.log(lam_s[seg]) - lam_s[seg] - log_factorial(j)

    upper = k_ > lam_
    if upper.any():
        # past the mean the terms shrink at least geometrically; this many cover double precision
        n_terms = (60 + 12 * np.sqrt(k_[upper])).astype(np.int64)
        out[upper] = _upper_tails(k_[upper], n_terms, terms(upper))
    lower = ~upper & (k_ > 0)
    if lower.any():
        # at or below the mean the tail is large, and 1 - P(X < k) is exact enough
        below = _upper_tails(np.zeros(int(lower.sum()), dtype=np.int64), k_[lower], terms(lower))
        out[lower] = np.clip(1.0 - below, 0.0, 1.0)
    return out


def _as_int(x: npt.ArrayLike) -> IntArray:
    return np.atleast_1d(np.asarray(x, dtype=np.int64))
