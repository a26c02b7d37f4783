"""Ingest against the real broker (tansu): lines over the message limit, multi-line CSV records
resumed mid-file, a known id with another text, and a broker outage during ingest."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ingest.checkpoint import CheckpointStore
from ingest.connectors import SourceSettings, build_sources
from ingest.file_source import FileSource
from ingest.normalize import Normalizer
from ingest.polling import Backoff
from ingest.service import IngestSettings, IngestWorker
from moodwire.bus import KafkaBus
from moodwire.config import Settings, load_settings
from moodwire.dead_letters import DEAD_LETTER_KEEP_BYTES, MAX_MESSAGE_BYTES
from moodwire.schema import clean_text, format_timestamp, parse_timestamp
from tests.conftest import make_post, unique
from tests.integration.fault_helpers import read_topic, scorer_env, wait_for
from tests.integration.test_faults_broker import s3_env, start_s3_tansu  # noqa: F401 (s3_env is a fixture)

pytestmark = pytest.mark.integration

# The Kafka default max.request.size (what an old ingest sent a 1 MB dead letter into), and ten times it.
ONE_MB = 1_048_576


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return load_settings(
        bus="kafka",
        kafka_bootstrap_servers=kafka_bootstrap,
        posts_topic=unique("posts"),
        dead_letter_topic=unique("dlq"),
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        data_dir=tmp_path / "data",
    )


def offset_of(settings: Settings, path: Path) -> int:
    return int(CheckpointStore(settings.state_dir / "ingest").load(FileSource.source_name(path)).get("offset", 0))


def ids_on(records: Sequence[Any]) -> Counter[str]:
    return Counter(json.loads(record.value)["id"] for record in records)


def worker(settings: Settings, sources: list[Any], producer: Any, **changes: Any) -> IngestWorker:
    ingest = IngestSettings.from_settings(settings)
    if changes:
        ingest = IngestSettings(**{**ingest.__dict__, **changes})
    checkpoints = CheckpointStore(settings.state_dir / "ingest")
    return IngestWorker(ingest, producer, sources, checkpoints, normalizer=Normalizer(detect_language=False))


# -- a line over the message limit ---------------------------------------------------------------


def oversized(size: int, valid_post: bool) -> bytes:
    if not valid_post:
        return b"x" * size
    start = json.dumps(make_post(99))[:-1].encode() + b', "note": "'
    return start + b"y" * (size - len(start) - 2) + b'"}'


@pytest.mark.parametrize(
    ("size", "valid_post"),
    [(ONE_MB, False), (10 * ONE_MB, True)],
    ids=["1MB-garbage", "10MB-post"],
)
def test_a_line_over_the_limit_is_one_truncated_dead_letter_and_ingest_goes_on(
    kafka_settings: Settings, tmp_path: Path, size: int, valid_post: bool
) -> None:
    settings = kafka_settings
    posts = [make_post(i, symbol=("AAPL", "TSLA")[i % 2]) for i in range(6)]
    big = oversized(size, valid_post)
    assert len(big) == size > MAX_MESSAGE_BYTES
    path = tmp_path / "posts.jsonl"
    lines = [json.dumps(p).encode() for p in posts]
    path.write_bytes(b"\n".join(lines[:3] + [big] + lines[3:]) + b"\n")
    KafkaBus(settings).ensure_topics([settings.posts_topic, settings.dead_letter_topic])

    def ingest() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "moodwire.cli", "ingest", str(path)],
            env=scorer_env(settings),
            capture_output=True,
            text=True,
            timeout=180,
        )

    first = ingest()
    assert first.returncode == 0, first.stderr[-3000:]
    assert offset_of(settings, path) == path.stat().st_size
    # A second run starts past the line: it sends nothing again.
    second = ingest()
    assert second.returncode == 0, second.stderr[-3000:]

    assert ids_on(read_topic(settings, settings.posts_topic, 6)) == {p["id"]: 1 for p in posts}
    [dead] = read_topic(settings, settings.dead_letter_topic, 1)
    headers = {name: value for name, value in dead.headers}
    assert headers["moodwire-reason"] == f"line is {size} bytes, over the {MAX_MESSAGE_BYTES}-byte limit".encode()
    assert headers["moodwire-origin"] == b"ingest"
    assert headers["moodwire-original-size"] == str(size).encode()
    assert headers["moodwire-original-sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert headers["moodwire-truncated"] == b"true"
    assert dead.value == big[:DEAD_LETTER_KEEP_BYTES]


# -- CSV records spanning lines --------------------------------------------------------------------


def test_multi_line_csv_records_arrive_whole_and_a_resume_mid_file_sends_each_once(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings
    texts = [
        "Boeing halts deliveries\nafter a new inspection, shares slip",
        'Analyst: "sell $AAPL"\r\nbefore the call',
        "Costco raises its fee",
        "Line one\n\nline three, after a blank line",
        "Nvidia supplier posts record revenue",
        "Tesla deliveries disappoint\nagain",
    ]
    rows = []
    for i, text in enumerate(texts):
        post = make_post(i, minutes_ago=10 + i)
        rows.append([post["id"], "csv", text, post["published_at"], "BA AAPL"])
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["id", "source", "text", "published_at", "symbols"], *rows])
    path = tmp_path / "posts.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])

    producer = bus.producer()
    try:
        # First life: two records on the bus and checkpointed, then the process is gone.
        first = FileSource(path, batch_size=2)
        assert worker(settings, [first], producer).step(first) == 2
        first.close()
        assert 0 < offset_of(settings, path) < path.stat().st_size
        # Second life: resumes at the checkpoint, mid-file.
        sources = build_sources(SourceSettings(), CheckpointStore(settings.state_dir / "ingest"), [path])
        assert worker(settings, sources, producer).run(threading.Event(), stop_when_exhausted=True) == 4
    finally:
        producer.close()

    records = read_topic(settings, settings.posts_topic, 6)
    assert ids_on(records) == {row[0]: 1 for row in rows}
    on_bus = {post["id"]: post for post in (json.loads(r.value) for r in records)}
    for post_id, _, text, published_at, _ in rows:
        assert on_bus[post_id]["text"] == clean_text(text)
        # The record's own time, not the arrival time a cut-off line used to get.
        assert on_bus[post_id]["published_at"] == format_timestamp(parse_timestamp(published_at))
    assert read_topic(settings, settings.dead_letter_topic, 0, timeout_s=2) == []
    assert offset_of(settings, path) == path.stat().st_size


# -- a known id with another text ------------------------------------------------------------------


def test_a_known_id_with_another_text_is_dropped_but_dead_lettered(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = kafka_settings
    original = make_post(1, text="Apple beats estimates on iPhone demand")
    edited = {**original, "text": "Apple misses estimates on iPhone demand"}
    lines = [json.dumps(p) for p in (original, make_post(2), original, edited, make_post(3))]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])

    def duplicates(why: str) -> float:
        return REGISTRY.get_sample_value("moodwire_posts_duplicate_total", {"source": "file", "why": why}) or 0.0

    before = {why: duplicates(why) for why in ("same_id", "same_id_different_text")}
    producer = bus.producer()
    try:
        ingest = worker(settings, [FileSource(path)], producer)
        assert ingest.run(threading.Event(), stop_when_exhausted=True) == 3
        ingest.close()
    finally:
        producer.close()

    records = read_topic(settings, settings.posts_topic, 3)
    assert ids_on(records) == {"test:1": 1, "test:2": 1, "test:3": 1}
    first = next(json.loads(r.value) for r in records if json.loads(r.value)["id"] == "test:1")
    assert first["text"] == original["text"]
    assert all(dict(r.headers)["moodwire-normalized"] == b"1" for r in records)
    [dead] = read_topic(settings, settings.dead_letter_topic, 1)
    assert dead.value == lines[3].encode()
    assert dict(dead.headers)["moodwire-reason"] == b"duplicate id, different text"
    assert dict(dead.headers)["moodwire-origin"] == b"ingest"
    assert duplicates("same_id") == before["same_id"] + 1
    assert duplicates("same_id_different_text") == before["same_id_different_text"] + 1


# -- a broker outage -------------------------------------------------------------------------------


class QuickGivingUpProducer:
    """The producer moodwire.bus builds (kafka-python, acks=all, flush raises on any failed
    record), except that a record the broker does not take is given up after 5 s instead of
    kafka-python's 120 s, and reconnects are tried every second: the outage reaches the ingest
    loop within the test, and the loop's own retries do the rest."""

    def __init__(self, servers: str) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=servers.split(","),
            acks="all",
            linger_ms=5,
            max_in_flight_requests_per_connection=1,
            delivery_timeout_ms=5_000,
            request_timeout_ms=4_000,
            max_block_ms=5_000,
            reconnect_backoff_max_ms=1_000,
        )
        self._pending: list[Any] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self._pending.append(self._producer.send(topic, value=value, key=key, headers=list(headers)))

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=0)

    def close(self) -> None:
        self._producer.close(timeout=5)


