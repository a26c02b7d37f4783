"""Every source releases what it holds on close() (the application calls it at shutdown), and the
push endpoint refuses a post over the bus's message limit."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import httpx
import pytest

from ingest.checkpoint import CheckpointStore
from ingest.connectors import build_connector_sources
from ingest.file_source import FileSource
from ingest.mastodon import MastodonSource
from ingest.normalize import Normalizer
from ingest.push import PushSource
from ingest.rss import RssSource
from ingest.service import IngestSettings, IngestWorker
from moodwire.config import FeedConfig
from moodwire.connector_settings import MastodonSettings, PushSettings, RedditSettings, StocktwitsSettings
from moodwire.dead_letters import MAX_MESSAGE_BYTES
from tests.integration.test_connectors import MastodonFake, iso

pytestmark = pytest.mark.integration

TOKEN = "push-token-0123456789"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_close_releases_files_clients_servers_and_stream_threads(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "hi"}) + "\n", encoding="utf-8")
    checkpoints = CheckpointStore(tmp_path / "state")
    reddit, stocktwits, push = build_connector_sources(
        checkpoints,
        reddit=RedditSettings(client_id="a", client_secret="b", subreddits=["stocks"]),
        stocktwits=StocktwitsSettings(symbols=["AAPL"]),
        push=PushSettings(token=TOKEN, port=0),
    )
    assert isinstance(push, PushSource)
    port = push.address[1]
    assert not port_is_free(port)
    file = FileSource(path)
    rss = RssSource([FeedConfig(url="http://127.0.0.1:9/feed.xml")])
    mastodon_server = MastodonFake()
    mastodon = MastodonSource(
        MastodonSettings(base_url=mastodon_server.server.url, access_token="mastodon-token", hashtags=["stocks"], streaming=True)
    )
    try:
        mastodon.next_batch()  # starts the stream thread
        streams = [t for t in threading.enumerate() if t.name.startswith("mastodon-stream-")]
        assert streams
        sources = [file, rss, reddit, stocktwits, push, mastodon]
        worker = IngestWorker(
            IngestSettings("posts", "dead"), None, sources, checkpoints, normalizer=Normalizer(detect_language=False)  # type: ignore[arg-type]
        )
        worker.close()
    finally:
        mastodon_server.stop.set()
        mastodon_server.server.close()

    with pytest.raises(ValueError, match="closed file"):
        file.next_batch()
    assert all(source._client.is_closed for source in (rss, reddit, stocktwits, mastodon))
    assert port_is_free(port)
    assert not any(t.is_alive() for t in streams)


def test_push_refuses_a_post_over_the_message_limit() -> None:
    source = PushSource(PushSettings(token=TOKEN, port=0, max_body_bytes=5_000_000, wait_for_bus=False))
    try:
        host, port = source.address
        small = {"id": "v:1", "text": "Vendor note: $NVDA demand strong", "published_at": iso_now()}
        big = {"id": "v:2", "text": "x" * MAX_MESSAGE_BYTES}
        body = json.dumps(small) + "\n" + json.dumps(big)
        response = httpx.post(
            f"http://{host}:{port}/v1/posts", content=body.encode(), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200
        reason = f"post is {len(json.dumps(big))} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
        assert response.json() == {"accepted": 1, "rejected": [{"index": 1, "id": "v:2", "reason": reason}]}
        items = source.next_batch().items
        assert [item.data["id"] if item.data else item.error for item in items] == ["v:1", f"push: {reason}"]
    finally:
        source.close()


def iso_now() -> str:
    from datetime import UTC, datetime

    return iso(datetime.now(UTC))
