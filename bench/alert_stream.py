"""Seeded multi-day streams of scored posts with known negative spikes and decoys.

What a stream has (all numbers are drawn from `StreamConfig.seed`):

* regular symbols, each with its own volume (0.25-8 posts/min on average), a diurnal volume
  curve (quiet nights, a European bump, a US-session peak, quieter weekends), its own negative
  and positive shares with a time-of-day swing, a slow random drift and minute-to-minute
  over-dispersion (shares are not exactly binomial in real feeds);
* thin symbols (7-60 posts a day) whose shares are noisy, with occasional clusters of a few
  negative posts in a couple of minutes (one angry account);
* injected negative spikes: the negative share multiplied by 1.5-4.5x for 10-90 minutes, with
  2.5-25x the volume (a profile changes that), some ramping up over 1-3 minutes. A spike "qualifies" (issue 5's target) when
  it at least doubles the share, lasts >= 10 minutes and brings >= 12 negative posts in its
  first 10 minutes; the others are real but sub-target, and alerts on them are not false;
* decoys on regular symbols: volume bursts (3-15x volume, unchanged share) and positive spikes
  (more volume, a much larger positive share, a lower negative share).

Events of one symbol never overlap (>= 4 hours apart), and none fall in the warm-up days, so
every alert can be attributed. Posts come out as JSONL lines in the backtest's input format,
with a share of exact duplicates (same id) appended, as a replayed feed would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

EventKind = Literal["negative-spike", "volume-burst", "positive-spike", "thin-cluster"]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MINUTES_PER_DAY = 1440
_NEGATIVE_EMOTIONS = ("anger", "fear", "sadness", "disgust")
_POSITIVE_EMOTIONS = ("joy", "surprise")


@dataclass(frozen=True)
class StreamConfig:
    seed: int = 1
    days: int = 8
    warmup_days: int = 1
    symbols: int = 40
    thin_symbols: int = 10
    start: datetime = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
    negative_spikes_per_symbol_day: float = 0.8
    volume_bursts_per_symbol_day: float = 0.5
    positive_spikes_per_symbol_day: float = 0.5
    thin_clusters_per_symbol_day: float = 1.0
    duplicate_fraction: float = 0.01
    min_event_gap_minutes: int = 240
    overdispersion: float = 600.0  # Beta concentration of the per-minute share
    drift_sd: float = 0.07  # slow random drift of the shares, on the logit scale
    burst_share_sd: float = 0.05  # how much a volume burst's own share differs (logit)
    spike_ratio: tuple[float, float] = (1.5, 4.5)  # negative share x, uniform
    spike_volume: tuple[float, float] = (2.5, 25.0)  # volume x, log-uniform


# The default ("issue") is set so that issue 5's plain binomial baseline lands near the figures
# the issue quotes for it (recall ~0.95, ~4 min median delay); "strong" has the same noise and
# news spikes that bring more posts (4-40x), where a 3-minute median is reachable at all.
PROFILES: dict[str, dict[str, Any]] = {
    "issue": {},
    "strong": {"spike_volume": (4.0, 40.0)},
}


@dataclass(frozen=True)
class Event:
    symbol: str
    kind: EventKind
    onset: int  # minute index from the stream start
    minutes: int
    base_share: float  # negative share just before the onset
    event_share: float  # negative share on the plateau
    volume_factor: float
    negatives_first_10: int  # realised negative posts in the first 10 minutes
    qualifies: bool  # negative spikes only: issue 5's target population


@dataclass
class Stream:
    config: StreamConfig
    symbols: list[str]
    thin: list[str]
    # realised counts, shape [symbol, minute]
    total: IntArray
    negative: IntArray
    positive: IntArray
    events: list[Event]

    @property
    def minutes(self) -> int:
        return int(self.total.shape[1])

    @property
    def evaluated_symbol_days(self) -> float:
        days = self.config.days - self.config.warmup_days
        return float(len(self.symbols) * days)

    @property
    def evaluation_start(self) -> int:
        return self.config.warmup_days * MINUTES_PER_DAY

    def minute_start(self, minute: int) -> int:
        """Epoch minute of a stream minute index."""
        return int(self.config.start.timestamp()) // 60 + minute

    def jsonl(self) -> Iterator[str]:
        """The posts, one JSON object per line (duplicates at the end)."""
        return _posts(self)


def generate(config: StreamConfig) -> Stream:
    rng = np.random.default_rng(config.seed)
    minutes = config.days * MINUTES_PER_DAY
    regular = [f"R{i:03d}" for i in range(config.symbols)]
    thin = [f"T{i:03d}" for i in range(config.thin_symbols)]
    profile = _diurnal_volume(config, minutes)

    drawn = []
    for name in regular:
        rate = float(np.clip(rng.lognormal(math.log(0.8), 0.7), 0.25, 8.0))
        drawn.append(_regular_symbol(rng, config, name, rate, profile))
    for name in thin:
        rate = float(rng.uniform(0.005, 0.04))
        drawn.append(_thin_symbol(rng, config, name, rate, profile))
    totals, negatives, positives = ([d[i] for d in drawn] for i in range(3))
    events = [event for d in drawn for event in d[3]]
    return Stream(
        config=config,
        symbols=regular + thin,
        thin=thin,
        total=np.array(totals),
        negative=np.array(negatives),
        positive=np.array(positives),
        events=sorted(events, key=lambda e: (e.onset, e.symbol)),
    )


def _diurnal_volume(config: StreamConfig, minutes: int) -> FloatArray:
    m = np.arange(minutes)
    hour = (m % MINUTES_PER_DAY) / 60.0
    curve = (
        0.25
        + 0.5 * np.exp(-0.5 * ((hour - 9.0) / 2.0) ** 2)
        + 1.8 * np.exp(-0.5 * ((hour - 17.0) / 3.0) ** 2)
    )
    weekday = (config.start.weekday() + m // MINUTES_PER_DAY) % 7
    curve = curve * np.where(weekday >= 5, 0.5, 1.0)
    result: FloatArray = curve / curve.mean()
    return result


def _logit(p: FloatArray | float) -> FloatArray:
    return np.log(np.asarray(p) / (1.0 - np.asarray(p)))


def _expit(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


def _drift(rng: np.random.Generator, minutes: int, sd: float, tau: float) -> FloatArray:
    """AR(1) with stationary sd `sd` and correlation time `tau` minutes."""
    phi = math.exp(-1.0 / tau)
    noise = rng.normal(0.0, sd * math.sqrt(1 - phi * phi), minutes)
    out = np.empty(minutes)
    x = rng.normal(0.0, sd)
    for i in range(minutes):  # 10k steps per symbol: fast enough, and obviously right
        x = phi * x + noise[i]
        out[i] = x
    return out


def _shares(
    rng: np.random.Generator, config: StreamConfig, minutes: int
) -> tuple[FloatArray, FloatArray]:
    """Expected negative and positive share per minute, before events."""
    m = np.arange(minutes)
    hour = (m % MINUTES_PER_DAY) / 60.0
    base_neg, base_pos = rng.uniform(0.12, 0.35), rng.uniform(0.2, 0.4)
    swing, phase = rng.uniform(0.0, 0.35), rng.uniform(0.0, 24.0)
    daily = np.repeat(rng.normal(0.0, 0.1, config.days), MINUTES_PER_DAY)[:minutes]
    neg_logit = (
        _logit(base_neg)
        + swing * np.sin(2 * np.pi * (hour - phase) / 24.0)
        + daily
        + _drift(rng, minutes, config.drift_sd, 240.0)
    )
    pos_logit = _logit(base_pos) + _drift(rng, minutes, config.drift_sd, 240.0)
    neg, pos = _expit(neg_logit), _expit(pos_logit)
    return neg, np.minimum(pos, 0.95 - neg)


def _schedule(
    rng: np.random.Generator,
    config: StreamConfig,
    weights: FloatArray,
    kinds: list[tuple[EventKind, float]],
) -> list[tuple[EventKind, int]]:
    """Onsets per kind, drawn where people post (weights), never closer than the gap."""
    minutes = len(weights)
    lo = config.warmup_days * MINUTES_PER_DAY + 60
    hi = minutes - 150
    w = np.zeros(minutes)
    w[lo:hi] = weights[lo:hi]
    w /= w.sum()
    days = config.days - config.warmup_days
    wanted = [(kind, rate) for kind, rate in kinds for _ in range(rng.poisson(rate * days))]
    rng.shuffle(wanted)  # type: ignore[arg-type, unused-ignore]
    taken: list[int] = []
    out: list[tuple[EventKind, int]] = []
    for kind, _ in wanted:
        for _attempt in range(20):
            onset = int(rng.choice(minutes, p=w))
            if all(abs(onset - t) >= config.min_event_gap_minutes for t in taken):
                taken.append(onset)
                out.append((kind, onset))
                break
    return out


def _regular_symbol(
    rng: np.random.Generator,
    config: StreamConfig,
    name: str,
    rate: float,
    profile: FloatArray,
) -> tuple[IntArray, IntArray, IntArray, list[Event]]:
    minutes = len(profile)
    day_level = np.repeat(rng.lognormal(0.0, 0.2, config.days), MINUTES_PER_DAY)[:minutes]
    volume = rate * profile * day_level
    neg, pos = _shares(rng, config, minutes)
    plan = _schedule(
        rng,
        config,
        profile,
        [
            ("negative-spike", config.negative_spikes_per_symbol_day),
            ("volume-burst", config.volume_bursts_per_symbol_day),
            ("positive-spike", config.positive_spikes_per_symbol_day),
        ],
    )
    shaped: list[tuple[EventKind, int, int, float, float, float]] = []
    for kind, onset in plan:
        base = float(neg[onset])
        if kind == "negative-spike":
            length = int(rng.integers(10, 91))
            ratio = rng.uniform(*config.spike_ratio)
            lo, hi = config.spike_volume
            factor = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            target = min(0.9, base * ratio)
            ramp = int(rng.integers(1, 4)) if rng.random() < 0.3 else 0
            _apply(volume, neg, pos, onset, length, ramp, factor, target, None)
        elif kind == "volume-burst":
            length = int(rng.integers(10, 61))
            factor = rng.uniform(3.0, 15.0)
            # the burst's own posts differ a little, as a real crowd would, but not by much
            target = float(_expit(_logit(base) + rng.normal(0.0, config.burst_share_sd)))
            _apply(volume, neg, pos, onset, length, 0, factor, target, None)
        else:  # positive spike
            length = int(rng.integers(10, 61))
            factor = rng.uniform(1.5, 6.0)
            target = base * rng.uniform(0.5, 1.0)
            pos_target = min(0.85, float(pos[onset]) * rng.uniform(1.8, 3.0))
            _apply(volume, neg, pos, onset, length, 0, factor, target, pos_target)
        shaped.append((kind, onset, length, base, target, factor))

    total, negative, positive = _draw(rng, config, volume, neg, pos)
    events = []
    for kind, onset, length, base, target, factor in shaped:
        first_10 = int(negative[onset : onset + 10].sum())
        qualifies = (
            kind == "negative-spike" and target >= 2 * base and length >= 10 and first_10 >= 12
        )
        events.append(Event(name, kind, onset, length, base, target, factor, first_10, qualifies))
    return total, negative, positive, events


def _apply(
    volume: FloatArray,
    neg: FloatArray,
    pos: FloatArray,
    onset: int,
    length: int,
    ramp: int,
    factor: float,
    neg_target: float,
    pos_target: float | None,
) -> None:
    """Overwrite the event's minutes in place (a ramp interpolates its first minutes)."""
    end = min(len(volume), onset + length)
    span = np.arange(onset, end)
    weight = np.minimum(1.0, (span - onset + 1) / (ramp + 1)) if ramp else np.ones(len(span))
    volume[span] *= 1.0 + (factor - 1.0) * weight
    old_neg = neg[span].copy()
    neg[span] = old_neg + (neg_target - old_neg) * weight
    if pos_target is None:
        # the other polarities make room in proportion
        pos[span] = pos[span] * (1.0 - neg[span]) / (1.0 - old_neg)
    else:
        pos[span] = np.minimum(pos[span] + (pos_target - pos[span]) * weight, 0.97 - neg[span])


