"""Bluesky: new posts from a Jetstream firehose, kept when they name a keyword or a cashtag.

Written from Jetstream's README (github.com/bluesky-social/jetstream, the /subscribe endpoint),
not checked against a live instance from here:

- wss://jetstream2.us-east.bsky.network/subscribe?wantedCollections=app.bsky.feed.post&cursor=T
  streams JSON text frames, one event each: `{"did", "time_us", "kind": "commit" | "identity" |
  "account", "commit": {"rev", "operation": "create" | "update" | "delete", "collection",
  "rkey", "record": {"$type": "app.bsky.feed.post", "text", "createdAt", "langs", ...}, "cid"}}`.
- `cursor` is a Unix time in microseconds (an event's `time_us`); the server replays from it.
  Cursors are times, so the README's advice for a gapless resume is to rewind a few seconds and
  process idempotently: we rewind `rewind_s` and drop what the bounded seen-id set remembers.
- No HTTP rate-limit headers on a stream; a refused handshake (e.g. 429 or 503) is retried after
  its Retry-After, else with backoff.

The firehose carries every post on the network, so only matching posts become items; the
checkpoint is the `time_us` of the last event read (matching or not) plus the seen ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from moodwire.connector_settings import BlueskySettings
from moodwire.schema import format_timestamp, parse_timestamp

from ingest.polling import IDLE_SLEEP_S, RECONNECT_BACKOFF, retry_after_s
from ingest.sources import RawItem, SourceBatch

try:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect as ws_connect
except ImportError:  # the connector is optional: BlueskySource says what to install
    ws_connect = None  # type: ignore[assignment]

    class ConnectionClosed(Exception):  # type: ignore[no-redef]
        pass

    InvalidHandshake = InvalidStatus = ConnectionClosed  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

SOURCE = "bluesky"
POST_COLLECTION = "app.bsky.feed.post"
SEEN_IDS = 5_000
# A post's createdAt is set by the author's client; beyond this from the relay's time, trust the relay.
MAX_CLOCK_SKEW = timedelta(days=1)
# "$" + a ticker-like word; "$5" or "$100k" are prices, not cashtags.
_CASHTAG_RE = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?)(?![\w])")


class PostFilter:
    """Keywords as whole words, case-insensitive; cashtags from a list, or any at all."""

    def __init__(self, keywords: list[str], cashtags: list[str], any_cashtag: bool) -> None:
        self._keywords = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(k) for k in keywords) + r")(?!\w)", re.IGNORECASE)
            if keywords
            else None
        )
        self._cashtags = set(cashtags)
        self._any_cashtag = any_cashtag

    def matches(self, text: str) -> bool:
        if self._keywords is not None and self._keywords.search(text):
            return True
        if self._cashtags or self._any_cashtag:
            for match in _CASHTAG_RE.finditer(text):
                if self._any_cashtag or match.group(1).upper() in self._cashtags:
                    return True
        return False


class BlueskySource:
    name = SOURCE

    def __init__(
        self,
        settings: BlueskySettings,
        state: dict[str, Any] | None = None,
        *,
        connect: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if connect is None and ws_connect is None:
            raise RuntimeError(
                "the bluesky connector needs the websockets package (pip install 'websockets>=13')"
            )
        self._settings = settings
        self._connect = connect or ws_connect
        self._clock = clock
        self._sleep = sleep
        self._filter = PostFilter(settings.keywords, settings.cashtags, settings.any_cashtag)
        saved = state or {}
        cursor = saved.get("cursor")
        self._cursor: int | None = int(cursor) if cursor is not None else None
        self._seen: dict[str, None] = dict.fromkeys(saved.get("seen", []))
        self._ws: Any = None
        self._stack = contextlib.ExitStack()
        self._not_before = 0.0
        self._failures = 0

    def checkpoint(self) -> dict[str, Any]:
        return {"cursor": self._cursor, "seen": list(self._seen)[-SEEN_IDS:]}

    def subscribe_url(self) -> str:
        params = [("wantedCollections", POST_COLLECTION)]
        if self._cursor is not None:
            params.append(("cursor", str(max(0, self._cursor - int(self._settings.rewind_s * 1_000_000)))))
        return f"{self._settings.jetstream_url}?{urlencode(params)}"

    def next_batch(self) -> SourceBatch:
        if self._ws is None and not self._open():
            self._sleep(max(0.0, min(IDLE_SLEEP_S, self._not_before - self._clock())))
            return SourceBatch([], self.checkpoint())
        items: list[RawItem] = []
        started = time.monotonic()
        while len(items) < self._settings.batch_max:
            remaining = self._settings.batch_wait_s - (time.monotonic() - started)
            if remaining <= 0:
                break
            try:
                message = self._ws.recv(timeout=remaining)
            except TimeoutError:
                break
            except ConnectionClosed as exc:
                self._drop(f"connection closed: {exc}")
                break
            # Only a connection that delivers counts as healthy; one that closes at once backs off.
            self._failures = 0
            item = self.handle(message)
            if item is not None:
                items.append(item)
        return SourceBatch(items, self.checkpoint())

    def commit(self, checkpoint: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self._stack.close()
        self._ws = None

    # -- connection ----------------------------------------------------------------------------

    def _open(self) -> bool:
        if self._clock() < self._not_before:
            return False
        url = self.subscribe_url()
        stack = contextlib.ExitStack()
        try:
            # Entered as a context manager, as websockets asks; the stack closes it in _drop/close.
            self._ws = stack.enter_context(
                self._connect(url, open_timeout=self._settings.open_timeout_s, max_size=2**21)
            )
        except InvalidStatus as exc:
            wait = retry_after_s(exc.response.headers, time.time())
            why = f"handshake refused with HTTP {exc.response.status_code}"
            self._pause(self._backoff() if wait is None else wait, why)
            return False
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            self._pause(self._backoff(), f"cannot connect: {exc}")
            return False
        self._stack = stack
        log.info("bluesky: subscribed at %s", url)
        return True

    def _drop(self, why: str) -> None:
        try:
            self._stack.close()
        except Exception:  # noqa: BLE001 - it is already gone; only its resources are left
            pass
        self._ws = None
        # Reconnect right away the first time (servers restart); back off if it keeps happening.
        if self._failures == 0:
            self._failures = 1
            self._pause(0.0, why)
        else:
            self._pause(self._backoff(), why)

    def _pause(self, seconds: float, why: str) -> None:
        self._not_before = max(self._not_before, self._clock() + seconds)
        log.warning("bluesky: %s; next try in %.0f s", why, seconds)

    def _backoff(self) -> float:
        self._failures += 1
        return RECONNECT_BACKOFF.delay(self._failures)

    # -- events --------------------------------------------------------------------------------

    def handle(self, message: str | bytes) -> RawItem | None:
        """One Jetstream event -> an item when it is a new matching post (or is unreadable)."""
        raw = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        try:
            event = json.loads(raw)
        except ValueError as exc:
            return self._error(raw, f"bluesky: unparseable event: {exc}"[:300])
        if not isinstance(event, dict):
            return self._error(raw, "bluesky: event is not a JSON object")
        time_us = event.get("time_us")
        if isinstance(time_us, int) and not isinstance(time_us, bool):
            self._cursor = max(self._cursor or 0, time_us)
        if event.get("kind") != "commit":
            return None
        commit = event.get("commit")
        if not isinstance(commit, dict) or commit.get("collection") != POST_COLLECTION:
            return None
        if commit.get("operation") != "create":
            return None
        did, rkey, record = event.get("did"), commit.get("rkey"), commit.get("record")
        if not isinstance(did, str) or not isinstance(rkey, str) or not isinstance(record, dict):
            return self._error(raw, "bluesky: post event without did, rkey or record")
        text = record.get("text")
        if not isinstance(text, str):
            return self._error(raw, f"bluesky: post {did}/{rkey} without text")
        if not self._filter.matches(text) or not self._first_time(f"{did}/{rkey}"):
            return None
        post: dict[str, Any] = {
            "id": f"bsky:{did}/{rkey}",
            "source": SOURCE,
            "text": text,
            "published_at": _published(record.get("createdAt"), time_us),
            "author": did,
            "url": f"https://bsky.app/profile/{did}/post/{rkey}",
            "kind": "post",
        }
        return RawItem(SOURCE, post, raw=raw)

    def _error(self, raw: bytes, reason: str) -> RawItem | None:
        # The rewind on resume replays broken events too; dead-letter each one once.
        if not self._first_time("raw:" + hashlib.sha1(raw).hexdigest()[:20]):
            return None
        return RawItem(SOURCE, None, raw=raw, error=reason)

    def _first_time(self, key: str) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > SEEN_IDS:
            del self._seen[next(iter(self._seen))]
        return True


def _published(created_at: Any, time_us: Any) -> str | None:
    seen_at = (
        datetime.fromtimestamp(time_us / 1_000_000, UTC)
        if isinstance(time_us, int) and 0 < time_us < 10**17
        else None
    )
    if isinstance(created_at, str):
        try:
            created = parse_timestamp(created_at)
        except ValueError:
            created = None
        if created is not None and (seen_at is None or abs(created - seen_at) <= MAX_CLOCK_SKEW):
            return format_timestamp(created)
    # None lets the normalizer stand in the time we received it.
    return format_timestamp(seen_at) if seen_at is not None else None
