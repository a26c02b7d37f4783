"""`moodwire backtest FILE`: replay scored posts through the alert job's own detection loop.

Posts become per-minute counts by the rules every other number uses (moodwire.counting: scored,
unflagged posts; each ticker under the post's stance toward it; a story once per ticker and
minute). They are replayed in the order they arrived (`scored_at`, when a post carries one and
it is not before `published_at`; otherwise `published_at`), and the same `DetectionEngine` the
alert job runs ticks through simulated time: at every moment the live job (which ticks every
`alert_interval_s`) could have seen something change. What comes out is what would have been
notified: the first alert of each episode, in the order it fired, with the notification that
announced it. The live job reads the same counts from the store, so both fire the same alerts
on the same posts (tests/integration/test_backtest_matches_job.py).

Input is what `moodwire classify` writes (the input post's fields passed through, plus scores
and per-ticker `targets`), or scored posts as the bus carries them.
"""

from __future__ import annotations

import heapq
import json
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from alerting.alert import Alert, ExamplePost
from alerting.detector_settings import DetectorSettings
from alerting.engine import BinCounts, DetectionEngine, EngineSettings, Watermark
from alerting.lifecycle import AlertState, LifecycleSettings, Notification
from alerting.series import MinuteCounts
from moodwire.counting import MinuteTotals, StoryTally, TickerVote, is_counted, story_key, votes_of
from moodwire.schema import parse_timestamp

_MAX_EXAMPLE_TEXT = 280
TICK_S = 5.0  # the alert job's default alert_interval_s


@dataclass(frozen=True)
class Arrival:
    """One counted post: when it became visible, and what it says about each ticker."""

    arrived: float  # unix seconds
    post_id: str
    published_at: datetime
    votes: tuple[TickerVote, ...]
    story_id: str | None


@dataclass
class PostTable:
    """What the replay needs from the posts."""

    arrivals: list[Arrival] = field(default_factory=list)
    # symbol -> negative counted posts as (epoch minute, stance score, id, text, published_at)
    negatives: dict[str, list[tuple[int, float, str, str, str, str]]] = field(default_factory=lambda: defaultdict(list))
    read: int = 0
    duplicates: int = 0
    invalid: int = 0
    without_symbols: int = 0
    not_counted: int = 0  # unscored or flagged: stored but never counted
    problems: list[str] = field(default_factory=list)  # the first few reasons, for stderr


@dataclass(frozen=True)
class BacktestResult:
    alerts: list[Alert]
    notifications: list[Notification]
    posts_read: int
    duplicates: int
    invalid: int
    without_symbols: int
    not_counted: int
    minutes: int
    symbols: int
    late_stories: float
    problems: list[str]


def read_posts(lines: Iterable[str], keep_problems: int = 5) -> PostTable:
    table = PostTable()
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        table.read += 1
        try:
            post = json.loads(line)
            if not isinstance(post, dict):
                raise ValueError("not a JSON object")
            if "error" in post and "polarity" not in post:
                raise ValueError(f"classify could not score it: {post['error']}")
            post_id = str(post["id"])
            published = str(post["published_at"])
            moment = parse_timestamp(published)
            arrived = moment
            if post.get("scored_at"):
                arrived = max(moment, parse_timestamp(post["scored_at"]))
            votes = votes_of(post)
            flags = post.get("flags") or ()
            status = post.get("status")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            table.invalid += 1
            if len(table.problems) < keep_problems:
                table.problems.append(f"line {number}: {type(exc).__name__}: {exc}")
            continue
        if post_id in seen:
            table.duplicates += 1
            continue
        seen.add(post_id)
        if not is_counted(status, flags):
            table.not_counted += 1
            continue
        if all(v.symbol == "" for v in votes):
            table.without_symbols += 1
            continue
        table.arrivals.append(Arrival(arrived.timestamp(), post_id, moment, tuple(votes), post.get("story_id")))
        minute = int(moment.timestamp()) // 60
        text = str(post.get("text") or "")[:_MAX_EXAMPLE_TEXT]
        for vote in votes:
            if vote.stance == "negative" and vote.symbol:
                table.negatives[vote.symbol].append(
                    (minute, vote.score, post_id, text, published, story_key(post_id, post.get("story_id")))
                )
    table.arrivals.sort(key=lambda a: (a.arrived, a.post_id))
    for posts in table.negatives.values():
        posts.sort(key=lambda p: p[0])
    return table


