"""The social and push connectors against local servers that replay each API's documented format.

The replayed bodies and headers follow the APIs' public documentation (Reddit's API docs and
rate-limit headers, Mastodon's timelines/streaming/rate-limit pages, Jetstream's README,
StockTwits' streams docs), not captures of live traffic: nothing here reaches the internet.
Clocks and sleeps are injected, so rate-limit pauses of minutes take no time.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from pydantic import ValidationError

from ingest.checkpoint import CheckpointStore
from moodwire.connector_settings import (
    BlueskySettings,
    MastodonSettings,
    PushSettings,
    RedditSettings,
    StocktwitsSettings,
)
from ingest.connectors import build_connector_sources
from ingest.mastodon import MastodonSource
from ingest.push import PushSource
from ingest.reddit import RedditSource
from ingest.sources import RawItem
from ingest.stocktwits import StocktwitsSource

pytestmark = pytest.mark.integration


# -- shared helpers ----------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when told to, or when the source sleeps."""

    def __init__(self) -> None:
        self.now = 10_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Server-sent events: chunks written as they come, the connection closed at the end.
    stream: Iterator[bytes] | None = None


class ReplayServer:
    """A loopback HTTP server whose answers come from `route(request) -> Reply`."""

    def __init__(self, route: Callable[[Request], Reply]) -> None:
        self.requests: list[Request] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                owner.requests.append(request)
                reply = route(request)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.stream is not None:
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    try:
                        for chunk in reply.stream:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self, prefix: str) -> list[Request]:
        return [r for r in self.requests if r.path.startswith(prefix)]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ids(items: list[RawItem]) -> list[str | None]:
    return [item.data["id"] if item.data else None for item in items]


def good(items: list[RawItem]) -> list[RawItem]:
    return [item for item in items if item.error is None]


# -- Reddit ------------------------------------------------------------------------------------


def reddit_post(n: int, created: float) -> dict[str, Any]:
    return {
        "kind": "t3",
        "data": {
            "subreddit": "stocks",
            "selftext": f"Details of post {n}: margins &amp; guidance." if n % 2 else "",
            "author_fullname": "t2_abc",
            "title": f"Post {n}: $AAPL earnings call",
            "subreddit_name_prefixed": "r/stocks",
            "name": f"t3_p{n}",
            "id": f"p{n}",
            "score": 1,
            "created_utc": created,
            "author": "alice",
            "permalink": f"/r/stocks/comments/p{n}/post_{n}/",
            "url": f"https://www.reddit.com/r/stocks/comments/p{n}/post_{n}/",
            "stickied": False,
            "over_18": False,
            "num_comments": 0,
        },
    }


def reddit_comment(n: int, created: float) -> dict[str, Any]:
    return {
        "kind": "t1",
        "data": {
            "subreddit": "stocks",
            "link_id": "t3_p1",
            "link_title": "Post 1",
            "name": f"t1_c{n}",
            "id": f"c{n}",
            "body": f"Comment {n}: Tesla deliveries disappoint" if n != 99 else "[removed]",
            "author": "bob",
            "created_utc": created,
            "permalink": f"/r/stocks/comments/p1/post_1/c{n}/",
            "parent_id": "t3_p1",
        },
    }


class RedditFake:
    def __init__(self) -> None:
        self.listings: dict[str, list[dict[str, Any]]] = {"new": [], "comments": []}
        self.remaining = "596.0"
        self.reset = "300"
        self.throttle: list[Reply] = []
        self.tokens_issued = 0
        self.server = ReplayServer(self.route)

    def route(self, request: Request) -> Reply:
        if request.path == "/api/v1/access_token":
            assert request.method == "POST"
            assert (
                request.headers["authorization"] == "Basic " + base64.b64encode(b"app-id:app-secret").decode()
            )
            self.tokens_issued += 1
            return Reply(
                200,
                {
                    "access_token": f"tok-{self.tokens_issued}",
                    "token_type": "bearer",
                    "expires_in": 86400,
                    "scope": "*",
                },
            )
        if request.headers.get("authorization") != f"bearer tok-{self.tokens_issued}":
            return Reply(401, {"message": "Unauthorized", "error": 401})
        if self.throttle:
            return self.throttle.pop(0)
        kind = request.path.rsplit("/", 1)[-1]
        listing = self.listings[kind]
        limit = int(request.params["limit"])
        start = 0
        if "after" in request.params:
            names = [c["data"].get("name") for c in listing]
            start = names.index(request.params["after"]) + 1
        page = listing[start : start + limit]
        after = page[-1]["data"].get("name") if start + limit < len(listing) and page else None
        headers = {
            "X-Ratelimit-Used": "4",
            "X-Ratelimit-Remaining": self.remaining,
            "X-Ratelimit-Reset": self.reset,
        }
        body = {
            "kind": "Listing",
            "data": {
                "after": after,
                "dist": len(page),
                "modhash": "",
                "geo_filter": "",
                "children": page,
                "before": None,
            },
        }
        return Reply(200, body, headers)


