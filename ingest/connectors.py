"""The sources a configuration asks for (files, feeds, social and push connectors), each resumed
from its checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from moodwire.config import FeedConfig, Settings
from moodwire.connector_settings import (
    BlueskySettings,
    MastodonSettings,
    PushSettings,
    RedditSettings,
    StocktwitsSettings,
)

from ingest.bluesky import BlueskySource
from ingest.checkpoint import CheckpointStore
from ingest.file_source import FileSource
from ingest.mastodon import MastodonSource
from ingest.push import PushSource
from ingest.reddit import RedditSource
from ingest.rss import RssSource
from ingest.sources import Source
from ingest.stocktwits import StocktwitsSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSettings:
    """The configured live sources (None: that connector is not configured)."""

    feeds: tuple[FeedConfig, ...] = ()
    reddit: RedditSettings | None = None
    mastodon: MastodonSettings | None = None
    bluesky: BlueskySettings | None = None
    stocktwits: StocktwitsSettings | None = None
    push: PushSettings | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceSettings:
        return cls(
            feeds=tuple(settings.feeds),
            reddit=settings.reddit,
            mastodon=settings.mastodon,
            bluesky=settings.bluesky,
            stocktwits=settings.stocktwits,
            push=settings.push,
        )


def build_sources(
    settings: SourceSettings,
    checkpoints: CheckpointStore,
    files: Sequence[Path] = (),
    rate: float | None = None,
    shift_to_now: bool = False,
) -> list[Source]:
    """The files, then the feeds, then the connectors, each resumed from its checkpoint."""
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
        sources.append(RssSource(settings.feeds, checkpoints.load(RssSource.name)))
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


def build_connector_sources(
    checkpoints: CheckpointStore,
    *,
    reddit: RedditSettings | None = None,
    mastodon: MastodonSettings | None = None,
    bluesky: BlueskySettings | None = None,
    stocktwits: StocktwitsSettings | None = None,
    push: PushSettings | None = None,
) -> list[Source]:
    """One source per configured section (None: not configured), in a stable order.

    Each source's checkpoint is stored under its name ("reddit", "mastodon", "bluesky",
    "stocktwits", "push"), the key IngestWorker saves it under. The push endpoint binds its port
    here, so a port in use fails the start rather than the first batch; Bluesky without the
    websockets package fails here too, with what to install.
    """
    sources: list[Source] = []
    if reddit is not None:
        sources.append(RedditSource(reddit, checkpoints.load(RedditSource.name)))
    if mastodon is not None:
        sources.append(MastodonSource(mastodon, checkpoints.load(MastodonSource.name)))
    if bluesky is not None:
        sources.append(BlueskySource(bluesky, checkpoints.load(BlueskySource.name)))
    if stocktwits is not None:
        sources.append(StocktwitsSource(stocktwits, checkpoints.load(StocktwitsSource.name)))
    if push is not None:
        sources.append(PushSource(push, checkpoints.load(PushSource.name)))
    return sources
