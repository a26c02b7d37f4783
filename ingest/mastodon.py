"""Mastodon: hashtag and public timelines of one server, polled over REST and optionally streamed.

Written from the Mastodon API documentation (docs.joinmastodon.org: methods/timelines,
methods/streaming, api/guidelines "Paginating with the Link header", api/rate-limits,
entities/Status), not checked against a live server from here:

- GET /api/v1/timelines/tag/{hashtag} and /api/v1/timelines/public (`local=true` for the
  server's own users) with `limit` (<= 40) and `max_id` / `since_id` / `min_id`; the answer is a
  JSON array of Status entities, newest first. `min_id` returns the statuses immediately newer
  than that id, so paging forward with it (the Link header's rel="prev" URL) reads a gap in order
  without skipping any; `since_id` would jump to the newest page and leave a hole.
- Authorization: Bearer <access token>; servers may require one for public timelines.
- Rate limits: X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (an ISO 8601
  time) on every answer; over the limit, HTTP 429.
- Streaming: GET /api/v1/streaming/hashtag?tag=..., /api/v1/streaming/public (/local) as
  server-sent events: `event: update` with a Status as `data:`, `event: delete`, and `:thump`
  heartbeat comments.

The streaming option adds low latency, not completeness: a stream has no cursor, so the REST
poll keeps running on its interval and after every reconnect, and the checkpoint (per timeline the
`min_id` the REST paging reached, plus a bounded seen-id set) comes from it alone. Statuses both
paths deliver are emitted once, by the seen-id set.

`content` is HTML; it is passed through and stripped by moodwire.schema.clean_text in the
normalizer. The status language is the author's client setting (often just the UI language), so
it is left to the language detector.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from moodwire.connector_settings import MastodonSettings

from ingest.polling import RECONNECT_BACKOFF, USER_AGENT, PollingSource, ResetFormat
from ingest.sources import RawItem, SourceBatch, digest_key, dump_json

log = logging.getLogger(__name__)

SOURCE = "mastodon"
# Covers what the stream can deliver between two REST polls on a busy federated timeline.
SEEN_PER_TIMELINE = 10_000
STREAM_QUEUE_SIZE = 10_000


@dataclass
class _Timeline:
    key: str
    rest_path: str
    rest_params: dict[str, str]
    stream_path: str
    stream_params: dict[str, str]
    interval_s: float
    min_id: str | None = None
    seen: dict[str, None] = field(default_factory=dict)
    next_poll: float = 0.0
    failures: int = 0


def timelines_for(settings: MastodonSettings) -> list[_Timeline]:
    every = settings.interval_s
    timelines = [
        _Timeline(
            f"tag:{tag}", f"/api/v1/timelines/tag/{tag}", {}, "/api/v1/streaming/hashtag", {"tag": tag}, every
        )
        for tag in settings.hashtags
    ]
    if settings.public:
        if settings.public_local:
            timelines.append(
                _Timeline(
                    "public:local",
                    "/api/v1/timelines/public",
                    {"local": "true"},
                    "/api/v1/streaming/public/local",
                    {},
                    every,
                )
            )
        else:
            timelines.append(
                _Timeline("public", "/api/v1/timelines/public", {}, "/api/v1/streaming/public", {}, every)
            )
    return timelines


class MastodonSource(PollingSource[_Timeline]):
    name = SOURCE
    reset_format = ResetFormat.TIMESTAMP

    def __init__(
        self,
        settings: MastodonSettings,
        state: dict[str, Any] | None = None,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if settings.access_token is not None:
            headers["Authorization"] = f"Bearer {settings.access_token.get_secret_value()}"
        saved = (state or {}).get("timelines", {})
        timelines = timelines_for(settings)
        for timeline in timelines:
            previous = saved.get(timeline.key, {})
            timeline.min_id = previous.get("min_id")
            timeline.seen = dict.fromkeys(previous.get("seen", []))
        super().__init__(
            timelines, client or httpx.Client(timeout=settings.timeout_s, headers=headers), clock=clock, sleep=sleep
        )
        self._settings = settings
        self._headers = headers
        self._host = urlsplit(settings.base_url).hostname or settings.base_url
        self._stream_queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=STREAM_QUEUE_SIZE)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def checkpoint(self) -> dict[str, Any]:
        return {
            "timelines": {
                t.key: {"min_id": t.min_id, "seen": list(t.seen)[-SEEN_PER_TIMELINE:]} for t in self._targets
            }
        }

    def next_batch(self) -> SourceBatch:
        if self._settings.streaming and not self._threads:
            self._start_streams()
        items = self.poll_due()
        items.extend(self._drain_stream())
        if not items:
            wait = self.idle_wait()
            if self._threads:
                # Wake as soon as the stream has something rather than after the full nap.
                try:
                    key, data = self._stream_queue.get(timeout=wait)
                    items.extend(self._stream_item(key, data))
                except queue.Empty:
                    pass
            else:
                self._sleep(wait)
        return SourceBatch(items, self.checkpoint())

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        super().close()

    # -- REST ----------------------------------------------------------------------------------

    def poll(self, timeline: _Timeline) -> list[RawItem]:
        """Read the timeline forward from its min_id; state advances page by page."""
        items: list[RawItem] = []
        url = f"{self._settings.base_url}{timeline.rest_path}"
        params: dict[str, str | int] | None = {**timeline.rest_params, "limit": self._settings.page_limit}
        if timeline.min_id is not None and params is not None:
            params["min_id"] = timeline.min_id
        first_run = timeline.min_id is None
        caught_up = False
        for _ in range(self._settings.max_pages):
            if self.paused:
                return items
            statuses, response = self._get_page(timeline, url, params)
            if statuses is None or response is None:
                return items
            prev_url = response.links.get("prev", {}).get("url")
            items.extend(self._take(timeline, statuses))
            newest = _min_id_of(prev_url) or _max_id(statuses)
            if newest is not None and (timeline.min_id is None or _id_key(newest) > _id_key(timeline.min_id)):
                timeline.min_id = newest
            # First start: the newest page is the recent past; do not page back through history.
            if first_run or not statuses or not prev_url:
                caught_up = True
                break
            url, params = prev_url, None
        # Still behind after max_pages: go on at the next batch rather than after a full interval.
        self.succeeded(timeline, None if caught_up else 0.0)
        return items

    def _get_page(
        self, timeline: _Timeline, url: str, params: dict[str, str | int] | None
    ) -> tuple[list[Any] | None, httpx.Response | None]:
        try:
            response = self._client.get(url, params=params, headers=self._headers)
        except httpx.HTTPError as exc:
            self.fail(timeline, f"request failed: {exc}")
            return None, None
        if not self.answered(timeline, response):
            return None, None
        if response.status_code != 200:
            self.fail(timeline, f"HTTP {response.status_code}")
            return None, None
        try:
            statuses = response.json()
        except ValueError:
            self.fail(timeline, "answer is not JSON")
            return None, None
        if not isinstance(statuses, list):
            self.fail(timeline, "answer is not a list of statuses")
            return None, None
        return statuses, response

    def _take(self, timeline: _Timeline, statuses: list[Any]) -> list[RawItem]:
        """New statuses of one page, oldest first, remembered as seen."""
        items = []
        for status in sorted(statuses, key=lambda s: _id_key(_status_id(s) or "")):
            key = _status_id(status) or digest_key(status)
            if key in timeline.seen:
                continue
            timeline.seen[key] = None
            items.append(status_to_item(status, self._host))
        while len(timeline.seen) > SEEN_PER_TIMELINE:
            del timeline.seen[next(iter(timeline.seen))]
        return items

    # -- streaming -----------------------------------------------------------------------------

    def _start_streams(self) -> None:
        for timeline in self._targets:
            thread = threading.Thread(
                target=self._stream_loop,
                args=(timeline,),
                name=f"mastodon-stream-{timeline.key}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _stream_loop(self, timeline: _Timeline) -> None:
        base = self._settings.streaming_url or self._settings.base_url
        if base.startswith("wss://"):
            base = "https://" + base.removeprefix("wss://")
        elif base.startswith("ws://"):
            base = "http://" + base.removeprefix("ws://")
        url = f"{base}{timeline.stream_path}"
        headers = {**self._headers, "Accept": "text/event-stream"}
        # Servers send a heartbeat every few seconds; a minute of silence is a dead connection.
        timeout = httpx.Timeout(self._settings.timeout_s, read=60.0)
        failures = 0
        with httpx.Client(timeout=timeout, headers=headers) as client:
            while not self._stop.is_set():
                try:
                    with client.stream("GET", url, params=timeline.stream_params) as response:
                        if response.status_code != 200:
                            raise httpx.HTTPStatusError(
                                f"HTTP {response.status_code}", request=response.request, response=response
                            )
                        failures = 0
                        # Whatever was posted while we were away comes from REST, right now.
                        timeline.next_poll = 0.0
                        self._read_events(timeline, response)
                except httpx.HTTPError as exc:
                    failures += 1
                    log.warning("mastodon stream %s: %s", timeline.key, exc)
                self._stop.wait(RECONNECT_BACKOFF.delay(failures))

    def _read_events(self, timeline: _Timeline, response: httpx.Response) -> None:
        event: str | None = None
        data: list[str] = []
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if line == "":
                if event == "update" and data:
                    self._stream_queue.put((timeline.key, "\n".join(data)))
                event, data = None, []
            elif line.startswith(":"):
                continue  # heartbeat
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))

    def _drain_stream(self) -> list[RawItem]:
        items: list[RawItem] = []
        while True:
            try:
                key, data = self._stream_queue.get_nowait()
            except queue.Empty:
                return items
            items.extend(self._stream_item(key, data))

    def _stream_item(self, key: str, data: str) -> list[RawItem]:
        timeline = next(t for t in self._targets if t.key == key)
        try:
            status = json.loads(data)
        except ValueError as exc:
            return [
                RawItem(
                    SOURCE,
                    None,
                    raw=data.encode("utf-8", "replace"),
                    error=f"mastodon: unparseable stream event: {exc}",
                )
            ]
        return self._take(timeline, [status])


# -- mapping ---------------------------------------------------------------------------------


def status_to_item(status: Any, host: str) -> RawItem:
    raw = dump_json(status)
    if not isinstance(status, dict):
        return RawItem(SOURCE, None, raw=raw, error="mastodon: status is not a JSON object")
    # A boost carries the boosted status; its own content is empty.
    original: dict[str, Any] = status["reblog"] if isinstance(status.get("reblog"), dict) else status
    uri = original.get("uri") or original.get("url")
    created = original.get("created_at")
    if not isinstance(uri, str) or not uri:
        return RawItem(SOURCE, None, raw=raw, error="mastodon: status without uri")
    if not isinstance(created, str):
        return RawItem(SOURCE, None, raw=raw, error="mastodon: status without created_at")
    content = original.get("content")
    if not isinstance(content, str):
        return RawItem(SOURCE, None, raw=raw, error="mastodon: status without content")
    spoiler = original.get("spoiler_text")
    text = f"{spoiler}. {content}" if isinstance(spoiler, str) and spoiler.strip() else content
    post: dict[str, Any] = {
        # The uri is the status's ActivityPub id: the same on every server that carries it.
        "id": "mastodon:" + hashlib.sha1(uri.encode("utf-8")).hexdigest()[:24],
        "source": SOURCE,
        "text": text,
        "published_at": created,
        "kind": "post",
        "url": original.get("url") or uri,
    }
    account = original.get("account")
    if isinstance(account, dict) and isinstance(account.get("acct"), str):
        acct = account["acct"]
        post["author"] = acct if "@" in acct else f"{acct}@{host}"
    return RawItem(SOURCE, post, raw=raw)


def _status_id(status: Any) -> str | None:
    if isinstance(status, dict) and isinstance(status.get("id"), (str, int)):
        return str(status["id"])
    return None


def _id_key(value: str) -> tuple[int, str]:
    # Ids are strings of (usually) integers: compare by length, then text, which orders numbers.
    return (len(value), value)


def _max_id(statuses: list[Any]) -> str | None:
    ids = [i for i in (_status_id(s) for s in statuses) if i is not None]
    return max(ids, key=_id_key) if ids else None


def _min_id_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return httpx.URL(url).params.get("min_id")
    except (httpx.InvalidURL, ValueError):
        return None

