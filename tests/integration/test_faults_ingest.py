"""The ingest worker SIGKILLed mid-file: after restarts every post is on the bus, none skipped;
duplicates only within the at-least-once window (the batch sent after the last checkpoint), and
the store counts each post once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingest.checkpoint import CheckpointStore
from ingest.file_source import FileSource
from ingest.connectors import SourceSettings, build_sources
from ingest.service import IngestSettings
from moodwire.config import Settings
from moodwire.store import ServerStore
from tests.integration.fault_helpers import (
    ScorerThread,
    assert_counted_once,
    committed_offsets,
    distinct_ids,
    read_topic,
    scorer_env,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 150.0  # posts/s: slow enough to kill mid-file, fast enough to finish in seconds
# FileSource sends rate/4 lines per batch at this rate: the most one crash can send twice.
WINDOW = max(1, min(200, int(RATE // 4)))
WORDS = (
    "market rally slump earnings guidance outlook margin revenue dividend buyback layoffs merger "
    "lawsuit recall upgrade downgrade target inflation rates bond yield oil gold chip cloud retail "
    "shipping airline bank insurer pharma trial approval contract strike tariff demand supply growth "
    "loss profit forecast beat miss surge plunge steady volatile record weak strong quarter annual"
).split()


def write_posts(path: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """n posts with unrelated texts (so no two are the same story) over the last minutes."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    posts = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(14))
        posts.append(
            {
                "id": f"ing:{i}",
                "source": "file",
                "text": f"{words} {i}",
                "published_at": (now - timedelta(minutes=2 + i % 6)).isoformat().replace("+00:00", "Z"),
                "symbols": [("AAPL", "TSLA", "NVDA")[i % 3]],
                # One author per post: a few authors writing hundreds of posts a minute would
                # (rightly) be flagged as bots and left out of the aggregates this test checks.
                "author": f"author{i}",
            }
        )
    path.write_text("".join(json.dumps(p) + "\n" for p in posts), encoding="utf-8")
    return posts


def checkpoint_offset(settings: Settings, path: Path) -> int:
    return int(CheckpointStore(settings.state_dir / "ingest").load(FileSource.source_name(path)).get("offset", 0))


def run_ingest(settings: Settings, path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "moodwire.cli", "ingest", str(path), "--rate", str(RATE)]
    with log_path.open("ab") as log:
        return subprocess.Popen(command, env=scorer_env(settings), stdout=log, stderr=subprocess.STDOUT)


def test_ingest_killed_mid_file_resumes_without_skipping(server_settings: Settings, tmp_path: Path) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    n = 900
    source_file = tmp_path / "posts.jsonl"
    posts = write_posts(source_file, n, seed)
    size = source_file.stat().st_size
    log_path = tmp_path / "ingest.log"

    kills = 0
    offsets_at_kill = []
    while kills < 3:
        before = checkpoint_offset(server_settings, source_file)
        process = run_ingest(server_settings, source_file, log_path)

        def progressed(before: int = before, process: subprocess.Popen[bytes] = process) -> bool:
            return checkpoint_offset(server_settings, source_file) > before or process.poll() is not None

        try:
            # Once it has checkpointed a batch of its own, kill it at a random moment: mid-batch,
            # between the broker's ack and the checkpoint, or while it sleeps to keep the rate.
            wait_for(progressed, 60, "ingest to make progress", 0.05)
            time.sleep(rng.uniform(0.0, 0.6))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if code != -signal.SIGKILL:
            assert code == 0, log_path.read_text()[-3000:]
            break  # it finished the file first
        offset = checkpoint_offset(server_settings, source_file)
        if offset >= size:
            break  # killed after its last line: not a mid-file crash, and nothing is left to prove
        kills += 1
        offsets_at_kill.append(offset)
    assert kills >= 2, "the file was read before the worker could be killed twice mid-file: lower RATE"

    # Runs to the end; a run after that has nothing left to send.
    for _ in range(2):
        finished = run_ingest(server_settings, source_file, log_path)
        assert finished.wait(timeout=60) == 0, log_path.read_text()[-3000:]
        assert checkpoint_offset(server_settings, source_file) == size

    records = read_topic(server_settings, server_settings.posts_topic, n)
    on_bus = Counter(json.loads(r.value)["id"] for r in records)
    missing = {p["id"] for p in posts} - set(on_bus)
    assert not missing, f"skipped: {sorted(missing)[:10]}"
    assert set(on_bus) == {p["id"] for p in posts}
    duplicates = sum(on_bus.values()) - n
    assert duplicates <= kills * WINDOW, f"{duplicates} duplicates for {kills} crashes of at most {WINDOW}"
    # Every duplicate is a re-send of the last batch before a crash: it sits within one window
    # before some crash's resume point.
    bus_posts: dict[str, dict[str, Any]] = {}
    for record in records:
        bus_posts.setdefault(json.loads(record.value)["id"], json.loads(record.value))
    index_of = {p["id"]: i for i, p in enumerate(posts)}
    lines_at_kill = [source_file.read_bytes()[:offset].count(b"\n") for offset in offsets_at_kill]
    for post_id, count in on_bus.items():
        if count > 1:
            line = index_of[post_id]
            assert any(resume <= line < resume + WINDOW for resume in lines_at_kill), (post_id, lines_at_kill)

    # The store counts each post once, however often it was on the bus.
    store = ServerStore(server_settings)
    store.migrate()
    scorer = ScorerThread(server_settings, store).start()
    try:
        wait_for(lambda: distinct_ids(store) >= n, 90, f"all {n} posts to be stored")
    finally:
        scorer.stop()
    figures = assert_counted_once(store, list(bus_posts.values()))
    print(
        f"\ningest SIGKILL (seed {seed}): {kills} crashes at lines {lines_at_kill}, {n} posts in the file, "
        f"{sum(on_bus.values())} messages on the bus ({duplicates} re-sent, window {WINDOW}); {figures}"
    )
    store.close()