@pytest.fixture
def reddit() -> Iterator[RedditFake]:
    fake = RedditFake()
    yield fake
    fake.server.close()


def reddit_settings(fake: RedditFake, **overrides: Any) -> RedditSettings:
    values: dict[str, Any] = dict(
        client_id="app-id",
        client_secret="app-secret",
        subreddits=["r/stocks"],
        page_limit=3,
        interval_s=60,
        api_base=fake.server.url,
        token_url=fake.server.url + "/api/v1/access_token",
    )
    values.update(overrides)
    return RedditSettings(**values)


def test_reddit_pages_back_through_a_gap_dead_letters_broken_children_and_resumes_exactly(
    reddit: RedditFake,
) -> None:
    now = time.time()
    reddit.listings["new"] = [reddit_post(n, now - 3600 + n) for n in (3, 2, 1)]
    reddit.listings["comments"] = [reddit_comment(99, now - 100), reddit_comment(1, now - 200)]
    clock = FakeClock()
    source = RedditSource(reddit_settings(reddit), None, clock=clock, sleep=clock.sleep)

    first = source.next_batch()
    assert ids(first.items) == ["reddit:t3_p1", "reddit:t3_p2", "reddit:t3_p3", "reddit:t1_c1"]
    token_request = reddit.server.requests[0]
    assert parse_qs(token_request.body.decode()) == {"grant_type": ["client_credentials"]}
    listing_request = reddit.server.paths("/r/stocks/new")[0]
    assert listing_request.params == {"limit": "3", "raw_json": "1"}
    assert listing_request.headers["user-agent"].startswith("python:moodwire")
    post = first.items[0].data
    assert post is not None
    assert post["text"] == "Post 1: $AAPL earnings call. Details of post 1: margins &amp; guidance."
    assert post["url"] == "https://www.reddit.com/r/stocks/comments/p1/post_1/"
    assert post["author"] == "alice" and post["kind"] == "post" and post["published_at"].endswith("Z")
    comment = first.items[3].data
    assert comment is not None and comment["text"] == "Comment 1: Tesla deliveries disappoint"
    saved_before_gap = first.checkpoint
    assert saved_before_gap is not None

    # Eight new children, one of them broken: three pages of three before the known p3 shows up.
    broken = {"kind": "t3", "data": {"name": "t3_broken", "title": "no creation time"}}
    reddit.listings["new"] = (
        [reddit_post(n, now - 3600 + n) for n in (10, 9)]
        + [broken]
        + [reddit_post(n, now - 3600 + n) for n in (8, 7, 6, 5, 4, 3, 2, 1)]
    )
    clock.advance(60)
    second = source.next_batch()
    expected = [f"reddit:t3_p{n}" for n in (4, 5, 6, 7, 8)] + [None] + ["reddit:t3_p9", "reddit:t3_p10"]
    assert ids(second.items) == expected
    error_item = second.items[5]
    assert (
        error_item.error is not None and "created_utc" in error_item.error and b"t3_broken" in error_item.raw
    )
    afters = [r.params.get("after") for r in reddit.server.paths("/r/stocks/new")[-3:]]
    assert afters == [None, "t3_broken", "t3_p6"]

    # A crash before the bus acknowledged the second batch: the restart re-reads exactly it.
    replay = RedditSource(reddit_settings(reddit), saved_before_gap, clock=clock, sleep=clock.sleep)
    assert ids(replay.next_batch().items) == expected

    # After the acknowledged checkpoint: nothing again, then only what is new.
    resumed = RedditSource(reddit_settings(reddit), second.checkpoint, clock=clock, sleep=clock.sleep)
    assert resumed.next_batch().items == []
    assert clock.sleeps[-1] == 1.0  # idle: naps until the next poll is due, at most a second
    reddit.listings["new"].insert(0, reddit_post(11, now - 3600 + 11))
    clock.advance(61)
    assert ids(resumed.next_batch().items) == ["reddit:t3_p11"]


