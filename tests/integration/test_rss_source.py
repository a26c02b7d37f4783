"""The RSS source against a real local HTTP server serving a feed fixture."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email.utils import format_datetime
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ingest.rss import RssSource
from moodwire.config import FeedConfig

pytestmark = pytest.mark.integration


def rss(items: list[tuple[str, str, str]]) -> bytes:
    now = datetime.now(UTC)
    entries = "".join(
        f"<item><title>{title}</title><link>https://news.example/{guid}</link><guid>{guid}</guid>"
        f"<description>{summary}</description><pubDate>{format_datetime(now - timedelta(minutes=i))}</pubDate></item>"
        for i, (guid, title, summary) in enumerate(items)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>{entries}</channel></rss>'.encode()


class FeedServer:
    def __init__(self) -> None:
        self.body = rss([("a1", "Apple beats estimates", "iPhone sales strong"), ("a2", "Tesla cuts guidance", "Deliveries fall")])
        self.etag = '"v1"'
        self.requests: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(dict(self.headers))
                if self.headers.get("If-None-Match") == owner.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("ETag", owner.etag)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feed.xml"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.server.shutdown()


def test_items_emitted_once_etag_honoured_and_no_reemission_after_restart(feed_server: FeedServer) -> None:
    feed = FeedConfig(url=feed_server.url, interval_s=5)
    source = RssSource([feed])
    first = source.poll_feed(feed)
    assert [item.data["text"] for item in first if item.data] == [
        "Tesla cuts guidance. Deliveries fall",
        "Apple beats estimates. iPhone sales strong",
    ]
    assert all(item.data and item.data["id"].startswith("rss:") and item.data["kind"] == "headline" for item in first)

    # Unchanged feed: the conditional GET gets a 304 and nothing is emitted.
    assert source.poll_feed(feed) == []
    assert feed_server.requests[-1].get("If-None-Match") == '"v1"'

    # The feed changes: only the new item comes out.
    feed_server.body = rss([("a3", "Nvidia soars on AI demand", "Record revenue")] + [
        ("a1", "Apple beats estimates", "iPhone sales strong"), ("a2", "Tesla cuts guidance", "Deliveries fall"),
    ])
    feed_server.etag = '"v2"'
    second = source.poll_feed(feed)
    assert [item.data["text"] for item in second if item.data] == ["Nvidia soars on AI demand. Record revenue"]

    # Restart from the checkpoint, even with a server that ignores ETags: nothing is re-emitted.
    checkpoint = source.checkpoint()
    feed_server.etag = '"v3"'
    restarted = RssSource([feed], checkpoint)
    assert restarted.poll_feed(feed) == []
    assert feed_server.requests[-1].get("If-None-Match") == '"v2"'
