"""Negative-spike detection over per-minute, per-symbol counts.

The method, in one place:

* Recent evidence: for every window of the last w minutes (w in `DetectorSettings.windows`,
  1..30) the detector counts stories n and negative stories k of each symbol, and the sum s of
  their P(negative). The newest minutes may be incomplete ("pending": the minutes so far, read
  every few seconds and never recorded), so a spike whose evidence is there already need not
  wait for its minute to close.
* Baseline: the symbol's own negative share, learned from its counts older than
  `guard_minutes` (so a spike never hides itself): the last day's share, pulled towards the
  cross-symbol share when the symbol is thin, then pulled towards the share over the same clock
  time as the window (to `bin_minutes`) on the previous `baseline_days` days, as far as those
  days have posts. Minutes that were part of a detected spike are left out of the baseline.
* Level: the share over the last `recent_level_minutes` before the guard against what that
  baseline predicted for those hours, shrunk by `recent_level_prior` expected negatives; the
  baseline is scaled by it. A share that drifted or stepped to a new level within days is then
  the new normal within hours, not a spike for a week.
* Test: k is compared with the beta-binomial predictive distribution of a window of n stories
  under that baseline. Its concentration is the evidence behind the baseline, capped at
  `max_concentration`: a thin symbol's baseline is uncertain, and a busy symbol's share wanders a
  little from minute to minute, so a large volume burst with an unchanged share is not
  "significant" the way it is under a plain binomial test. How much it wanders is measured
  too: each closing bin's share as the baseline predicted it is compared, once the bin leaves
  the guard, with what the bin held; the spread beyond the binomial (method of moments over
  about a day, pulled towards the cap by `wander_prior_weight`; off by default) lowers the
  concentration of a symbol whose share moves within hours in ways the baseline does not foresee.
* Probability evidence (`evidence = "probabilities"`): the same test on s instead of k, against
  the baseline of P(negative). A calibrated P(negative) varies less from story to story than a
  label does, so each story carries more evidence: the test counts s and n as r * s "negatives"
  of r * n stories, where r (1..`max_information_gain`) is a label's variance over the observed
  variance of the symbol's P(negative) (its minute sums over about a day, pulled towards r = 1
  while there are few). With labels only (no probabilities), r is 1 and the two tests agree.
* Threshold: `alpha` normally; `confirmed_alpha` (looser) while the same window also carries
  `confirm_volume_ratio` times the symbol's usual volume for the time of day. Most minutes are
  quiet, and a window in a surge of posts is far more likely a priori to be a real event, so the
  looser threshold there buys minutes of delay for few false alerts (the share test still has to
  pass: a surge with an unchanged share does not fire).
  While a market-wide sell-off is open (the lifecycle's grouped event), a surge whose share has
  reached `market_min_ratio` times its baseline is tested at `market_alpha` (looser still):
  when many tickers are selling off, another ticker's surge to twice its usual share is far
  more likely the same news than chance. Only surges: a quiet ticker's windows keep `alpha`.
* Gates before the test (what an analyst would call a spike), on labels: at least
  `min_negatives` negative stories, `min_excess` more than the baseline expects, and a share at
  least `min_ratio` times and `min_share_increase` above the baseline. A positive spike lowers
  the negative share, so it never passes them.
* Volume spikes are a separate kind: total stories against the time-of-day volume, Poisson test.

Everything here is arithmetic on numpy arrays with no I/O. `step` records one complete minute
and evaluates it; `evaluate` with pending minutes tests the minutes so far without recording
them; `revise` replaces a recorded minute's counts when late posts arrive. Episodes (no
repeats) are the lifecycle's business: the detector reports every evaluation that passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from alerting.alert import (
    NEGATIVE_SPIKE,
    VOLUME_SPIKE,
    Alert,
    AlertKind,
    ExamplePost,
    episode_proposal,
    window_start,
)
from alerting.detector_settings import MINUTES_PER_DAY, DetectorSettings, SymbolSettings
from alerting.detector_state import (
    DetectorState,
    FloatArray,
    IntArray,
    MinuteArrays,
    WindowSums,
    from_epoch_minute,
    to_epoch_minute,
)
from alerting.series import MinuteCounts
from alerting.statistics import beta_binomial_sf, binomial_sf, poisson_sf

__all__ = [
    "NEGATIVE_SPIKE",
    "VOLUME_SPIKE",
    "Alert",
    "Baseline",
    "DetectorSettings",
    "DetectorState",
    "ExamplePost",
    "SymbolSettings",
    "baseline",
    "binomial_sf",
    "evaluate",
    "from_epoch_minute",
    "observe",
    "revise",
    "step",
    "to_epoch_minute",
]


def minute_arrays(state: DetectorState, minute: datetime, counts: Iterable[MinuteCounts]) -> MinuteArrays:
    """The counts of one minute as arrays in the state's symbol order (new symbols are added)."""
    rows: dict[str, tuple[int, int, float]] = {}
    for row in counts:
        if row.minute != minute:
            raise ValueError(f"{row.symbol} counts are for {row.minute}, not {minute}")
        total, negative, expected = rows.get(row.symbol, (0, 0, 0.0))
        evidence = row.negative if row.expected_negative is None else row.expected_negative
        rows[row.symbol] = (total + row.total, negative + row.negative, expected + evidence)
    return state.arrays(rows, to_epoch_minute(minute))