def test_reddit_honours_ratelimit_headers_and_429(reddit: RedditFake) -> None:
    now = time.time()
    reddit.listings["new"] = [reddit_post(1, now - 50)]
    settings = reddit_settings(reddit, listings=["new"], username="bot", password="hunter2")
    clock = FakeClock()
    source = RedditSource(settings, None, clock=clock, sleep=clock.sleep)

    # The window is used up: the answer still counts, then nothing goes out for X-Ratelimit-Reset s.
    reddit.remaining, reddit.reset = "0.0", "120"
    assert ids(source.next_batch().items) == ["reddit:t3_p1"]
    assert parse_qs(reddit.server.requests[0].body.decode()) == {
        "grant_type": ["password"],
        "username": ["bot"],
        "password": ["hunter2"],
    }
    sent = len(reddit.server.requests)
    clock.advance(60)  # the listing is due, the rate limit is not
    source.next_batch()
    assert len(reddit.server.requests) == sent
    assert all(s <= 1.0 for s in clock.sleeps)  # never blocks the ingest loop for long
    clock.now = 10_000.0 + 121
    reddit.remaining, reddit.reset = "590.0", "550"
    reddit.listings["new"].insert(0, reddit_post(2, now - 40))
    assert ids(source.next_batch().items) == ["reddit:t3_p2"]

    # A 429: wait X-Ratelimit-Reset, then the same posts come, none lost.
    reddit.throttle.append(
        Reply(
            429,
            {"message": "Too Many Requests", "error": 429},
            {"X-Ratelimit-Used": "600", "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "30"},
        )
    )
    reddit.listings["new"].insert(0, reddit_post(3, now - 30))
    clock.advance(60)
    assert source.next_batch().items == []
    sent = len(reddit.server.requests)
    clock.advance(28)
    source.next_batch()
    assert len(reddit.server.requests) == sent
    clock.advance(3)
    assert ids(source.next_batch().items) == ["reddit:t3_p3"]


# -- Mastodon ----------------------------------------------------------------------------------


def mastodon_status(n: int, base: str) -> dict[str, Any]:
    created = datetime.now(UTC) - timedelta(minutes=100 - n)
    return {
        "id": str(n),
        "created_at": iso(created),
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "sensitive": False,
        "spoiler_text": "earnings" if n == 5 else "",
        "visibility": "public",
        "language": "en",
        "uri": f"https://remote.example/users/bob/statuses/{n}",
        "url": f"https://remote.example/@bob/{n}",
        "replies_count": 0,
        "reblogs_count": 0,
        "favourites_count": 0,
        "edited_at": None,
        "content": f'<p>Status {n}: $TSLA looks weak <a href="{base}/tags/stocks" class="mention hashtag" rel="tag">#<span>stocks</span></a></p>',
        "reblog": None,
        "account": {
            "id": "7",
            "username": "bob",
            "acct": "bob@remote.example",
            "display_name": "Bob",
            "url": "https://remote.example/@bob",
        },
        "media_attachments": [],
        "mentions": [],
        "tags": [{"name": "stocks", "url": f"{base}/tags/stocks"}],
        "emojis": [],
        "card": None,
        "poll": None,
    }


class MastodonFake:
    def __init__(self) -> None:
        self.statuses: dict[int, dict[str, Any]] = {}
        self.throttle: list[Reply] = []
        self.remaining = "299"
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stop = threading.Event()
        self.server = ReplayServer(self.route)

    def add(self, *numbers: int) -> None:
        for n in numbers:
            self.statuses[n] = mastodon_status(n, self.server.url)

    def route(self, request: Request) -> Reply:
        if request.headers.get("authorization") != "Bearer mastodon-token":
            return Reply(401, {"error": "The access token is invalid"})
        if request.path == "/api/v1/streaming/hashtag":
            assert request.params == {"tag": "stocks"}
            return Reply(200, stream=self.sse())
        assert request.path == "/api/v1/timelines/tag/stocks"
        if self.throttle:
            return self.throttle.pop(0)
        limit = int(request.params.get("limit", 20))
        known = sorted(self.statuses)
        if "min_id" in request.params:
            page = [i for i in known if i > int(request.params["min_id"])][:limit]
        elif "max_id" in request.params:
            page = [i for i in known if i < int(request.params["max_id"])][-limit:]
        else:
            page = known[-limit:]
        reset = iso(datetime.now(UTC) + timedelta(minutes=5))
        headers = {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Remaining": self.remaining,
            "X-RateLimit-Reset": reset,
        }
        if page:
            base = f"{self.server.url}/api/v1/timelines/tag/stocks"
            headers["Link"] = (
                f'<{base}?limit={limit}&max_id={min(page)}>; rel="next", <{base}?limit={limit}&min_id={max(page)}>; rel="prev"'
            )
        return Reply(200, [self.statuses[i] for i in sorted(page, reverse=True)], headers)

    def sse(self) -> Iterator[bytes]:
        yield b":)\n"
        while not self.stop.is_set():
            try:
                status = self.events.get(timeout=0.05)
            except queue.Empty:
                yield b":thump\n"
                continue
            yield b"event: update\ndata: " + json.dumps(status).encode() + b"\n\n"


@pytest.fixture
def mastodon() -> Iterator[MastodonFake]:
    fake = MastodonFake()
    yield fake
    fake.stop.set()
    fake.server.close()


def mastodon_settings(fake: MastodonFake, **overrides: Any) -> MastodonSettings:
    values: dict[str, Any] = dict(
        base_url=fake.server.url,
        access_token="mastodon-token",
        hashtags=["#stocks"],
        page_limit=2,
        interval_s=60,
    )
    values.update(overrides)
    return MastodonSettings(**values)


def mastodon_id(n: int) -> str:
    import hashlib

    return (
        "mastodon:" + hashlib.sha1(f"https://remote.example/users/bob/statuses/{n}".encode()).hexdigest()[:24]
    )


def test_mastodon_pages_forward_with_min_id_and_resumes_exactly(mastodon: MastodonFake) -> None:
    mastodon.add(1, 2, 3)
    clock = FakeClock()
    source = MastodonSource(mastodon_settings(mastodon), None, clock=clock, sleep=clock.sleep)

    first = source.next_batch()
    # First start: only the newest page, oldest first.
    assert ids(first.items) == [mastodon_id(2), mastodon_id(3)]
    status = first.items[0].data
    assert status is not None and status["text"].startswith("<p>Status 2: $TSLA")  # HTML kept for clean_text
    assert status["author"] == "bob@remote.example" and status["url"] == "https://remote.example/@bob/2"
    assert first.checkpoint == {"timelines": {"tag:stocks": {"min_id": "3", "seen": ["2", "3"]}}}

    # Five new statuses, one broken: read forward through the Link header's prev URLs.
    mastodon.add(4, 5, 6, 8)
    mastodon.statuses[7] = {"id": "7", "content": "<p>no date</p>", "uri": "https://remote.example/x/7"}
    clock.advance(60)
    second = source.next_batch()
    assert ids(second.items) == [mastodon_id(4), mastodon_id(5), mastodon_id(6), None, mastodon_id(8)]
    assert second.items[3].error == "mastodon: status without created_at"
    assert second.items[1].data is not None and second.items[1].data["text"].startswith(
        "earnings. <p>Status 5"
    )
    min_ids = [r.params.get("min_id") for r in mastodon.server.paths("/api/v1/timelines")[1:]]
    assert min_ids == ["3", "5", "7", "8"]

    # Restart from the first checkpoint (the second was never acknowledged): the same five again.
    replay = MastodonSource(mastodon_settings(mastodon), first.checkpoint, clock=clock, sleep=clock.sleep)
    assert ids(replay.next_batch().items) == ids(second.items)
    # From the acknowledged one: only what is new.
    mastodon.add(9)
    resumed = MastodonSource(mastodon_settings(mastodon), second.checkpoint, clock=clock, sleep=clock.sleep)
    assert ids(resumed.next_batch().items) == [mastodon_id(9)]
    assert resumed.next_batch().items == [] and clock.sleeps[-1] == 1.0


def test_mastodon_waits_for_x_ratelimit_reset(mastodon: MastodonFake) -> None:
    mastodon.add(1)
    clock = FakeClock()
    source = MastodonSource(
        mastodon_settings(mastodon),
        {"timelines": {"tag:stocks": {"min_id": "0"}}},
        clock=clock,
        sleep=clock.sleep,
    )
    reset = iso(datetime.now(UTC) + timedelta(seconds=30))
    mastodon.throttle.append(
        Reply(
            429,
            {"error": "Too many requests"},
            {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
        )
    )
    assert source.next_batch().items == []
    sent = len(mastodon.server.requests)
    clock.advance(27)  # the reset is ~30 s away by the server's own Date header
    source.next_batch()
    assert len(mastodon.server.requests) == sent
    clock.advance(5)
    assert ids(source.next_batch().items) == [mastodon_id(1)]

    # Remaining 0 on a good answer: the next request waits for the reset too.
    mastodon.remaining = "0"
    mastodon.add(2)
    clock.advance(60)
    assert ids(source.next_batch().items) == [mastodon_id(2)]
    sent = len(mastodon.server.requests)
    clock.advance(200)
    source.next_batch()
    assert len(mastodon.server.requests) == sent
    mastodon.remaining = "299"
    clock.advance(120)
    source.next_batch()
    assert len(mastodon.server.requests) > sent


def test_mastodon_streaming_delivers_updates_once(mastodon: MastodonFake) -> None:
    mastodon.add(1, 2)
    clock = FakeClock()
    source = MastodonSource(mastodon_settings(mastodon, streaming=True), None, clock=clock, sleep=clock.sleep)
    try:
        assert ids(source.next_batch().items) == [mastodon_id(1), mastodon_id(2)]
        mastodon.add(3)
        mastodon.events.put(mastodon.statuses[3])
        streamed: list[RawItem] = []
        deadline = time.monotonic() + 5
        while not streamed and time.monotonic() < deadline:
            streamed = source.next_batch().items
        assert ids(streamed) == [mastodon_id(3)]
        # The REST safety net sees status 3 too, and does not emit it again.
        clock.advance(61)
        assert source.next_batch().items == []
        assert source.checkpoint()["timelines"]["tag:stocks"]["min_id"] == "3"
    finally:
        mastodon.stop.set()
        source.close()


# -- Bluesky (Jetstream) -----------------------------------------------------------------------




def jetstream_post(time_us: int, rkey: str, text: str | None, *, operation: str = "create") -> dict[str, Any]:
    commit: dict[str, Any] = {
        "rev": "3l3qo2vutsw2b",
        "operation": operation,
        "collection": "app.bsky.feed.post",
        "rkey": rkey,
        "cid": "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi",
    }
    if text is not None and operation != "delete":
        commit["record"] = {
            "$type": "app.bsky.feed.post",
            "createdAt": iso(datetime.fromtimestamp(time_us / 1e6, UTC)),
            "langs": ["en"],
            "text": text,
        }
    return {"did": "did:plc:eygmaihciaxprqvxpfvl6flk", "time_us": time_us, "kind": "commit", "commit": commit}


class JetstreamFake:
    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.events: list[dict[str, Any] | str] = []
        self.paths: list[str] = []
        self.handshakes = 0
        self.refuse = 0

        def process_request(connection: Any, request: Any) -> Any:
            self.handshakes += 1
            if self.refuse:
                self.refuse -= 1
                response = connection.respond(429, "Too Many Requests\n")
                response.headers["Retry-After"] = "7"
                return response
            return None

        def handler(connection: Any) -> None:
            self.paths.append(connection.request.path)
            query = parse_qs(urlsplit(connection.request.path).query)
            cursor = int(query["cursor"][0]) if "cursor" in query else None
            for event in list(self.events):
                if isinstance(event, str):
                    if cursor is None:
                        connection.send(event)
                elif cursor is None or event["time_us"] >= cursor:
                    connection.send(json.dumps(event))
            try:
                connection.recv()
            except websockets.exceptions.ConnectionClosed:
                pass

        self.server = serve(handler, "127.0.0.1", 0, process_request=process_request)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/subscribe"


@pytest.fixture
def jetstream() -> Iterator[JetstreamFake]:
    fake = JetstreamFake()
    yield fake
    fake.server.shutdown()


def bluesky_settings(fake: JetstreamFake) -> BlueskySettings:
    return BlueskySettings(
        jetstream_url=fake.url, keywords=["rate cut"], cashtags=["$aapl"], batch_wait_s=0.3
    )


def read_until(source: Any, count: int, seconds: float = 5.0) -> list[RawItem]:
    items: list[RawItem] = []
    deadline = time.monotonic() + seconds
    while len(items) < count and time.monotonic() < deadline:
        items.extend(source.next_batch().items)
    return items


def test_bluesky_filters_the_firehose_and_resumes_from_time_us(jetstream: JetstreamFake) -> None:
    from ingest.bluesky import BlueskySource

    t = int(time.time() * 1_000_000) - 60_000_000
    did = "did:plc:eygmaihciaxprqvxpfvl6flk"
    jetstream.events = [
        jetstream_post(t + 1, "3kaaa1", "Earnings beat for $AAPL today"),
        jetstream_post(t + 2, "3kaaa2", "nothing to see here, $5 coffee and $TSLA"),
        jetstream_post(t + 3, "3kaaa1", None, operation="delete"),
        {
            "did": did,
            "time_us": t + 4,
            "kind": "commit",
            "commit": {"operation": "create", "collection": "app.bsky.feed.like", "rkey": "x", "record": {}},
        },
        {
            "did": did,
            "time_us": t + 5,
            "kind": "identity",
            "identity": {"did": did, "handle": "bob.bsky.social", "seq": 1, "time": iso(datetime.now(UTC))},
        },
        "{not json",
        {
            "did": did,
            "time_us": t + 6,
            "kind": "commit",
            "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": "3kbad"},
        },
        jetstream_post(t + 7, "3kaaa3", "Markets price in a RATE CUT in June"),
        {
            "did": did,
            "time_us": t + 8,
            "kind": "account",
            "account": {"active": True, "did": did, "seq": 2, "time": iso(datetime.now(UTC))},
        },
    ]
    clock = FakeClock()
    source = BlueskySource(bluesky_settings(jetstream), None, clock=clock, sleep=clock.sleep)
    try:
        items = read_until(source, 4)
    finally:
        source.close()
    assert [item.data["id"] if item.data else item.error for item in items] == [
        f"bsky:{did}/3kaaa1",
        "bluesky: unparseable event: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "bluesky: post event without did, rkey or record",
        f"bsky:{did}/3kaaa3",
    ]
    first = items[0].data
    assert first is not None and first["url"] == f"https://bsky.app/profile/{did}/post/3kaaa1"
    assert first["author"] == did and first["text"] == "Earnings beat for $AAPL today"
    assert jetstream.paths[0] == "/subscribe?wantedCollections=app.bsky.feed.post"
    checkpoint = source.checkpoint()
    assert checkpoint["cursor"] == t + 8

    # Restart: the cursor is rewound two seconds, so everything is replayed; only new posts come out.
    jetstream.events.append(jetstream_post(t + 9, "3kaaa4", "$AAPL guidance cut"))
    jetstream.events.append(jetstream_post(t + 10, "3kaaa5", "unrelated"))
    resumed = BlueskySource(bluesky_settings(jetstream), checkpoint, clock=clock, sleep=clock.sleep)
    try:
        again = read_until(resumed, 1)
        again += resumed.next_batch().items  # anything more would be a repeat
    finally:
        resumed.close()
    assert ids(again) == [f"bsky:{did}/3kaaa4"]
    assert jetstream.paths[1] == f"/subscribe?wantedCollections=app.bsky.feed.post&cursor={t + 8 - 2_000_000}"
    assert resumed.checkpoint()["cursor"] == t + 10


def test_bluesky_refused_handshake_waits_for_retry_after(jetstream: JetstreamFake) -> None:
    from ingest.bluesky import BlueskySource

    t = int(time.time() * 1_000_000)
    jetstream.events = [jetstream_post(t, "3kccc1", "$AAPL breaks out")]
    jetstream.refuse = 1
    clock = FakeClock()
    source = BlueskySource(bluesky_settings(jetstream), None, clock=clock, sleep=clock.sleep)
    try:
        assert source.next_batch().items == []
        assert jetstream.handshakes == 1
        clock.now = 10_000.0 + 6
        assert source.next_batch().items == []
        assert jetstream.handshakes == 1
        clock.now = 10_000.0 + 7.5
        assert ids(read_until(source, 1)) == ["bsky:did:plc:eygmaihciaxprqvxpfvl6flk/3kccc1"]
    finally:
        source.close()


# -- StockTwits --------------------------------------------------------------------------------


def stocktwits_message(n: int, symbols: tuple[str, ...] = ("AAPL",)) -> dict[str, Any]:
    return {
        "id": 208_435_000 + n,
        "body": f"${symbols[0].removesuffix('.X')} idea number {n}: watching the {100 + n} level",
        "created_at": iso(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=100 - n)).replace(
            ".000Z", "Z"
        ),
        "user": {
            "id": 1626961,
            "username": "braves716",
            "name": "Ganesh",
            "avatar_url": "http://avatars.stocktwits.com/x.jpg",
            "join_date": "2018-09-25",
            "official": False,
            "identity": "User",
            "classification": [],
            "followers": 1,
            "following": 0,
            "ideas": 0,
            "watchlist_stocks_count": 2,
            "like_count": 6,
        },
        "source": {"id": 1149, "title": "StockTwits for iOS", "url": "http://www.stocktwits.com/mobile"},
        "symbols": [
            {
                "id": 686 + i,
                "symbol": s,
                "title": s,
                "aliases": [],
                "is_following": False,
                "watchlist_count": 1000,
            }
            for i, s in enumerate(symbols)
        ],
        "mentioned_users": [],
        "entities": {"sentiment": {"basic": "Bullish"} if n % 2 else None},
    }


