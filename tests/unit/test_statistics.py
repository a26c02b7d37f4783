"""The detector's tail probabilities (alerting/statistics.py) against scipy, which is not a
run-time dependency: scipy.special for log-gamma and the binomial and Poisson tails, and
scipy.stats' beta-binomial where its `1 - cdf` still has digits (elsewhere a log-space sum of
scipy's own log-pmf terms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from alerting.statistics import beta_binomial_sf, binomial_sf, lgamma, log_factorial, poisson_sf

RNG = np.random.default_rng(20)


def test_lgamma_matches_scipy_over_the_range_the_detector_uses() -> None:
    xs = np.concatenate([[1e-3, 0.3, 0.6, 1.0, 2.5, 9.99, 10.0, 123.4, 1e5], RNG.uniform(0.01, 5e4, 500)])
    assert np.allclose(lgamma(xs), special.gammaln(xs), rtol=1e-12, atol=1e-12)
    n = np.arange(0, 3000)
    assert np.allclose(log_factorial(n), special.gammaln(n + 1.0), rtol=1e-12, atol=1e-10)


def test_binomial_tail_matches_scipy_down_to_tiny_tails() -> None:
    n = RNG.integers(1, 2000, 400)
    p = RNG.uniform(0.01, 0.9, 400)
    k = np.minimum(n, (n * p + RNG.uniform(-2, 12, 400) * np.sqrt(n * p * (1 - p)) + 1).astype(np.int64))
    k = np.maximum(k, 0)
    expected = stats.binom.sf(k - 1, n, p)  # scipy's sf is P(X > k - 1) = P(X >= k)
    got = binomial_sf(k, n, p)
    tiny = expected < 1e-300
    assert np.allclose(got[~tiny], expected[~tiny], rtol=1e-9, atol=0)
    assert (got[tiny] <= 1e-290).all()
    # the edges: nothing to exceed, and more than n
    assert binomial_sf([0, 11], [10, 10], [0.5, 0.5]).tolist() == [1.0, 0.0]


def test_poisson_tail_matches_scipy() -> None:
    lam = RNG.uniform(0.001, 400, 400)
    k = np.maximum(0, (lam + RNG.uniform(-3, 15, 400) * np.sqrt(lam)).astype(np.int64))
    expected = special.pdtrc(k - 1, lam)  # P(X > k - 1)
    expected[k == 0] = 1.0
    got = poisson_sf(k, lam)
    tiny = expected < 1e-300
    assert np.allclose(got[~tiny], expected[~tiny], rtol=1e-8, atol=1e-15)


def _beta_binomial_reference(k: int, n: int, a: float, b: float) -> float:
    """P(X >= k) as a log-space sum of scipy's own log-pmf terms (exact where 1 - cdf is not)."""
    if k <= 0:
        return 1.0
    logs = stats.betabinom.logpmf(np.arange(k, n + 1), n, a, b)
    return float(np.exp(special.logsumexp(logs))) if len(logs) else 0.0


@pytest.mark.parametrize("concentration", [2.0, 30.0, 300.0, 1e7])
def test_beta_binomial_tail_matches_scipy(concentration: float) -> None:
    rng = np.random.default_rng(int(concentration))
    n = rng.integers(1, 400, 150)
    share = rng.uniform(0.02, 0.6, 150)
    k = np.minimum(n, (n * share * rng.uniform(0.5, 4.0, 150)).astype(np.int64) + 1)
    a, b = share * concentration, (1 - share) * concentration
    got = beta_binomial_sf(k, n, a, b)
    reference = np.array([_beta_binomial_reference(*args) for args in zip(k, n, a, b)])
    # relative 1e-6: far finer than any threshold (alpha is compared in log10)
    assert np.allclose(got, reference, rtol=1e-6, atol=1e-300)
    # where scipy's own sf (1 - cdf) still has digits, it agrees too (at a concentration of
    # 1e7 it is itself 1% off, while the log-space reference agrees with us to 1e-7)
    if concentration <= 300:
        plain = stats.betabinom.sf(k - 1, n, a, b)
        usable = reference > 1e-6
        assert np.allclose(got[usable], plain[usable], rtol=1e-6)


def test_beta_binomial_widens_the_binomial_and_tends_to_it() -> None:
    k, n, p = 22, 45, 0.2
    tight = beta_binomial_sf(k, n, p * 1e8, (1 - p) * 1e8)[0]
    assert tight == pytest.approx(binomial_sf(k, n, p)[0], rel=1e-5)
    loose = beta_binomial_sf(k, n, p * 50, (1 - p) * 50)[0]
    assert loose > 10 * tight
    assert math.isclose(beta_binomial_sf(0, 5, 1.0, 1.0)[0], 1.0)
