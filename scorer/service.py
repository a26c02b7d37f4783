"""The scorer loop: poll a micro-batch -> validate -> score -> insert -> commit.

Offsets are committed only after the rows are in ClickHouse (and any dead letters are on the
bus), so a crash anywhere redelivers the batch; the store's id-keyed dedupe makes that harmless.

`run` overlaps the two halves: while one writer thread inserts batch k (and dead-letters its
rejects), the loop polls and scores batch k+1. Batch k is committed, on the loop's own thread
(the Kafka consumer is not thread-safe), only once its insert has returned; at most one batch is
being written and one scored, so memory stays bounded and a stalled store stops consumption
(the consumer is paused, and keeps its place in the group, until the store is back).

Nothing one message does stops the stream. A message that can't be parsed, is over the size
limit, makes the model fail, or holds a row ClickHouse refuses is dead-lettered alone (found by
splitting the batch), with its reason, and the offsets move past it. A store that is down,
overloaded or misconfigured is never a reason to dead-letter: the batch is held and retried,
probing every `retry_interval_s`, so it is stored within seconds of the store's return.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from moodwire import metrics
from moodwire.bus import NORMALIZED_HEADER, Consumer, Message, Producer, TopicPartition, next_offsets
from moodwire.config import Settings
from moodwire.dead_letters import send_dead_letter
from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from moodwire.schema import InvalidPost, Post, ScoredPost, TargetScore, parse_post
from moodwire.store import Store, StoreError, StoreUnavailable
from scorer.targets import PredictionLike, target_scores

log = logging.getLogger(__name__)

# Languages the model was trained on; "und" (too short to tell) is scored as English.
SUPPORTED_LANGUAGES = frozenset({"en", "und"})

T = TypeVar("T")
_DEAD_LETTERS = "the dead letters"


class Scorer(Protocol):
    model_version: str
    provider: str

    def predict(
        self, texts: Sequence[str], symbols: Sequence[Sequence[str]] | None = None
    ) -> Sequence[PredictionLike]: ...


@dataclass(frozen=True)
class ScorerSettings:
    """What the scorer loop needs from the settings."""

    dead_letter_topic: str
    batch_max_size: int  # posts per micro-batch: one insert, one commit
    batch_max_wait_ms: int
    text_max_chars: int
    retry_interval_s: float = 1.0  # how often a held batch tries the store again

    @classmethod
    def from_settings(cls, settings: Settings) -> ScorerSettings:
        return cls(
            dead_letter_topic=settings.dead_letter_topic,
            batch_max_size=settings.batch_max_size,
            batch_max_wait_ms=settings.batch_max_wait_ms,
            text_max_chars=settings.text_max_chars,
            retry_interval_s=settings.store_retry_interval_s,
        )


@dataclass
class ScorerStats:
    batches: int = 0
    processed: int = 0  # messages taken off the bus and committed, whatever became of them
    scored: int = 0  # posts stored
    rejected: int = 0  # messages dead-lettered
    last_batch_s: float = 0.0
    last_commit: float = 0.0  # time.time() of the last commit
    loop_heartbeat: float = field(default_factory=time.monotonic)


@dataclass
class _Batch:
    """One micro-batch between polling and committing."""

    messages: list[Message]
    started: float
    scored: list[tuple[Message, ScoredPost]] = field(default_factory=list)
    rejects: list[tuple[Message, str]] = field(default_factory=list)  # refused before the store


class ScorerService:
    def __init__(
        self,
        settings: ScorerSettings,
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
        # False while the store refuses us; what /readyz reports.
        self.store_ok = True
        # Messages polled and not committed yet, per partition: they count as lag until committed.
        self._held: dict[TopicPartition, int] = {}
        self._lag_partitions: set[TopicPartition] = set()
        metrics.EXECUTION_PROVIDER.labels(scorer.provider, scorer.model_version).set(1)
        metrics.mark_started("scorer")
        metrics.STORE_UP.set(1)  # the caller opened (and migrated) the store

    # ---------------------------------------------------------------------------------- polling

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

    # ---------------------------------------------------------------------------------- one batch

    def process(self, messages: list[Message], stop: threading.Event | None = None) -> int:
        """Score and store one batch, then commit it. Returns the number of posts stored."""
        if not messages:
            return 0
        batch = self._prepare(messages)
        return self._finish(batch, self._write(batch, stop))

    def _prepare(self, messages: list[Message]) -> _Batch:
        """Parse and score: the CPU half of a batch."""
        batch = _Batch(messages=messages, started=time.perf_counter())
        parsed: list[tuple[Message, Post]] = []
        for message in messages:
            # Posts ingest normalized were cleaned once; a second HTML pass would turn escaped
            # text ("&lt;b&gt;") into markup and strip it. Other producers' posts get the full cleanup.
            normalized = (NORMALIZED_HEADER, b"1") in message.headers
            try:
                parsed.append((message, parse_post(message.value, self._settings.text_max_chars, html=not normalized)))
            except InvalidPost as exc:
                batch.rejects.append((message, exc.reason))
        scored, failed = self._score_isolating(parsed)
        batch.scored = scored
        batch.rejects.extend(failed)
        return batch

    def _score_isolating(
        self, items: list[tuple[Message, Post]]
    ) -> tuple[list[tuple[Message, ScoredPost]], list[tuple[Message, str]]]:
        """Score everything; if the model fails on the batch, split it until the posts that make
        it fail are alone, and hand those back as rejects."""
        if not items:
            return [], []
        try:
            return list(zip((m for m, _ in items), self._score([p for _, p in items]))), []
        except Exception as exc:  # noqa: BLE001 - a model failure on one input must not stop the stream
            if len(items) == 1:
                log.exception("the model failed on one post; dead-lettering it")
                return [], [(items[0][0], f"scorer: the model failed on this post: {type(exc).__name__}: {exc}"[:500])]
            middle = len(items) // 2
            left_ok, left_bad = self._score_isolating(items[:middle])
            right_ok, right_bad = self._score_isolating(items[middle:])
            return left_ok + right_ok, left_bad + right_bad

    def _score(self, posts: list[Post]) -> list[ScoredPost]:
        scored_at = datetime.now(UTC).replace(microsecond=0)
        supported = [p for p in posts if p.lang is None or p.lang in SUPPORTED_LANGUAGES]
        started = time.perf_counter()
        predictions = iter(
            self._scorer.predict([p.text for p in supported], [p.symbols for p in supported]) if supported else []
        )
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
                    targets=targets_for(post, prediction),
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

    # ---------------------------------------------------------------------------------- writing

    def _write(self, batch: _Batch, stop: threading.Event | None) -> list[tuple[Message, str]]:
        """Insert and dead-letter: the I/O half. Returns every message that was dead-lettered."""
        rejects = batch.rejects + self._insert(batch.scored, stop)
        if rejects:
            self._retrying(lambda: self._send_dead_letters(rejects), stop, what=_DEAD_LETTERS)
        return rejects

    def _send_dead_letters(self, rejects: list[tuple[Message, str]]) -> None:
        """Send them all and wait for the broker; a failure sends them all again (at least once)."""
        for message, reason in rejects:
            send_dead_letter(
                self._producer,
                self._settings.dead_letter_topic,
                message.value,
                reason,
                stage="scorer",
                key=message.key,
                source_ref=f"{message.topic}/{message.partition}/{message.offset}",
            )
        self._producer.flush()

    def _insert(self, items: list[tuple[Message, ScoredPost]], stop: threading.Event | None) -> list[tuple[Message, str]]:
        """Store the posts, holding them while the store is unavailable; rows ClickHouse refuses
        on their own come back as rejects (with their original messages)."""
        if not items:
            return []
        started = time.perf_counter()
        rejects = self._retrying(lambda: self._insert_isolating(items), stop, what="the insert")
        metrics.STORE_INSERT_SECONDS.observe(time.perf_counter() - started)
        return rejects

    def _insert_isolating(self, items: list[tuple[Message, ScoredPost]]) -> list[tuple[Message, str]]:
        """Insert; if ClickHouse refuses the batch, split it to find the rows it refuses alone.

        StoreUnavailable passes through (the caller holds the batch). When every row fails on its
        own, the rows are not to blame (a misconfigured table, say): that is raised as
        StoreUnavailable too, rather than dead-lettering good posts.
        """
        try:
            self._store.insert_posts(self._not_stored_yet([s for _, s in items]))
            return []
        except StoreUnavailable:
            raise
        except StoreError as exc:
            metrics.STORE_INSERT_FAILURES.inc()
            if len(items) == 1:
                return [(items[0][0], f"store: {exc}"[:500])]
            log.warning("the store refused a batch of %d (%s); finding the rows it refuses", len(items), exc)
            middle = len(items) // 2
            rejects = self._insert_isolating(items[:middle]) + self._insert_isolating(items[middle:])
            if len(rejects) == len(items):
                raise StoreUnavailable(f"the store refuses every row alone, so the rows are not to blame: {exc}") from None
            return rejects

    def _not_stored_yet(self, scored: list[ScoredPost]) -> list[ScoredPost]:
        """Leave out posts the table already has (redelivered after a crash, or replayed), and
        all but the first copy of a post that is in this batch twice.

        They keep the labels and story they were first stored with: int8 scores shift slightly
        with the other posts in a batch, and a restarted ingest worker gives a re-sent post a new
        story id, so a copy stored again could be counted under a second label or story.
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

    def _retrying(self, action: Callable[[], T], stop: threading.Event | None, *, what: str) -> T:
        """Run `action` until it succeeds, retrying every retry_interval_s while the store (or the
        bus, for a flush) is unavailable; a stop during the wait abandons the batch uncommitted."""
        failures = 0
        while True:
            try:
                result = action()
            except StoreUnavailable as exc:
                self._note_store(False)
                metrics.STORE_INSERT_FAILURES.inc()
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("store unavailable during %s (%s); holding the batch and retrying", what, exc)
            except Exception as exc:  # noqa: BLE001 - the bus refused the dead letters: retry them
                if what != _DEAD_LETTERS:
                    raise
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("bus error while sending %s (%s); retrying", what, exc)
            else:
                if what != _DEAD_LETTERS:
                    self._note_store(True)
                return result
            if stop is not None and stop.wait(self._settings.retry_interval_s):
                raise InterruptedError(f"stopped while retrying {what}; batch not committed, it will be redelivered")
            if stop is None:
                time.sleep(self._settings.retry_interval_s)

    def _note_store(self, ok: bool) -> None:
        if ok != self.store_ok:
            log.info("store is %s", "back" if ok else "unavailable")
        self.store_ok = ok
        metrics.STORE_UP.set(1 if ok else 0)

    # ---------------------------------------------------------------------------------- commit

    def _finish(self, batch: _Batch, rejects: list[tuple[Message, str]]) -> int:
        """Commit a written batch and account for it."""
        if self._consumer.commit(next_offsets(batch.messages)):
            self.stats.last_commit = time.time()
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
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)
        self._publish_lag()
        return stored

    def _wait_for(self, future: Future[list[tuple[Message, str]]], stop: threading.Event) -> list[tuple[Message, str]]:
        """Wait for the writer; while it is held up (the store is down), pause the consumer and keep
        polling it so the group does not drop us for being silent."""
        paused = False
        try:
            while True:
                try:
                    return future.result(timeout=self._settings.retry_interval_s)
                except TimeoutError:
                    if not paused:
                        self._consumer.pause()
                        paused = True
                    self._consumer.poll(1, timeout_s=0)
                    self.stats.loop_heartbeat = time.monotonic()
        finally:
            if paused and not stop.is_set():
                self._consumer.resume()

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; the batches in flight are finished, inserted and committed first."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer-writer") as writer:
            in_flight: tuple[_Batch, Future[list[tuple[Message, str]]]] | None = None
            try:
                while not stop.is_set():
                    self.stats.loop_heartbeat = time.monotonic()
                    messages = self.poll_batch(stop)
                    batch = self._prepare(messages) if messages else None
                    if in_flight is not None:
                        self._finish(in_flight[0], self._wait_for(in_flight[1], stop))
                        in_flight = None
                    if batch is not None:
                        in_flight = (batch, writer.submit(self._write, batch, stop))
                if in_flight is not None:
                    self._finish(in_flight[0], self._wait_for(in_flight[1], stop))
            except InterruptedError as exc:
                log.warning("%s", exc)


def targets_for(post: Post, prediction: PredictionLike) -> tuple[TargetScore, ...]:
    return target_scores(post.symbols, prediction)
