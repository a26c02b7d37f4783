"""The ingest loop: sources -> normalize -> bus, checkpointing each source after the bus acknowledged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from moodwire import metrics
from moodwire.bus import ORIGIN_HEADER, REASON_HEADER, Producer
from moodwire.config import Settings

from ingest.checkpoint import CheckpointStore
from ingest.connectors import build_connector_sources
from ingest.file_source import FileSource
from ingest.normalize import Accepted, Duplicate, Normalizer, Rejected
from ingest.rss import RssSource
from ingest.sources import Source

log = logging.getLogger(__name__)


class IngestWorker:
    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        sources: Sequence[Source],
        normalizer: Normalizer,
        checkpoints: CheckpointStore,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._sources = list(sources)
        self._normalizer = normalizer
        self._checkpoints = checkpoints
        self.exhausted: set[str] = set()
        self.sent = 0  # posts on the bus so far

    def step(self, source: Source) -> int:
        """Move one batch of one source onto the bus; returns how many posts were sent."""
        batch = source.next_batch()
        if batch.exhausted:
            self.exhausted.add(source.name)
        if not batch.items:
            if batch.checkpoint is not None and not batch.exhausted:
                self._checkpoints.save(source.name, batch.checkpoint)
            return 0
        received = datetime.now(UTC)
        sent = 0
        sent_by_source: dict[str, int] = {}
        for item in batch.items:
            outcome = self._normalizer.normalize(item, received)
            if isinstance(outcome, Accepted):
                post = outcome.post
                key = (post.symbols[0] if post.symbols else post.id).encode("utf-8")
                self._producer.send(self._settings.posts_topic, post.to_json(), key=key)
                for flag in post.flags:
                    metrics.POSTS_FLAGGED.labels(flag).inc()
                sent += 1
                sent_by_source[post.source] = sent_by_source.get(post.source, 0) + 1
            elif isinstance(outcome, Duplicate):
                metrics.POSTS_DUPLICATE.labels(item.source, outcome.why).inc()
            elif isinstance(outcome, Rejected):
                self._producer.send(
                    self._settings.dead_letter_topic,
                    outcome.raw,
                    headers=[(REASON_HEADER, outcome.reason.encode("utf-8")), (ORIGIN_HEADER, b"ingest")],
                )
                metrics.POSTS_REJECTED.labels("ingest", metrics.reason_label(outcome.reason)).inc()
                metrics.DEAD_LETTERS.labels("ingest").inc()
                log.warning("rejected an item from %s: %s", source.name, outcome.reason)
        # Checkpoint only what the broker has acknowledged: at-least-once, never at-most-once.
        self._producer.flush()
        if batch.checkpoint is not None:
            self._checkpoints.save(source.name, batch.checkpoint)
            source.commit(batch.checkpoint)
        for name, count in sent_by_source.items():
            metrics.POSTS_INGESTED.labels(name).inc(count)
        self.sent += sent
        metrics.LAST_SUCCESS.labels("ingest").set(time.time())
        return sent

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
                    total += self.step(source)
                except Exception:
                    # The source already moved past the unacknowledged batch, so stop here: the
                    # restart resumes from the last checkpoint and nothing is lost.
                    log.exception("ingest from %s failed; stopping at the last checkpoint", source.name)
                    raise
        return total


def build_sources(
    settings: Settings,
    checkpoints: CheckpointStore,
    files: Sequence[Any] = (),
    rate: float | None = None,
    shift_to_now: bool = False,
) -> list[Source]:
    sources: list[Source] = []
    for path in files:
        saved = checkpoints.load(FileSource.source_name(path))
        shift = timedelta(seconds=float(saved["shift_s"])) if "shift_s" in saved else None
        source = FileSource(
            path, rate=rate, start_offset=int(saved.get("offset", 0)), shift_to_now=shift_to_now, shift=shift
        )
        if saved.get("offset"):
            log.info("resuming %s at byte %d", path, saved["offset"])
        sources.append(source)
    if settings.feeds:
        sources.append(RssSource(settings.feeds, checkpoints.load("rss")))
    sources.extend(
        build_connector_sources(
            checkpoints,
            reddit=settings.reddit,
            mastodon=settings.mastodon,
            bluesky=settings.bluesky,
            stocktwits=settings.stocktwits,
            push=settings.push,
        )
    )
    return sources
