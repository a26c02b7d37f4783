"""The scorer loop's ordering and backpressure, with in-memory fakes for the bus, store and model.

The real broker and ClickHouse versions of these guarantees are in tests/integration
(test_pipeline_*, test_faults_scorer); here the fakes let the tests see the order of events.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moodwire.bus import Message, TopicPartition
from moodwire.config import load_settings
from moodwire.schema import ScoredPost
from moodwire.store import QueryResult, StoreRejected, StoreUnavailable
from scorer.service import ScorerService, ScorerSettings
from tests.conftest import make_post


class Events:
    """One ordered log shared by the fakes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[str, Any]] = []

    def add(self, kind: str, value: Any) -> None:
        with self._lock:
            self.items.append((kind, value))

    def of(self, kind: str) -> list[Any]:
        with self._lock:
            return [value for k, value in self.items if k == kind]


class FakeConsumer:
    def __init__(
        self,
        values: list[bytes],
        events: Events,
        stop_when_drained: threading.Event,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        self._messages = [Message("posts", 0, i, None, v, headers) for i, v in enumerate(values)]
        self._position = 0
        self._events = events
        self._drained = stop_when_drained
        self.committed = 0
        self.paused = False

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        if self.paused:  # a paused Kafka consumer keeps its group membership and returns nothing
            self._events.add("poll_paused", self._position)
            return []
        out = self._messages[self._position : self._position + max_records]
        self._position += len(out)
        if out:
            self._events.add("poll", out[-1].offset)
        elif self.committed == len(self._messages):
            self._drained.set()
        else:
            time.sleep(0.01)
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        self.committed = offsets[("posts", 0)]
        self._events.add("commit", self.committed)
        return True

    def lag(self) -> dict[TopicPartition, int]:
        return {("posts", 0): len(self._messages) - self._position}

    def uncommitted(self) -> int:
        return len(self._messages) - self.committed

    def connected(self) -> bool:
        return True

    def pause(self) -> None:
        self.paused = True
        self._events.add("pause", self._position)

    def resume(self) -> None:
        self.paused = False
        self._events.add("resume", self._position)

    def close(self) -> None: ...


class FakeProducer:
    def __init__(self, events: Events) -> None:
        self._events = events
        self.sent: list[tuple[bytes, dict[str, bytes]]] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.sent.append((value, dict(headers)))
        self._events.add("dead_letter", dict(headers)["moodwire-reason"].decode())

    def flush(self, timeout_s: float | None = None) -> None: ...

    def connected(self) -> bool:
        return True

    def close(self) -> None: ...


class FakeStore:
    """Stores posts in a list. `refuse(post)` says which posts ClickHouse would refuse as rows
    (StoreRejected for any batch that holds one), standing in for a row it cannot parse."""

    database = "moodwire"

    def __init__(
        self,
        events: Events,
        unavailable_for: int = 0,
        refuse: Callable[[ScoredPost], bool] = lambda _: False,
    ) -> None:
        self._events = events
        self.ids: list[str] = []
        self.stored: list[ScoredPost] = []
        self._unavailable_for = unavailable_for
        self._refuse = refuse

    def insert_posts(self, posts: Sequence[ScoredPost]) -> None:
        if self._unavailable_for > 0:
            self._unavailable_for -= 1
            self._events.add("insert_failed", len(posts))
            raise StoreUnavailable("connection refused")
        if any(self._refuse(p) for p in posts):
            self._events.add("insert_refused", len(posts))
            raise StoreRejected("Code: 27. DB::Exception: Cannot parse input")
        time.sleep(0.02)  # long enough that the next batch is scored while this one is written
        self.ids.extend(p.post.id for p in posts)
        self.stored.extend(posts)
        self._events.add("insert", [p.post.id for p in posts])

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        known = [(i,) for i in (params or {}).get("ids", ()) if i in self.ids]
        return QueryResult(["id"], ["String"], known)

    def migrate(self) -> None: ...

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


@dataclass
class FakePrediction:
    polarity: str = "neutral"
    polarity_score: float = 0.0
    emotion: str = "neutral"

    @property
    def polarity_probs(self) -> dict[str, float]:
        return {"negative": 0.0, "neutral": 1.0, "positive": 0.0}

    @property
    def emotion_probs(self) -> dict[str, float]:
        return {e: float(e == "neutral") for e in ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")}


class FakeScorer:
    """Every post neutral; a text containing `poison` makes the whole call fail, as a model
    that chokes on one input would."""

    model_version = "fake-1"
    provider = "cpu"

    def __init__(self, events: Events, poison: str | None = None) -> None:
        self._events = events
        self._poison = poison
        self.texts: list[str] = []

    def predict(self, texts: Sequence[str], symbols: Sequence[Sequence[str]] | None = None) -> list[FakePrediction]:
        if self._poison is not None and any(self._poison in t for t in texts):
            raise ValueError("the model cannot read this")
        self._events.add("score", len(texts))
        self.texts.extend(texts)
        return [FakePrediction() for _ in texts]


def posts(n: int) -> list[bytes]:
    return [json.dumps(make_post(i)).encode() for i in range(n)]


def service_for(
    values: list[bytes],
    tmp_path: Path,
    store: FakeStore,
    events: Events,
    scorer: FakeScorer | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> tuple[ScorerService, FakeConsumer, threading.Event]:
    settings = load_settings(data_dir=tmp_path, batch_max_size=8, batch_max_wait_ms=1, store_retry_interval_s=0.05)
    drained = threading.Event()
    consumer = FakeConsumer(values, events, drained, headers)
    service = ScorerService(
        ScorerSettings.from_settings(settings), consumer, FakeProducer(events), store, scorer or FakeScorer(events)  # type: ignore[arg-type]
    )
    return service, consumer, drained


def run_until(service: ScorerService, done: threading.Event, timeout_s: float = 20.0) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    assert done.wait(timeout_s), "the scorer did not drain its input"
    stop.set()
    thread.join(timeout_s)
    assert not thread.is_alive()


def test_every_post_is_stored_once_and_each_commit_follows_its_insert(tmp_path: Path) -> None:
    events = Events()
    store = FakeStore(events)
    values = posts(50) + [b"{not json", json.dumps({"id": "x"}).encode()]
    service, consumer, drained = service_for(values, tmp_path, store, events)
    run_until(service, drained)

    assert sorted(store.ids) == sorted(f"test:{i}" for i in range(50))
    assert len(events.of("dead_letter")) == 2
    assert consumer.committed == len(values)
    assert service.stats.scored == 50 and service.stats.rejected == 2
    # A commit never runs ahead of the inserts: when offset k is committed, every post before it is stored.
    stored_so_far = 0
    for kind, value in events.items:
        if kind == "insert":
            stored_so_far += len(value)
        if kind == "commit":
            assert stored_so_far >= min(value, 50)
    commits = events.of("commit")
    assert commits == sorted(commits)


def test_the_next_batch_is_scored_while_the_previous_one_is_written(tmp_path: Path) -> None:
    events = Events()
    service, _, drained = service_for(posts(64), tmp_path, FakeStore(events), events)
    run_until(service, drained)
    kinds = [kind for kind, _ in events.items if kind in ("score", "insert")]
    # Without the overlap the log alternates strictly score, insert, score, insert ...
    overlapped = any(a == b == "score" for a, b in zip(kinds, kinds[1:]))
    assert overlapped, kinds


def test_a_store_outage_holds_consumption_and_commits_nothing_until_the_insert_succeeds(tmp_path: Path) -> None:
    events = Events()
    store = FakeStore(events, unavailable_for=20)  # 20 failed attempts, 0.05 s apart
    service, consumer, drained = service_for(posts(40), tmp_path, store, events)
    run_until(service, drained)

    assert sorted(store.ids) == sorted(f"test:{i}" for i in range(40))
    first_commit = next(i for i, (kind, _) in enumerate(events.items) if kind == "commit")
    last_failure = max(i for i, (kind, _) in enumerate(events.items) if kind == "insert_failed")
    assert first_commit > last_failure
    # While the store was down the loop took at most one more batch off the bus (bounded memory),
    # then paused the consumer and kept polling it (so a Kafka group keeps it) until the store was back.
    polls_during_outage = [
        value for i, (kind, value) in enumerate(events.items) if kind == "poll" and i < last_failure
    ]
    assert len(polls_during_outage) <= 2
    pause = next(i for i, (kind, _) in enumerate(events.items) if kind == "pause")
    resume = next(i for i, (kind, _) in enumerate(events.items) if kind == "resume")
    assert pause < last_failure < resume
    assert events.of("poll_paused"), "a paused consumer must still be polled"
    assert not service.store_ok or service.stats.scored == 40


def test_stopping_during_an_outage_commits_nothing(tmp_path: Path) -> None:
    events = Events()
    store = FakeStore(events, unavailable_for=1_000)
    service, consumer, _ = service_for(posts(10), tmp_path, store, events)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while not events.of("insert_failed") and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert events.of("commit") == [] and consumer.committed == 0
    assert store.ids == []


def test_a_post_the_model_fails_on_is_dead_lettered_alone_and_the_stream_moves_on(tmp_path: Path) -> None:
    events = Events()
    values = posts(30)
    values[13] = json.dumps(make_post(13, text="a $AAPL post with the POISON in it")).encode()
    store = FakeStore(events)
    service, consumer, drained = service_for(values, tmp_path, store, events, FakeScorer(events, poison="POISON"))
    run_until(service, drained)

    assert sorted(store.ids) == sorted(f"test:{i}" for i in range(30) if i != 13)
    reasons = events.of("dead_letter")
    assert len(reasons) == 1 and reasons[0].startswith("scorer: the model failed"), reasons
    assert consumer.committed == 30  # committed past it


def test_rows_the_store_refuses_are_found_and_dead_lettered_with_their_original_message(tmp_path: Path) -> None:
    events = Events()
    values = posts(24)
    store = FakeStore(events, refuse=lambda p: p.post.id in ("test:5", "test:17"))
    service, consumer, drained = service_for(values, tmp_path, store, events)
    run_until(service, drained)

    assert sorted(store.ids) == sorted(f"test:{i}" for i in range(24) if i not in (5, 17))
    producer_sent = service._producer.sent  # type: ignore[attr-defined]
    assert sorted(value for value, _ in producer_sent) == sorted([values[5], values[17]])
    assert all(h["moodwire-reason"].startswith(b"store: ") for _, h in producer_sent)
    assert {h["moodwire-source"] for _, h in producer_sent} == {b"posts/0/5", b"posts/0/17"}
    assert consumer.committed == 24


def test_a_store_that_refuses_every_row_holds_the_batch_instead_of_dead_lettering_it(tmp_path: Path) -> None:
    events = Events()
    store = FakeStore(events, refuse=lambda p: True)
    service, consumer, _ = service_for(posts(8), tmp_path, store, events)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while len(events.of("insert_refused")) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert len(events.of("insert_refused")) >= 40, "the batch should be retried, not given up"
    assert events.of("dead_letter") == [] and consumer.committed == 0
    assert not service.store_ok


def test_html_is_stripped_from_other_producers_posts_but_not_twice_from_ingests(tmp_path: Path) -> None:
    raw = json.dumps(make_post(1, text="<p>$AAPL &lt;b&gt; <b>beats</b></p>")).encode()
    for headers, expected in (((), "$AAPL <b> beats"), ((("moodwire-normalized", b"1"),), "<p>$AAPL &lt;b&gt; <b>beats</b></p>")):
        events = Events()
        scorer = FakeScorer(events)
        service, _, drained = service_for([raw], tmp_path, FakeStore(events), events, scorer, headers)
        run_until(service, drained)
        assert scorer.texts == [expected]
