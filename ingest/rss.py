"""RSS/Atom feeds: httpx conditional GET (ETag / Last-Modified), feedparser, per-feed state.

The state of every feed (validators and the ids it has already emitted) is the checkpoint, saved
only after the items are on the bus: a restart neither re-emits nor skips.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser
import httpx

from moodwire.config import FeedConfig
from moodwire.schema import format_timestamp

from ingest.sources import RawItem, SourceBatch

log = logging.getLogger(__name__)

# Enough to cover a feed's visible window many times over; older ids fall out in order.
SEEN_IDS_PER_FEED = 5_000
USER_AGENT = "moodwire/0.1 (+https://github.com/moodwire/moodwire)"


@dataclass
class _FeedState:
    etag: str | None = None
    modified: str | None = None
    seen: list[str] | None = None
    next_poll: float = 0.0
    failures: int = 0


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


class RssSource:
    name = "rss"

    def __init__(
        self,
        feeds: Sequence[FeedConfig],
        state: dict[str, Any] | None = None,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self._feeds = list(feeds)
        self._client = client or httpx.Client(
            timeout=timeout_s, follow_redirects=True, headers={"User-Agent": USER_AGENT}
        )
        saved = (state or {}).get("feeds", {})
        self._state = {
            f.url: _FeedState(
                etag=saved.get(f.url, {}).get("etag"),
                modified=saved.get(f.url, {}).get("modified"),
                seen=list(saved.get(f.url, {}).get("seen", [])),
            )
            for f in self._feeds
        }

    def checkpoint(self) -> dict[str, Any]:
        return {
            "feeds": {
                url: {"etag": s.etag, "modified": s.modified, "seen": (s.seen or [])[-SEEN_IDS_PER_FEED:]}
                for url, s in self._state.items()
            }
        }

    def poll_feed(self, feed: FeedConfig) -> list[RawItem]:
        state = self._state[feed.url]
        headers = {}
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.modified:
            headers["If-Modified-Since"] = state.modified
        try:
            response = self._client.get(feed.url, headers=headers)
        except httpx.HTTPError as exc:
            self._back_off(feed, state, f"request failed: {exc}")
            return []
        if response.status_code == 304:
            state.failures = 0
            state.next_poll = time.monotonic() + feed.interval_s
            return []
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("Retry-After", "")
            self._back_off(feed, state, f"HTTP {response.status_code}", retry_after)
            return []
        if response.status_code != 200:
            self._back_off(feed, state, f"HTTP {response.status_code}")
            return []
        parsed = feedparser.parse(io.BytesIO(response.content), response_headers=dict(response.headers))
        if parsed.bozo and not parsed.entries:
            self._back_off(feed, state, f"unparseable feed: {parsed.get('bozo_exception')}")
            return []
        state.etag = response.headers.get("ETag")
        state.modified = response.headers.get("Last-Modified")
        state.failures = 0
        state.next_poll = time.monotonic() + feed.interval_s
        seen = state.seen if state.seen is not None else []
        seen_set = set(seen)
        received = datetime.now(UTC)
        items: list[RawItem] = []
        # Feeds list newest first; emit oldest first so the bus is in publication order.
        for entry in reversed(parsed.entries):
            post = entry_to_post(feed, entry, received)
            if post["id"] in seen_set:
                continue
            seen_set.add(post["id"])
            seen.append(post["id"])
            items.append(RawItem("rss", post))
        state.seen = seen[-SEEN_IDS_PER_FEED:]
        return items

    def _back_off(self, feed: FeedConfig, state: _FeedState, why: str, retry_after: str = "") -> None:
        state.failures += 1
        delay = min(3600.0, feed.interval_s * (2 ** min(state.failures, 6)))
        if retry_after.isdigit():
            delay = max(delay, float(retry_after))
        state.next_poll = time.monotonic() + delay
        log.warning("feed %s: %s; next try in %.0f s", feed.url, why, delay)

    def next_batch(self) -> SourceBatch:
        now = time.monotonic()
        items: list[RawItem] = []
        for feed in self._feeds:
            if self._state[feed.url].next_poll <= now:
                items.extend(self.poll_feed(feed))
        if not items:
            due = min((s.next_poll for s in self._state.values()), default=now + 1.0)
            time.sleep(max(0.0, min(1.0, due - time.monotonic())))
        return SourceBatch(items, self.checkpoint())

    def commit(self, checkpoint: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self._client.close()
