"""Negative-spike detection over per-minute, per-symbol counts, with explicit state.

The method, in one place:

* Recent evidence: for every window of the last w minutes (w in `DetectorSettings.windows`,
  1..30) the detector counts posts n and negative posts k of each symbol.
* Baseline: the symbol's own negative share, learned from its counts older than
  `guard_minutes` (so a spike never hides itself): the last day's share, pulled towards the
  cross-symbol share when the symbol is thin, then pulled towards the share over the same clock
  time as the window (to `bin_minutes`) on the previous `baseline_days` days, as far as those
  days have posts. Minutes that were part of a detected spike are left out of the baseline.
* Test: k is compared with the beta-binomial predictive distribution of a window of n posts
  under that baseline. Its concentration is the evidence behind the baseline, capped at
  `max_concentration`: a thin symbol's baseline is uncertain, and a busy symbol's share wanders a
  little from minute to minute, so a large volume burst with an unchanged share is not
  "significant" the way it is under a plain binomial test.
* Threshold: `alpha` normally; `confirmed_alpha` (looser) while the same window also carries
  `confirm_volume_ratio` times the symbol's usual volume for the time of day. Most minutes are
  quiet, and a window in a surge of posts is far more likely a priori to be a real event, so the
  looser threshold there buys minutes of delay for few false alerts (the share test still has to
  pass: a surge with an unchanged share does not fire).
* Gates before the test (what an analyst would call a spike): at least `min_negatives` negative
  posts, `min_excess` more than the baseline expects, and a share at least `min_ratio` times and
  `min_share_increase` above the baseline. A positive spike lowers the negative share, so it never
  passes them.
* Volume spikes are a separate kind: total posts against the time-of-day volume, Poisson test.

Everything here is arithmetic on numpy arrays with no I/O; the caller feeds one complete minute
at a time (`step`) and gets `Alert` records for that minute. Episodes (no repeats) are the
lifecycle's business: the detector reports every minute whose evidence passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from alerting.series import MinuteCounts

NEGATIVE_SPIKE: Final = "negative-spike"
VOLUME_SPIKE: Final = "volume-spike"
AlertKind = Literal["negative-spike", "volume-spike"]
Severity = Literal["warning", "critical"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MINUTES_PER_DAY: Final = 1440


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class SymbolSettings:
    """Thresholds that a watchlist may tune per symbol."""

    enabled: bool = True
    alpha: float = 3e-6
    # while the window also has `confirm_volume_ratio` x its usual volume, something is
    # happening and a spike is far more likely a priori: a looser alpha costs few false alerts
    confirmed_alpha: float = 5e-5
    confirm_volume_ratio: float = 3.0
    confirm_min_total: int = 10
    critical_alpha: float = 1e-10
    critical_ratio: float = 2.5
    min_negatives: int = 6
    min_excess: float = 4.0
    min_ratio: float = 1.6
    min_share_increase: float = 0.10
    volume_enabled: bool = True
    volume_alpha: float = 1e-9
    volume_min_ratio: float = 4.0
    volume_min_total: int = 40


@dataclass(frozen=True)
class DetectorSettings:
    windows: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
    volume_windows: tuple[int, ...] = (5, 10, 15, 30)
    guard_minutes: int = 60
    baseline_days: int = 7
    bin_minutes: int = 10
    # pseudo-posts: how strongly a thin symbol's share is pulled to the cross-symbol share,
    # and a short time-of-day history to the symbol's own day share
    prior_posts: float = 30.0
    time_of_day_prior_posts: float = 200.0
    max_concentration: float = 300.0
    # the usual volume needs this many minutes at this clock time on previous days
    min_volume_history_minutes: int = 30
    min_baseline_share: float = 0.02
    default_share: float = 0.25
    default: SymbolSettings = SymbolSettings()
    overrides: Mapping[str, SymbolSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # frozen means frozen: a caller's dict must not change thresholds behind our back
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        if not self.windows or min(self.windows) < 1:
            raise ValueError("windows must be positive minute counts")
        if self.volume_windows and min(self.volume_windows) < 1:
            raise ValueError("volume_windows must be positive minute counts")
        if MINUTES_PER_DAY % self.bin_minutes:
            raise ValueError("bin_minutes must divide a day")
        if self.guard_minutes < max(self.longest_window, self.bin_minutes):
            raise ValueError("guard_minutes must cover the longest window and one bin")
        if self.guard_minutes + 2 * self.bin_minutes > MINUTES_PER_DAY:
            raise ValueError("guard_minutes is too long for a time-of-day baseline")
        if self.baseline_days < 1:
            raise ValueError("baseline_days must be >= 1")

    @property
    def longest_window(self) -> int:
        return max((*self.windows, *self.volume_windows))

    def for_symbol(self, symbol: str) -> SymbolSettings:
        return self.overrides.get(symbol, self.default)


# --------------------------------------------------------------------------------------------
# Output


@dataclass(frozen=True)
class ExamplePost:
    """One of the most negative posts behind an alert (attached at the edges, not here)."""

    id: str
    text: str
    polarity_score: float
    published_at: datetime


@dataclass(frozen=True)
class Alert:
    """The evidence of one symbol firing in one minute.

    `fired_at` is the end of the last minute counted, the earliest moment the alert could have
    been sent. `statistic` is -log10(p_value) of the window that fired. `episode_id` is a
    proposal (symbol, kind, start of that window); the lifecycle replaces it with the id of the
    episode the alert joins, so every record of one episode carries one id.
    """

    symbol: str
    kind: AlertKind
    fired_at: datetime
    severity: Severity
    statistic: float
    p_value: float
    window_minutes: int
    window_total: int
    window_negative: int
    window_share: float
    baseline_share: float
    expected_total: float
    episode_id: str
    examples: tuple[ExamplePost, ...] = ()

    @property
    def window_start(self) -> datetime:
        return self.fired_at - timedelta(minutes=self.window_minutes)

    @property
    def share_ratio(self) -> float:
        return self.window_share / self.baseline_share if self.baseline_share > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["fired_at"] = _iso(self.fired_at)
        out["examples"] = [
            {**vars_of(e), "published_at": _iso(e.published_at)} for e in self.examples
        ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        values = dict(data)
        values["fired_at"] = _parse_iso(values["fired_at"])
        values["examples"] = tuple(
            ExamplePost(
                id=e["id"],
                text=e["text"],
                polarity_score=float(e["polarity_score"]),
                published_at=_parse_iso(e["published_at"]),
            )
            for e in values.get("examples", ())
        )
        return cls(**values)


def vars_of(post: ExamplePost) -> dict[str, Any]:
    return {f.name: getattr(post, f.name) for f in fields(post)}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def episode_proposal(symbol: str, kind: str, window_start: datetime) -> str:
    return f"{symbol}:{kind}:{window_start.strftime('%Y%m%dT%H%MZ')}"


# --------------------------------------------------------------------------------------------
# Tail probabilities (no scipy: log-space sums of exact terms, vectorised over many tests)

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


# --------------------------------------------------------------------------------------------
# State


class DetectorState:
    """Everything the detector remembers, as numpy arrays indexed [symbol, slot].

    * a ring of the last `ring` minutes of counts (and running sums for window totals),
      and which of those minutes belong to a detected spike;
    * a ring of `bin_minutes` bins of counts older than the guard, covering `baseline_days`
      (about 1,000 floats per symbol and array with the defaults).

    Rebuild it after a restart by `observe`-ing the stored per-minute aggregates of the last
    `baseline_days` days (what is lost is only which old minutes were spike minutes).
    """

    def __init__(self, settings: DetectorSettings) -> None:
        self.guard = settings.guard_minutes
        self.ring = settings.guard_minutes + settings.longest_window + 2
        self.bin_minutes = settings.bin_minutes
        self.bins_per_day = MINUTES_PER_DAY // settings.bin_minutes
        self.baseline_days = settings.baseline_days
        # enough bins back to cover the longest window at this clock time
        self.tod_bins = -(-settings.longest_window // settings.bin_minutes) + 1
        self.n_bins = self.bins_per_day * settings.baseline_days + self.tod_bins + 2
        self.symbols: list[str] = []
        self.index: dict[str, int] = {}
        self.last_minute: int | None = None  # epoch minute of the newest observed minute
        self.first_seen: IntArray = np.zeros(0, dtype=np.int64)
        self.total = np.zeros((0, self.ring), dtype=np.int64)
        self.negative = np.zeros((0, self.ring), dtype=np.int64)
        self.cum_total = np.zeros((0, self.ring), dtype=np.int64)
        self.cum_negative = np.zeros((0, self.ring), dtype=np.int64)
        self.in_spike = np.zeros((0, self.ring), dtype=bool)
        self.bin_total = np.zeros((0, self.n_bins))
        self.bin_negative = np.zeros((0, self.n_bins))
        self.bin_kept = np.zeros((0, self.n_bins))  # minutes counted (not in a spike)
        self.bin_ids = np.full(self.n_bins, -(10**12), dtype=np.int64)
        self._params_for: tuple[int, int] | None = None
        self._bins_key: tuple[int, int] | None = None
        self._bins: tuple[IntArray, IntArray, npt.NDArray[np.bool_], IntArray] | None = None
        self._params: dict[str, npt.NDArray[Any]] = {}

    def check(self, settings: DetectorSettings) -> None:
        shape = (
            settings.guard_minutes,
            settings.guard_minutes + settings.longest_window + 2,
            settings.bin_minutes,
            settings.baseline_days,
        )
        if shape != (self.guard, self.ring, self.bin_minutes, self.baseline_days):
            raise ValueError("settings changed the state's shape; build a new DetectorState")

    def add_symbols(self, names: list[str], minute: int) -> None:
        if not names:
            return
        n = len(names)
        for name in names:
            self.index[name] = len(self.symbols)
            self.symbols.append(name)
        self.first_seen = np.concatenate([self.first_seen, np.full(n, minute, dtype=np.int64)])
        for attr in ("total", "negative", "in_spike", "bin_total", "bin_negative", "bin_kept"):
            old = getattr(self, attr)
            setattr(self, attr, np.concatenate([old, np.zeros((n, old.shape[1]), old.dtype)]))
        # running sums of a new symbol continue from its first minute: zeros are consistent
        for attr in ("cum_total", "cum_negative"):
            old = getattr(self, attr)
            setattr(self, attr, np.concatenate([old, np.zeros((n, old.shape[1]), old.dtype)]))

    def params(self, settings: DetectorSettings) -> dict[str, npt.NDArray[Any]]:
        key = (id(settings), len(self.symbols))
        if self._params_for != key:
            per = [settings.for_symbol(s) for s in self.symbols]
            self._params = {
                f.name: np.array([getattr(p, f.name) for p in per], dtype=np.float64)
                for f in fields(SymbolSettings)
            }
            self._params_for = key
        return self._params


def to_epoch_minute(minute: datetime) -> int:
    return int(minute.timestamp()) // 60


def from_epoch_minute(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=UTC)


# --------------------------------------------------------------------------------------------
# Stepping


def observe(state: DetectorState, minute: datetime, counts: Iterable[MinuteCounts]) -> None:
    """Record one complete minute without evaluating it (warm-up from stored history).

    Minutes must come in order; skipped minutes count as minutes without posts.
    """
    t = to_epoch_minute(minute)
    rows = list(counts)
    for row in rows:
        if row.minute != minute:
            raise ValueError(f"{row.symbol} counts are for {row.minute}, not {minute}")
    if state.last_minute is not None and t <= state.last_minute:
        raise ValueError(f"minute {minute.isoformat()} is not after the last observed minute")
    state.add_symbols(sorted({r.symbol for r in rows} - state.index.keys()), t)
    if state.last_minute is not None:
        for gap in range(state.last_minute + 1, t):
            _advance(state, gap, None)
    n = len(state.symbols)
    total = np.zeros(n, dtype=np.int64)
    negative = np.zeros(n, dtype=np.int64)
    for row in rows:
        i = state.index[row.symbol]
        total[i] += row.total
        negative[i] += row.negative
    _advance(state, t, (total, negative))
    state.last_minute = t


def step(
    state: DetectorState,
    minute: datetime,
    counts: Iterable[MinuteCounts],
    settings: DetectorSettings,
) -> list[Alert]:
    """Record the complete minute starting at `minute` and return the alerts it raises."""
    state.check(settings)
    observe(state, minute, counts)
    return evaluate(state, settings)


def _advance(state: DetectorState, t: int, counts: tuple[IntArray, IntArray] | None) -> None:
    slot, prev = t % state.ring, (t - 1) % state.ring
    if counts is None:
        state.total[:, slot] = 0
        state.negative[:, slot] = 0
    else:
        state.total[:, slot], state.negative[:, slot] = counts
    state.in_spike[:, slot] = False
    state.cum_total[:, slot] = state.cum_total[:, prev] + state.total[:, slot]
    state.cum_negative[:, slot] = state.cum_negative[:, prev] + state.negative[:, slot]

    # the minute leaving the guard zone joins the baseline unless it was part of a spike
    u = t - state.guard
    b = u // state.bin_minutes
    bslot = b % state.n_bins
    if state.bin_ids[bslot] != b:
        state.bin_ids[bslot] = b
        state.bin_total[:, bslot] = 0.0
        state.bin_negative[:, bslot] = 0.0
        state.bin_kept[:, bslot] = 0.0
    uslot = u % state.ring
    keep = ~state.in_spike[:, uslot]
    state.bin_total[:, bslot] += state.total[:, uslot] * keep
    state.bin_negative[:, bslot] += state.negative[:, uslot] * keep
    state.bin_kept[:, bslot] += keep


@dataclass(frozen=True)
class Baseline:
    """What a symbol's windows are compared with, at one minute.

    `share` and `volume_rate` are per [symbol, window]: each window is compared with the same
    clock-time span on previous days (to the bin), so a symbol that is always gloomier at night
    is not "spiking" every evening.
    """

    share: FloatArray  # [symbol, window] expected negative share
    concentration: FloatArray  # [symbol] how much that share is trusted (beta-binomial)
    volume_rate: FloatArray  # [symbol, window] expected posts per minute; nan: no history yet


def baseline(
    state: DetectorState, settings: DetectorSettings, windows: tuple[int, ...]
) -> Baseline:
    assert state.last_minute is not None
    t = state.last_minute
    day, tod, tod_valid, tod_start = _baseline_bins(state)
    day_total = state.bin_total[:, day].sum(axis=1)
    day_negative = state.bin_negative[:, day].sum(axis=1)
    all_total = day_total.sum()
    pooled = day_negative.sum() / all_total if all_total >= 100 else settings.default_share
    share_day = (day_negative + settings.prior_posts * pooled) / (day_total + settings.prior_posts)

    # the bins at this clock time (k = 0 holds minute t, k = 1 the bin before, ...) on every
    # previous day the symbol was already watched, summed over days: [symbol, k]
    n, days, k_bins = len(state.symbols), state.baseline_days, state.tod_bins
    watched = ((state.first_seen[:, None] <= tod_start[None, :]) & tod_valid[None, :])[:, :, None]

    def by_k(bins: FloatArray) -> FloatArray:
        summed: FloatArray = (bins[:, tod].reshape(n, days, k_bins) * watched).sum(axis=1)
        return summed

    tod_total, tod_negative, tod_minutes = (
        by_k(state.bin_total),
        by_k(state.bin_negative),
        by_k(state.bin_kept),
    )

    # a window of w minutes spans this many bins back from minute t's bin
    b = state.bin_minutes
    spans = np.array([t // b - (t - w + 1) // b + 1 for w in windows])
    total_w = np.cumsum(tod_total, axis=1)[:, spans - 1]
    negative_w = np.cumsum(tod_negative, axis=1)[:, spans - 1]

    prior = settings.time_of_day_prior_posts
    share = (negative_w + prior * share_day[:, None]) / (total_w + prior)
    share = np.clip(share, settings.min_baseline_share, 0.95)
    concentration = np.minimum(settings.max_concentration, day_total + settings.prior_posts)
    # minutes left out as spike minutes are not "quiet minutes with no posts"
    minutes = np.cumsum(tod_minutes, axis=1)[:, spans - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        volume_rate = np.where(
            minutes >= settings.min_volume_history_minutes, total_w / minutes, np.nan
        )
    return Baseline(share=share, concentration=concentration, volume_rate=volume_rate)


def _baseline_bins(
    state: DetectorState,
) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_], IntArray]:
    """Slots of the last day's bins; of the `tod_bins` bins up to this clock time on each
    previous day ([day, k] flattened); whether each such day is complete; each day's span start.

    They only change when a bin boundary passes, so they are cached on the state.
    """
    assert state.last_minute is not None
    t = state.last_minute
    key = ((t - state.guard) // state.bin_minutes, t // state.bin_minutes)
    if state._bins_key == key and state._bins is not None:
        return state._bins
    ids = state.bin_ids
    b_u = key[0]
    day = np.nonzero((ids > b_u - state.bins_per_day) & (ids <= b_u))[0]
    now = np.array(
        [(t - d * MINUTES_PER_DAY) // state.bin_minutes for d in range(1, state.baseline_days + 1)]
    )
    wanted_ids = now[:, None] - np.arange(state.tod_bins)[None, :]  # [day, k]
    slots = wanted_ids % state.n_bins
    tod_valid = (ids[slots] == wanted_ids).all(axis=1)
    tod_start = wanted_ids[:, -1] * state.bin_minutes
    state._bins = (day, slots.reshape(-1), tod_valid, tod_start)
    state._bins_key = key
    return state._bins


def window_sums(state: DetectorState, windows: tuple[int, ...]) -> tuple[IntArray, IntArray]:
    """(total, negative) over the last w minutes, shape [symbol, window]."""
    assert state.last_minute is not None
    t = state.last_minute
    slot = t % state.ring
    back = (t - np.asarray(windows)) % state.ring
    total = state.cum_total[:, slot][:, None] - state.cum_total[:, back]
    negative = state.cum_negative[:, slot][:, None] - state.cum_negative[:, back]
    return total, negative


def evaluate(state: DetectorState, settings: DetectorSettings) -> list[Alert]:
    """Test the newest observed minute of every symbol."""
    if state.last_minute is None or not state.symbols:
        return []
    params = state.params(settings)
    alerts = _negative_spikes(state, settings, baseline(state, settings, settings.windows), params)
    if settings.volume_windows:
        volume_base = baseline(state, settings, settings.volume_windows)
        alerts += _volume_spikes(state, settings, volume_base, params)
    return sorted(alerts, key=lambda a: (a.symbol, a.kind))


@dataclass(frozen=True)
class _Tests:
    """Windows that passed the gates, with their p-values and how far past a threshold they are."""

    rows: IntArray  # symbol index
    cols: IntArray  # window index
    p_value: FloatArray
    margin: FloatArray  # log10(threshold / p) of the best rule; >= 0 fires
    expected: FloatArray  # expected posts in the window (volume baseline); nan: unknown


def _negative_spikes(
    state: DetectorState,
    settings: DetectorSettings,
    base: Baseline,
    params: dict[str, npt.NDArray[Any]],
) -> list[Alert]:
    windows = settings.windows
    total, negative = window_sums(state, windows)
    p0 = base.share
    share = negative / np.maximum(total, 1)
    gate = (
        (params["enabled"][:, None] > 0)
        & (negative >= params["min_negatives"][:, None])
        & (negative - total * p0 >= params["min_excess"][:, None])
        & (share >= p0 * params["min_ratio"][:, None])
        & (share >= p0 + params["min_share_increase"][:, None])
    )
    rows, cols = np.nonzero(gate)
    if len(rows) == 0:
        return []
    share_p = base.share[rows, cols]
    conc = base.concentration[rows]
    p = beta_binomial_sf(
        negative[rows, cols], total[rows, cols], share_p * conc, (1.0 - share_p) * conc
    )
    expected = base.volume_rate[rows, cols] * np.asarray(windows, dtype=np.float64)[cols]
    with np.errstate(invalid="ignore"):
        busy = (total[rows, cols] >= expected * params["confirm_volume_ratio"][rows]) & (
            total[rows, cols] >= params["confirm_min_total"][rows]
        )
    alpha = np.where(busy, params["confirmed_alpha"][rows], params["alpha"][rows])
    margin = np.log10(alpha) - np.log10(np.maximum(p, 1e-300))
    tests = _Tests(rows, cols, p, margin, expected)
    return _pick(state, NEGATIVE_SPIKE, windows, tests, total, negative, base, params)


def _volume_spikes(
    state: DetectorState,
    settings: DetectorSettings,
    base: Baseline,
    params: dict[str, npt.NDArray[Any]],
) -> list[Alert]:
    windows = settings.volume_windows
    if not windows:
        return []
    total, negative = window_sums(state, windows)
    rate = base.volume_rate
    # a symbol with no posts at this time of day yet still gets an expectation of 1 per day
    expected = np.maximum(rate, 1.0 / MINUTES_PER_DAY) * np.asarray(windows, np.float64)[None, :]
    with np.errstate(invalid="ignore"):
        gate = (
            (params["volume_enabled"][:, None] > 0)
            & ~np.isnan(expected)
            & (total >= params["volume_min_total"][:, None])
            & (total >= expected * params["volume_min_ratio"][:, None])
        )
    rows, cols = np.nonzero(gate)
    if len(rows) == 0:
        return []
    p = poisson_sf(total[rows, cols], expected[rows, cols])
    margin = np.log10(params["volume_alpha"][rows]) - np.log10(np.maximum(p, 1e-300))
    tests = _Tests(rows, cols, p, margin, expected[rows, cols])
    return _pick(state, VOLUME_SPIKE, windows, tests, total, negative, base, params)


def _pick(
    state: DetectorState,
    kind: AlertKind,
    windows: tuple[int, ...],
    tests: _Tests,
    total: IntArray,
    negative: IntArray,
    base: Baseline,
    params: dict[str, npt.NDArray[Any]],
) -> list[Alert]:
    """One alert per symbol, from its most decisive window; mark that window as spike minutes."""
    assert state.last_minute is not None
    t = state.last_minute
    best: dict[int, int] = {}
    for i in np.nonzero(tests.margin >= 0)[0].tolist():
        s = int(tests.rows[i])
        if s not in best or tests.margin[i] > tests.margin[best[s]]:
            best[s] = i
    fired_at = from_epoch_minute(t + 1)
    alerts = []
    for s, i in sorted(best.items()):
        c = int(tests.cols[i])
        w = windows[c]
        n, k = int(total[s, c]), int(negative[s, c])
        p = float(max(tests.p_value[i], 1e-300))
        share = k / n if n else 0.0
        p0 = float(base.share[s, c])
        critical = p <= params["critical_alpha"][s] and (
            kind == VOLUME_SPIKE or share >= p0 * params["critical_ratio"][s]
        )
        alerts.append(
            Alert(
                symbol=state.symbols[s],
                kind=kind,
                fired_at=fired_at,
                severity="critical" if critical else "warning",
                statistic=-math.log10(p),
                p_value=p,
                window_minutes=w,
                window_total=n,
                window_negative=k,
                window_share=share,
                baseline_share=p0,
                expected_total=float(tests.expected[i]),
                episode_id=episode_proposal(
                    state.symbols[s], kind, fired_at - timedelta(minutes=w)
                ),
            )
        )
        state.in_spike[s, (t - np.arange(w)) % state.ring] = True
    return alerts
