"""What the fault tests share: a stream of posts flowing onto the real broker, a scorer running
in-process, and the checks that every post is stored once and every aggregate is exact."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from moodwire import counting
from moodwire.bus import KafkaBus
from moodwire.config import Settings
from moodwire.store import ServerStore
from scorer.runtime import OnnxScorer
from scorer.service import SUPPORTED_LANGUAGES, ScorerService, ScorerSettings

SYMBOLS = ("AAPL", "TSLA", "NVDA", "BA")
# User text that looks like SQL or markup is data: it must reach the table byte for byte.
ODD_TEXTS = (
    "'; DROP TABLE posts; -- $SYM is fine",
    "$SYM \\' OR 1=1 -- %(id)s {id:String} ?",
    "$SYM ) ENGINE = Memory; SELECT * FROM system.users",
)


def stream_post(index: int, *, prefix: str = "p") -> dict[str, Any]:
    """Post `index` of a test stream: four symbols, spread over the last few minutes."""
    symbol = SYMBOLS[index % len(SYMBOLS)]
    published = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2 + index % 5)
    text = f"Post {index}: ${symbol} moved after the report, volume {index * 7 % 1000}"
    if index % 97 == 13:
        text = ODD_TEXTS[index % len(ODD_TEXTS)].replace("SYM", symbol) + f" #{index}"
    return {
        "id": f"{prefix}:{index}",
        "source": "file",
        "text": text,
        "published_at": published.isoformat().replace("+00:00", "Z"),
        "symbols": [symbol],
    }


class Stream:
    """Produces posts at `rate` per second in a thread, in small flushed batches.

    `acked` holds only posts whose batch the broker acknowledged (flush returned). A batch that
    failed is sent again, by a fresh producer, until acknowledged: the at-least-once contract of
    a source that resumes from its last checkpoint.
    """

    def __init__(
        self,
        settings: Settings,
        rate: float,
        *,
        batch: int = 10,
        limit: int | None = None,
        prefix: str = "p",
        key: Callable[[dict[str, Any]], bytes] | None = None,
    ) -> None:
        self._settings = settings
        # The message key (it picks the partition): the post's symbol unless told otherwise.
        self._key = key or (lambda post: post["symbols"][0].encode())
        self._rate = rate
        self._batch = batch
        self._limit = limit
        self._prefix = prefix
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.acked: list[dict[str, Any]] = []
        self.send_failures = 0
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the producer did not finish its last batch"
        return list(self.acked)

    def _run(self) -> None:
        bus = KafkaBus(self._settings)
        producer = bus.producer()
        index = 0
        started = time.monotonic()
        while not self._stop.is_set() and (self._limit is None or index < self._limit):
            size = self._batch if self._limit is None else min(self._batch, self._limit - index)
            posts = [stream_post(i, prefix=self._prefix) for i in range(index, index + size)]
            while True:
                try:
                    for post in posts:
                        producer.send(self._settings.posts_topic, json.dumps(post).encode(), key=self._key(post))
                    producer.flush(timeout_s=30)
                    break
                except Exception:  # the broker is away: resend the batch, as a restarted source would
                    self.send_failures += 1
                    try:
                        producer.close()
                    except Exception:
                        pass
                    time.sleep(0.5)
                    producer = _fresh_producer(bus)
            with self._lock:
                self.acked.extend(posts)
            index += size
            delay = started + index / self._rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        producer.close()


def _fresh_producer(bus: KafkaBus) -> Any:
    while True:
        try:
            return bus.producer()
        except Exception:  # no broker to bootstrap from yet
            time.sleep(0.5)


def produce(settings: Settings, posts: list[dict[str, Any]]) -> None:
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    producer = bus.producer()
    for post in posts:
        producer.send(settings.posts_topic, json.dumps(post).encode(), key=post["id"].encode())
    producer.flush()
    producer.close()


class ScorerThread:
    """The real ScorerService on the real broker and ClickHouse, in a thread of this process."""

    def __init__(
        self, settings: Settings, store: ServerStore, scorer: OnnxScorer | None = None, consumer: Any = None
    ) -> None:
        bus = KafkaBus(settings)
        self.consumer = consumer or bus.consumer(settings.consumer_group, [settings.posts_topic])
        self.producer = bus.producer()
        self.service = ScorerService(
            ScorerSettings.from_settings(settings), self.consumer, self.producer, store, scorer or OnnxScorer()
        )
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)

    def _run(self) -> None:
        try:
            self.service.run(self.stop_event)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ScorerThread:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(timeout=60)
        self.consumer.close()
        self.producer.close()
        assert not self._thread.is_alive(), "the scorer did not stop"
        if self.error is not None:
            raise AssertionError(f"the scorer loop failed: {self.error!r}") from self.error


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.25) -> float:
    """Poll until `predicate()`; returns the seconds it took, fails the test after timeout_s."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - started


def distinct_ids(store: ServerStore) -> int:
    return int(store.query(f"SELECT uniqExact(id) FROM {store.database}.posts").rows[0][0])


def raw_rows(store: ServerStore) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.posts").rows[0][0])


def scorer_service(settings: Settings, bus: Any, store: Any) -> ScorerService:
    """The scorer service as `moodwire score` wires it (the real model), on this bus and store."""
    return ScorerService(
        ScorerSettings.from_settings(settings),
        bus.consumer(settings.consumer_group, [settings.posts_topic]),
        bus.producer(),
        store,
        OnnxScorer(),
    )