class StocktwitsFake:
    def __init__(self) -> None:
        self.messages: dict[int, dict[str, Any]] = {}
        self.broken: list[Any] = []
        self.throttle: list[Reply] = []
        self.server = ReplayServer(self.route)

    def add(self, *numbers: int, symbols: tuple[str, ...] = ("AAPL",)) -> None:
        for n in numbers:
            message = stocktwits_message(n, symbols)
            self.messages[message["id"]] = message

    def route(self, request: Request) -> Reply:
        assert request.path == "/api/2/streams/symbol/AAPL.json"
        if self.throttle:
            return self.throttle.pop(0)
        known = sorted(self.messages, reverse=True)
        if "since" in request.params:
            known = [i for i in known if i > int(request.params["since"])]
        if "max" in request.params:
            known = [i for i in known if i <= int(request.params["max"])]
        limit = int(request.params.get("limit", 30))
        page = known[:limit]
        messages = [self.messages[i] for i in page] + self.broken
        self.broken = []
        body = {
            "response": {"status": 200},
            "symbol": {
                "id": 686,
                "symbol": "AAPL",
                "title": "Apple Inc.",
                "aliases": [],
                "is_following": False,
                "watchlist_count": 380677,
            },
            "cursor": {
                "more": len(known) > limit,
                "since": page[0] if page else None,
                "max": page[-1] if page else None,
            },
            "messages": messages,
        }
        headers = {
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "150",
            "X-RateLimit-Reset": str(int(time.time()) + 3000),
        }
        return Reply(200, body, headers)


