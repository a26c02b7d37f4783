"""`moodwire backtest` and the live alert job are one code path: the same scored posts (per-ticker
targets, stories carried by two outlets in one minute or several, a story's first copy arriving
late, spam flags, an unscored post, duplicates, late and
very late arrivals, a spike, a market-wide sell-off) give the same alerts, at the same moments,
in the same notifications.

The job runs on the real ClickHouse server the fixtures start, with a clock that moves every
`alert_interval_s` (every grid moment, not only the ones the backtest visits); each post is
inserted when it arrives (its inserted_at is its arrival), so the job sees what a live one
would have seen.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerting import backtest
from alerting.alert import Alert
from alerting.detector_settings import DetectorSettings
from alerting.engine import EngineSettings
from alerting.job import AlertJob
from alerting.lifecycle import LifecycleSettings
from moodwire.config import load_settings
from moodwire.labels import EMOTION_LABELS
from moodwire.schema import Post, ScoredPost, TargetScore
from moodwire.store import ServerStore, post_row
from moodwire.store_schema import POST_COLUMNS
from tests.conftest import unique

pytestmark = pytest.mark.integration

START = datetime(2024, 3, 5, 11, 0, tzinfo=UTC)
TICK_S = 15.0
TICKERS = ("BA", "AAPL", "MSFT", "TSLA", "NVDA", "AMD")
SELLOFF = ("AAPL", "MSFT", "TSLA", "NVDA")


def _target(symbol: str, stance: str, rng: random.Random) -> TargetScore:
    p_negative = rng.uniform(0.6, 0.95) if stance == "negative" else rng.uniform(0.02, 0.3)
    rest = 1.0 - p_negative
    probs = {"negative": p_negative, "neutral": rest * 0.6, "positive": rest * 0.4}
    return TargetScore(symbol=symbol, polarity=stance, polarity_score=probs["positive"] - p_negative, polarity_probs=probs, basis="mention")  # type: ignore[arg-type]


def scored(
    number: int, published: datetime, arrived: datetime, targets: list[tuple[str, str]], rng: random.Random, **post: object
) -> ScoredPost:
    first = targets[0][1]
    probs = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}
    return ScoredPost(
        post=Post(
            id=post.pop("id", f"match:{number:06d}"),  # type: ignore[arg-type]
            source="file",
            text=f"post {number} on {' '.join('$' + s for s, _ in targets)}",
            published_at=published,
            symbols=tuple(s for s, _ in targets),
            **post,  # type: ignore[arg-type]
        ),
        polarity=first,  # type: ignore[arg-type]
        polarity_score=0.0,
        emotion="neutral",
        polarity_probs=probs,
        emotion_probs={label: 1 / 7 for label in EMOTION_LABELS},
        model_version="test",
        scored_at=arrived,
        targets=tuple(_target(s, stance, rng) for s, stance in targets),
    )


def stream() -> list[ScoredPost]:
    """Three hours: two of chatter, then a spike on BA, then four tickers at once."""
    rng = random.Random(17)
    posts: list[ScoredPost] = []
    for minute in range(180):
        at = START + timedelta(minutes=minute)
        for symbol in TICKERS:
            spiking = (symbol == "BA" and 125 <= minute < 145) or (symbol in SELLOFF and 150 <= minute < 170)
            for _ in range(rng.randint(4, 9) if spiking else rng.randint(1, 3)):
                share = 0.75 if spiking else 0.2
                stance = "negative" if rng.random() < share else rng.choice(["neutral", "positive"])
                published = at + timedelta(seconds=rng.randint(0, 59))
                delay = timedelta(seconds=rng.uniform(0.5, 3))
                if rng.random() < 0.05:
                    delay = timedelta(minutes=rng.uniform(1, 8))  # late
                if minute < 60 and rng.random() < 0.02:
                    delay = timedelta(minutes=rng.uniform(70, 100))  # after the detector's guard zone
                targets = [(symbol, stance)]
                if rng.random() < 0.1:  # the same post, the opposite stance toward a rival
                    rival = rng.choice([t for t in TICKERS if t != symbol])
                    targets.append((rival, "positive" if stance == "negative" else "negative"))
                post = scored(len(posts), published, published + delay, targets, rng)
                posts.append(post)
                if rng.random() < 0.08:  # a second outlet carries the same story, in that minute or later
                    when = published + timedelta(minutes=rng.choice((0, 1, 3, 6)))
                    arrives = when + delay + timedelta(seconds=20)
                    if rng.random() < 0.25:  # or its first copy, published earlier, arrives late
                        when, arrives = published - timedelta(minutes=2), published + delay + timedelta(minutes=4)
                    copy = scored(len(posts), when, arrives, targets, rng, story_id=post.post.id,
                                  id=f"match:copy:{len(posts):06d}")
                    posts.append(copy)
        if minute % 7 == 0:  # spam and an unscored post: stored, never counted
            spam = scored(len(posts), at, at + timedelta(seconds=1), [("BA", "negative")], rng, flags=("link_only",))
            posts.append(spam)
            unscored = scored(len(posts), at, at + timedelta(seconds=1), [("BA", "negative")], rng)
            posts.append(unscored.model_copy(update={"status": "unsupported_language"}))
    return posts


def alert_key(alert: Alert) -> tuple[object, ...]:
    return (
        alert.symbol, alert.kind, alert.fired_at, alert.severity, alert.window_minutes, alert.window_posts,
        # sums of Float32 probabilities in another order: the same to far below any threshold
        alert.window_negative, round(alert.statistic, 3), round(alert.baseline_share, 9),
    )


def test_backtest_and_the_alert_job_fire_the_same_alerts(clickhouse_port: int, tmp_path: Path) -> None:
    posts = stream()
    settings = load_settings(
        store="clickhouse",
        clickhouse_port=clickhouse_port,
        clickhouse_database=unique("match"),
        data_dir=tmp_path / "data",
        alert_interval_s=TICK_S,
        alert_group_wait_s=15,
        alert_evidence="probabilities",
    )
    detector = DetectorSettings.from_settings(settings)
    lifecycle = LifecycleSettings.from_settings(settings, (), notify_resolved=False)
    engine = replace(EngineSettings.from_settings(settings), first_run_lookback=None)

    # the backtest, from the JSON lines the bus carries (a post sent twice among them)
    lines = [json.dumps(p.to_dict()) for p in posts] + [json.dumps(posts[5].to_dict())]
    result = backtest.run(lines, detector, lifecycle, examples=0, engine_settings=engine, tick_s=TICK_S)
    expected = [alert_key(a) for a in result.alerts]
    notified = {alert_key(a): (n.created_at, n.group.symbols if n.group else None) for n in result.notifications for a in n.alerts}
    assert result.duplicates == 1 and result.not_counted > 0 and result.late_stories > 0
    assert {a.symbol for a in result.alerts if a.kind == "negative-spike"} >= {"BA", *SELLOFF}
    assert any(n.group is not None and set(SELLOFF) <= set(n.group.symbols) for n in result.notifications)

    # the live job, ticking every TICK_S while the posts arrive
    store = ServerStore(settings)
    store.migrate()
    now = [START]
    job = AlertJob(store, [], detector, lifecycle, engine_settings=engine, clock=lambda: now[0])
    arrivals = sorted(posts, key=lambda p: p.scored_at)
    inserted, opened = 0, []
    moment = START
    end = START + timedelta(minutes=185)
    while moment <= end:
        batch = []
        while inserted < len(arrivals) and arrivals[inserted].scored_at <= moment:
            batch.append(arrivals[inserted])
            inserted += 1
        if batch:
            rows = [(*post_row(p), p.scored_at.replace(microsecond=0)) for p in batch]
            store.insert_rows("posts", (*POST_COLUMNS, "inserted_at"), rows)
            if inserted == len(batch):  # the duplicate delivery, once some posts are in
                store.insert_rows("posts", (*POST_COLUMNS, "inserted_at"), rows[:1])
        now[0] = moment
        opened += job.detect()
        moment += timedelta(seconds=TICK_S)
    got = [alert_key(a) for a in opened]
    assert got == expected

    # the same notifications: when each alert went out, and with which market-wide group
    rows = store.query(f"SELECT symbol, kind, fired_at, evidence FROM {store.database}.alerts ORDER BY fired_at, symbol").rows
    live = {}
    for symbol, kind, fired_at, evidence in rows:
        data = json.loads(evidence)
        group = tuple(data["group"]["symbols"]) if "group" in data else None
        live[(symbol, kind, fired_at)] = (datetime.fromisoformat(data["notified_at"]), group)
    for key, (created_at, group) in notified.items():
        assert live[(key[0], key[1], key[2].replace(microsecond=0))] == (created_at, group), key
    minutes = store.query(f"SELECT count(), uniqExact(symbol) FROM {store.database}.detector_minutes").rows[0]
    assert minutes[0] > 0 and minutes[1] == len(TICKERS)
    store.close()
