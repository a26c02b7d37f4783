"""The detection loop, shared by the alert job (counts from ClickHouse) and `moodwire backtest`
(counts from a file of scored posts, replayed in the order they arrived): one code path, so
both fire the same alerts on the same posts.

Every tick (every `alert_interval_s` in the job; at every moment something could change in a
backtest), at the clock's time T:

1. complete minutes: each minute is recorded once T has passed its end plus the lateness
   (`alert_lateness_minutes`), evaluated, and its alerts applied to the lifecycle. Before that,
   the minutes still in the detector's guard zone are read again, so posts that arrived late
   add their evidence to the windows that still cover them;
2. late posts: every `late_check_minutes`, the counts of the minutes that already left the
   guard zone (up to `late_horizon_minutes` back) are compared with what was read; what is new
   arrived too late for the windows and goes to the baseline (and is counted);
3. the minutes so far: the minutes after the last recorded one, the newest incomplete, are
   evaluated at T without being recorded. A spike whose evidence is already there fires now
   rather than after its minute closed and the lateness passed. Between ticks only the symbols
   whose counts changed are tested again, unless the market-wide state changed: alerts that
   open a market-wide event get every other symbol tested again at once, under the joiners'
   bar (alerting/detector.py);
4. the lifecycle: new episodes, resolutions (an episode whose ticker's share is still
   elevated after each complete minute is held open), and the notifications that fell due (held ones
   included, alerting/lifecycle.py).

The engine never touches I/O itself: it reads through a `CountsSource` and returns what
happened (`TickResult`); the caller stores, notifies and counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from alerting.alert import NEGATIVE_SPIKE, Alert
from alerting.detector import baseline, evaluate, minute_arrays, observe, revise, step
from alerting.detector_settings import DetectorSettings
from alerting.detector_state import DetectorState, MinuteArrays, from_epoch_minute, to_epoch_minute
from alerting.lifecycle import (
    AlertState,
    LifecycleSettings,
    Notification,
    advance,
    episode_key,
    held_open,
    market_wide,
    still_elevated,
)
from alerting.series import MINUTE, MinuteCounts, floor_minute
from moodwire.config import Settings


@dataclass(frozen=True)
class BinCounts:
    """Counts of one symbol over the minutes of one baseline bin (as moodwire.counting counts)."""

    symbol: str
    bin_start: datetime
    total: int
    negative: int
    expected_negative: float


@dataclass(frozen=True)
class Watermark:
    """How far the stored posts go: how many, the newest published_at, the newest arrival."""

    posts: int
    latest_published: datetime | None
    latest_arrival: datetime | None


class CountsSource(Protocol):
    """Per-minute counts of the posts that have arrived so far."""

    def watermark(self) -> Watermark: ...

    def minute_counts(self, first: datetime, last: datetime) -> dict[datetime, list[MinuteCounts]]:
        """Counts per minute in [first, last] (minutes without posts may be absent)."""
        ...

    def bin_counts(self, first: datetime, last: datetime, bin_minutes: int) -> list[BinCounts]:
        """Counts of the minutes [first, last], summed per symbol and bin of `bin_minutes`."""
        ...

    def earliest_minute(self, since: datetime) -> datetime | None:
        """The first minute at or after `since` with posts."""
        ...


@dataclass(frozen=True)
class EngineSettings:
    # a minute is recorded this long after it ends (before that, it is evaluated as it grows)
    lateness: timedelta = timedelta(minutes=1)
    evaluate_pending: bool = True
    late_check_minutes: int = 5
    # once nothing arrived for this long, the wall clock moves time on (quiet minutes count)
    idle_after: timedelta = timedelta(seconds=30)
    # a first run evaluates this much of the past (None: everything, as a backtest does)
    first_run_lookback: timedelta | None = timedelta(hours=3)
    read_chunk: timedelta = timedelta(hours=6)

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineSettings:
        return cls(lateness=timedelta(minutes=settings.alert_lateness_minutes))


@dataclass(frozen=True)
class MinuteRecord:
    """What the detector compared one symbol's minute with: the `detector_minutes` row."""

    symbol: str
    minute: datetime
    stories: int
    negative: int
    expected_negative: float
    baseline_share: float  # time-of-day baseline of the negative share for this minute
    baseline_probability: float  # ... of the mean P(negative)
    baseline_stories: float  # expected stories in the minute (-1: no history at this time yet)
    information_gain: float
    window_minutes: int
    window_stories: int
    window_negative: int
    window_baseline_share: float


