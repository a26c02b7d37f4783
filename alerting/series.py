"""Per-minute, per-symbol polarity counts: the only input the detector sees."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)


def floor_minute(moment: datetime) -> datetime:
    """The start of the UTC minute that contains `moment` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """How many stories mentioning `symbol` were published in the minute starting at `minute`
    (counted as moodwire.counting defines: scored, unflagged, per-ticker stance, a story once).

    `total` may exceed the sum of the three polarities (posts not scored yet); it may never be
    smaller, because then a share would exceed 1.
    """

    symbol: str
    minute: datetime
    total: int
    negative: int
    neutral: int
    positive: int
    # The sum of P(negative) over the counted stories (moodwire.counting); None: only labels known.
    expected_negative: float | None = None

    def __post_init__(self) -> None:
        if self.minute.tzinfo is None or self.minute.utcoffset() != timedelta(0):
            raise ValueError(f"minute must be timezone-aware UTC, got {self.minute!r}")
        if self.minute.second or self.minute.microsecond:
            raise ValueError(f"minute must start a minute, got {self.minute.isoformat()}")
        if min(self.total, self.negative, self.neutral, self.positive) < 0:
            raise ValueError(f"counts must be >= 0 for {self.symbol} at {self.minute.isoformat()}")
        if self.negative + self.neutral + self.positive > self.total:
            raise ValueError(
                f"polarity counts exceed total for {self.symbol} at {self.minute.isoformat()}"
            )

    @property
    def negative_share(self) -> float:
        return self.negative / self.total if self.total else 0.0


def by_symbol(counts: Iterable[MinuteCounts]) -> dict[str, list[MinuteCounts]]:
    """Group counts per symbol, each list sorted by minute."""
    grouped: dict[str, list[MinuteCounts]] = defaultdict(list)
    for row in counts:
        grouped[row.symbol].append(row)
    return {symbol: sorted(rows, key=lambda r: r.minute) for symbol, rows in grouped.items()}


def by_minute(counts: Iterable[MinuteCounts]) -> dict[datetime, dict[str, MinuteCounts]]:
    """Group counts per minute (ascending), then per symbol: the shape `detector.step` takes.

    Two rows for the same symbol and minute are summed, so partial aggregates (for example two
    ClickHouse parts not merged yet) are safe to pass.
    """
    grouped: dict[datetime, dict[str, MinuteCounts]] = defaultdict(dict)
    for row in counts:
        bucket = grouped[row.minute]
        seen = bucket.get(row.symbol)
        bucket[row.symbol] = row if seen is None else merge(seen, row)
    return {minute: grouped[minute] for minute in sorted(grouped)}


def merge(a: MinuteCounts, b: MinuteCounts) -> MinuteCounts:
    if a.symbol != b.symbol or a.minute != b.minute:
        raise ValueError("can only merge counts of the same symbol and minute")
    expected = None
    if a.expected_negative is not None or b.expected_negative is not None:
        expected = (a.expected_negative or 0.0) + (b.expected_negative or 0.0)
    return MinuteCounts(
        symbol=a.symbol,
        minute=a.minute,
        total=a.total + b.total,
        negative=a.negative + b.negative,
        neutral=a.neutral + b.neutral,
        positive=a.positive + b.positive,
        expected_negative=expected,
    )


def minutes_between(first: datetime, last: datetime) -> list[datetime]:
    """Every minute from `first` to `last`, both included (empty when last < first)."""
    start, end = floor_minute(first), floor_minute(last)
    steps = int((end - start) / MINUTE)
    return [start + i * MINUTE for i in range(steps + 1)]