def scorer_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment that gives a `moodwire` subprocess these settings."""
    env = dict(os.environ)
    names = (
        "bus",
        "store",
        "kafka_bootstrap_servers",
        "posts_topic",
        "dead_letter_topic",
        "consumer_group",
        "kafka_session_timeout_ms",
        "kafka_heartbeat_interval_ms",
        "clickhouse_port",
        "clickhouse_database",
        "batch_max_size",
        "batch_max_wait_ms",
        "data_dir",
        "shutdown_timeout_s",
    )
    for name in names:
        env[f"MOODWIRE_{name.upper()}"] = str(getattr(settings, name))
    for name, value in extra.items():
        env[f"MOODWIRE_{name.upper()}"] = str(value)
    return env


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The consumer group's committed offset per partition of the posts topic (0 if none)."""
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        partitions = sorted(reader.partitions_for_topic(settings.posts_topic) or ())
        return {p: reader.committed(TopicPartition(settings.posts_topic, p)) or 0 for p in partitions}
    finally:
        reader.close()


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Every record of `topic` from the beginning (a fresh group), until `expected` were seen."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"reader-{topic}-{time.monotonic_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(records) < expected:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # A little longer: anything beyond `expected` (duplicates) must be seen too.
        quiet_until = time.monotonic() + 1.5
        while time.monotonic() < quiet_until:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def assert_counted_once(store: ServerStore, posts: list[dict[str, Any]]) -> dict[str, int]:
    """Every post stored once (after the ReplacingMergeTree collapses), every aggregate exact.

    Returns the figures: posts, raw rows (a redelivered batch is inserted again before it
    collapses), duplicate rows, and the counts the aggregates report.
    """
    db = store.database
    expected_ids = {p["id"] for p in posts}
    assert len(expected_ids) == len(posts), "the test sent duplicate ids"
    n = len(expected_ids)

    stored = {row[0] for row in store.query(f"SELECT DISTINCT id FROM {db}.posts").rows}
    missing = expected_ids - stored
    assert not missing, f"{len(missing)} posts never stored, e.g. {sorted(missing)[:5]}"
    assert stored == expected_ids, f"unexpected ids stored: {sorted(stored - expected_ids)[:5]}"
    rows = raw_rows(store)
    final_rows = int(store.query(f"SELECT count() FROM {db}.posts FINAL").rows[0][0])
    assert final_rows == n, f"{final_rows} rows after FINAL for {n} posts"

    # Per symbol and minute, as moodwire.counting defines it for the detector, the dashboards and
    # the report (no symbol: under ''). Posts in a language the model doesn't read are stored but
    # left out; a story counts once per symbol and minute.
    scored = [p for p in posts if p.get("lang") is None or p["lang"] in SUPPORTED_LANGUAGES]
    expected_minutes: dict[tuple[str, datetime], set[str]] = {}
    expected_mentions = 0
    for post in scored:
        minute = datetime.fromisoformat(post["published_at"].replace("Z", "+00:00")).replace(second=0, microsecond=0)
        for symbol in dict.fromkeys(post.get("symbols") or [""]):
            expected_minutes.setdefault((symbol, minute), set()).add(post.get("story_id") or post["id"])
            expected_mentions += 1
    counted = store.query(counting.minute_counts_sql(db)).dicts()
    got_minutes = {(r["symbol"], r["minute"]): int(r["stories"]) for r in counted}
    want_minutes = {key: len(stories) for key, stories in expected_minutes.items()}
    assert got_minutes == want_minutes, _diff("stories per symbol and minute", got_minutes, want_minutes)
    # Each story sits under exactly one stance: a post redelivered and scored again must not land
    # under a second label.
    split = [r for r in counted if int(r["negative"]) + int(r["neutral"]) + int(r["positive"]) != int(r["stories"])]
    assert not split, f"stories counted under two stances: {split[:3]}"
    mentions = sum(int(r["posts"]) for r in counted)
    assert mentions == expected_mentions, f"{mentions} post mentions counted, {expected_mentions} expected"
    expected_stories = len({p.get("story_id") or p["id"] for p in scored})
    stories = int(store.query(f"SELECT uniqExact(story) FROM {db}.{counting.STORY_TABLE}").rows[0][0])
    assert stories == expected_stories, f"{stories} stories counted, {expected_stories} expected"

    # Text that looks like SQL is stored as sent.
    odd = {p["id"]: p["text"] for p in posts if not p["text"].startswith("Post ")}
    if odd:
        stored_text = dict(
            store.query(
                f"SELECT id, any(text) FROM {db}.posts WHERE id IN %(ids)s GROUP BY id", {"ids": tuple(odd)}
            ).rows
        )
        assert stored_text == odd
    aggregated = int(store.query(f"SELECT uniqExactMerge(posts) FROM {db}.{counting.STORY_TABLE}").rows[0][0])
    assert aggregated == len(scored), f"{aggregated} posts counted by the aggregates, {len(scored)} expected"
    return {"posts": n, "raw_rows": rows, "final_rows": final_rows, "aggregated": aggregated, "stories": stories}


def _diff(what: str, got: dict[Any, int], expected: dict[Any, int]) -> str:
    keys = sorted(set(got) | set(expected), key=str)
    wrong = [
        f"{key}: {got.get(key, 0)} counted, {expected.get(key, 0)} expected"
        for key in keys
        if got.get(key, 0) != expected.get(key, 0)
    ]
    return f"{what}: " + "; ".join(wrong[:10])
