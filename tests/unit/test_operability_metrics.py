"""The metrics the Prometheus rules read (dashboards/prometheus/rules.yml), as the services set
them: lag up to the committed offset after every poll, ClickHouse reachability, the stages'
last-success clocks from the start, delivery counters from 0. Fakes for bus and store."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from alerting.detector import DetectorSettings
from alerting.job import AlertJob
from alerting.lifecycle import DeliveryOutcome, LifecycleSettings, Notification
from moodwire import metrics
from moodwire.bus import TopicPartition
from moodwire.config import load_settings
from moodwire.schema import ScoredPost
from moodwire.store import QueryResult, StoreUnavailable
from scorer.service import ScorerService, ScorerSettings
from tests.unit.test_scorer_service import Events, FakeConsumer, FakeProducer, FakeScorer, FakeStore, posts


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def lag(topic: str = "posts", partition: str = "0") -> float | None:
    return sample("moodwire_consumer_lag_messages", topic=topic, partition=partition)


def scorer(tmp_path: Path, values: list[bytes], store: Any = None) -> tuple[ScorerService, FakeConsumer]:
    events = Events()
    settings = load_settings(data_dir=tmp_path, batch_max_size=8, batch_max_wait_ms=1, store_retry_interval_s=0.01)
    consumer = FakeConsumer(values, events, threading.Event())
    service = ScorerService(
        ScorerSettings.from_settings(settings), consumer, FakeProducer(events), store or FakeStore(events), FakeScorer(events)  # type: ignore[arg-type]
    )
    return service, consumer


def test_lag_counts_what_is_polled_until_it_is_committed(tmp_path: Path) -> None:
    service, consumer = scorer(tmp_path, posts(20))
    batch = service.poll_batch(threading.Event())
    assert len(batch) == 8
    # The consumer's position is past these 8, but nothing is committed: a stalled insert
    # holding them must still show as lag (20), not as the 12 the position suggests.
    assert consumer.lag() == {("posts", 0): 12}
    assert lag() == 20
    service.process(batch)
    assert consumer.committed == 8 and lag() == 12


class TwoPartitionConsumer(FakeConsumer):
    """Owns partitions 0 and 1 until a rebalance takes partition 1 away."""

    owned = {("posts", 0): 3, ("posts", 1): 5}

    def lag(self) -> dict[TopicPartition, int]:
        return dict(self.owned)


def test_lag_drops_the_partitions_a_rebalance_took_away(tmp_path: Path) -> None:
    events = Events()
    consumer = TwoPartitionConsumer([], events, threading.Event())
    service = ScorerService(
        ScorerSettings.from_settings(load_settings(data_dir=tmp_path, batch_max_wait_ms=1)),
        consumer, FakeProducer(events), FakeStore(events), FakeScorer(events),  # type: ignore[arg-type]
    )
    service.poll_batch(threading.Event())
    assert lag(partition="1") == 5
    consumer.owned = {("posts", 0): 3}
    service.poll_batch(threading.Event())
    # another replica reports partition 1 now; a stale value here would read as a stall
    assert lag(partition="1") is None and lag(partition="0") == 3


class FlakyStore(FakeStore):
    """Unavailable once; records what moodwire_store_up said at every insert attempt."""

    def __init__(self, events: Events) -> None:
        super().__init__(events, unavailable_for=1)
        self.seen_up: list[float | None] = []

    def insert_posts(self, posts: Sequence[ScoredPost]) -> None:
        self.seen_up.append(sample("moodwire_store_up"))
        super().insert_posts(posts)


def test_store_up_follows_the_scorers_inserts(tmp_path: Path) -> None:
    store = FlakyStore(Events())
    service, _ = scorer(tmp_path, posts(4), store)
    assert sample("moodwire_store_up") == 1  # the store was opened before the service
    service.process(service.poll_batch(threading.Event()))
    assert store.seen_up == [1, 0]  # down after the failed attempt, until the retry succeeded
    assert sample("moodwire_store_up") == 1


def test_the_scorers_commit_clock_starts_with_the_process(tmp_path: Path) -> None:
    metrics.LAST_SUCCESS.labels("scorer").set(0)
    before = time.time()
    scorer(tmp_path, posts(1))
    # a scorer that never commits must still age: "no commit for N minutes" counts from here
    assert (sample("moodwire_last_success_timestamp_seconds", stage="scorer") or 0) >= before


class EmptyStore:
    """A store with no posts yet (or, with `down`, an unreachable one)."""

    database = "moodwire"

    def __init__(self, down: bool = False) -> None:
        self.down = down

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, read_only: bool = False) -> QueryResult:
        if self.down:
            raise StoreUnavailable("ClickHouse server unreachable: connection refused")
        if "count()" in sql:
            return QueryResult(["count()", "max(published_at)", "max(inserted_at)"], [], [(0, None, None)])
        return QueryResult([], [], [])

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...


class SilentNotifier:
    def __init__(self, channel: str) -> None:
        self.channel = channel

    def deliver(self, notification: Notification) -> DeliveryOutcome:
        raise AssertionError("nothing to deliver")


def alert_job(store: EmptyStore, channels: tuple[str, ...] = ()) -> AlertJob:
    return AlertJob(
        store,  # type: ignore[arg-type]
        [SilentNotifier(c) for c in channels],
        DetectorSettings(),
        LifecycleSettings(channels=channels),
        lateness=timedelta(minutes=1),
    )


def test_the_alert_service_creates_its_delivery_counters_at_zero() -> None:
    channels = ("webhook-initialised-test", "email-initialised-test")
    for channel in channels:
        assert sample("moodwire_alerts_failed_total", channel=channel) is None
    alert_job(EmptyStore(), channels)
    for channel in channels:
        # present before any delivery, so the first failure is an increase a rule can see
        assert sample("moodwire_alerts_failed_total", channel=channel) == 0
        assert sample("moodwire_alerts_sent_total", channel=channel) == 0


def test_a_detection_run_with_nothing_to_evaluate_still_counts_as_evaluated() -> None:
    job = alert_job(EmptyStore())
    metrics.LAST_SUCCESS.labels("alert").set(0)
    before = time.time()
    assert job.detect() == []
    assert (sample("moodwire_last_success_timestamp_seconds", stage="alert") or 0) >= before
    assert sample("moodwire_store_up") == 1


def test_an_unreachable_store_marks_the_store_down_and_leaves_the_clock() -> None:
    store = EmptyStore()
    job = alert_job(store)
    metrics.LAST_SUCCESS.labels("alert").set(123.0)
    store.down = True
    with pytest.raises(StoreUnavailable):
        job.detect()
    assert sample("moodwire_store_up") == 0
    assert sample("moodwire_last_success_timestamp_seconds", stage="alert") == 123.0
