"""The embedded default: file -> ingest -> in-process log -> scorer -> chDB, and the CLI around it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ingest.checkpoint import CheckpointStore
from ingest.connectors import SourceSettings, build_sources
from ingest.service import IngestSettings, IngestWorker
from moodwire import counting
from moodwire.bus import REASON_HEADER, LocalBus
from moodwire.config import Settings
from moodwire.store import ChdbStore
from tests.conftest import make_post
from tests.integration.fault_helpers import scorer_service

pytestmark = pytest.mark.integration


def write_posts(path: Path, n: int, bad_lines: list[str] = ()) -> None:  # type: ignore[assignment]
    lines = [json.dumps(make_post(i, symbol=("AAPL", "MSFT")[i % 2])) for i in range(n)]
    lines[n // 2 : n // 2] = list(bad_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_file_to_chdb_through_the_in_process_bus(embedded_settings: Settings, tmp_path: Path) -> None:
    n = 250
    source_file = tmp_path / "posts.jsonl"
    write_posts(source_file, n, ['{"id": "bad", "text": 5}', "not json at all"])
    settings = embedded_settings
    bus = LocalBus(settings.data_dir / "bus")
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    checkpoints = CheckpointStore(settings.state_dir / "ingest")
    sources = build_sources(SourceSettings.from_settings(settings), checkpoints, [source_file])
    worker = IngestWorker(IngestSettings.from_settings(settings), bus.producer(), sources, checkpoints)
    sent = worker.run(threading.Event(), stop_when_exhausted=True)
    assert sent == n

    store = ChdbStore(settings.chdb_path)
    try:
        store.migrate()
        service = scorer_service(settings, bus, store)
        stop = threading.Event()
        while service.stats.scored < n:
            batch = service.poll_batch(stop)
            assert batch, "the scorer ran dry before storing every post"
            service.process(batch)
        rows, distinct = store.query("SELECT count(), uniqExact(id) FROM posts").rows[0]
        assert (rows, distinct) == (n, n)
        # Every post counted once per ticker (`posts`); ingest clustered these near-identical texts
        # into stories, and `stories` counts each once per ticker, in the minute of its first copy.
        aggregated = dict(
            store.query(f"SELECT symbol, sum(posts) FROM ({counting.minute_counts_sql('moodwire')}) GROUP BY symbol").rows
        )
        assert aggregated == {"AAPL": n // 2, "MSFT": n // 2}
        story_ids = {row[0] for row in store.query("SELECT DISTINCT if(story_id = '', id, story_id) FROM posts").rows}
        assert store.query(f"SELECT uniqExact(story) FROM {counting.STORY_TABLE}").rows[0][0] == len(story_ids)
    finally:
        store.close()

    dead = bus.read(settings.dead_letter_topic, 0, 10, timeout_s=0.1)
    reasons = sorted(dict(m.headers)[REASON_HEADER].decode() for m in dead)
    assert len(reasons) == 2
    assert any(r.startswith("malformed jsonl line") for r in reasons)
    assert any(r.startswith("text:") for r in reasons)

    # A restart of ingest resumes at its checkpoint: nothing is emitted again.
    sources = build_sources(SourceSettings.from_settings(settings), checkpoints, [source_file])
    again = IngestWorker(IngestSettings.from_settings(settings), bus.producer(), sources, checkpoints)
    assert again.run(threading.Event(), stop_when_exhausted=True) == 0
    assert bus.size(settings.posts_topic) == n


def _moodwire(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moodwire.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_run_answers_sql_while_running_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    source_file = tmp_path / "posts.jsonl"
    write_posts(source_file, 400)
    env = {**os.environ, "MOODWIRE_DATA_DIR": str(tmp_path / "data"), "MOODWIRE_QUERY_PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moodwire.cli", "run", "--input", str(source_file), "--rate", "100"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        stored = 0
        while time.monotonic() < deadline:
            result = _moodwire("sql", "SELECT count() FROM posts", "--format", "tsv", env=env)
            if result.returncode == 0:
                stored = int(result.stdout.split()[-1])
                if stored > 0:
                    break
            time.sleep(1)
        assert stored > 0, "moodwire sql never saw a stored post while run was running"
        # Writes are refused through the endpoint.
        refused = _moodwire("sql", "DROP TABLE posts", env=env)
        assert refused.returncode == 1 and "read-only" in refused.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    # Once it has stopped, sql opens the data dir directly; the count is still exact.
    after = _moodwire("sql", "SELECT count() = uniqExact(id) FROM posts", "--format", "tsv", env=env)
    assert after.returncode == 0, after.stderr
    assert after.stdout.split()[-1] in ("1", "true")


def test_unsupported_languages_and_spam_are_stored_marked_and_left_out_of_sentiment(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    from moodwire.bus import LocalBus

    settings = embedded_settings
    bus = LocalBus(settings.data_dir / "bus")
    producer = bus.producer()
    english = make_post(1, text="Apple shares jump after a record quarter, analysts raise targets on $AAPL")
    german = make_post(2, text="Die Aktie von $AAPL ist heute nach den Quartalszahlen deutlich gefallen, Anleger sind enttäuscht")
    german["lang"] = "de"
    spam = make_post(3, text="$AAPL to the moon buy buy buy")
    spam["flags"] = ["repeated_text"]
    for post in (english, german, spam):
        producer.send(settings.posts_topic, json.dumps(post).encode())
    producer.flush()
    store = ChdbStore(settings.chdb_path)
    try:
        store.migrate()
        service = scorer_service(settings, bus, store)
        service.process(service.poll_batch(threading.Event()))
        rows = dict(store.query("SELECT id, status FROM posts").rows)
        assert rows == {"test:1": "scored", "test:2": "unsupported_language", "test:3": "scored"}
        counted = store.query(f"SELECT sum(stories) FROM ({counting.minute_counts_sql('moodwire')})").rows[0][0]
        assert counted == 1
    finally:
        store.close()
