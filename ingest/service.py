"""The ingest loop: sources -> normalize -> bus, checkpointing each source after the bus acknowledged.

A batch the bus refuses (a broker away, a send that timed out) is kept in memory and sent again,
whole, with backoff until the broker acknowledges it; only then is the source's checkpoint saved.
A stop signal during those retries ends the loop without saving it: the restart reads the batch
again (at-least-once; the store counts a post once however often it arrives).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from moodwire import metrics
from moodwire.bus import Producer
from moodwire.config import Settings
from moodwire.dead_letters import OversizedOriginal, send_dead_letter
from moodwire.bus import NORMALIZED_HEADER
from moodwire.schema import DEFAULT_TEXT_MAX_CHARS

from ingest.checkpoint import CheckpointStore
from ingest.normalize import DIFFERENT_TEXT_REASON, Accepted, Duplicate, Normalizer, Rejected
from ingest.polling import Backoff
from ingest.sources import Source

log = logging.getLogger(__name__)

STAGE = "ingest"
# A refused batch is sent again after 1 s, 2 s, 4 s ... at most 30 s apart, for as long as it takes.
BUS_RETRY_BACKOFF = Backoff(base_s=0.5, max_s=30.0)
# Tells the scorer that ingest cleaned this post (another producer's posts get the full cleanup).
NORMALIZED = ((NORMALIZED_HEADER, b"1"),)


@dataclass(frozen=True)
class IngestSettings:
    posts_topic: str
    dead_letter_topic: str
    text_max_chars: int = DEFAULT_TEXT_MAX_CHARS
    bus_retry: Backoff = BUS_RETRY_BACKOFF

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestSettings:
        return cls(
            posts_topic=settings.posts_topic,
            dead_letter_topic=settings.dead_letter_topic,
            text_max_chars=settings.text_max_chars,
        )


@dataclass(frozen=True)
class _Message:
    topic: str
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass
class _Outbox:
    """One batch's messages, kept until the broker acknowledged all of them. To code that fills
    it, it is a Producer (send_dead_letter writes into it); flushing is the worker's job."""

    messages: list[_Message] = field(default_factory=list)

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self.messages.append(_Message(topic, value, key, tuple(headers)))

    def flush(self, timeout_s: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class IngestWorker:
    def __init__(
        self,
        settings: IngestSettings,
        producer: Producer,
        sources: Sequence[Source],
        checkpoints: CheckpointStore,
        *,
        normalizer: Normalizer | None = None,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._sources = list(sources)
        self._normalizer = normalizer or Normalizer(max_chars=settings.text_max_chars)
        self._checkpoints = checkpoints
        self.exhausted: set[str] = set()
        self.sent = 0  # posts on the bus so far

    def step(self, source: Source, stop: threading.Event | None = None) -> int:
        """Move one batch of one source onto the bus; returns how many posts were sent.

        With `stop`, a batch the bus keeps refusing is given up when stop is set: nothing of it is
        checkpointed, and the worker must not be stepped again (its source has read past it).
        """
        batch = source.next_batch()
        if batch.exhausted:
            self.exhausted.add(source.name)
        if not batch.items:
            if batch.checkpoint is not None and not batch.exhausted:
                self._checkpoints.save(source.name, batch.checkpoint)
            return 0
        received = datetime.now(UTC)
        outbox = _Outbox()
        sent_by_source: dict[str, int] = {}
        for item in batch.items:
            outcome = self._normalizer.normalize(item, received)
            if isinstance(outcome, Accepted):
                post = outcome.post
                key = (post.symbols[0] if post.symbols else post.id).encode("utf-8")
                outbox.send(self._settings.posts_topic, post.to_json(), key=key, headers=NORMALIZED)
                for flag in post.flags:
                    metrics.POSTS_FLAGGED.labels(flag).inc()
                sent_by_source[post.source] = sent_by_source.get(post.source, 0) + 1
            elif isinstance(outcome, Duplicate):
                metrics.POSTS_DUPLICATE.labels(item.source, outcome.why).inc()
                if outcome.dropped is not None:
                    self._dead_letter(outbox, outcome.dropped, DIFFERENT_TEXT_REASON, source)
            elif isinstance(outcome, Rejected):
                self._dead_letter(outbox, outcome.raw, outcome.reason, source)
        # Checkpoint only what the broker has acknowledged: at-least-once, never at-most-once.
        if not self._deliver(outbox, stop or threading.Event(), source):
            return 0
        if batch.checkpoint is not None:
            self._checkpoints.save(source.name, batch.checkpoint)
            source.commit(batch.checkpoint)
        for name, count in sent_by_source.items():
            metrics.POSTS_INGESTED.labels(name).inc(count)
        metrics.LAST_SUCCESS.labels(STAGE).set(time.time())
        sent = sum(sent_by_source.values())
        self.sent += sent
        return sent

    def _dead_letter(
        self, outbox: _Outbox, value: bytes | OversizedOriginal, reason: str, source: Source
    ) -> None:
        topic = self._settings.dead_letter_topic
        send_dead_letter(outbox, topic, value, reason, stage=STAGE, source_ref=source.name)

    def _deliver(self, outbox: _Outbox, stop: threading.Event, source: Source) -> bool:
        """Send the batch and wait for the broker's acknowledgement, again and again with backoff
        until it comes; False if `stop` was set first."""
        failures = 0
        while True:
            try:
                for message in outbox.messages:
                    self._producer.send(message.topic, message.value, key=message.key, headers=message.headers)
                self._producer.flush()
                return True
            except Exception as exc:  # noqa: BLE001 - any bus error: the whole batch goes again
                failures += 1
                metrics.INGEST_BUS_RETRIES.inc()
                delay = self._settings.bus_retry.delay(failures)
                log.warning(
                    "the bus refused a batch of %d message(s) from %s (%s: %s); sending it again in %.1f s",
                    len(outbox.messages), source.name, type(exc).__name__, exc, delay,
                )
                self._settle()
            if stop.wait(delay):
                log.warning("stopping with a batch of %s unacknowledged; a restart reads it again", source.name)
                return False

    def _settle(self) -> None:
        """Wait until whatever a failed attempt queued was acknowledged or failed, so no copy of
        it is still in flight when the batch goes again."""
        try:
            self._producer.flush()
        except Exception:  # noqa: BLE001 - those failures are the ones being retried
            pass

    def run(self, stop: threading.Event, *, stop_when_exhausted: bool = False) -> int:
        total = 0
        while not stop.is_set():
            active = [s for s in self._sources if s.name not in self.exhausted]
            if not active:
                if stop_when_exhausted:
                    break
                stop.wait(1.0)
                continue
            for source in active:
                if stop.is_set():
                    break
                try:
                    total += self.step(source, stop)
                except Exception:
                    # A source or the checkpoint store failed (the bus is retried in step). The
                    # source may have moved past the unsaved batch, so stop here: the restart
                    # resumes from the last checkpoint and nothing is lost.
                    log.exception("ingest from %s failed; stopping at the last checkpoint", source.name)
                    raise
        return total

    def close(self) -> None:
        """Close every source (file handles, HTTP clients, the push server, stream threads)."""
        for source in self._sources:
            try:
                source.close()
            except Exception:  # noqa: BLE001 - one source failing to close must not keep the others open
                log.exception("closing %s failed", source.name)