@pytest.fixture
def stocktwits() -> Iterator[StocktwitsFake]:
    fake = StocktwitsFake()
    yield fake
    fake.server.close()


def stocktwits_settings(fake: StocktwitsFake) -> StocktwitsSettings:
    return StocktwitsSettings(
        symbols=["aapl"], api_base=fake.server.url + "/api/2", page_limit=2, interval_s=60
    )


def st_id(n: int) -> str:
    return f"stocktwits:{208_435_000 + n}"


def test_stocktwits_pages_with_since_and_max_and_maps_symbols(stocktwits: StocktwitsFake) -> None:
    stocktwits.add(1, 2, 3)
    clock = FakeClock()
    source = StocktwitsSource(stocktwits_settings(stocktwits), None, clock=clock, sleep=clock.sleep)
    first = source.next_batch()
    assert ids(first.items) == [st_id(2), st_id(3)]
    message = first.items[0].data
    assert message is not None
    assert (
        message["symbols"] == ["AAPL"]
        and message["url"] == f"https://stocktwits.com/braves716/message/{208_435_002}"
    )
    assert "sentiment" not in message

    stocktwits.add(4, 5, 6)
    stocktwits.add(7, symbols=("BTC.X", "AAPL"))
    stocktwits.broken = [{"id": "not-a-number", "body": "broken"}]
    clock.advance(60)
    second = source.next_batch()
    assert ids(second.items) == [None, st_id(4), st_id(5), st_id(6), st_id(7)]
    assert second.items[0].error == "stocktwits: message without an integer id"
    last = second.items[-1].data
    assert last is not None and last["symbols"] == ["BTC", "AAPL"]
    pages = [(r.params.get("since"), r.params.get("max")) for r in stocktwits.server.requests[1:]]
    assert pages == [(str(208_435_003), None), (str(208_435_003), str(208_435_005))]

    # Restart from the acknowledged checkpoint: nothing repeats, the next message comes.
    stocktwits.add(8)
    resumed = StocktwitsSource(
        stocktwits_settings(stocktwits), second.checkpoint, clock=clock, sleep=clock.sleep
    )
    assert ids(resumed.next_batch().items) == [st_id(8)]
    assert resumed.next_batch().items == [] and clock.sleeps[-1] == 1.0


