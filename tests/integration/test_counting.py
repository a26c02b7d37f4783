"""One definition of what is counted: the store's `ticker_stories` read through
`counting.minute_counts_sql` and Python's `StoryTally` give the same numbers on the same posts,
on the ClickHouse 18.16 server and on chDB (stories across outlets and minutes, copies a day
apart, a post delivered twice, stances that differ per ticker, flagged and unscored posts), for
the whole table and for a window whose stories started in the day before it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from moodwire import counting
from moodwire.config import load_settings
from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from moodwire.schema import Post, ScoredPost, TargetScore
from moodwire.store import ChdbStore, ServerStore
from tests.conftest import unique

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def _probs(winner: str, rng: random.Random) -> dict[str, float]:
    top = rng.uniform(0.4, 0.98)
    return {label: top if label == winner else (1 - top) / 2 for label in POLARITY_LABELS}


def stream(seed: int = 3) -> list[ScoredPost]:
    rng = random.Random(seed)
    posts: list[ScoredPost] = []
    for i in range(600):
        symbols = tuple(rng.sample(("AAPL", "MSFT", "NVDA", "AMD"), rng.choice((0, 1, 1, 2, 3))))
        polarity = rng.choice(POLARITY_LABELS)
        targets = []
        for symbol in symbols:
            stance = rng.choice(POLARITY_LABELS)
            probs = _probs(stance, rng)
            targets.append(TargetScore(symbol=symbol, polarity=stance, polarity_score=probs["positive"] - probs["negative"],
                                       polarity_probs=probs, basis="mention"))
        probs = _probs(polarity, rng)
        posts.append(
            ScoredPost(
                post=Post(
                    id=f"c:{i:04d}",
                    source="rss",
                    text=f"post {i}",
                    # most in the last 40 minutes; some a day earlier, near the look-back's edge
                    published_at=NOW - timedelta(minutes=rng.choice((rng.randint(1, 40), rng.randint(1, 40),
                                                                     rng.randint(1380, 1500))),
                                                 seconds=rng.randint(0, 59)),
                    symbols=symbols,
                    kind=rng.choice(("post", "headline")),
                    # a few wire stories carried by several outlets
                    story_id=f"c:{rng.randint(0, 30):04d}" if rng.random() < 0.25 else None,
                    flags=("link_only",) if rng.random() < 0.05 else (),
                ),
                polarity=polarity,
                polarity_score=probs["positive"] - probs["negative"],
                emotion=rng.choice(EMOTION_LABELS),
                polarity_probs=probs,
                emotion_probs={label: 1 / 7 for label in EMOTION_LABELS},
                model_version="test",
                scored_at=NOW,
                targets=tuple(targets),
                status="unsupported_language" if rng.random() < 0.03 else "scored",
            )
        )
    return posts


def python_totals(posts: list[ScoredPost]) -> dict[tuple[str, datetime], tuple[float, ...]]:
    tally = counting.StoryTally()
    for scored in posts:
        record = scored.to_dict()
        tally.add(record["id"], scored.post.published_at, counting.votes_of(record), story_id=scored.post.story_id,
                  status=scored.status, flags=scored.post.flags)
    return {(t.symbol, t.minute): (t.stories, t.negative, t.neutral, t.positive, t.expected_negative, t.posts)
            for t in tally.totals()}


def sql_totals(store: ServerStore | ChdbStore, where: str = "1", since: str | None = None,
               window: tuple[datetime, datetime] | None = None) -> dict[tuple[str, datetime], tuple[float, ...]]:
    params = {"start": window[0].replace(tzinfo=None), "end": window[1].replace(tzinfo=None)} if window else None
    rows = store.query(counting.minute_counts_sql(store.database, where, since=since), params).dicts()
    return {(r["symbol"], r["minute"]): (int(r["stories"]), int(r["negative"]), int(r["neutral"]), int(r["positive"]),
                                         float(r["expected_negative"]), int(r["posts"])) for r in rows}


def check(store: ServerStore | ChdbStore) -> None:
    posts = stream()
    store.migrate()
    store.insert_posts(posts)
    store.insert_posts(posts[-80:])  # delivered again
    expected = python_totals(posts)
    assert len(expected) > 100
    same(sql_totals(store), expected)
    # a story counted once though its copies span minutes, and again a day later
    assert sum(c[0] for c in expected.values()) < sum(c[5] for c in expected.values())

    # A window: stories whose first copy is in the day before it are not counted in it.
    start, end = NOW - timedelta(minutes=20), NOW
    where = "minute >= toDateTime(%(start)s, 'UTC') AND minute <= toDateTime(%(end)s, 'UTC')"
    in_window = {key: counts for key, counts in expected.items() if start <= key[1] <= end}
    same(sql_totals(store, where, "toDateTime(%(start)s, 'UTC')", (start, end)), in_window)
    # ... which only the look-back tells: without it, those stories count again
    blind = sql_totals(store, where, None, (start, end))
    assert sum(c[0] for c in blind.values()) > sum(c[0] for c in in_window.values())

    # An alert's evidence: the most negative posts of the window, one per story.
    start = NOW - timedelta(minutes=40)
    rows = store.query(counting.negative_examples_sql(store.database),
                       {"symbol": "NVDA", "start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None), "limit": 500}).rows
    candidates = sorted(
        (target.polarity_score, scored.post.id, scored.post.story_id or scored.post.id)
        for scored in posts
        if scored.status == "scored" and not scored.post.flags and start <= scored.post.published_at < end
        for target in scored.targets
        if target.symbol == "NVDA" and target.polarity == "negative"
    )
    firsts: dict[str, str] = {}
    for _, post_id, story in candidates:
        firsts.setdefault(story, post_id)
    assert [r[0] for r in rows] == list(firsts.values())
    assert len({story for _, _, story in candidates}) < len(candidates)  # copies were there to leave out


def same(got: dict[tuple[str, datetime], tuple[float, ...]], expected: dict[tuple[str, datetime], tuple[float, ...]]) -> None:
    assert got.keys() == expected.keys()
    for key, counts in expected.items():
        # probabilities reach the file rounded to 6 decimals: the sums agree to that
        assert got[key][:4] + got[key][5:] == counts[:4] + counts[5:], key
        assert got[key][4] == pytest.approx(counts[4], abs=1e-5), key


def test_sql_and_python_count_the_same_on_the_clickhouse_server(clickhouse_port: int) -> None:
    store = ServerStore(load_settings(store="clickhouse", clickhouse_port=clickhouse_port, clickhouse_database=unique("count")))
    try:
        check(store)
    finally:
        store.close()


def test_sql_and_python_count_the_same_on_chdb(tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "chdb")
    try:
        check(store)
    finally:
        store.close()
