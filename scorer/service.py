"""The scorer loop: poll a micro-batch -> validate -> score -> insert -> commit.

Offsets are committed only after the rows are in ClickHouse (and any dead letters are on the
bus), so a crash anywhere redelivers the batch; the store's id-keyed dedupe makes that harmless.

`run` overlaps the two halves: while one writer thread inserts batch k (and dead-letters its
rejects), the loop polls and scores batch k+1. Batch k is committed, on the loop's own thread
(the Kafka consumer is not thread-safe), only once its insert has returned; at most one batch is
being written and one scored, so memory stays bounded and a stalled store stops consumption.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from moodwire import metrics
from moodwire.bus import ORIGIN_HEADER, REASON_HEADER, Consumer, Message, Producer, TopicPartition, next_offsets
from moodwire.config import Settings
from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from moodwire.schema import InvalidPost, Post, ScoredPost, parse_post
from moodwire.store import Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
# Languages the model was trained on; "und" (too short to tell) is scored as English.
SUPPORTED_LANGUAGES = frozenset({"en", "und"})


class PredictionLike(Protocol):
    polarity: str
    polarity_score: float
    emotion: str
    polarity_probs: dict[str, float]
    emotion_probs: dict[str, float]


class Scorer(Protocol):
    model_version: str
    provider: str

    def predict(self, texts: Sequence[str]) -> Sequence[PredictionLike]: ...


@dataclass
class ScorerStats:
    batches: int = 0
    processed: int = 0  # messages taken off the bus and committed, whatever became of them
    scored: int = 0
    rejected: int = 0
    last_batch_s: float = 0.0


@dataclass
class _Batch:
    """One micro-batch between polling and committing."""

    messages: list[Message]
    started: float
    scored: list[ScoredPost] = field(default_factory=list)
    rejects: list[tuple[Message, str]] = field(default_factory=list)  # refused before scoring


class ScorerService:
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        store: Store,
        scorer: Scorer,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._scorer = scorer
        self.stats = ScorerStats()
        # Messages polled and not committed yet, per partition: they count as lag until committed.
        self._held: dict[TopicPartition, int] = {}
        self._lag_partitions: set[TopicPartition] = set()
        metrics.EXECUTION_PROVIDER.labels(scorer.provider, scorer.model_version).set(1)
        metrics.mark_started("scorer")
        metrics.STORE_UP.set(1)  # the caller opened (and migrated) the store

    def poll_batch(self, stop: threading.Event) -> list[Message]:
        """Fill a micro-batch up to batch_max_size, waiting at most batch_max_wait_ms after the first message."""
        size = self._settings.batch_max_size
        wait_s = self._settings.batch_max_wait_ms / 1000
        batch = self._consumer.poll(size, timeout_s=0.5)
        deadline = time.monotonic() + wait_s
        while batch and len(batch) < size and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch.extend(self._consumer.poll(size - len(batch), timeout_s=remaining))
        for message in batch:
            key = (message.topic, message.partition)
            self._held[key] = self._held.get(key, 0) + 1
        self._publish_lag()
        return batch

    def _publish_lag(self) -> None:
        """Lag as Kafka's group tools count it, up to the committed offset: what a stalled insert
        holds still counts, and the gauge moves after every poll, not only after commits.
        Partitions this consumer no longer owns leave the gauge (another replica reports them)."""
        lag = dict(self._consumer.lag())
        for key in lag:
            lag[key] += self._held.get(key, 0)
        for topic, partition in self._lag_partitions - lag.keys():
            with contextlib.suppress(KeyError):  # older prometheus_client raises for a missing series
                metrics.CONSUMER_LAG.remove(topic, str(partition))
        for (topic, partition), value in lag.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(value)
        self._lag_partitions = set(lag)

    def process(self, messages: list[Message], stop: threading.Event | None = None) -> int:
        """Score and store one batch, then commit it. Returns the number of posts stored."""
        if not messages:
            return 0
        batch = self._prepare(messages)
        return self._finish(batch, self._write(batch, stop))

    def _prepare(self, messages: list[Message]) -> _Batch:
        """Parse and score: the CPU half of a batch."""
        batch = _Batch(messages=messages, started=time.perf_counter())
        posts: list[Post] = []
        for message in messages:
            try:
                posts.append(parse_post(message.value, self._settings.text_max_chars, html=False))
            except InvalidPost as exc:
                batch.rejects.append((message, exc.reason))
        batch.scored = self._score(posts)
        return batch

    def _write(self, batch: _Batch, stop: threading.Event | None) -> list[tuple[Message, str]]:
        """Insert and dead-letter: the I/O half. Returns every message that was dead-lettered."""
        rejects = batch.rejects + self._insert(batch.scored, stop)
        for message, reason in rejects:
            self._dead_letter(message, reason)
        if rejects:
            self._producer.flush()
        return rejects

    def _finish(self, batch: _Batch, rejects: list[tuple[Message, str]]) -> int:
        """Commit a written batch and account for it."""
        self._consumer.commit(next_offsets(batch.messages))
        elapsed = time.perf_counter() - batch.started
        stored = len(batch.scored) - (len(rejects) - len(batch.rejects))
        self.stats.batches += 1
        self.stats.processed += len(batch.messages)
        self.stats.scored += stored
        self.stats.rejected += len(rejects)
        self.stats.last_batch_s = elapsed
        metrics.BATCH_SIZE.observe(len(batch.messages))
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.POSTS_SCORED.labels(self._scorer.model_version).inc(stored)
        metrics.LAST_SUCCESS.labels("scorer").set(time.time())
        for message in batch.messages:
            key = (message.topic, message.partition)
            self._held[key] = max(0, self._held.get(key, 0) - 1)
        self._publish_lag()
        return stored

    def _score(self, posts: list[Post]) -> list[ScoredPost]:
        if not posts:
            return []
        scored_at = datetime.now(UTC).replace(microsecond=0)
        supported = [p for p in posts if p.lang is None or p.lang in SUPPORTED_LANGUAGES]
        started = time.perf_counter()
        predictions = iter(self._scorer.predict([p.text for p in supported]) if supported else [])
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        out: list[ScoredPost] = []
        for post in posts:
            if post.lang is not None and post.lang not in SUPPORTED_LANGUAGES:
                out.append(self._unsupported(post, scored_at))
                continue
            prediction = next(predictions)
            out.append(
                ScoredPost(
                    post=post,
                    polarity=prediction.polarity,  # type: ignore[arg-type]
                    polarity_score=max(-1.0, min(1.0, prediction.polarity_score)),
                    emotion=prediction.emotion,  # type: ignore[arg-type]
                    polarity_probs=prediction.polarity_probs,
                    emotion_probs=prediction.emotion_probs,
                    model_version=self._scorer.model_version,
                    scored_at=scored_at,
                )
            )
        return out

    def _unsupported(self, post: Post, scored_at: datetime) -> ScoredPost:
        """A post in a language the model can't read: stored and marked, never guessed at."""
        metrics.POSTS_UNSUPPORTED_LANGUAGE.labels(post.lang or "und").inc()
        return ScoredPost(
            post=post,
            polarity="neutral",
            polarity_score=0.0,
            emotion="neutral",
            polarity_probs=dict.fromkeys(POLARITY_LABELS, 0.0),
            emotion_probs=dict.fromkeys(EMOTION_LABELS, 0.0),
            model_version=self._scorer.model_version,
            scored_at=scored_at,
            status="unsupported_language",
        )

    def _insert(self, scored: list[ScoredPost], stop: threading.Event | None) -> list[tuple[Message, str]]:
        """Insert until it succeeds; rows ClickHouse itself refuses go back as dead letters."""
        if not scored:
            return []
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                self._store.insert_posts(self._not_stored_yet(scored))
                metrics.STORE_INSERT_SECONDS.observe(time.perf_counter() - started)
                metrics.STORE_UP.set(1)
                return []
            except StoreUnavailable as exc:
                # Hold the batch (and so stop consuming: memory stays bounded by one batch) and retry.
                metrics.STORE_INSERT_FAILURES.inc()
                metrics.STORE_UP.set(0)
                log.warning("store unavailable (%s); retrying in %.1f s", exc, delay)
            except StoreError as exc:
                metrics.STORE_INSERT_FAILURES.inc()
                log.error("store refused the batch (%s); inserting row by row", exc)
                return self._insert_one_by_one(scored)
            if stop is not None and stop.wait(delay):
                raise InterruptedError("stopped while the store was unavailable; batch not committed")
            if stop is None:
                time.sleep(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)

    def _not_stored_yet(self, scored: list[ScoredPost]) -> list[ScoredPost]:
        """Leave out posts the table already has (redelivered after a crash, or replayed), and
        all but the first copy of a post that is in this batch twice.

        They keep the labels and story they were first stored with: int8 scores shift slightly
        with the other posts in a batch, and a restarted ingest worker gives a re-sent post a new
        story id, so a copy stored again could be counted under a second label or story by the
        aggregates (uniqExact states per polarity, emotion and story).
        """
        first: dict[str, ScoredPost] = {}
        for item in scored:
            first.setdefault(item.post.id, item)
        ids = tuple(first)
        stamps = [int(item.post.published_at.timestamp()) for item in first.values()]
        rows = self._store.query(
            f"SELECT DISTINCT id FROM {self._store.database}.posts WHERE published_at >= toDateTime(%(first)s) "
            "AND published_at <= toDateTime(%(last)s) AND id IN %(ids)s",
            {"first": min(stamps), "last": max(stamps), "ids": ids},
        ).rows
        known = {row[0] for row in rows}
        return [item for post_id, item in first.items() if post_id not in known]

    def _insert_one_by_one(self, scored: list[ScoredPost]) -> list[tuple[Message, str]]:
        failed: list[tuple[Message, str]] = []
        for item in scored:
            try:
                self._store.insert_posts([item])
            except StoreUnavailable:
                raise
            except StoreError as exc:
                value = item.post.to_json()
                failed.append((Message("", -1, -1, None, value), f"store: {exc}"[:500]))
        return failed

    def _dead_letter(self, message: Message, reason: str) -> None:
        headers = [(REASON_HEADER, reason.encode("utf-8")), (ORIGIN_HEADER, b"scorer")]
        if message.topic:
            headers.append(("moodwire-source", f"{message.topic}/{message.partition}/{message.offset}".encode()))
        self._producer.send(self._settings.dead_letter_topic, message.value, key=message.key, headers=headers)
        metrics.POSTS_REJECTED.labels("scorer", metrics.reason_label(reason)).inc()
        metrics.DEAD_LETTERS.labels("scorer").inc()
        log.warning("dead-lettered a message: %s", reason)

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; the batches in flight are finished, inserted and committed first."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer-writer") as writer:
            in_flight: tuple[_Batch, Future[list[tuple[Message, str]]]] | None = None
            try:
                while not stop.is_set():
                    messages = self.poll_batch(stop)
                    batch = self._prepare(messages) if messages else None
                    if in_flight is not None:
                        self._finish(in_flight[0], in_flight[1].result())
                        in_flight = None
                    if batch is not None:
                        in_flight = (batch, writer.submit(self._write, batch, stop))
                if in_flight is not None:
                    self._finish(in_flight[0], in_flight[1].result())
            except InterruptedError as exc:
                log.warning("%s", exc)