class Crash(Exception):
    """Stands in for a SIGKILL: the worker dies where this is raised."""


class DiesOnSecondCheckpoint(CheckpointStore):
    """Checkpoints once, then dies when it is about to save the next one: after the broker
    acknowledged the batch, before the source's position is saved."""

    saves = 0

    def save(self, key: str, state: dict[str, Any]) -> None:
        DiesOnSecondCheckpoint.saves += 1
        if DiesOnSecondCheckpoint.saves == 2:
            raise Crash()
        super().save(key, state)


def test_a_near_duplicate_sent_again_after_a_crash_stays_one_story(server_settings: Settings, tmp_path: Path) -> None:
    """Story ids come from the worker's memory of recent posts, and a restarted worker remembers
    nothing: the re-sent copy of a rewrite gets a story id of its own. The store must still count
    one story (the first copy's), and each post once."""
    from ingest.normalize import Normalizer
    from ingest.service import IngestWorker
    from moodwire.bus import KafkaBus

    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    stamp = now.isoformat().replace("+00:00", "Z")
    lines = [
        ("wire:1", "Boeing halts 737 MAX deliveries after a new inspection finds loose bolts on several jets"),
        ("other:1", "Costco raises its membership fee for the first time in seven years"),
        ("wire:2", "Boeing halts 737 MAX deliveries after new inspection finds loose bolts on several jets - Reuters"),
        ("other:2", "Nvidia supplier TSMC posts record quarterly revenue on AI chip demand"),
    ]
    source_file = tmp_path / "stories.jsonl"
    source_file.write_text(
        "".join(json.dumps({"id": i, "source": "rss", "text": t, "published_at": stamp}) + "\n" for i, t in lines)
    )
    bus = KafkaBus(server_settings)
    bus.ensure_topics([server_settings.posts_topic, server_settings.dead_letter_topic])
    state = server_settings.state_dir / "ingest"

    # First life: two lines a batch; dies after the second batch is on the bus, before its checkpoint.
    producer = bus.producer()
    dying = DiesOnSecondCheckpoint(state)
    ingest_settings = IngestSettings.from_settings(server_settings)
    worker = IngestWorker(ingest_settings, producer, [FileSource(source_file, batch_size=2)], dying, normalizer=Normalizer())
    worker.step(worker._sources[0])
    with pytest.raises(Crash):
        worker.step(worker._sources[0])
    producer.close()

    # Second life: a fresh process resumes at the last checkpoint and sends the second batch again.
    checkpoints = CheckpointStore(state)
    producer = bus.producer()
    sources = build_sources(SourceSettings.from_settings(server_settings), checkpoints, [source_file])
    IngestWorker(ingest_settings, producer, sources, checkpoints, normalizer=Normalizer()).run(
        threading.Event(), stop_when_exhausted=True
    )
    producer.close()

    records = read_topic(server_settings, server_settings.posts_topic, 6)
    copies = [json.loads(r.value) for r in records]
    assert Counter(c["id"] for c in copies) == {"wire:1": 1, "other:1": 1, "wire:2": 2, "other:2": 2}
    wire_stories = [c["story_id"] for c in copies if c["id"] == "wire:2"]
    assert len(set(wire_stories)) == 2, "the premise: the re-sent copy got a story id of its own"

    store = ServerStore(server_settings)
    store.migrate()
    scorer = ScorerThread(server_settings, store).start()
    try:
        wait_for(lambda: sum(committed_offsets(server_settings).values()) >= len(records), 60, "every copy scored")
    finally:
        scorer.stop()
    first_copies: dict[str, dict[str, Any]] = {}
    for copy in copies:
        first_copies.setdefault(copy["id"], copy)
    figures = assert_counted_once(store, list(first_copies.values()))
    assert figures["stories"] == 3
    store.close()