def test_stocktwits_429_waits_for_x_ratelimit_reset(stocktwits: StocktwitsFake) -> None:
    stocktwits.add(1)
    clock = FakeClock()
    source = StocktwitsSource(
        stocktwits_settings(stocktwits), {"symbols": {"AAPL": {"since": 0}}}, clock=clock, sleep=clock.sleep
    )
    stocktwits.throttle.append(
        Reply(
            429,
            {
                "response": {"status": 429},
                "errors": [
                    {"message": "Rate limit exceeded. Client may not make more than 200 requests an hour."}
                ],
            },
            {
                "X-RateLimit-Limit": "200",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + 600),
            },
        )
    )
    assert source.next_batch().items == []
    sent = len(stocktwits.server.requests)
    clock.advance(590)
    source.next_batch()
    assert len(stocktwits.server.requests) == sent
    clock.advance(15)
    assert ids(source.next_batch().items) == [st_id(1)]


def test_stocktwits_through_the_ingest_loop_dead_letters_and_restarts_from_the_saved_checkpoint(
    stocktwits: StocktwitsFake, tmp_path: Path
) -> None:
    from ingest.normalize import Normalizer
    from ingest.service import IngestSettings, IngestWorker
    from moodwire.config import load_settings

    class Producer:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

        def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = ()) -> None:
            self.sent.append((topic, value, dict(headers)))

        def flush(self, timeout_s: float | None = None) -> None:
            pass

        def close(self) -> None:
            pass

    settings = load_settings(data_dir=tmp_path / "data")
    checkpoints = CheckpointStore(tmp_path / "state")
    stocktwits.add(1, 2)
    stocktwits.broken = [{"id": 5, "body": "no date"}]
    section = stocktwits_settings(stocktwits)
    [source] = build_connector_sources(checkpoints, stocktwits=section)
    producer = Producer()
    worker = IngestWorker(
        IngestSettings.from_settings(settings), producer, [source], checkpoints, normalizer=Normalizer(detect_language=False)
    )
    assert worker.step(source) == 2
    topics = [topic for topic, _, _ in producer.sent]
    assert topics.count(settings.posts_topic) == 2 and topics.count(settings.dead_letter_topic) == 1
    dead = next(s for s in producer.sent if s[0] == settings.dead_letter_topic)
    assert dead[2]["moodwire-reason"] == b"stocktwits: message 5 without created_at"
    posts = [json.loads(value) for topic, value, _ in producer.sent if topic == settings.posts_topic]
    assert [p["id"] for p in posts] == [st_id(1), st_id(2)] and posts[0]["symbols"][0] == "AAPL"

    stocktwits.add(3)
    [restarted] = build_connector_sources(checkpoints, stocktwits=section)
    assert ids(restarted.next_batch().items) == [st_id(3)]


