"""RSS/Atom feeds: httpx conditional GET (ETag / Last-Modified), feedparser, per-feed state.

The state of every feed (validators and the ids it has already emitted) is the checkpoint, saved
only after the items are on the bus: a restart neither re-emits nor skips.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import feedparser
import httpx

from moodwire.config import FeedConfig
from moodwire.schema import format_timestamp

from ingest.polling import USER_AGENT, PollingSource, retry_after_s
from ingest.sources import RawItem

# Enough to cover a feed's visible window many times over; older ids fall out in order.
SEEN_IDS_PER_FEED = 5_000


@dataclass
class _Feed:
    config: FeedConfig
    etag: str | None = None
    modified: str | None = None
    seen: list[str] = field(default_factory=list)
    next_poll: float = 0.0
    failures: int = 0

    @property
    def key(self) -> str:
        return self.config.url

    @property
    def interval_s(self) -> float:
        return self.config.interval_s


def entry_id(feed_url: str, entry: Any) -> str:
    """A stable id per item: the guid if the feed gives one, else the link, else title + date."""
    basis = entry.get("id") or entry.get("link") or (entry.get("title", "") + entry.get("published", ""))
    digest = hashlib.sha1(f"{feed_url}\n{basis}".encode()).hexdigest()[:24]
    return f"rss:{digest}"


def entry_to_post(feed: FeedConfig, entry: Any, received_at: datetime) -> dict[str, Any]:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    published = (
        datetime.fromtimestamp(calendar.timegm(parsed), UTC) if parsed else received_at
    )
    title = entry.get("title", "").strip()
    summary = entry.get("summary", "").strip()
    text = title if not summary or summary == title else f"{title}. {summary}"
    post: dict[str, Any] = {
        "id": entry_id(feed.url, entry),
        "source": "rss",
        "text": text,
        "published_at": format_timestamp(published),
        "kind": "headline",
    }
    if entry.get("link"):
        post["url"] = entry["link"]
    if entry.get("author"):
        post["author"] = entry["author"]
    return post


class RssSource(PollingSource[_Feed]):
    """Feeds live on many hosts: a 429 or an outage backs off that feed alone, after Retry-After
    if the host sends one, and never pauses the others."""

    name = "rss"

    def __init__(
        self,
        feeds: Sequence[FeedConfig],
        state: dict[str, Any] | None = None,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        saved = (state or {}).get("feeds", {})
        targets = [
            _Feed(
                config,
                etag=saved.get(config.url, {}).get("etag"),
                modified=saved.get(config.url, {}).get("modified"),
                seen=list(saved.get(config.url, {}).get("seen", [])),
            )
            for config in feeds
        ]
        client = client or httpx.Client(
            timeout=timeout_s, follow_redirects=True, headers={"User-Agent": USER_AGENT}
        )
        super().__init__(targets, client, clock=clock, sleep=sleep)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "feeds": {
                feed.key: {"etag": feed.etag, "modified": feed.modified, "seen": feed.seen[-SEEN_IDS_PER_FEED:]}
                for feed in self._targets
            }
        }

    def poll_feed(self, config: FeedConfig) -> list[RawItem]:
        """Poll the feed configured as `config` now, due or not."""
        return self.poll(next(feed for feed in self._targets if feed.key == config.url))

    def poll(self, feed: _Feed) -> list[RawItem]:
        headers = {}
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.modified:
            headers["If-Modified-Since"] = feed.modified
        try:
            response = self._client.get(feed.key, headers=headers)
        except httpx.HTTPError as exc:
            self.fail(feed, f"request failed: {exc}")
            return []
        if response.status_code == 304:
            self.succeeded(feed)
            return []
        if response.status_code == 429 or response.status_code >= 500:
            wait = retry_after_s(response.headers, self._wall_clock())
            self.fail(feed, f"HTTP {response.status_code}", at_least_s=wait)
            return []
        if response.status_code != 200:
            self.fail(feed, f"HTTP {response.status_code}")
            return []
        parsed = feedparser.parse(io.BytesIO(response.content), response_headers=dict(response.headers))
        if parsed.bozo and not parsed.entries:
            self.fail(feed, f"unparseable feed: {parsed.get('bozo_exception')}")
            return []
        feed.etag = response.headers.get("ETag")
        feed.modified = response.headers.get("Last-Modified")
        self.succeeded(feed)
        seen = set(feed.seen)
        received = datetime.now(UTC)
        items: list[RawItem] = []
        # Feeds list newest first; emit oldest first so the bus is in publication order.
        for entry in reversed(parsed.entries):
            post = entry_to_post(feed.config, entry, received)
            if post["id"] in seen:
                continue
            seen.add(post["id"])
            feed.seen.append(post["id"])
            items.append(RawItem("rss", post))
        del feed.seen[:-SEEN_IDS_PER_FEED]
        return items
