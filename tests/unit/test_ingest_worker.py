"""The ingest loop with a fake producer: a batch the bus refuses is sent again whole and
checkpointed only once acknowledged, a stop during the retries saves nothing, posts carry the
normalized header and every dead letter goes through send_dead_letter.
(The same against the real broker: tests/integration/test_ingest_bus.py.)"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from ingest.checkpoint import CheckpointStore
from ingest.file_source import FileSource
from ingest.normalize import Normalizer
from ingest.polling import Backoff
from ingest.service import IngestSettings, IngestWorker
from moodwire.dead_letters import DEAD_LETTER_KEEP_BYTES, MAX_MESSAGE_BYTES

SETTINGS = IngestSettings(posts_topic="posts", dead_letter_topic="dead", bus_retry=Backoff(0.0, 0.0))
Message = tuple[str, bytes, dict[str, bytes]]


class FlakyProducer:
    """Refuses the first `failures` flushes of anything (a broker away), then acknowledges."""

    def __init__(self, failures: int, on_failure: Callable[[int], None] = lambda n: None) -> None:
        self.failures = failures
        self.refused = 0
        self.on_failure = on_failure
        self.pending: list[Message] = []
        self.acked: list[Message] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.pending.append((topic, value, dict(headers)))

    def flush(self, timeout_s: float | None = None) -> None:
        pending, self.pending = self.pending, []
        if pending and self.refused < self.failures:
            self.refused += 1
            self.on_failure(self.refused)
            raise TimeoutError("Expiring 3 record(s): 120000 ms has passed since batch creation")
        self.acked.extend(pending)

    def close(self) -> None:
        pass


class WatchedCheckpoints(CheckpointStore):
    """Notes how many messages the broker had acknowledged when each checkpoint was saved."""

    def __init__(self, directory: Path, producer: FlakyProducer) -> None:
        super().__init__(directory)
        self.producer = producer
        self.saved_after: list[int] = []

    def save(self, key: str, state: dict[str, Any]) -> None:
        self.saved_after.append(len(self.producer.acked))
        super().save(key, state)


def post_line(n: int, text: str | None = None) -> str:
    stamp = datetime.now(UTC).isoformat()
    return json.dumps({"id": f"w:{n}", "text": text or f"Post {n} about $AAPL guidance", "published_at": stamp})


def retries() -> float:
    return REGISTRY.get_sample_value("moodwire_ingest_bus_retries_total") or 0.0


def worker_for(tmp_path: Path, lines: list[str], producer: FlakyProducer) -> tuple[IngestWorker, FileSource, WatchedCheckpoints]:
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = FileSource(path)
    checkpoints = WatchedCheckpoints(tmp_path / "state", producer)
    worker = IngestWorker(SETTINGS, producer, [source], checkpoints, normalizer=Normalizer(detect_language=False))
    return worker, source, checkpoints


def test_a_refused_batch_is_sent_again_whole_and_checkpointed_only_once_acknowledged(tmp_path: Path) -> None:
    producer = FlakyProducer(failures=3)
    worker, source, checkpoints = worker_for(tmp_path, [post_line(1), "not json", post_line(2)], producer)
    before = retries()
    assert worker.step(source) == 2
    assert retries() - before == 3
    # One copy of the batch, not four: each try resent it whole, only the last was acknowledged.
    assert [(topic, json.loads(value).get("id") if topic == "posts" else value) for topic, value, _ in producer.acked] == [
        ("posts", "w:1"),
        ("dead", b"not json"),
        ("posts", "w:2"),
    ]
    assert checkpoints.saved_after == [3]
    assert checkpoints.load(source.name)["offset"] == (tmp_path / "posts.jsonl").stat().st_size


def test_a_stop_during_the_retries_ends_the_loop_without_saving_the_batch(tmp_path: Path) -> None:
    stop = threading.Event()
    producer = FlakyProducer(failures=10**9, on_failure=lambda n: n == 3 and stop.set())
    worker, source, checkpoints = worker_for(tmp_path, [post_line(1), post_line(2)], producer)
    assert worker.run(stop, stop_when_exhausted=True) == 0
    assert producer.refused == 3 and producer.acked == []
    assert checkpoints.saved_after == [] and checkpoints.load(source.name) == {}


def test_posts_carry_the_normalized_header_and_dead_letters_their_reason_origin_and_source(tmp_path: Path) -> None:
    producer = FlakyProducer(failures=0)
    big = '{"id": "big", "text": "' + "x" * MAX_MESSAGE_BYTES + '"}'
    lines = [post_line(1), post_line(1), post_line(1, "Post 1, edited"), big, '{"id": "e", "text": "<p></p>"}']
    worker, source, _ = worker_for(tmp_path, lines, producer)
    duplicates = REGISTRY.get_sample_value(
        "moodwire_posts_duplicate_total", {"source": "file", "why": "same_id_different_text"}
    ) or 0.0
    assert worker.step(source) == 1
    [post, *dead] = producer.acked
    assert post[0] == "posts" and post[2] == {"moodwire-normalized": b"1"}
    assert [(topic, headers["moodwire-reason"].decode()) for topic, _, headers in dead] == [
        ("dead", "duplicate id, different text"),
        ("dead", f"line is {len(big)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"),
        ("dead", "text: empty after removing HTML and whitespace"),
    ]
    assert all(h["moodwire-origin"] == b"ingest" and h["moodwire-source"] == source.name.encode() for _, _, h in dead)
    edited, oversized, _ = dead
    assert edited[1] == lines[2].encode()
    assert len(oversized[1]) == DEAD_LETTER_KEEP_BYTES and oversized[1] == big.encode()[:DEAD_LETTER_KEEP_BYTES]
    assert oversized[2]["moodwire-original-size"] == str(len(big)).encode()
    assert oversized[2]["moodwire-original-sha256"] == hashlib.sha256(big.encode()).hexdigest().encode()
    assert (
        REGISTRY.get_sample_value(
            "moodwire_posts_duplicate_total", {"source": "file", "why": "same_id_different_text"}
        )
        == duplicates + 1
    )


def test_settings_come_from_the_whole_settings_object() -> None:
    from moodwire.config import load_settings

    settings = load_settings(posts_topic="p2", dead_letter_topic="d2", text_max_chars=500)
    assert IngestSettings.from_settings(settings) == IngestSettings("p2", "d2", 500)