def _draw(
    rng: np.random.Generator,
    config: StreamConfig,
    volume: FloatArray,
    neg: FloatArray,
    pos: FloatArray,
) -> tuple[IntArray, IntArray, IntArray]:
    c = config.overdispersion
    neg_m = rng.beta(neg * c, (1.0 - neg) * c)
    # positive share among the posts that are not negative
    pos_share = np.clip(pos / np.maximum(1.0 - neg, 1e-9), 0.0, 1.0)
    total = rng.poisson(volume)
    negative = rng.binomial(total, neg_m)
    positive = rng.binomial(total - negative, pos_share)
    return total.astype(np.int64), negative.astype(np.int64), positive.astype(np.int64)


def _thin_symbol(
    rng: np.random.Generator,
    config: StreamConfig,
    name: str,
    rate: float,
    profile: FloatArray,
) -> tuple[IntArray, IntArray, IntArray, list[Event]]:
    minutes = len(profile)
    volume = rate * profile
    share = rng.uniform(0.1, 0.5)
    neg = np.full(minutes, share)
    pos = np.full(minutes, min(0.9 - share, rng.uniform(0.2, 0.4)))
    total, negative, positive = _draw(rng, config, volume, neg, pos)
    events = []
    for _kind, onset in _schedule(
        rng, config, profile, [("thin-cluster", config.thin_clusters_per_symbol_day)]
    ):
        length = int(rng.integers(1, 6))
        extra = int(rng.integers(3, 7))
        where = onset + rng.integers(0, length, extra)
        np.add.at(total, where, 1)
        np.add.at(negative, where, 1)
        events.append(Event(name, "thin-cluster", onset, length, share, 1.0, 1.0, extra, False))
    return total, negative, positive, events


