"""The production path on real services: tansu (Kafka protocol) -> scorer -> ClickHouse server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from moodwire import counting
from moodwire.bus import REASON_HEADER, KafkaBus
from moodwire.config import Settings
from moodwire.store import ServerStore
from scorer.runtime import OnnxScorer
from scorer.service import ScorerService, ScorerSettings
from tests.conftest import make_post

pytestmark = pytest.mark.integration


def produce(settings: Settings, values: list[bytes]) -> None:
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    producer = bus.producer()
    for index, value in enumerate(values):
        producer.send(settings.posts_topic, value, key=f"k{index % 7}".encode())
    producer.flush()
    producer.close()


def count_rows(store: ServerStore) -> tuple[int, int, int]:
    """(raw rows, distinct ids, posts counted by the per-minute aggregates over all symbols)."""
    rows, distinct = store.query(f"SELECT count(), uniqExact(id) FROM {store.database}.posts").rows[0]
    aggregated = store.query(f"SELECT uniqExactMerge(posts) FROM {store.database}.{counting.STORY_TABLE}").rows[0][0]
    return int(rows), int(distinct), int(aggregated)


def score_until(settings: Settings, store: ServerStore, expected: int, timeout_s: float = 90.0) -> ScorerService:
    bus = KafkaBus(settings)
    consumer = bus.consumer(settings.consumer_group, [settings.posts_topic])
    producer = bus.producer()
    service = ScorerService(ScorerSettings.from_settings(settings), consumer, producer, store, OnnxScorer())
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and count_rows(store)[1] < expected:
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)
        consumer.close()
        producer.close()
    return service


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"reader-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    records = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(records) < expected:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def test_n_posts_become_n_rows_and_bad_ones_are_dead_lettered(server_settings: Settings) -> None:
    n = 300
    values = [json.dumps(make_post(i, symbol=("AAPL", "TSLA", "NVDA")[i % 3])).encode() for i in range(n)]
    bad = [b"{not json", json.dumps({"id": "x", "source": "file", "text": "   ", "published_at": "2026-01-01T00:00:00Z"}).encode()]
    # Bad messages in the middle must not block the good ones behind them.
    produce(server_settings, values[:150] + bad + values[150:])
    store = ServerStore(server_settings)
    store.migrate()

    service = score_until(server_settings, store, n)

    assert count_rows(store) == (n, n, n)
    per_symbol = dict(
        store.query(f"SELECT symbol, sum(stories) FROM ({counting.minute_counts_sql(store.database)}) GROUP BY symbol").rows
    )
    assert per_symbol == {"AAPL": 100, "TSLA": 100, "NVDA": 100}
    assert service.stats.rejected == 2
    dead = read_topic(server_settings, server_settings.dead_letter_topic, 2)
    reasons = sorted(dict(r.headers)[REASON_HEADER].decode() for r in dead)
    assert len(reasons) == 2
    assert reasons[0].startswith("malformed JSON")
    assert reasons[1].startswith("text: empty")
    assert sorted(r.value for r in dead) == sorted(bad)
    store.close()


KILL_AFTER_INSERT = textwrap.dedent(
    """
    import os, signal, sys, threading
    from moodwire.config import load_settings
    from moodwire.bus import KafkaBus
    from moodwire.store import ServerStore
    from scorer.runtime import OnnxScorer
    from scorer.service import ScorerService, ScorerSettings

    settings = load_settings()

    class DieAfterInsert(ServerStore):
        def insert_posts(self, posts):
            super().insert_posts(posts)
            os.kill(os.getpid(), signal.SIGKILL)  # after the insert, before the offset commit

    bus = KafkaBus(settings)
    store = DieAfterInsert(settings)
    service = ScorerService(ScorerSettings.from_settings(settings), bus.consumer(settings.consumer_group, [settings.posts_topic]),
                            bus.producer(), store, OnnxScorer())
    service.run(threading.Event())
    """
)


def _env(settings: Settings) -> dict[str, str]:
    import os

    env = dict(os.environ)
    for name in (
        "bus", "store", "kafka_bootstrap_servers", "posts_topic", "dead_letter_topic", "consumer_group",
        "kafka_session_timeout_ms", "kafka_heartbeat_interval_ms", "clickhouse_port", "clickhouse_database",
        "batch_max_size", "batch_max_wait_ms",
    ):
        env[f"MOODWIRE_{name.upper()}"] = str(getattr(settings, name))
    return env


def test_scorer_killed_between_insert_and_commit_counts_every_post_once(server_settings: Settings) -> None:
    n = 200
    produce(server_settings, [json.dumps(make_post(i)).encode() for i in range(n)])
    store = ServerStore(server_settings)
    store.migrate()

    crashed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_INSERT], env=_env(server_settings), timeout=120, capture_output=True
    )
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    rows_after_crash = count_rows(store)[0]
    assert 0 < rows_after_crash < n  # one batch is in, uncommitted

    score_until(server_settings, store, n)

    rows, distinct, aggregated = count_rows(store)
    assert distinct == n and aggregated == n
    assert rows >= n  # the redelivered batch was inserted again...
    final_rows = store.query(f"SELECT count() FROM {store.database}.posts FINAL").rows[0][0]
    assert final_rows == n  # ...and collapses to one row per id
    store.close()