def observe(
    state: DetectorState, minute: datetime, counts: Iterable[MinuteCounts], settings: DetectorSettings | None = None
) -> None:
    """Record one complete minute without evaluating it (warm-up from stored history).

    Minutes must come in order; skipped minutes count as minutes without posts. With
    `settings`, closing bins also get their predicted share (for measured wander).
    """
    t = to_epoch_minute(minute)
    if state.last_minute is not None and t <= state.last_minute:
        raise ValueError(f"minute {minute.isoformat()} is not after the last observed minute")
    arrays = minute_arrays(state, minute, counts)
    if state.last_minute is not None:
        for gap in range(state.last_minute + 1, t):
            state.record(gap, None)
            _predict_bin(state, settings, gap)
    state.record(t, arrays)
    _predict_bin(state, settings, t)


def _predict_bin(state: DetectorState, settings: DetectorSettings | None, t: int) -> None:
    """When minute t closes a bin, remember the share the baseline expects of that bin (what
    measured wander compares the bin with once it leaves the guard)."""
    b = state.bin_minutes
    if settings is None or settings.wander_prior_weight == 0 or (t + 1) % b or not state.symbols:
        return
    windows = _evaluated_windows(settings)
    if b not in windows:
        windows = (b,)
    state.predict(t // b, _baseline_of(state, settings, windows, t).share[:, windows.index(b)])


def _evaluated_windows(settings: DetectorSettings) -> tuple[int, ...]:
    return tuple(sorted({*settings.windows, *settings.volume_windows}))


def step(
    state: DetectorState,
    minute: datetime,
    counts: Iterable[MinuteCounts],
    settings: DetectorSettings,
    market_wide: bool = False,
) -> list[Alert]:
    """Record the complete minute starting at `minute` and return the alerts it raises."""
    state.check(settings)
    observe(state, minute, counts, settings)
    return evaluate(state, settings, market_wide=market_wide)


def revise(state: DetectorState, minute: datetime, counts: Iterable[MinuteCounts]) -> bool:
    """Late posts: replace a recorded minute's counts with fresh ones while the minute is still
    in the guard zone (False once it has left it: late-post handling in the engine takes over)."""
    return state.revise(to_epoch_minute(minute), minute_arrays(state, minute, counts))


@dataclass(frozen=True)
class Baseline:
    """What a symbol's windows are compared with, at one minute.

    `share` and `volume_rate` are per [symbol, window]: each window is compared with the same
    clock-time span on previous days (to the bin), so a symbol that is always gloomier at night
    is not "spiking" every evening. `probability_share` is the same for the mean P(negative),
    and `information_gain` how many labels one story's P(negative) is worth (>= 1).
    """

    share: FloatArray  # [symbol, window] expected negative share
    concentration: FloatArray  # [symbol] how much that share is trusted (beta-binomial)
    volume_rate: FloatArray  # [symbol, window] expected posts per minute; nan: no history yet
    probability_share: FloatArray  # [symbol, window] expected mean P(negative)
    information_gain: FloatArray  # [symbol]


def baseline(state: DetectorState, settings: DetectorSettings, windows: tuple[int, ...], t: int | None = None) -> Baseline:
    """The baseline for windows ending in minute `t` (default: the last recorded minute)."""
    assert state.last_minute is not None
    t = state.last_minute if t is None else t
    bins = state.baseline_bins(t)
    day_total = state.bin_total[:, bins.day].sum(axis=1)
    all_total = day_total.sum()

    def day_share(evidence: FloatArray) -> FloatArray:
        per_symbol = evidence[:, bins.day].sum(axis=1)
        pooled = per_symbol.sum() / all_total if all_total >= 100 else settings.default_share
        share: FloatArray = (per_symbol + settings.prior_posts * pooled) / (day_total + settings.prior_posts)
        return share

    # the bins at this clock time (k = 0 holds minute t, k = 1 the bin before, ...) on every
    # previous day the symbol was already watched, summed over days: [symbol, k]
    n, days, k_bins = len(state.symbols), state.baseline_days, state.tod_bins
    watched = ((state.first_seen[:, None] <= bins.day_start[None, :]) & bins.day_complete[None, :])[:, :, None]

    def by_k(values: FloatArray) -> FloatArray:
        summed: FloatArray = (values[:, bins.time_of_day].reshape(n, days, k_bins) * watched).sum(axis=1)
        return summed

    # a window of w minutes spans this many bins back from minute t's bin
    b = state.bin_minutes
    spans = np.array([t // b - (t - w + 1) // b + 1 for w in windows])

    def over_windows(values: FloatArray) -> FloatArray:
        summed: FloatArray = np.cumsum(by_k(values), axis=1)[:, spans - 1]
        return summed

    total_w = over_windows(state.bin_total)
    prior = settings.time_of_day_prior_posts

    def recent_level(evidence: FloatArray, day: FloatArray) -> FloatArray:
        """How the last hours before the guard went against what this baseline's history
        (shrunk to the `day` share) expected of them (1: as expected). A share that moved to a
        new level since (a drift, a re-rating) moves the baseline with it instead of reading as
        a spike for days."""
        if settings.recent_level_minutes == 0:
            return np.ones(n)
        r = state.recent_bins(-(-settings.recent_level_minutes // b))
        held = r.held[None, :, :]
        history = (evidence[:, r.history].reshape(n, days, -1) * held).sum(axis=1)
        history_total = (state.bin_total[:, r.history].reshape(n, days, -1) * held).sum(axis=1)
        profile = (history + prior * day[:, None]) / (history_total + prior)
        kept = r.recent_held[None, :]
        observed = (evidence[:, r.recent] * kept).sum(axis=1)
        expected = (state.bin_total[:, r.recent] * kept * profile).sum(axis=1)
        a = settings.recent_level_prior
        level: FloatArray = np.clip((observed + a) / (expected + a), settings.min_recent_level, settings.max_recent_level)
        return level

    def time_of_day_share(evidence: FloatArray) -> FloatArray:
        day = day_share(evidence)
        share = (over_windows(evidence) + prior * day[:, None]) / (total_w + prior)
        share = share * recent_level(evidence, day)[:, None]
        clipped: FloatArray = np.clip(share, settings.min_baseline_share, 0.95)
        return clipped

    concentration = np.minimum(settings.max_concentration, day_total + settings.prior_posts)
    if settings.wander_prior_weight > 0:
        concentration = np.minimum(concentration, wander_concentration(state, settings))
    # minutes left out as spike minutes are not "quiet minutes with no posts"
    minutes = over_windows(state.bin_kept)
    with np.errstate(invalid="ignore", divide="ignore"):
        volume_rate = np.where(minutes >= settings.min_volume_history_minutes, total_w / minutes, np.nan)
    return Baseline(
        share=time_of_day_share(state.bin_negative),
        concentration=concentration,
        volume_rate=volume_rate,
        probability_share=time_of_day_share(state.bin_expected),
        information_gain=information_gain(state, settings),
    )


def wander_concentration(state: DetectorState, settings: DetectorSettings) -> FloatArray:
    """Per symbol, the beta-binomial concentration its measured wander allows: the share's
    variance beyond the binomial as a fraction of p(1 - p) (1 / (concentration + 1)), estimated
    from the settled bins by moments and pulled towards the cap's by `wander_prior_weight` (in
    the units of sum (n - 1)^2)."""
    excess, weight = state.wander[:, 0], state.wander[:, 1]
    prior, prior_weight = 1.0 / (settings.max_concentration + 1.0), settings.wander_prior_weight
    rho = np.clip((excess + prior * prior_weight) / (weight + prior_weight), 1e-6, 1.0)
    concentration: FloatArray = 1.0 / rho - 1.0
    return concentration


def information_gain(state: DetectorState, settings: DetectorSettings) -> FloatArray:
    """How many labels one story's P(negative) is worth, per symbol: a label's variance
    mu(1 - mu) over the variance of P(negative) seen around the symbol's mean (minute sums over
    about a day: the spread of the share from minute to minute counts too, which only makes the
    estimate cautious), pulled towards 1 by `dispersion_prior_stories`."""
    if settings.evidence != "probabilities" or not len(state.symbols):
        return np.ones(len(state.symbols))
    n, s, ss, ns, nn = state.moments.T
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.clip(np.where(n > 0, s / n, 0.5), 0.01, 0.99)
        residual = np.maximum(ss - 2 * mu * ns + mu * mu * nn, 0.0)
        label_variance = mu * (1 - mu)
        prior = settings.dispersion_prior_stories
        variance = (residual + prior * label_variance) / (n + prior)
        gain = np.clip(label_variance / variance, 1.0, settings.max_information_gain)
    result: FloatArray = np.where(np.isfinite(gain), gain, 1.0)
    return result


def evaluate(
    state: DetectorState,
    settings: DetectorSettings,
    pending: Sequence[MinuteArrays] = (),
    at: datetime | None = None,
    rows: npt.NDArray[np.int64] | None = None,
    market_wide: bool = False,
) -> list[Alert]:
    """Test the newest minute of every symbol (or of `rows`); `market_wide`: a market-wide
    sell-off is open, so a surge at `market_min_ratio` times its share is tested at least at
    `market_alpha`.

    Without `pending`, the newest minute is the last recorded one: alerts fire at its end and
    their windows become spike minutes. With `pending` (the minutes so far after the last
    recorded one, the newest possibly incomplete), the newest minute is the last pending one:
    alerts fire `at` (when those counts were read) and nothing is recorded or marked.
    """
    if state.last_minute is None or not state.symbols:
        return []
    if pending and at is None:
        raise ValueError("an evaluation of pending minutes needs the moment they were read")
    t = state.last_minute + len(pending)
    fired_at = at if pending else from_epoch_minute(t + 1)
    assert fired_at is not None
    selected = np.arange(len(state.symbols)) if rows is None else np.asarray(rows, dtype=np.int64)
    params = _Params(state.params(settings), selected)
    # one pass over every window either test uses; each test takes its columns
    windows = _evaluated_windows(settings)
    sums = state.window_sums(windows, pending, selected)
    base = _select_baseline(_baseline_of(state, settings, windows, t), selected)
    found = _negative_spikes(
        settings.windows, *_columns(windows, settings.windows, sums, base), params, settings.evidence, market_wide
    )
    if settings.volume_windows:
        found += _volume_spikes(settings.volume_windows, *_columns(windows, settings.volume_windows, sums, base), params)
    alerts = []
    for test in found:
        symbol = int(selected[test.row])
        alerts.append(test.alert(state.symbols[symbol], fired_at, params))
        if not pending:
            state.mark_spike(symbol, test.window)
    return sorted(alerts, key=lambda a: (a.symbol, a.kind))


def _baseline_of(state: DetectorState, settings: DetectorSettings, windows: tuple[int, ...], t: int) -> Baseline:
    """`baseline`, computed once per state revision: every evaluation of the minutes so far
    within one minute compares with the same baseline."""
    return state.cached(("baseline", id(settings), windows, t), lambda: baseline(state, settings, windows, t))


class _Params:
    """The per-symbol settings arrays of the evaluated rows, selected as they are used."""

    def __init__(self, params: dict[str, npt.NDArray[Any]], rows: npt.NDArray[np.int64]) -> None:
        self._params = params
        self._rows = rows
        self._selected: dict[str, npt.NDArray[Any]] = {}

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        if name not in self._selected:
            self._selected[name] = self._params[name][self._rows]
        return self._selected[name]


def _columns(
    windows: tuple[int, ...], wanted: tuple[int, ...], sums: WindowSums, base: Baseline
) -> tuple[WindowSums, Baseline]:
    if wanted == windows:
        return sums, base
    cols = np.array([windows.index(w) for w in wanted])
    return (
        WindowSums(sums.total[:, cols], sums.negative[:, cols], sums.expected[:, cols]),
        Baseline(
            share=base.share[:, cols],
            concentration=base.concentration,
            volume_rate=base.volume_rate[:, cols],
            probability_share=base.probability_share[:, cols],
            information_gain=base.information_gain,
        ),
    )


def _select_baseline(base: Baseline, rows: npt.NDArray[np.int64]) -> Baseline:
    return Baseline(
        share=base.share[rows],
        concentration=base.concentration[rows],
        volume_rate=base.volume_rate[rows],
        probability_share=base.probability_share[rows],
        information_gain=base.information_gain[rows],
    )


@dataclass(frozen=True)
class _Fired:
    """The most decisive passing window of one symbol, with what its alert reports."""

    kind: AlertKind
    row: int
    window: int
    p_value: float
    total: int
    negative: int
    expected_negative: float
    baseline_share: float
    expected_total: float

    def alert(self, symbol: str, fired_at: datetime, params: _Params) -> Alert:
        p = max(self.p_value, 1e-300)
        share = self.negative / self.total if self.total else 0.0
        critical = p <= params["critical_alpha"][self.row] and (
            self.kind == VOLUME_SPIKE or share >= self.baseline_share * params["critical_ratio"][self.row]
        )
        return Alert(
            symbol=symbol,
            kind=self.kind,
            fired_at=fired_at,
            severity="critical" if critical else "warning",
            statistic=-math.log10(p),
            p_value=p,
            window_minutes=self.window,
            window_posts=self.total,
            window_negative=self.negative,
            window_share=share,
            baseline_share=self.baseline_share,
            expected_total=self.expected_total,
            episode_id=episode_proposal(symbol, self.kind, window_start(fired_at, self.window)),
            expected_negative=round(self.expected_negative, 4),
        )


def _negative_spikes(
    windows: tuple[int, ...],
    sums: WindowSums,
    base: Baseline,
    params: _Params,
    evidence: str,
    market_wide: bool = False,
) -> list[_Fired]:
    total, negative = sums.total, sums.negative
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
    conc = base.concentration[rows]
    if evidence == "probabilities":
        gain = base.information_gain[rows]
        mean = base.probability_share[rows, cols]
        k = np.floor(sums.expected[rows, cols] * gain + 1e-9)
        n = np.round(total[rows, cols] * gain)
        p = beta_binomial_sf(np.minimum(k, n), n, mean * conc, (1.0 - mean) * conc)
    else:
        share_p = p0[rows, cols]
        p = beta_binomial_sf(negative[rows, cols], total[rows, cols], share_p * conc, (1.0 - share_p) * conc)
    expected = base.volume_rate[rows, cols] * np.asarray(windows, dtype=np.float64)[cols]
    with np.errstate(invalid="ignore"):
        busy = (total[rows, cols] >= expected * params["confirm_volume_ratio"][rows]) & (
            total[rows, cols] >= params["confirm_min_total"][rows]
        )
    confirmed = params["confirmed_alpha"][rows]
    if market_wide:
        strong = share[rows, cols] >= p0[rows, cols] * params["market_min_ratio"][rows]
        confirmed = np.where(strong, np.maximum(confirmed, params["market_alpha"][rows]), confirmed)
    alpha = np.where(busy, confirmed, params["alpha"][rows])
    return _most_decisive(NEGATIVE_SPIKE, windows, rows, cols, p, alpha, expected, sums, p0)


def _volume_spikes(
    windows: tuple[int, ...],
    sums: WindowSums,
    base: Baseline,
    params: _Params,
) -> list[_Fired]:
    total = sums.total
    # a symbol with no posts at this time of day yet still gets an expectation of 1 per day
    expected = np.maximum(base.volume_rate, 1.0 / MINUTES_PER_DAY) * np.asarray(windows, np.float64)[None, :]
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
    alpha = params["volume_alpha"][rows]
    return _most_decisive(VOLUME_SPIKE, windows, rows, cols, p, alpha, expected[rows, cols], sums, base.share)


def _most_decisive(
    kind: AlertKind,
    windows: tuple[int, ...],
    rows: IntArray,
    cols: IntArray,
    p: FloatArray,
    alpha: FloatArray,
    expected: FloatArray,
    sums: WindowSums,
    share: FloatArray,
) -> list[_Fired]:
    """One result per symbol: its window furthest past its threshold (log10(alpha / p) >= 0)."""
    margin = np.log10(alpha) - np.log10(np.maximum(p, 1e-300))
    best: dict[int, int] = {}
    for i in np.nonzero(margin >= 0)[0].tolist():
        s = int(rows[i])
        if s not in best or margin[i] > margin[best[s]]:
            best[s] = i
    out = []
    for s, i in sorted(best.items()):
        c = int(cols[i])
        out.append(
            _Fired(
                kind=kind,
                row=s,
                window=windows[c],
                p_value=float(p[i]),
                total=int(sums.total[s, c]),
                negative=int(sums.negative[s, c]),
                expected_negative=float(sums.expected[s, c]),
                baseline_share=float(share[s, c]),
                expected_total=float(expected[i]),
            )
        )
    return out


# kept importable from here: callers and tests name the statistics through the detector
__all__ += ["beta_binomial_sf", "poisson_sf"]
