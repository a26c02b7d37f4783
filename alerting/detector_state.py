"""Everything the detector remembers between minutes, as numpy arrays indexed [symbol, slot].

* a ring of the last `ring` minutes of counts (stories, negative stories, the sum of their
  P(negative)), running sums over the ring for window totals, and which of those minutes
  belong to a detected spike;
* `bin_minutes` bins of the counts older than the guard, covering `baseline_days` (about 1,000
  floats per symbol and array with the defaults), spike minutes left out: the baseline;
* per symbol, exponentially weighted moments of the minute sums of P(negative) over about a
  day: how much a story's probability varies, for probability evidence;
* for the last `late_horizon_minutes`, what was read per bin, so that posts arriving after
  their minute left the ring (late posts) can still be added to the baseline, once;
* per symbol, how far the baseline's own predictions of its bins missed (the share each bin
  was predicted to have when it closed, settled once the bin leaves the guard), as
  exponentially weighted sums over about a day: how much the share wanders beyond what the
  baseline foresees.

Rebuild it after a restart by recording the stored per-minute counts of the last
`baseline_days` days (what is lost is only which old minutes were spike minutes).

The state only stores and sums; alerting/detector.py decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from alerting.detector_settings import MINUTES_PER_DAY, DetectorSettings, SymbolSettings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_NO_BIN = -(10**12)
# A settled bin's squared standardized miss counts at most this much (4 sd): one spike the
# detector missed must not make a symbol look wandering for a day.
WANDER_CLIP = 16.0
T = TypeVar("T")


def _accumulate(arrays: tuple[FloatArray, ...], ids: IntArray, slot: int, bin_id: int, values: tuple[npt.ArrayLike, ...]) -> None:
    """Add per-symbol `values` to column `slot` of each array, after clearing it if the slot
    still holds an older bin (a ring of bins: slot = bin_id modulo its length)."""
    if ids[slot] != bin_id:
        ids[slot] = bin_id
        for array in arrays:
            array[:, slot] = 0.0
    for array, value in zip(arrays, values, strict=True):
        array[:, slot] += value


def to_epoch_minute(minute: datetime) -> int:
    return int(minute.timestamp()) // 60


def from_epoch_minute(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=UTC)


@dataclass(frozen=True)
class MinuteArrays:
    """One minute's counts for every symbol of the state, in its symbol order."""

    total: IntArray
    negative: IntArray
    expected: FloatArray  # sum of P(negative); the negative count where only labels are known

    @classmethod
    def zeros(cls, n: int) -> MinuteArrays:
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n))


@dataclass(frozen=True)
class WindowSums:
    """Totals over the last w minutes for each window w, shape [symbol, window]."""

    total: IntArray
    negative: IntArray
    expected: FloatArray


@dataclass(frozen=True)
class BaselineBins:
    """Where the baseline reads, for one evaluated minute (cached: it changes per bin)."""

    day: IntArray  # slots of the last day's bins
    time_of_day: IntArray  # slots of the `tod_bins` bins up to this clock time on each previous day, [day, k] flattened
    day_complete: BoolArray  # per previous day: all of its bins are still held
    day_start: IntArray  # per previous day: the first minute its bins cover


@dataclass(frozen=True)
class RecentBins:
    """The newest bins older than the guard, and the same clock-time bins on previous days:
    how the last hours went against what the baseline's history would have predicted."""

    recent: IntArray  # slots of the newest `count` bins older than the guard
    recent_held: BoolArray  # ... that hold those bins (not yet recorded: empty)
    history: IntArray  # slots of the same clock-time bins on each previous day, [day, bin] flattened
    held: BoolArray  # [day, bin]: that bin is still held (the oldest day's may have left the ring)


