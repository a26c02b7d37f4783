"""What counting a story once costs the alert job's queries: story-once against per-minute counting.

    python -m bench.count_query_bench [--posts N] [--out FILE]
    moodwire bench --suite count-query

Fills a store with a day and an hour of scored posts (corpus texts; a share of them copies of an
earlier post's story, published up to six hours after it, as syndication and brigades are) and
times, on a ClickHouse server (the 18.16 the tests use, started as they do) and on chDB:

* `poll`: the alert job's every-few-seconds question, the last 15 minutes per ticker
  (`counting.minute_counts_sql` with its day of look-back, as `alerting.job.StoreCounts` asks);
* `bins`: its baseline question, 10-minute bins over the last day.

Each against the same question counted per ticker and minute (the definition before a story
counted once, kept here only as the baseline). Reported: median and p90 milliseconds over
repeats, and the ratio story-once / per-minute. Writes bench/results/count_query.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import corpus  # noqa: E402
from bench.overload import write_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "count_query.json"
COPY_SHARE = 0.4
SYMBOLS = 300

def _per_minute_sql(database: str, where: str) -> str:
    """The baseline: a story once per ticker *and minute* (moodwire before story-once)."""
    return f"""SELECT symbol, minute, count() AS stories, countIf(stance = 'negative') AS negative,
    countIf(stance = 'neutral') AS neutral, countIf(stance = 'positive') AS positive,
    sum(negative_probability) AS expected_negative, sum(post_count) AS posts
FROM (
    SELECT symbol, minute, story, argMinMerge(story_stance) AS stance,
        argMinMerge(story_p_negative) AS negative_probability, uniqExactMerge(posts) AS post_count
    FROM {database}.ticker_stories
    WHERE {where}
    GROUP BY symbol, minute, story
)
GROUP BY symbol, minute"""


def scored_posts(count: int, now: datetime, seed: int = 7) -> list[Any]:
    from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
    from moodwire.schema import Post, ScoredPost, TargetScore

    rng = random.Random(seed)
    texts = corpus.load_posts()
    span = int(timedelta(hours=25).total_seconds())
    originals: list[tuple[str, datetime, tuple[str, ...]]] = []
    out = []
    for index in range(count):
        post_id = f"q:{index}"
        copy_of = rng.choice(originals) if originals and rng.random() < COPY_SHARE else None
        published = copy_of[1] + timedelta(seconds=rng.randint(0, 6 * 3600)) if copy_of else now
        if copy_of and published <= now:
            story, symbols = copy_of[0], copy_of[2]
        else:
            story, published = None, now - timedelta(seconds=rng.randint(0, span))
            symbols = tuple(f"S{n:03d}" for n in rng.sample(range(SYMBOLS), rng.choice((1, 1, 2))))
            originals.append((post_id, published, symbols))
        polarity = rng.choice(POLARITY_LABELS)
        probs = {label: 0.8 if label == polarity else 0.1 for label in POLARITY_LABELS}
        out.append(
            ScoredPost(
                post=Post(id=post_id, source="file", text=texts[index % len(texts)].text, published_at=published,
                          symbols=symbols, story_id=story),
                polarity=polarity,
                polarity_score=probs["positive"] - probs["negative"],
                emotion="neutral",
                polarity_probs=probs,
                emotion_probs={label: 1 / len(EMOTION_LABELS) for label in EMOTION_LABELS},
                model_version="bench",
                scored_at=now,
                targets=tuple(TargetScore(symbol=s, polarity=polarity, polarity_score=0.0, polarity_probs=probs, basis="post")
                              for s in symbols),
            )
        )
    return out


def _time(store: Any, sql: str, params: dict[str, Any], repeats: int) -> dict[str, float]:
    store.query(sql, params)  # warm: the first read pays for the parts' marks
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        store.query(sql, params)
        seconds.append(time.perf_counter() - began)
    seconds.sort()
    return {"median_ms": round(statistics.median(seconds) * 1000, 1),
            "p90_ms": round(seconds[int(0.9 * (len(seconds) - 1))] * 1000, 1)}


def measure(store: Any, now: datetime, repeats: int) -> dict[str, Any]:
    from alerting.job import COUNTS_SINCE_SQL, COUNTS_WINDOW_SQL, bins_sql
    from moodwire import counting

    db = store.database
    per_minute_counts = _per_minute_sql(db, COUNTS_WINDOW_SQL)
    story_once_counts = counting.minute_counts_sql(db, COUNTS_WINDOW_SQL, since=COUNTS_SINCE_SQL)
    questions = {
        "poll": (now - timedelta(minutes=15), now, repeats, per_minute_counts, story_once_counts),
        "bins": (now - timedelta(days=1), now, max(3, repeats // 4),
                 bins_sql(per_minute_counts, 10), bins_sql(story_once_counts, 10)),
    }
    out: dict[str, Any] = {}
    for name, (start, end, times, baseline, story_once) in questions.items():
        params = {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)}
        per_minute = _time(store, baseline, params, times)
        once = _time(store, story_once, params, times)
        stories = [sum(int(r[2]) for r in store.query(sql, params).rows) for sql in (baseline, story_once)]
        out[name] = {
            "per_minute": per_minute,
            "story_once": once,
            "ratio_median": round(once["median_ms"] / max(per_minute["median_ms"], 0.1), 2),
            "stories_per_minute_counting": stories[0],
            "stories_story_once": stories[1],
        }
    return out


def run(posts: int = 100_000, repeats: int = 20, out: Path | None = RESULTS, echo: Callable[[str], None] = print) -> dict[str, Any]:
    from bench.runtime_bench import describe_machine
    from moodwire.config import load_settings
    from moodwire.store import ChdbStore, ServerStore

    if str(REPO) not in sys.path:  # tests/ is not installed; `moodwire bench` runs from the checkout
        sys.path.insert(0, str(REPO))
    from tests import services

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = scored_posts(posts, now)
    report: dict[str, Any] = {
        "benchmark": "count_query",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "posts": posts,
        "copy_share": COPY_SHARE,
        "symbols": SYMBOLS,
        "definitions": {
            "poll": "minute counts of the last 15 minutes, every ticker (the alert job's frequent question)",
            "bins": "10-minute bins over the last day (the alert job's baseline question)",
            "ratio_median": "story_once median / per_minute median, same store, same run",
        },
        "results": {},
    }
    server = services.start_clickhouse()
    try:
        with tempfile.TemporaryDirectory(prefix="moodwire-count-bench-") as tmp:
            stores = {
                "clickhouse_18": lambda: ServerStore(load_settings(
                    store="clickhouse", clickhouse_port=server.port, data_dir=Path(tmp),
                    clickhouse_database=f"bench_{uuid.uuid4().hex[:8]}")),
                "chdb": lambda: ChdbStore(Path(tmp) / "chdb"),
            }
            for name, open_store in stores.items():
                store = open_store()
                store.migrate()
                echo(f"{name}: inserting {posts} posts ...")
                for start in range(0, len(rows), 5000):
                    store.insert_posts(rows[start:start + 5000])
                report["results"][name] = measure(store, now, repeats)
                echo(f"  {json.dumps(report['results'][name])}")
                store.close()
    finally:
        server.stop()
    if out is not None:
        write_result(report, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the alert job's count queries, story-once against per-minute (see the module docstring)")
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run(args.posts, args.repeats, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
