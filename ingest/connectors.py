"""The social and push connectors a configuration asks for, each resumed from its checkpoint."""

from __future__ import annotations

from ingest.bluesky import BlueskySource
from ingest.checkpoint import CheckpointStore
from moodwire.connector_settings import (
    BlueskySettings,
    MastodonSettings,
    PushSettings,
    RedditSettings,
    StocktwitsSettings,
)
from ingest.mastodon import MastodonSource
from ingest.push import PushSource
from ingest.reddit import RedditSource
from ingest.sources import Source
from ingest.stocktwits import StocktwitsSource


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