class DetectorState:
    def __init__(self, settings: DetectorSettings) -> None:
        self.shape = settings.state_shape
        self.guard = settings.guard_minutes
        self.ring = settings.guard_minutes + settings.longest_window + 2
        self.bin_minutes = settings.bin_minutes
        self.bins_per_day = MINUTES_PER_DAY // settings.bin_minutes
        self.baseline_days = settings.baseline_days
        # enough bins back to cover the longest window at this clock time
        self.tod_bins = -(-settings.longest_window // settings.bin_minutes) + 1
        self.n_bins = self.bins_per_day * settings.baseline_days + self.tod_bins + 2
        self.late_bins = -(-settings.late_horizon_minutes // settings.bin_minutes) + 2
        self.symbols: list[str] = []
        self.index: dict[str, int] = {}
        self.last_minute: int | None = None  # epoch minute of the newest recorded minute
        self.first_minute: int | None = None  # ... and of the first (nothing before it was seen)
        self.first_seen: IntArray = np.zeros(0, dtype=np.int64)
        # the ring
        self.total = np.zeros((0, self.ring), dtype=np.int64)
        self.negative = np.zeros((0, self.ring), dtype=np.int64)
        self.expected = np.zeros((0, self.ring))
        self.cum_total = np.zeros((0, self.ring), dtype=np.int64)
        self.cum_negative = np.zeros((0, self.ring), dtype=np.int64)
        self.cum_expected = np.zeros((0, self.ring))
        self.in_spike = np.zeros((0, self.ring), dtype=bool)
        # the baseline bins
        self.bin_total = np.zeros((0, self.n_bins))
        self.bin_negative = np.zeros((0, self.n_bins))
        self.bin_expected = np.zeros((0, self.n_bins))
        self.bin_kept = np.zeros((0, self.n_bins))  # minutes counted (not in a spike)
        self.bin_ids = np.full(self.n_bins, _NO_BIN, dtype=np.int64)
        # exponentially weighted (about a day) moments of a kept minute's n and s = sum P(negative)
        self.moments = np.zeros((0, 5))  # columns: n, s, s*s, n*s, n*n
        self.moment_decay = math.exp(-1.0 / MINUTES_PER_DAY)
        # what was read per bin, for late posts
        self.read_total = np.zeros((0, self.late_bins))
        self.read_negative = np.zeros((0, self.late_bins))
        self.read_expected = np.zeros((0, self.late_bins))
        self.read_minutes = np.zeros(self.late_bins)  # minutes moved into each bin so far
        self.read_ids = np.full(self.late_bins, _NO_BIN, dtype=np.int64)
        # the share predicted for each bin as it closed, until the bin leaves the guard (0: none)
        self.prediction_slots = -(-settings.guard_minutes // settings.bin_minutes) + 3
        self.predicted = np.zeros((0, self.prediction_slots))
        self.predicted_ids = np.full(self.prediction_slots, _NO_BIN, dtype=np.int64)
        # decayed (about a day of bins) sums of (n - 1) * (z^2 - 1) and (n - 1)^2 over settled bins
        self.wander = np.zeros((0, 2))
        self.wander_decay = math.exp(-1.0 / self.bins_per_day)
        self._params_for: tuple[int, int] | None = None
        self._params: dict[str, npt.NDArray[Any]] = {}
        self._bins_key: tuple[int, int] | None = None
        self._bins: BaselineBins | None = None
        # bumped whenever counts, bins or symbols change: what a cached result depends on
        self.revision = 0
        self._cache: dict[Any, Any] = {}
        self._cache_revision = -1

    def cached(self, key: Any, compute: Callable[[], T]) -> T:
        """`compute()`, remembered until the state changes (e.g. one baseline for every
        evaluation of the minutes so far within a minute)."""
        if self._cache_revision != self.revision:
            self._cache.clear()
            self._cache_revision = self.revision
        if key not in self._cache:
            self._cache[key] = compute()
        result: T = self._cache[key]
        return result

    def check(self, settings: DetectorSettings) -> None:
        if settings.state_shape != self.shape:
            raise ValueError("settings changed the state's shape; build a new DetectorState")

    # ------------------------------------------------------------------------------ symbols

    def add_symbols(self, names: list[str], minute: int) -> None:
        if not names:
            return
        self.revision += 1
        n = len(names)
        for name in names:
            self.index[name] = len(self.symbols)
            self.symbols.append(name)
        self.first_seen = np.concatenate([self.first_seen, np.full(n, minute, dtype=np.int64)])
        # running sums of a new symbol continue from its first minute: zeros are consistent
        for f in (
            "total", "negative", "expected", "cum_total", "cum_negative", "cum_expected", "in_spike",
            "bin_total", "bin_negative", "bin_expected", "bin_kept", "moments",
            "read_total", "read_negative", "read_expected", "predicted", "wander",
        ):
            old = getattr(self, f)
            setattr(self, f, np.concatenate([old, np.zeros((n, old.shape[1]), old.dtype)]))

    def arrays(self, rows: dict[str, tuple[int, int, float]], minute: int) -> MinuteArrays:
        """Per-symbol (total, negative, expected) as arrays in state order; symbols not seen
        before are added, first seen in `minute`."""
        self.add_symbols(sorted(rows.keys() - self.index.keys()), minute)
        out = MinuteArrays.zeros(len(self.symbols))
        for symbol, (total, negative, expected) in rows.items():
            i = self.index[symbol]
            out.total[i], out.negative[i], out.expected[i] = total, negative, expected
        return out

    def params(self, settings: DetectorSettings) -> dict[str, npt.NDArray[Any]]:
        """Every SymbolSettings field as an array over the symbols (cached per settings object)."""
        key = (id(settings), len(self.symbols))
        if self._params_for != key:
            per = [settings.for_symbol(s) for s in self.symbols]
            self._params = {
                f.name: np.array([getattr(p, f.name) for p in per], dtype=np.float64) for f in fields(SymbolSettings)
            }
            self._params_for = key
        return self._params

    # ------------------------------------------------------------------------------ recording

    def record(self, t: int, counts: MinuteArrays | None) -> None:
        """Record minute `t` (the next one: last_minute + 1, or the first); None: no posts."""
        self.revision += 1
        slot, prev = t % self.ring, (t - 1) % self.ring
        if counts is None:
            self.total[:, slot] = 0
            self.negative[:, slot] = 0
            self.expected[:, slot] = 0.0
        else:
            self.total[:, slot], self.negative[:, slot], self.expected[:, slot] = (
                counts.total, counts.negative, counts.expected,
            )
        self.in_spike[:, slot] = False
        if self.last_minute is None:
            self.cum_total[:, prev] = self.cum_negative[:, prev] = 0
            self.cum_expected[:, prev] = 0.0
        self.cum_total[:, slot] = self.cum_total[:, prev] + self.total[:, slot]
        self.cum_negative[:, slot] = self.cum_negative[:, prev] + self.negative[:, slot]
        self.cum_expected[:, slot] = self.cum_expected[:, prev] + self.expected[:, slot]
        self.last_minute = t
        if self.first_minute is None:
            self.first_minute = t
        if t - self.guard >= self.first_minute:  # minutes before the first were never seen
            self._leave_guard(t - self.guard)

    def revise(self, t: int, counts: MinuteArrays) -> bool:
        """Replace the counts of minute `t` while it is still in the guard zone (late posts add
        evidence to the windows that still cover it); False when it has left the ring's guard."""
        assert self.last_minute is not None
        if not self.last_minute - self.guard < t <= self.last_minute:
            return False
        slot = t % self.ring
        d_total = counts.total - self.total[:, slot]
        d_negative = counts.negative - self.negative[:, slot]
        d_expected = counts.expected - self.expected[:, slot]
        if not (d_total.any() or d_negative.any() or d_expected.any()):
            return True
        self.revision += 1
        self.total[:, slot], self.negative[:, slot], self.expected[:, slot] = (
            counts.total, counts.negative, counts.expected,
        )
        later = (np.arange(t, self.last_minute + 1)) % self.ring
        self.cum_total[:, later] += d_total[:, None]
        self.cum_negative[:, later] += d_negative[:, None]
        self.cum_expected[:, later] += d_expected[:, None]
        return True

    def _leave_guard(self, u: int) -> None:
        """Minute u leaves the guard zone: into the baseline unless it was part of a spike."""
        b = u // self.bin_minutes
        uslot = u % self.ring
        n, k, s = self.total[:, uslot], self.negative[:, uslot], self.expected[:, uslot]
        keep = ~self.in_spike[:, uslot]
        baseline = (self.bin_total, self.bin_negative, self.bin_expected, self.bin_kept)
        _accumulate(baseline, self.bin_ids, b % self.n_bins, b, (n * keep, k * keep, s * keep, keep))
        # moments of minutes with posts only: quiet minutes say nothing about a story's spread
        seen = keep & (n > 0)
        step = np.stack([n, s, s * s, n * s, n * n], axis=1).astype(np.float64)
        self.moments *= self.moment_decay
        self.moments[seen] += step[seen]
        # the read record for late posts, spike minutes included
        rslot = b % self.late_bins
        if self.read_ids[rslot] != b:
            self.read_minutes[rslot] = 0.0
        _accumulate((self.read_total, self.read_negative, self.read_expected), self.read_ids, rslot, b, (n, k, s))
        self.read_minutes[rslot] += 1
        if (u + 1) % self.bin_minutes == 0:
            self._settle(b)

    def predict(self, bin_id: int, share: FloatArray) -> None:
        """The share the baseline expected of bin `bin_id` when it closed, per symbol; settled
        against the bin's counts when the bin leaves the guard (spike minutes known by then)."""
        slot = bin_id % self.prediction_slots
        self.predicted[:, slot] = share
        self.predicted_ids[slot] = bin_id

    def _settle(self, b: int) -> None:
        """Bin b left the guard: add how far its prediction missed to each symbol's wander sums
        (whole bins with 2+ stories and no spike minute only)."""
        slot, bslot = b % self.prediction_slots, b % self.n_bins
        if self.predicted_ids[slot] != b or self.bin_ids[bslot] != b:
            return
        self.predicted_ids[slot] = _NO_BIN
        p = self.predicted[:, slot]
        n, k = self.bin_total[:, bslot], self.bin_negative[:, bslot]
        settled = (self.bin_kept[:, bslot] == self.bin_minutes) & (n >= 2) & (p > 0) & (p < 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            z2 = np.minimum((k - n * p) ** 2 / (n * p * (1 - p)), WANDER_CLIP)
        self.wander *= self.wander_decay
        self.wander[settled, 0] += ((n - 1) * (z2 - 1))[settled]
        self.wander[settled, 1] += ((n - 1) ** 2)[settled]

    def late_span(self) -> tuple[int, int] | None:
        """Minutes [first, last] that left the guard zone and are still in the read record,
        from the start of a bin (or the first minute seen)."""
        if self.last_minute is None or self.first_minute is None:
            return None
        last = self.last_minute - self.guard
        if last < self.first_minute:
            return None
        first_bin = last // self.bin_minutes - (self.late_bins - 3)
        return max(self.first_minute, first_bin * self.bin_minutes), last

    def add_late(self, symbol: int, bin_id: int, fresh: tuple[float, float, float]) -> float:
        """Fresh counts of a bin of the read record: add what is new to the baseline (unless the
        bin held spike minutes); return the stories that arrived late (0 if nothing changed)."""
        rslot = bin_id % self.late_bins
        if self.read_ids[rslot] != bin_id:
            return 0.0
        d_total = fresh[0] - self.read_total[symbol, rslot]
        d_negative = fresh[1] - self.read_negative[symbol, rslot]
        d_expected = fresh[2] - self.read_expected[symbol, rslot]
        if not (d_total or d_negative or abs(d_expected) > 1e-6):
            return 0.0
        self.revision += 1
        self.read_total[symbol, rslot] += d_total
        self.read_negative[symbol, rslot] += d_negative
        self.read_expected[symbol, rslot] += d_expected
        bslot = bin_id % self.n_bins
        if self.bin_ids[bslot] == bin_id and self.bin_kept[symbol, bslot] == self.read_minutes[rslot]:
            self.bin_total[symbol, bslot] += d_total
            self.bin_negative[symbol, bslot] += d_negative
            self.bin_expected[symbol, bslot] += d_expected
        return max(0.0, float(d_total))

    def mark_spike(self, symbol: int, window: int) -> None:
        """The last `window` minutes of `symbol` were a spike: keep them out of the baseline."""
        assert self.last_minute is not None
        self.in_spike[symbol, (self.last_minute - np.arange(window)) % self.ring] = True

    # ------------------------------------------------------------------------------ reading

    def window_sums(
        self, windows: tuple[int, ...], pending: Sequence[MinuteArrays] = (), rows: IntArray | None = None
    ) -> WindowSums:
        """Sums over the last w minutes for every window w, [symbol (or `rows`), window]: the
        `pending` minutes after the last recorded one (minutes so far, not recorded), then
        recorded minutes back from the last."""
        assert self.last_minute is not None
        t = self.last_minute
        w = np.asarray(windows)
        p = len(pending)
        recorded = np.maximum(w - p, 0)
        slot = t % self.ring
        back = (t - recorded) % self.ring
        pick = slice(None) if rows is None else rows
        cum_t, cum_k, cum_s = self.cum_total[pick], self.cum_negative[pick], self.cum_expected[pick]
        total = cum_t[:, slot][:, None] - cum_t[:, back]
        negative = cum_k[:, slot][:, None] - cum_k[:, back]
        expected = cum_s[:, slot][:, None] - cum_s[:, back]
        if p:
            # newest first: pending minute j (0 = newest) belongs to every window longer than j
            covered = np.minimum(w, p)
            for values, out in (("total", total), ("negative", negative), ("expected", expected)):
                stack = np.stack([getattr(m, values)[pick] for m in reversed(pending)], axis=1)
                running = np.concatenate([np.zeros((len(stack), 1), stack.dtype), np.cumsum(stack, axis=1)], axis=1)
                out += running[:, covered]
        return WindowSums(total, negative, expected)

    def baseline_bins(self, t: int) -> BaselineBins:
        """The bins a baseline for minute `t` reads (t: the evaluated minute, the last recorded
        one or a pending one after it). Cached until a bin boundary passes."""
        assert self.last_minute is not None
        key = ((self.last_minute - self.guard) // self.bin_minutes, t // self.bin_minutes)
        if self._bins_key == key and self._bins is not None:
            return self._bins
        ids = self.bin_ids
        b_u = key[0]
        day = np.nonzero((ids > b_u - self.bins_per_day) & (ids <= b_u))[0]
        now = np.array([(t - d * MINUTES_PER_DAY) // self.bin_minutes for d in range(1, self.baseline_days + 1)])
        wanted_ids = now[:, None] - np.arange(self.tod_bins)[None, :]  # [day, k]
        slots = wanted_ids % self.n_bins
        self._bins = BaselineBins(
            day=day,
            time_of_day=slots.reshape(-1),
            day_complete=(ids[slots] == wanted_ids).all(axis=1),
            day_start=wanted_ids[:, -1] * self.bin_minutes,
        )
        self._bins_key = key
        return self._bins

    def recent_bins(self, count: int) -> RecentBins:
        """The `count` newest bins older than the guard, with their history."""
        assert self.last_minute is not None
        newest = (self.last_minute - self.guard) // self.bin_minutes
        ids = newest - np.arange(count)[::-1]
        recent = ids % self.n_bins
        wanted = ids[None, :] - self.bins_per_day * np.arange(1, self.baseline_days + 1)[:, None]  # [day, bin]
        slots = wanted % self.n_bins
        return RecentBins(
            recent=recent,
            recent_held=self.bin_ids[recent] == ids,
            history=slots.reshape(-1),
            held=self.bin_ids[slots] == wanted,
        )