def _minute_counts(row: MinuteTotals) -> MinuteCounts:
    return MinuteCounts(row.symbol, row.minute, row.stories, row.negative, row.neutral, row.positive, row.expected_negative)


def minute_counts(table: PostTable) -> dict[int, list[MinuteCounts]]:
    """Epoch minute -> the counts of every symbol with posts in that minute (all posts)."""
    tally = StoryTally()
    for arrival in table.arrivals:
        tally.add(arrival.post_id, arrival.published_at, arrival.votes, story_id=arrival.story_id)
    by_minute: dict[int, list[MinuteCounts]] = defaultdict(list)
    for row in tally.totals():
        if row.symbol:  # market-wide totals: the detector watches tickers
            by_minute[int(row.minute.timestamp()) // 60].append(_minute_counts(row))
    return by_minute


class ArrivalReplay:
    """A `CountsSource` over the posts that have arrived by the replay's current moment."""

    def __init__(self, arrivals: list[Arrival], only_changed_bins: bool = True) -> None:
        self._arrivals = arrivals
        self._only_changed_bins = only_changed_bins
        self._next = 0
        self._tally = StoryTally()
        self._latest_published: datetime | None = None
        self._latest_arrival: datetime | None = None
        self._minutes: set[int] = set()
        self._counts: dict[int, list[MinuteCounts]] = {}  # per minute, until a post changes it
        # bins with minutes that changed since bin_counts last reported them
        self._changed_bins: dict[int, set[int]] = defaultdict(set)

    def arrive_until(self, moment: float) -> bool:
        """Let every post that arrived by `moment` (unix seconds) in; True if any did."""
        start = self._next
        while self._next < len(self._arrivals) and self._arrivals[self._next].arrived <= moment:
            post = self._arrivals[self._next]
            self._tally.add(post.post_id, post.published_at, post.votes, story_id=post.story_id)
            self._minutes.add(int(post.published_at.timestamp()) // 60)
            # its own minute, and the minute of a later copy of its story it now precedes
            for minute in self._tally.take_changed():
                self._counts.pop(minute, None)
                for bin_minutes, changed in self._changed_bins.items():
                    changed.add(minute // bin_minutes)
            if self._latest_published is None or post.published_at > self._latest_published:
                self._latest_published = post.published_at
            self._latest_arrival = datetime.fromtimestamp(post.arrived, UTC)
            self._next += 1
        return self._next > start

    def watermark(self) -> Watermark:
        return Watermark(self._next, self._latest_published, self._latest_arrival)

    def minute_counts(self, first: datetime, last: datetime) -> dict[datetime, list[MinuteCounts]]:
        out: dict[datetime, list[MinuteCounts]] = {}
        for minute in range(int(first.timestamp()) // 60, int(last.timestamp()) // 60 + 1):
            rows = self._of_minute(minute)
            if rows:
                out[rows[0].minute] = rows
        return out

    def _of_minute(self, minute: int) -> list[MinuteCounts]:
        if minute not in self._minutes:
            return []
        rows = self._counts.get(minute)
        if rows is None:
            rows = self._counts[minute] = [_minute_counts(r) for r in self._tally.minute_totals(minute) if r.symbol]
        return rows

    def bin_counts(self, first: datetime, last: datetime, bin_minutes: int) -> list[BinCounts]:
        """Only bins with a minute that changed since the last call are reported (unless
        `only_changed_bins` is off, as a store reports every bin): the engine compares with what
        it read, so an unchanged bin would add nothing."""
        changed = self._changed_bins.get(bin_minutes) if self._only_changed_bins else None
        self._changed_bins[bin_minutes] = set()
        lo, hi = int(first.timestamp()) // 60, int(last.timestamp()) // 60
        bins = sorted(changed) if changed is not None else range(lo // bin_minutes, hi // bin_minutes + 1)
        out = []
        for b in bins:
            sums: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
            for minute in range(max(lo, b * bin_minutes), min(hi, (b + 1) * bin_minutes - 1) + 1):
                for row in self._of_minute(minute):
                    cell = sums[row.symbol]
                    cell[0] += row.total
                    cell[1] += row.negative
                    cell[2] += row.expected_negative or 0.0
            start = datetime.fromtimestamp(b * bin_minutes * 60, UTC)
            out += [BinCounts(s, start, int(c[0]), int(c[1]), c[2]) for s, c in sorted(sums.items())]
        return out

    def earliest_minute(self, since: datetime) -> datetime | None:
        floor = int(since.timestamp()) // 60
        minutes = [m for m in self._minutes if m >= floor]
        return datetime.fromtimestamp(min(minutes) * 60, UTC) if minutes else None


def tick_moments(table: PostTable, engine_settings: EngineSettings, tick_s: float, tail: timedelta) -> Iterator[float]:
    """The grid moments (multiples of `tick_s`) at which something can change for the engine:
    arrivals, minute ends, and the moment a quiet stream hands the clock to the wall. Held
    notifications falling due are added by the caller as they appear."""
    if not table.arrivals:
        return
    grid = tick_s
    idle = engine_settings.idle_after.total_seconds()
    arrivals = [a.arrived for a in table.arrivals]
    moments: set[float] = set()
    for i, t in enumerate(arrivals):
        moments.add(math.ceil(t / grid) * grid)
        if i + 1 == len(arrivals) or arrivals[i + 1] > t + idle:
            moments.add(math.ceil((t + idle) / grid) * grid)
    first = min(a.published_at for a in table.arrivals).timestamp()
    last = max(arrivals[-1], max(a.published_at for a in table.arrivals).timestamp()) + tail.total_seconds()
    minute = math.floor(first / 60) * 60
    while minute <= last:
        moments.add(math.ceil(minute / grid) * grid)
        minute += 60
    yield from sorted(moments)


def replay(
    table: PostTable,
    detector_settings: DetectorSettings,
    lifecycle_settings: LifecycleSettings,
    engine_settings: EngineSettings | None = None,
    tick_s: float = TICK_S,
) -> tuple[list[Notification], float]:
    """Tick through the arrivals; return the notifications (in order) and the late stories."""
    engine_settings = engine_settings or EngineSettings(first_run_lookback=None)
    engine = DetectionEngine(detector_settings, lifecycle_settings, engine_settings)
    source = ArrivalReplay(table.arrivals)
    state = AlertState()
    notes: list[Notification] = []
    late = 0.0
    tail = engine_settings.lateness + timedelta(minutes=2) + timedelta(seconds=lifecycle_settings.group_wait_s)
    scheduled = list(tick_moments(table, engine_settings, tick_s, tail))
    due: list[float] = []
    i = 0
    while i < len(scheduled) or due:
        if due and (i >= len(scheduled) or due[0] < scheduled[i]):
            moment = heapq.heappop(due)
        else:
            moment = scheduled[i]
            i += 1
        while due and due[0] <= moment:
            heapq.heappop(due)
        source.arrive_until(moment)
        result = engine.tick(source, state, datetime.fromtimestamp(moment, UTC))
        notes += [n for n in result.notifications if n.status == "firing"]
        late += result.late_stories
        # nothing is delivered in a replay: keep the outbox from growing
        state.outbox.clear()
        wake = engine.next_wakeup(state)
        if wake is not None:
            heapq.heappush(due, math.ceil(max(wake.timestamp(), moment + tick_s) / tick_s) * tick_s)
    return notes, late


def with_examples(alert: Alert, table: PostTable, limit: int) -> Alert:
    """Attach the `limit` most negative posts of the alert's window."""
    if limit <= 0:
        return alert
    posts = table.negatives.get(alert.symbol, [])
    start = int(alert.window_start.timestamp()) // 60
    end = int(alert.fired_at.timestamp() - 1) // 60 + 1  # the minute that holds fired_at, included
    lo = bisect_left(posts, start, key=lambda p: p[0])
    hi = bisect_left(posts, end, key=lambda p: p[0])
    chosen: dict[str, ExamplePost] = {}  # one per story: three copies of one text are one piece of evidence
    for p in sorted(posts[lo:hi], key=lambda p: (p[1], p[2])):
        published = datetime.fromisoformat(p[4].replace("Z", "+00:00")).astimezone(UTC)
        if published < alert.fired_at and p[5] not in chosen:
            chosen[p[5]] = ExamplePost(id=p[2], text=p[3], polarity_score=p[1], published_at=published)
            if len(chosen) == limit:
                break
    return replace(alert, examples=tuple(chosen.values()))


def run(
    lines: Iterable[str],
    detector_settings: DetectorSettings | None = None,
    lifecycle_settings: LifecycleSettings | None = None,
    examples: int = 3,
    engine_settings: EngineSettings | None = None,
    tick_s: float = TICK_S,
) -> BacktestResult:
    detector_settings = detector_settings or DetectorSettings()
    lifecycle_settings = lifecycle_settings or LifecycleSettings()
    table = read_posts(lines)
    notes, late = replay(table, detector_settings, lifecycle_settings, engine_settings, tick_s)
    alerts = [with_examples(a, table, examples) for n in notes for a in n.alerts]
    minutes = {int(a.published_at.timestamp()) // 60 for a in table.arrivals}
    return BacktestResult(
        alerts=alerts,
        notifications=notes,
        posts_read=table.read,
        duplicates=table.duplicates,
        invalid=table.invalid,
        without_symbols=table.without_symbols,
        not_counted=table.not_counted,
        minutes=(max(minutes) - min(minutes) + 1) if minutes else 0,
        symbols=len({v.symbol for a in table.arrivals for v in a.votes if v.symbol}),
        late_stories=late,
        problems=table.problems,
    )


def alert_record(alert: Alert, notification: Notification | None = None) -> dict[str, Any]:
    """The JSON object written per alert (one per line)."""
    record: dict[str, Any] = {
        "symbol": alert.symbol,
        "kind": alert.kind,
        "fired_at": _rfc3339(alert.fired_at),
        "severity": alert.severity,
        "statistic": round(alert.statistic, 3),
        "p_value": float(f"{alert.p_value:.3g}"),
        "episode_id": alert.episode_id,
        "evidence": {
            "window_start": _rfc3339(alert.window_start),
            "window_minutes": alert.window_minutes,
            "window_posts": alert.window_posts,
            "window_negative": alert.window_negative,
            "window_share": round(alert.window_share, 4),
            "baseline_share": round(alert.baseline_share, 4),
            "share_ratio": _finite(alert.share_ratio),
            "expected_total": _finite(alert.expected_total),
            "expected_negative": alert.expected_negative,
            "examples": [
                {
                    "id": e.id,
                    "text": e.text,
                    "polarity_score": e.polarity_score,
                    "published_at": _rfc3339(e.published_at),
                }
                for e in alert.examples
            ],
        },
    }
    if notification is not None:
        record["notified_at"] = _rfc3339(notification.created_at)
        if notification.group is not None:
            record["group"] = {"group_id": notification.group.group_id, "symbols": list(notification.group.symbols)}
    return record


def alert_lines(alerts: Iterable[Alert], notifications: Iterable[Notification] = ()) -> Iterator[str]:
    by_episode = {a.episode_id: n for n in notifications for a in n.alerts}
    for alert in alerts:
        yield json.dumps(alert_record(alert, by_episode.get(alert.episode_id)), ensure_ascii=False)


def _finite(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
