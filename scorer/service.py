"""The scorer loop: poll a micro-batch -> validate -> score -> insert -> commit.

Offsets are committed only after the rows are in ClickHouse (and any dead letters are on the
bus), so a crash anywhere redelivers the batch; the store's id-keyed dedupe makes that harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from moodwire import metrics
from moodwire.bus import ORIGIN_HEADER, REASON_HEADER, Consumer, Message, Producer, next_offsets
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
        metrics.EXECUTION_PROVIDER.labels(scorer.provider, scorer.model_version).set(1)

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
        return batch

    def process(self, messages: list[Message], stop: threading.Event | None = None) -> int:
        """Score and store one batch, then commit it. Returns the number of posts stored."""
        if not messages:
            return 0
        started = time.perf_counter()
        posts: list[Post] = []
        rejects: list[tuple[Message, str]] = []
        for message in messages:
            try:
                posts.append(parse_post(message.value, self._settings.text_max_chars, html=False))
            except InvalidPost as exc:
                rejects.append((message, exc.reason))
        scored = self._score(posts)
        refused = self._insert(scored, stop)
        rejects.extend(refused)
        for message, reason in rejects:
            self._dead_letter(message, reason)
        if rejects:
            self._producer.flush()
        self._consumer.commit(next_offsets(messages))

        elapsed = time.perf_counter() - started
        stored = len(scored) - len(refused)
        self.stats.batches += 1
        self.stats.processed += len(messages)
        self.stats.scored += stored
        self.stats.rejected += len(rejects)
        self.stats.last_batch_s = elapsed
        metrics.BATCH_SIZE.observe(len(messages))
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.POSTS_SCORED.labels(self._scorer.model_version).inc(stored)
        metrics.LAST_SUCCESS.labels("scorer").set(time.time())
        for (topic, partition), lag in self._consumer.lag().items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
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
                return []
            except StoreUnavailable as exc:
                # Hold the batch (and so stop consuming: memory stays bounded by one batch) and retry.
                metrics.STORE_INSERT_FAILURES.inc()
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
        """Loop until `stop` is set; the batch in flight is finished, inserted and committed first."""
        while not stop.is_set():
            batch = self.poll_batch(stop)
            if batch:
                try:
                    self.process(batch, stop)
                except InterruptedError as exc:
                    log.warning("%s", exc)
                    return