def retries() -> float:
    return REGISTRY.get_sample_value("moodwire_ingest_bus_retries_total") or 0.0


@pytest.mark.slow
def test_ingest_rides_out_a_broker_outage_and_every_post_arrives_once(
    kafka_settings: Settings, s3_env: dict[str, str], tmp_path: Path  # noqa: F811
) -> None:
    broker = start_s3_tansu(s3_env)  # its log lives in S3: a restarted broker still has the topic
    settings = kafka_settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{broker.port}"})
    posts = [make_post(i, symbol=("AAPL", "TSLA", "NVDA")[i % 3]) for i in range(60)]
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in posts), encoding="utf-8")
    KafkaBus(settings).ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    producer = QuickGivingUpProducer(settings.kafka_bootstrap_servers)
    quick = {"bus_retry": Backoff(base_s=0.2, max_s=1.0)}
    try:
        source = FileSource(path, batch_size=10)
        first = worker(settings, [source], producer, **quick)
        assert first.step(source) + first.step(source) == 20
        acknowledged = offset_of(settings, path)

        broker.stop()  # the broker goes away between two batches
        stop, result = threading.Event(), []
        running = threading.Thread(target=lambda: result.append(first.run(stop, stop_when_exhausted=True)))
        before = retries()
        running.start()
        wait_for(lambda: retries() >= before + 2, 60, "ingest to send a refused batch again")
        assert offset_of(settings, path) == acknowledged
        # A stop during the retries: the loop returns, the unacknowledged batch is not checkpointed.
        stop.set()
        running.join(timeout=30)
        assert not running.is_alive() and result == [0]
        assert offset_of(settings, path) == acknowledged
        source.close()

        # The restarted ingest resumes at the checkpoint and retries until the broker is back.
        sources = build_sources(SourceSettings(), CheckpointStore(settings.state_dir / "ingest"), [path])
        second = worker(settings, sources, producer, **quick)
        resumed: list[int] = []
        running = threading.Thread(target=lambda: resumed.append(second.run(threading.Event(), stop_when_exhausted=True)))
        before = retries()
        running.start()
        wait_for(lambda: retries() >= before + 1, 60, "the restarted ingest to retry")
        broker = start_s3_tansu(s3_env, port=broker.port)
        running.join(timeout=120)
        assert not running.is_alive() and resumed == [40]
        second.close()
        records = read_topic(settings, settings.posts_topic, 60, timeout_s=60)
    finally:
        producer.close()
        broker.stop()
    assert ids_on(records) == {p["id"]: 1 for p in posts}
    assert offset_of(settings, path) == path.stat().st_size