# -- push --------------------------------------------------------------------------------------


TOKEN = "push-token-0123456789"


def push_settings(**overrides: Any) -> PushSettings:
    values: dict[str, Any] = dict(token=TOKEN, port=0, max_body_bytes=2048, ack_timeout_s=5.0)
    values.update(overrides)
    return PushSettings(**values)


@pytest.fixture
def push_source() -> Iterator[PushSource]:
    source = PushSource(push_settings())
    yield source
    source.close()


def push_url(source: PushSource) -> str:
    host, port = source.address
    return f"http://{host}:{port}/v1/posts"


def post_in_background(url: str, body: bytes, results: list[httpx.Response]) -> threading.Thread:
    def send() -> None:
        results.append(
            httpx.post(url, content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        )

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def drain(source: PushSource, seconds: float = 5.0) -> list[RawItem]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = source.next_batch()
        if batch.items:
            assert batch.checkpoint is not None
            source.commit(batch.checkpoint)
            return batch.items
    return []


def push_post(n: int) -> dict[str, Any]:
    return {
        "id": f"vendor:{n}",
        "text": f"Vendor note {n}: $NVDA demand strong",
        "published_at": iso(datetime.now(UTC)),
        "source": "vendorx",
    }


def test_push_requires_the_token_and_caps_the_body(push_source: PushSource) -> None:
    url = push_url(push_source)
    body = json.dumps(push_post(1)).encode()
    missing = httpx.post(url, content=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = httpx.post(url, content=body, headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401
    big = httpx.post(url, content=b"x" * 4096, headers={"Authorization": f"Bearer {TOKEN}"})
    assert big.status_code == 413
    assert httpx.get(url).status_code == 405
    not_json = httpx.post(url, content=b"\xff\xfe", headers={"Authorization": f"Bearer {TOKEN}"})
    assert not_json.status_code == 400
    assert push_source.next_batch().items == []


def test_push_jsonl_accepts_reports_rejects_and_answers_after_the_bus(push_source: PushSource) -> None:
    lines = [
        json.dumps(push_post(1)),
        "{broken json",
        json.dumps({"id": "vendor:2", "text": "   <p></p> "}),
        json.dumps({"id": "vendor:3", "text": "No date given: $AMD"}),
    ]
    results: list[httpx.Response] = []
    thread = post_in_background(push_url(push_source), "\n".join(lines).encode(), results)
    items = drain(push_source)
    thread.join(timeout=10)
    assert [item.data["id"] if item.data else item.error for item in items] == [
        "vendor:1",
        "vendor:3",
        "push: line 2: malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "push: text: empty after removing HTML and whitespace",
    ]
    assert items[0].data is not None and items[0].data["source"] == "vendorx"
    assert (
        items[1].data is not None
        and items[1].data["source"] == "push"
        and "published_at" not in items[1].data
    )
    [response] = results
    assert response.status_code == 200
    report = response.json()
    assert report["accepted"] == 2
    assert [(r["index"], r["id"]) for r in report["rejected"]] == [(1, None), (2, "vendor:2")]

    # One object, and an array, are bodies too.
    results.clear()
    thread = post_in_background(
        push_url(push_source), json.dumps([push_post(4), push_post(5)]).encode(), results
    )
    assert ids(drain(push_source)) == ["vendor:4", "vendor:5"]
    thread.join(timeout=10)
    assert results[0].json() == {"accepted": 2, "rejected": []}


def test_push_unconfirmed_posts_get_503_and_a_resend_after_restart_arrives_once() -> None:
    first = PushSource(push_settings(ack_timeout_s=0.3))
    body = json.dumps(push_post(7)).encode()
    try:
        response = httpx.post(
            push_url(first), content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
    finally:
        first.close()  # the process dies with the post still queued, never on the bus
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"

    second = PushSource(push_settings())
    try:
        results: list[httpx.Response] = []
        thread = post_in_background(push_url(second), body, results)
        assert ids(drain(second)) == ["vendor:7"]
        thread.join(timeout=10)
        assert results[0].status_code == 200
        assert second.next_batch().items == []
    finally:
        second.close()


def test_push_full_queue_answers_503() -> None:
    source = PushSource(push_settings(queue_size=2, wait_for_bus=False))
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        three = "\n".join(json.dumps(push_post(n)) for n in (1, 2, 3)).encode()
        assert httpx.post(push_url(source), content=three, headers=headers).status_code == 503
        two = "\n".join(json.dumps(push_post(n)) for n in (1, 2)).encode()
        response = httpx.post(push_url(source), content=two, headers=headers)
        assert response.status_code == 200 and response.json()["accepted"] == 2
        assert ids(source.next_batch().items) == ["vendor:1", "vendor:2"]
    finally:
        source.close()


# -- settings ----------------------------------------------------------------------------------


def test_settings_reject_incomplete_sections_and_hide_secrets() -> None:
    with pytest.raises(ValidationError, match="both username and password"):
        RedditSettings(client_id="a", client_secret="b", subreddits=["stocks"], username="bot")
    with pytest.raises(ValidationError, match="not a subreddit name"):
        RedditSettings(client_id="a", client_secret="b", subreddits=["no spaces"])
    with pytest.raises(ValidationError, match="keywords, cashtags or any_cashtag"):
        BlueskySettings()
    with pytest.raises(ValidationError, match="at least one hashtag"):
        MastodonSettings(base_url="https://mastodon.social")
    with pytest.raises(ValidationError):
        PushSettings(token="short")
    settings = RedditSettings(client_id="a", client_secret="very-secret", subreddits=["/r/wallstreetbets"])
    assert settings.subreddits == ["wallstreetbets"]
    assert "very-secret" not in repr(settings) and "very-secret" not in settings.model_dump_json()
    assert StocktwitsSettings(symbols=["$aapl", "BTC.X"]).symbols == ["AAPL", "BTC.X"]