@dataclass
class TickResult:
    clock: datetime | None = None
    notifications: list[Notification] = field(default_factory=list)
    minutes: list[MinuteRecord] = field(default_factory=list)
    recorded: int = 0  # complete minutes recorded
    late_stories: float = 0.0
    evaluated_pending: bool = False


RECORD_WINDOW = 10  # the window a detector_minutes row reports besides the minute itself


def event_clock(mark: Watermark, wall: datetime, idle_after: timedelta) -> datetime | None:
    """The clock the detector runs on: event time (the newest published post) while posts
    arrive, so a replay of old posts is judged by its own clock; the wall clock once nothing
    arrived for `idle_after`, so quiet minutes still count as complete. Never ahead of the
    wall. None before any post."""
    if not mark.posts or mark.latest_published is None:
        return None
    clock = mark.latest_published
    if mark.latest_arrival is None or mark.latest_arrival <= wall - idle_after:
        clock = max(clock, wall)
    return min(clock, wall)


class DetectionEngine:
    def __init__(
        self,
        detector_settings: DetectorSettings,
        lifecycle_settings: LifecycleSettings,
        settings: EngineSettings = EngineSettings(),
        examples: Callable[[Alert], Alert] | None = None,
        records: bool = False,
    ) -> None:
        self.detector_settings = detector_settings
        self.lifecycle_settings = lifecycle_settings
        self.settings = settings
        self._examples = examples
        self._records = records
        self.detector: DetectorState | None = None
        self._pending_key: tuple[int, int] | None = None
        self._pending_seen: list[MinuteArrays] = []

    def reset(self) -> None:
        """Forget the detector's state (rebuilt from the source on the next tick)."""
        self.detector = None
        self._pending_key = None

    # ------------------------------------------------------------------------------ a tick

    def tick(self, source: CountsSource, state: AlertState, wall: datetime) -> TickResult:
        clock = event_clock(source.watermark(), wall, self.settings.idle_after)
        result = TickResult(clock=clock)
        if clock is None:
            return result
        last_complete = floor_minute(clock - self.settings.lateness) - MINUTE
        if self.detector is None and not self._start(source, state, last_complete):
            return result
        detector = self.detector
        assert detector is not None
        start = (from_epoch_minute(detector.last_minute) + MINUTE) if detector.last_minute is not None else None
        if start is None:
            start = source.earliest_minute(last_complete - (self.settings.first_run_lookback or timedelta(days=36500)))
        if start is not None and start <= last_complete:
            self._record(source, state, start, last_complete, result, wall)
        if self.settings.evaluate_pending and detector.last_minute is not None:
            self._evaluate_pending(source, state, clock, result, wall)
        result.notifications += advance(state, clock, [], self.lifecycle_settings, commit=False, now=wall)
        return result

    def _start(self, source: CountsSource, state: AlertState, last_complete: datetime) -> bool:
        """Rebuild the detector from history: every minute up to the last one evaluated before
        (or, on a first run, up to `first_run_lookback` ago) is recorded without evaluation."""
        self.detector = DetectorState(self.detector_settings)
        evaluated_until = state.last_minute - MINUTE if state.last_minute else None
        lookback = self.settings.first_run_lookback
        if evaluated_until is None and lookback is None:
            return True  # a backtest: evaluate everything from the first minute
        warm_until = evaluated_until or (last_complete - (lookback or timedelta(0)))
        history = timedelta(days=self.detector_settings.baseline_days)
        first = source.earliest_minute(warm_until - history)
        if first is not None and first <= warm_until:
            for minute, counts in self._read(source, first, warm_until):
                observe(self.detector, minute, counts, self.detector_settings)
        return True

    def _read(self, source: CountsSource, first: datetime, last: datetime) -> Iterator[tuple[datetime, list[MinuteCounts]]]:
        """Every minute in [first, last] with its counts, read in chunks."""
        cursor = first
        while cursor <= last:
            chunk_end = min(last, cursor + self.settings.read_chunk - MINUTE)
            counts = source.minute_counts(cursor, chunk_end)
            minute = cursor
            while minute <= chunk_end:
                yield minute, counts.get(minute, [])
                minute += MINUTE
            cursor = chunk_end + MINUTE

    def _record(
        self, source: CountsSource, state: AlertState, start: datetime, last: datetime, result: TickResult, wall: datetime
    ) -> None:
        """Record and evaluate every minute in [start, last]; every `late_check_minutes`, read
        the guard zone again first (late posts)."""
        detector = self.detector
        assert detector is not None
        settings = self.detector_settings
        first = start
        check_every = self.settings.late_check_minutes
        crosses = to_epoch_minute(last) // check_every > to_epoch_minute(start - MINUTE) // check_every
        if detector.last_minute is not None and crosses:
            first = max(
                from_epoch_minute(detector.last_minute - detector.guard + 1),
                from_epoch_minute(detector.first_minute or detector.last_minute),
            )
        for minute, counts in self._read(source, first, last):
            if minute < start:
                revise(detector, minute, counts)
                continue
            end = minute + MINUTE
            alerts = step(detector, minute, counts, settings, market_wide(state, end, self.lifecycle_settings))
            result.recorded += 1
            result.notifications += advance(
                state,
                end,
                self._with_examples(state, alerts),
                self.lifecycle_settings,
                now=wall,
                elevated=self._elevated(state, end),
            )
            if self._records:
                result.minutes += self._minute_records(minute)
            if to_epoch_minute(minute) % check_every == 0:
                result.late_stories += self._late(source)
        self._pending_key = None

    def _elevated(self, state: AlertState, at: datetime) -> list[str]:
        """The firing episodes whose ticker's share, over the last recorded minutes, is still
        elevated enough to hold them open (alerting/lifecycle.py, `still_elevated`)."""
        detector = self.detector
        assert detector is not None
        episodes = [e for e in held_open(state) if e.symbol in detector.index]
        if not episodes:
            return []
        settings = self.lifecycle_settings
        window = min(settings.hold_window_minutes, detector.ring - 1)
        rows = np.array([detector.index[e.symbol] for e in episodes], dtype=np.int64)
        sums = detector.window_sums((window,), (), rows)
        return [
            episode_key(e.symbol, e.kind)
            for i, e in enumerate(episodes)
            if still_elevated(
                e, at, int(sums.total[i, 0]), int(sums.negative[i, 0]), self.detector_settings.for_symbol(e.symbol), settings
            )
        ]

    def _late(self, source: CountsSource) -> float:
        """Counts of minutes that left the guard zone, against what was read: add what is new."""
        detector = self.detector
        assert detector is not None
        span = detector.late_span()
        if span is None:
            return 0.0
        late = 0.0
        first, last = from_epoch_minute(span[0]), from_epoch_minute(span[1])
        for row in source.bin_counts(first, last, detector.bin_minutes):
            index = detector.index.get(row.symbol)
            if index is None:
                continue  # a ticker never seen in time: nothing of it is in the baseline yet
            bin_id = to_epoch_minute(row.bin_start) // detector.bin_minutes
            late += detector.add_late(index, bin_id, (row.total, row.negative, row.expected_negative))
        return late

    def _evaluate_pending(
        self, source: CountsSource, state: AlertState, clock: datetime, result: TickResult, wall: datetime
    ) -> None:
        """Evaluate the minutes after the last recorded one, as far as they have arrived."""
        detector = self.detector
        assert detector is not None and detector.last_minute is not None
        first = from_epoch_minute(detector.last_minute + 1)
        newest = floor_minute(clock)
        if newest < first:
            return
        counts = source.minute_counts(first, newest)
        minutes = [first + i * MINUTE for i in range(int((newest - first) / MINUTE) + 1)]
        pending = [minute_arrays(detector, m, counts.get(m, [])) for m in minutes]
        n = len(detector.symbols)
        pending = [_widen(p, n) for p in pending]
        market = market_wide(state, clock, self.lifecycle_settings)
        key = (detector.last_minute, to_epoch_minute(newest), market)
        if key == self._pending_key and len(self._pending_seen) == len(pending):
            # the same minutes and market state as the last tick: only symbols whose counts
            # changed can change
            before = [_widen(p, n) for p in self._pending_seen]
            changed = np.zeros(n, dtype=bool)
            for old, new in zip(before, pending, strict=True):
                changed |= (old.total != new.total) | (old.negative != new.negative) | (old.expected != new.expected)
            rows = np.nonzero(changed)[0]
        else:
            rows = np.arange(n)
        self._pending_key, self._pending_seen = key, pending
        if not len(rows):
            return
        alerts = evaluate(detector, self.detector_settings, pending, at=clock, rows=rows, market_wide=market)
        result.evaluated_pending = True
        self._apply_pending(state, clock, alerts, result, wall)
        if not market and market_wide(state, clock, self.lifecycle_settings):
            # these alerts opened a market-wide event: every ticker's surge so far meets the
            # joiners' bar now, not at its next post
            fired = [detector.index[a.symbol] for a in alerts if a.kind == NEGATIVE_SPIKE]
            rest = np.setdiff1d(np.arange(n), np.asarray(fired, dtype=np.int64))
            self._pending_key = (*key[:2], True)
            alerts = evaluate(detector, self.detector_settings, pending, at=clock, rows=rest, market_wide=True)
            self._apply_pending(state, clock, alerts, result, wall)

    def _apply_pending(
        self, state: AlertState, clock: datetime, alerts: list[Alert], result: TickResult, wall: datetime
    ) -> None:
        """The lifecycle takes an evaluation of the minutes so far (nothing is committed)."""
        result.notifications += advance(
            state, clock, self._with_examples(state, alerts), self.lifecycle_settings, commit=False, now=wall
        )

    def _with_examples(self, state: AlertState, alerts: list[Alert]) -> list[Alert]:
        """Attach example posts to the alerts that open an episode (the ones notified)."""
        if self._examples is None:
            return alerts
        return [
            a if episode_key(a.symbol, a.kind) in state.episodes else self._examples(a)
            for a in alerts
        ]

    def _minute_records(self, minute: datetime) -> list[MinuteRecord]:
        """What the detector compared each symbol with in the minute just recorded (symbols
        with posts in its longest window only)."""
        detector = self.detector
        assert detector is not None
        settings = self.detector_settings
        windows = (1, RECORD_WINDOW, settings.longest_window)
        sums = detector.window_sums(windows)
        active = np.nonzero(sums.total[:, 2] > 0)[0]
        if not len(active):
            return []
        base = baseline(detector, settings, windows)
        return [
            MinuteRecord(
                symbol=detector.symbols[i],
                minute=minute,
                stories=int(sums.total[i, 0]),
                negative=int(sums.negative[i, 0]),
                expected_negative=float(sums.expected[i, 0]),
                baseline_share=float(base.share[i, 0]),
                baseline_probability=float(base.probability_share[i, 0]),
                baseline_stories=float(base.volume_rate[i, 0]) if math.isfinite(base.volume_rate[i, 0]) else -1.0,
                information_gain=float(base.information_gain[i]),
                window_minutes=RECORD_WINDOW,
                window_stories=int(sums.total[i, 1]),
                window_negative=int(sums.negative[i, 1]),
                window_baseline_share=float(base.share[i, 1]),
            )
            for i in active.tolist()
        ]

    def next_wakeup(self, state: AlertState) -> datetime | None:
        """The latest moment by which the engine must tick again if nothing arrives (a held
        notification falls due); None: only arrivals and minute ends matter."""
        from alerting.lifecycle import next_due  # noqa: PLC0415 - keeps the import list short

        return next_due(state, self.lifecycle_settings)


def _widen(arrays: MinuteArrays, n: int) -> MinuteArrays:
    """Arrays built before symbols were added are shorter: pad them with zeros."""
    have = len(arrays.total)
    if have == n:
        return arrays
    pad = n - have
    return MinuteArrays(
        np.concatenate([arrays.total, np.zeros(pad, np.int64)]),
        np.concatenate([arrays.negative, np.zeros(pad, np.int64)]),
        np.concatenate([arrays.expected, np.zeros(pad)]),
    )
