"""The scorer under faults, on the real broker and the real ClickHouse server:

* SIGKILLed again and again at random points while a stream flows (mid-poll, mid-batch, and
  right after an insert before its offsets are committed): every post is stored once and every
  aggregate is exact;
* SIGTERM: the batch in hand is finished, inserted and committed, and the process exits 0
  within the configured shutdown bound;
* the ClickHouse server stopped for ~20 s mid-stream: the scorer holds its batch, stops
  consuming and committing, retries with backoff, resumes, and nothing is lost.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from moodwire.bus import KafkaBus, Message
from moodwire.config import Settings
from moodwire.store import ServerStore, StoreUnavailable
from tests import services
from tests.integration.fault_helpers import (
    ScorerThread,
    Stream,
    assert_counted_once,
    committed_offsets,
    distinct_ids,
    produce,
    raw_rows,
    read_topic,
    scorer_env,
    stream_post,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The real service loop; TEST_KILL_AFTER_INSERT=n makes it SIGKILL itself right after its n-th
# insert, before the offsets of that batch are committed (the widest redelivery window). The ids
# of every message it polls go to TEST_CONSUMED_LOG and those of every row it inserts to
# TEST_INSERTED_LOG, so the test can count redeliveries and re-inserts.
CRASHING_SCORER = textwrap.dedent(
    """
    import json, os, signal, threading
    from moodwire import logs
    from moodwire.bus import KafkaBus
    from moodwire.config import load_settings
    from moodwire.store import ServerStore
    from scorer.runtime import OnnxScorer
    from scorer.service import ScorerService, ScorerSettings

    settings = load_settings()
    logs.configure("INFO")
    kill_after = int(os.environ.get("TEST_KILL_AFTER_INSERT", "0"))
    inserted_log = open(os.environ["TEST_INSERTED_LOG"], "a")
    consumed_log = open(os.environ["TEST_CONSUMED_LOG"], "a")


    def record(log, ids):
        if ids:
            log.write("".join(i + "\\n" for i in ids))
            log.flush()
            os.fsync(log.fileno())


    class Consumer:
        def __init__(self, inner):
            self._inner = inner

        def poll(self, max_records, timeout_s):
            messages = self._inner.poll(max_records, timeout_s)
            record(consumed_log, [json.loads(m.value)["id"] for m in messages])
            return messages

        def __getattr__(self, name):
            return getattr(self._inner, name)

    class Store(ServerStore):
        inserts = 0

        def insert_posts(self, posts):
            super().insert_posts(posts)
            record(inserted_log, [p.post.id for p in posts])
            Store.inserts += 1
            if Store.inserts == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    bus = KafkaBus(settings)
    service = ScorerService(
        ScorerSettings.from_settings(settings), Consumer(bus.consumer(settings.consumer_group, [settings.posts_topic])),
        bus.producer(), Store(settings), OnnxScorer(),
    )
    service.run(threading.Event())
    """
)


def fast_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"batch_max_size": 16, "batch_max_wait_ms": 100, **changes})


def test_repeated_sigkills_lose_nothing_and_count_nothing_twice(server_settings: Settings, tmp_path: Path) -> None:
    settings = fast_settings(server_settings)
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    store = ServerStore(settings)
    store.migrate()
    KafkaBus(settings).ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    stream = Stream(settings, rate=25).start()
    inserted_log, consumed_log = tmp_path / "inserted.txt", tmp_path / "consumed.txt"

    crashes: list[dict[str, Any]] = []
    try:
        for round_ in range(4):
            mode = "after-insert" if round_ % 2 == 0 else "random"
            logs = (inserted_log, consumed_log, tmp_path / f"scorer-{round_}.log")
            crashes.append(crash_scorer(settings, store, mode, rng, *logs))
    finally:
        posts = stream.stop()
    assert stream.count() > 0
    # A last scorer, not killed, drains what is left (posts already stored are not stored again).
    final_store = WatchedStore(settings)
    final_consumer = WatchedConsumer(KafkaBus(settings).consumer(settings.consumer_group, [settings.posts_topic]))
    scorer = ScorerThread(settings, final_store, consumer=final_consumer).start()
    try:
        wait_for(lambda: distinct_ids(store) >= len(posts), 90, f"all {len(posts)} posts to be stored")
    finally:
        scorer.stop()
        final_store.close()

    figures = assert_counted_once(store, posts)
    consumed = consumed_log.read_text().split() + final_consumer.ids
    # (A random kill can land between an insert and its log line: `inserted` may miss a few.)
    inserted = inserted_log.read_text().split() + final_store.inserted_ids
    redelivered = len(consumed) - len(set(consumed))
    # Each insert-then-SIGKILL left a stored batch uncommitted: it was delivered again.
    assert redelivered >= 1
    print(
        f"\nscorer SIGKILL (seed {seed}): {len(crashes)} crashes {crashes}; {len(posts)} posts sent, "
        f"{len(consumed)} deliveries ({redelivered} redelivered), {len(inserted)} rows inserted "
        f"({len(inserted) - len(set(inserted))} twice); {figures}"
    )
    store.close()


def crash_scorer(
    settings: Settings,
    store: ServerStore,
    mode: str,
    rng: random.Random,
    inserted_log: Path,
    consumed_log: Path,
    log_path: Path,
) -> dict[str, Any]:
    """Start a scorer process and SIGKILL it: right after an insert, or at a random moment."""
    kill_after = rng.randint(1, 3) if mode == "after-insert" else 0
    rows_before = raw_rows(store)
    env = {
        **scorer_env(settings),
        "TEST_KILL_AFTER_INSERT": str(kill_after),
        "TEST_INSERTED_LOG": str(inserted_log),
        "TEST_CONSUMED_LOG": str(consumed_log),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", CRASHING_SCORER], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        started = time.monotonic()
        try:
            if mode == "random":
                # Once it is consuming, kill it at a random moment: mid-poll, mid-scoring,
                # mid-insert or between insert and commit, wherever the dice fall.
                wait_for(lambda: raw_rows(store) > rows_before, 45, "the scorer to store rows", 0.1)
                time.sleep(rng.uniform(0.0, 1.5))
                process.send_signal(signal.SIGKILL)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == -signal.SIGKILL, f"{mode}: exit {code}\n{log_path.read_text()[-3000:]}"
    return {"mode": mode, "kill_after_insert": kill_after, "alive_s": round(time.monotonic() - started, 1)}


def sample_posts(count: int) -> list[dict[str, Any]]:
    """Real posts from the bundled sample stream, re-dated to the last few minutes."""
    from moodwire.app import bundled_sample

    posts = []
    now = datetime.now(UTC).replace(microsecond=0)
    for index, line in enumerate(bundled_sample().read_text(encoding="utf-8").splitlines()[:count]):
        post = json.loads(line)
        post["published_at"] = (now - timedelta(minutes=2 + index % 5)).isoformat().replace("+00:00", "Z")
        posts.append(post)
    return posts


def test_a_post_delivered_again_in_other_company_is_counted_under_one_label(server_settings: Settings) -> None:
    """A replayed file, or a batch redelivered after a crash and regrouped: the same posts arrive
    again next to other posts. Int8 scores shift a little with the company a post is batched in,
    so a post scored twice can get two labels; each per-label aggregate must still count it once."""
    settings = fast_settings(server_settings)
    posts = sample_posts(240)
    first, new = posts[:160], posts[160:]
    again = first + new
    random.Random(7).shuffle(again)  # other neighbours in every micro-batch
    store = ServerStore(settings)
    store.migrate()

    produce(settings, first)
    scorer = ScorerThread(settings, store).start()
    try:
        wait_for(lambda: sum(committed_offsets(settings).values()) >= len(first), 90, "the first delivery")
        produce(settings, again)
        wait_for(
            lambda: sum(committed_offsets(settings).values()) >= len(first) + len(again), 90, "the second delivery"
        )
    finally:
        scorer.stop()

    figures = assert_counted_once(store, posts)
    print(f"\nredelivered in other company: {len(first)} posts twice, {len(new)} once; {figures}")
    store.close()


SCORE_COMMAND = [sys.executable, "-m", "moodwire.cli", "score"]


def test_sigterm_finishes_the_batch_commits_and_exits_in_time(server_settings: Settings, tmp_path: Path) -> None:
    shutdown_bound_s = 10.0
    settings = fast_settings(server_settings, batch_max_size=32, shutdown_timeout_s=shutdown_bound_s)
    n = 1500
    posts = [stream_post(i, prefix="term") for i in range(n)]
    produce(settings, posts)
    store = ServerStore(settings)
    store.migrate()

    log_path = tmp_path / "scorer.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(SCORE_COMMAND, env=scorer_env(settings), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: distinct_ids(store) >= 64, 60, "the scorer to be busy", 0.1)
            time.sleep(random.uniform(0.0, 0.5))  # mid-stream, most likely mid-batch
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=shutdown_bound_s + 20)
            took_s = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert took_s <= shutdown_bound_s, f"took {took_s:.1f} s to stop, bound {shutdown_bound_s} s"
    assert "received SIGTERM" in output

    # What was inserted is exactly what was committed: per partition, the first `committed`
    # messages, no more (nothing inserted and left uncommitted) and no fewer (nothing committed
    # that isn't in the table).
    stored = {row[0] for row in store.query(f"SELECT DISTINCT id FROM {store.database}.posts").rows}
    assert 0 < len(stored) < n, "stop mid-stream"
    assert raw_rows(store) == len(stored), "a clean stop inserts nothing twice"
    committed = committed_offsets(settings)
    records = read_topic(settings, settings.posts_topic, n)
    by_partition: dict[int, list[str]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(record.partition, []).append(json.loads(record.value)["id"])
    committed_ids: set[str] = set()
    for partition, ids in by_partition.items():
        committed_ids |= set(ids[: committed.get(partition, 0)])
    assert committed_ids == stored

    # A restarted scorer picks up exactly there: nothing lost, nothing redelivered.
    consumer = WatchedConsumer(KafkaBus(settings).consumer(settings.consumer_group, [settings.posts_topic]))
    scorer = ScorerThread(settings, store, consumer=consumer).start()
    try:
        wait_for(lambda: distinct_ids(store) >= n, 60, "the rest of the posts")
    finally:
        scorer.stop()
    assert not stored & set(consumer.ids), "a cleanly stopped scorer's batch came back"
    assert sorted(consumer.ids) == sorted({p["id"] for p in posts} - stored)
    figures = assert_counted_once(store, posts)
    print(
        f"\nscorer SIGTERM: stopped in {took_s:.2f} s (bound {shutdown_bound_s:.0f} s) with {len(stored)} of {n} "
        f"stored and committed; {figures}"
    )
    store.close()


def stored_or_zero(store: ServerStore) -> int:
    try:
        return distinct_ids(store)
    except StoreUnavailable:  # its connection died with the server; the next query reconnects
        return 0


class WatchedConsumer:
    """The real Kafka consumer, with a record of what each poll returned and when."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.polls: list[tuple[float, int]] = []
        self.ids: list[str] = []
        self._lock = threading.Lock()

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        messages = self._inner.poll(max_records, timeout_s)
        with self._lock:
            self.polls.append((time.monotonic(), len(messages)))
            self.ids.extend(json.loads(m.value)["id"] for m in messages)
        return messages

    def polled_between(self, start: float, end: float) -> tuple[int, int]:
        """(poll calls, messages) in [start, end]."""
        with self._lock:
            inside = [n for t, n in self.polls if start <= t <= end]
        return len(inside), sum(inside)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class WatchedStore(ServerStore):
    """The real server store, with a record of every call the scorer makes and every inserted id.

    `attempts` holds (started, ended, ok) per query or insert; ok is False when it found the
    server unavailable."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.attempts: list[tuple[float, float, bool]] = []
        self.inserted_ids: list[str] = []

    def _watched(self, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            result = call()
        except StoreUnavailable:
            self.attempts.append((started, time.monotonic(), False))
            raise
        self.attempts.append((started, time.monotonic(), True))
        return result

    def query(self, sql: str, params: Any = None) -> Any:
        return self._watched(lambda: ServerStore.query(self, sql, params))

    def insert_posts(self, posts: Any) -> None:
        self._watched(lambda: ServerStore.insert_posts(self, posts))
        self.inserted_ids.extend(p.post.id for p in posts)


def service_store_ok_after(scorer: ScorerThread) -> bool:
    return scorer.service.store_ok


def test_clickhouse_outage_holds_the_batch_backs_off_and_loses_nothing(
    server_settings: Settings, tmp_path: Path
) -> None:
    outage_s = 20.0
    data_dir = tmp_path / "clickhouse"
    server = services.start_clickhouse(data_dir=data_dir)
    port = server.port
    settings = fast_settings(server_settings, clickhouse_port=port, clickhouse_timeout_s=5.0)
    store = WatchedStore(settings)
    observer = ServerStore(settings)
    try:
        store.migrate()
        KafkaBus(settings).ensure_topics([settings.posts_topic, settings.dead_letter_topic])
        consumer = WatchedConsumer(KafkaBus(settings).consumer(settings.consumer_group, [settings.posts_topic]))
        stream = Stream(settings, rate=30, prefix="out").start()
        scorer = ScorerThread(settings, store, consumer=consumer).start()
        try:
            wait_for(lambda: distinct_ids(observer) >= 60, 60, "the scorer to store rows")

            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=30)
            down_at = time.monotonic()
            wait_for(lambda: any(not ok for _, _, ok in store.attempts), 10, "an insert to fail")
            first_failure = next(start for start, _, ok in store.attempts if not ok)
            time.sleep(2.0)  # let a commit that was in flight at the failure land
            committed_early = committed_offsets(settings)
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
            committed_late = committed_offsets(settings)
            sent_during_outage = stream.count()

            server = services.start_clickhouse(data_dir=data_dir, tcp_port=port)
            back_at = time.monotonic()
            wait_for(lambda: any(ok and end > back_at for _, end, ok in store.attempts), 40, "the scorer to resume")
            resumed_at = next(end for _, end, ok in store.attempts if ok and end > back_at)
            posts = stream.stop()
            wait_for(lambda: stored_or_zero(observer) >= len(posts), 60, f"all {len(posts)} posts to be stored")
        finally:
            scorer.stop()
            stream.stop()

        # While the store was away: no offset moved, and consumption stopped. The loop scores the
        # next batch while one is being written, so at most one more batch is fetched, right after
        # the insert that failed began; after that the consumer is paused: it is still polled (so a
        # Kafka group keeps it) but fetches nothing until the store is back.
        assert committed_early == committed_late
        calls, fetched = consumer.polled_between(first_failure, resumed_at)
        assert fetched <= settings.batch_max_size, f"fetched {fetched} messages in {calls} polls during the outage"
        late_calls, late_fetched = consumer.polled_between(first_failure + 5.0, resumed_at)
        assert late_fetched == 0, f"fetched {late_fetched} messages in {late_calls} polls during the outage"
        assert late_calls > 0, "the paused consumer was not polled: a Kafka group would drop it"
        # The held batch kept probing the store (every store_retry_interval_s) rather than sleeping
        # out a growing backoff, which is what lets it resume within seconds of the store's return.
        outage = [(start, end, ok) for start, end, ok in store.attempts if start >= first_failure]
        failures = [a for a in outage if not a[2]]
        assert len(failures) >= 5, f"only {len(failures)} attempts during a {outage_s:.0f} s outage"
        assert service_store_ok_after(scorer)
        figures = assert_counted_once(observer, posts)
        print(
            f"\nClickHouse outage: down {back_at - down_at:.1f} s, {len(failures)} failed attempts, "
            f"first batch stored {resumed_at - back_at:.1f} s after the restart; "
            f"{sent_during_outage} posts sent by the end of the outage; {figures}"
        )
    finally:
        observer.close()
        store.close()
        server.stop()