def _posts(stream: Stream) -> Iterator[str]:
    rng = np.random.default_rng(stream.config.seed + 1_000_003)
    start = int(stream.config.start.timestamp())
    seed = stream.config.seed
    duplicates: list[str] = []
    counter = 0
    for s, symbol in enumerate(stream.symbols):
        total, negative, positive = stream.total[s], stream.negative[s], stream.positive[s]
        minute = np.repeat(np.arange(stream.minutes), total)
        # polarity per post: within each minute the first `negative` are negative, and so on
        offset = np.arange(len(minute)) - np.repeat(np.cumsum(total) - total, total)
        neg_n = np.repeat(negative, total)
        pos_n = np.repeat(positive, total)
        polarity = np.where(offset < neg_n, 0, np.where(offset < neg_n + pos_n, 2, 1))
        seconds = rng.integers(0, 60, len(minute))
        score = np.where(
            polarity == 0,
            rng.uniform(-0.99, -0.3, len(minute)),
            np.where(
                polarity == 2,
                rng.uniform(0.3, 0.99, len(minute)),
                rng.uniform(-0.3, 0.3, len(minute)),
            ),
        )
        dup = rng.random(len(minute)) < stream.config.duplicate_fraction
        pick = rng.integers(0, 4, len(minute))
        for i in range(len(minute)):
            moment = datetime.fromtimestamp(start + 60 * int(minute[i]) + int(seconds[i]), UTC)
            pol = int(polarity[i])
            if pol == 0:
                label, emotion, text = (
                    "negative",
                    _NEGATIVE_EMOTIONS[pick[i]],
                    f"${symbol} looks bad",
                )
            elif pol == 2:
                label, emotion, text = (
                    "positive",
                    _POSITIVE_EMOTIONS[pick[i] % 2],
                    f"${symbol} to the moon",
                )
            else:
                label, emotion, text = "neutral", "neutral", f"${symbol} trading today"
            line = (
                f'{{"id":"bench:{seed}:{counter}","published_at":"{moment:%Y-%m-%dT%H:%M:%SZ}",'
                f'"symbols":["{symbol}"],"polarity":"{label}","polarity_score":{score[i]:.3f},'
                f'"emotion":"{emotion}","text":"{text}"}}'
            )
            counter += 1
            yield line
            if dup[i]:
                duplicates.append(line)
    yield from duplicates
