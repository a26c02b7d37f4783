"""`moodwire backtest FILE`: replay scored posts through the detector and lifecycle.

Posts become per-minute counts by the rules every other number uses (moodwire.counting: scored,
unflagged posts; each ticker under the post's stance toward it; a story once per ticker and
minute), then every minute from the first to the last is stepped through `detector.step` and
`lifecycle.advance` in simulated time. What comes out is what would have been notified: the
first alert of each episode, in the order it fired. The live alert job reads the same counts
from the store, so both fire the same alerts on the same posts.

Input is what `moodwire classify` writes (the input post's fields passed through, plus scores
and per-ticker `targets`), or scored posts as the bus carries them.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from alerting.detector import (
    Alert,
    DetectorSettings,
    DetectorState,
    ExamplePost,
    from_epoch_minute,
    step,
)
from alerting.lifecycle import AlertState, LifecycleSettings, advance
from alerting.series import MinuteCounts
from moodwire.counting import StoryTally, votes_of
from moodwire.schema import parse_timestamp

_MAX_EXAMPLE_TEXT = 280


@dataclass
class PostTable:
    """What the replay needs from the posts, per symbol."""

    tally: StoryTally = field(default_factory=StoryTally)
    # symbol -> negative counted posts as (epoch minute, stance score, id, text, published_at)
    negatives: dict[str, list[tuple[int, float, str, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    read: int = 0
    duplicates: int = 0
    invalid: int = 0
    without_symbols: int = 0
    not_counted: int = 0  # unscored or flagged: stored but never counted
    problems: list[str] = field(default_factory=list)  # the first few reasons, for stderr


@dataclass(frozen=True)
class BacktestResult:
    alerts: list[Alert]
    posts_read: int
    duplicates: int
    invalid: int
    without_symbols: int
    not_counted: int
    minutes: int
    symbols: int
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
        if not table.tally.add(post_id, moment, votes, story_id=post.get("story_id"), status=status, flags=flags):
            table.not_counted += 1
            continue
        if all(v.symbol == "" for v in votes):
            table.without_symbols += 1
            continue
        minute = int(moment.timestamp()) // 60
        text = str(post.get("text") or "")[:_MAX_EXAMPLE_TEXT]
        for vote in votes:
            if vote.stance == "negative" and vote.symbol:
                table.negatives[vote.symbol].append((minute, vote.score, post_id, text, published))
    for posts in table.negatives.values():
        posts.sort(key=lambda p: p[0])
    return table


def minute_counts(table: PostTable) -> dict[int, list[MinuteCounts]]:
    """Epoch minute -> the counts of every symbol with posts in that minute."""
    by_minute: dict[int, list[MinuteCounts]] = defaultdict(list)
    for row in table.tally.totals():
        if not row.symbol:
            continue  # market-wide totals: the detector watches tickers
        by_minute[int(row.minute.timestamp()) // 60].append(
            MinuteCounts(
                row.symbol, row.minute, row.stories, row.negative, row.neutral, row.positive, row.expected_negative
            )
        )
    return by_minute


def replay(
    by_minute: dict[int, list[MinuteCounts]],
    detector_settings: DetectorSettings,
    lifecycle_settings: LifecycleSettings,
) -> list[Alert]:
    """Step every minute from the first to the last; return the alerts that would be sent."""
    if not by_minute:
        return []
    state = DetectorState(detector_settings)
    alert_state = AlertState()
    sent: list[Alert] = []
    first, last = min(by_minute), max(by_minute)
    for minute in range(first, last + 1):
        alerts = step(
            state, from_epoch_minute(minute), by_minute.get(minute, ()), detector_settings
        )
        notes = advance(alert_state, from_epoch_minute(minute + 1), alerts, lifecycle_settings)
        for note in notes:
            sent.extend(note.alerts)
        # nothing is delivered in a replay: keep the outbox from growing
        alert_state.outbox.clear()
    return sent


def with_examples(alert: Alert, table: PostTable, limit: int) -> Alert:
    """Attach the `limit` most negative posts of the alert's window."""
    if limit <= 0:
        return alert
    posts = table.negatives.get(alert.symbol, [])
    start = int(alert.window_start.timestamp()) // 60
    end = int(alert.fired_at.timestamp()) // 60
    lo = bisect_left(posts, start, key=lambda p: p[0])
    hi = bisect_left(posts, end, key=lambda p: p[0])
    chosen = sorted(posts[lo:hi], key=lambda p: (p[1], p[2]))[:limit]
    return replace(
        alert,
        examples=tuple(
            ExamplePost(
                id=p[2],
                text=p[3],
                polarity_score=p[1],
                published_at=datetime.fromisoformat(p[4]).astimezone(UTC),
            )
            for p in chosen
        ),
    )


def run(
    lines: Iterable[str],
    detector_settings: DetectorSettings | None = None,
    lifecycle_settings: LifecycleSettings | None = None,
    examples: int = 3,
) -> BacktestResult:
    detector_settings = detector_settings or DetectorSettings()
    lifecycle_settings = lifecycle_settings or LifecycleSettings()
    table = read_posts(lines)
    by_minute = minute_counts(table)
    alerts = replay(by_minute, detector_settings, lifecycle_settings)
    return BacktestResult(
        alerts=[with_examples(a, table, examples) for a in alerts],
        posts_read=table.read,
        duplicates=table.duplicates,
        invalid=table.invalid,
        without_symbols=table.without_symbols,
        not_counted=table.not_counted,
        minutes=(max(by_minute) - min(by_minute) + 1) if by_minute else 0,
        symbols=len({c.symbol for counts in by_minute.values() for c in counts}),
        problems=table.problems,
    )


def alert_record(alert: Alert) -> dict[str, Any]:
    """The JSON object written per alert (one per line)."""
    return {
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
            "window_total": alert.window_total,
            "window_negative": alert.window_negative,
            "window_share": round(alert.window_share, 4),
            "baseline_share": round(alert.baseline_share, 4),
            "share_ratio": _finite(alert.share_ratio),
            "expected_total": _finite(alert.expected_total),
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


def alert_lines(alerts: Iterable[Alert]) -> Iterator[str]:
    for alert in alerts:
        yield json.dumps(alert_record(alert), ensure_ascii=False)


def _finite(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
