"""The alerting job on the real ClickHouse server: a negative spike in stored posts becomes one
alert row, one signed webhook and one e-mail; a restarted job sends nothing twice."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alerting.job import AlertJob
from alerting.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from moodwire.config import Settings, load_settings
from moodwire.labels import EMOTION_LABELS
from moodwire.schema import Post, ScoredPost
from moodwire.store import ServerStore
from tests.conftest import unique
from tests.services import free_port

pytestmark = pytest.mark.integration

SECRET = "test-signing-key-0123456789"


class WebhookReceiver:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.bad_signatures = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signed = verify(
                    SECRET, self.headers.get(TIMESTAMP_HEADER, ""), body, self.headers.get(SIGNATURE_HEADER, "")
                )
                if not signed:
                    owner.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                owner.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def symbols(self) -> list[str]:
        """The symbol of every alert in every notification received, in order."""
        return [a["symbol"] for body in self.bodies for a in body["alerts"]]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.server.shutdown()


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, list]]:
    from aiosmtpd.controller import Controller

    received: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def scored(index: int, symbol: str, published: datetime, polarity: str) -> ScoredPost:
    score = {"negative": -0.9, "neutral": 0.0, "positive": 0.8}[polarity]
    probs = {"negative": 0.05, "neutral": 0.05, "positive": 0.05}
    probs[polarity] = 0.9
    return ScoredPost(
        post=Post(
            id=f"alert-test:{index}",
            source="file",
            text=f"post {index} about ${symbol}: {polarity} take number {index}",
            published_at=published,
            symbols=(symbol,),
        ),
        polarity=polarity,  # type: ignore[arg-type]
        polarity_score=score,
        emotion="neutral",
        polarity_probs=probs,
        emotion_probs={label: 1 / 7 for label in EMOTION_LABELS},
        model_version="test",
        scored_at=published,
    )


def stream(now: datetime, spike_start: datetime) -> list[ScoredPost]:
    """Four hours of BA and AAPL chatter at ~20% negative, then 12 minutes of mostly negative BA."""
    rng = random.Random(7)
    posts: list[ScoredPost] = []
    index = 0
    minute = now - timedelta(hours=4)
    while minute < now - timedelta(minutes=2):
        for symbol in ("BA", "AAPL"):
            for _ in range(rng.randint(2, 4)):
                in_spike = symbol == "BA" and spike_start <= minute < spike_start + timedelta(minutes=12)
                polarity = "negative" if in_spike or rng.random() < 0.2 else rng.choice(["neutral", "positive"])
                posts.append(scored(index, symbol, minute + timedelta(seconds=rng.randint(0, 59)), polarity))
                index += 1
            if symbol == "BA" and spike_start <= minute < spike_start + timedelta(minutes=12):
                for _ in range(6):  # the burst: many more negative posts per minute
                    posts.append(scored(index, symbol, minute + timedelta(seconds=rng.randint(0, 59)), "negative"))
                    index += 1
        minute += timedelta(minutes=1)
    return posts


def job_settings(clickhouse_port: int, tmp_path: Path, smtp_port: int, webhook_url: str, database: str) -> Settings:
    return load_settings(
        store="clickhouse",
        clickhouse_port=clickhouse_port,
        clickhouse_database=database,
        data_dir=tmp_path / "data",
        webhook_url=webhook_url,
        webhook_secret=SECRET,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_security="none",
        email_to=["desk@example.com"],
        alert_lateness_minutes=1,
    )


def test_spike_fires_once_notifies_both_channels_and_restart_sends_nothing_twice(
    clickhouse_port: int, tmp_path: Path, receiver: WebhookReceiver, smtp_server: tuple[int, list]
) -> None:
    smtp_port, mails = smtp_server
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    spike_start = now - timedelta(minutes=40)
    settings = job_settings(clickhouse_port, tmp_path, smtp_port, receiver.url, unique("alerts"))
    store = ServerStore(settings)
    store.migrate()
    posts = stream(now, spike_start)
    store.insert_posts(posts)
    store.insert_posts(posts[:500])  # a replay must not look like a spike

    job = AlertJob.from_settings(settings, store)
    opened = job.run_once()

    assert [(a.symbol, a.kind) for a in opened] == [("BA", "negative-spike")]
    fired_at = opened[0].fired_at
    assert spike_start <= fired_at <= spike_start + timedelta(minutes=5)
    assert opened[0].examples and all("$BA" in e.text for e in opened[0].examples)

    rows = store.query(f"SELECT symbol, kind, status, window_negative FROM {store.database}.alerts").rows
    assert [(r[0], r[1], r[2]) for r in rows] == [("BA", "negative-spike", "firing")]
    assert len(receiver.bodies) == 1 and receiver.bad_signatures == 0
    assert receiver.bodies[0]["alerts"][0]["symbol"] == "BA"
    assert len(mails) == 1 and b"BA" in mails[0].content

    deliveries = store.query(
        f"SELECT channel, outcome FROM {store.database}.alert_deliveries ORDER BY channel"
    ).rows
    assert deliveries == [("email", "sent"), ("webhook", "sent")]
    # Each delivery names the alerts row of the notification it carried: the two tables join.
    joined = store.query(
        f"SELECT a.symbol, a.status, d.channel FROM {store.database}.alert_deliveries AS d "
        f"ANY INNER JOIN {store.database}.alerts AS a USING alert_id ORDER BY d.channel"
    ).rows
    assert joined == [("BA", "firing", "email"), ("BA", "firing", "webhook")]

    # A restarted service (fresh process state) re-reads its state from ClickHouse: nothing new.
    restarted = AlertJob.from_settings(settings, store)
    assert restarted.run_once() == []
    assert len(receiver.bodies) == 1 and len(mails) == 1
    assert store.query(f"SELECT count() FROM {store.database}.alerts").rows[0][0] == 1
    store.close()


def test_dead_endpoints_are_recorded_as_failed_and_do_not_block_detection(clickhouse_port: int, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    settings = load_settings(
        store="clickhouse",
        clickhouse_port=clickhouse_port,
        clickhouse_database=unique("alerts"),
        data_dir=tmp_path / "data",
        webhook_url="http://127.0.0.1:9/nothing-listens-here",
        webhook_secret=SECRET,
        webhook_timeout_s=0.5,
    )
    store = ServerStore(settings)
    store.migrate()
    store.insert_posts(stream(now, now - timedelta(minutes=40)))
    job = AlertJob.from_settings(settings, store)
    opened = job.run_once()
    assert [a.symbol for a in opened] == ["BA"]
    outcomes = store.query(f"SELECT channel, outcome, attempts FROM {store.database}.alert_deliveries").rows
    assert len(outcomes) == 1 and outcomes[0][:2] == ("webhook", "failed") and outcomes[0][2] >= 2
    store.close()


SELLOFF = ("AAPL", "JPM", "MSFT", "NVDA", "XOM")


def test_a_market_wide_selloff_is_one_grouped_message_and_a_row_per_ticker(
    clickhouse_port: int, tmp_path: Path, receiver: WebhookReceiver, smtp_server: tuple[int, list]
) -> None:
    smtp_port, mails = smtp_server
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    selloff = now - timedelta(minutes=30)
    rng = random.Random(11)
    posts, index = [], 0
    minute = now - timedelta(hours=4)
    while minute < now - timedelta(minutes=2):
        for symbol in SELLOFF:
            falling = selloff <= minute < selloff + timedelta(minutes=15)
            for _ in range(rng.randint(6, 9) if falling else rng.randint(2, 4)):
                polarity = "negative" if rng.random() < (0.8 if falling else 0.2) else rng.choice(["neutral", "positive"])
                posts.append(scored(index, symbol, minute + timedelta(seconds=rng.randint(0, 59)), polarity))
                index += 1
        minute += timedelta(minutes=1)
    settings = job_settings(clickhouse_port, tmp_path, smtp_port, receiver.url, unique("alerts"))
    store = ServerStore(settings)
    store.migrate()
    store.insert_posts(posts)

    opened = AlertJob.from_settings(settings, store).run_once()

    assert sorted(a.symbol for a in opened) == list(SELLOFF)
    bodies = receiver.bodies
    assert 1 <= len(bodies) < len(SELLOFF)  # not a message per ticker
    groups = [b["group"] for b in bodies if b["group"]]
    assert groups and groups[-1]["symbols"] == list(SELLOFF)
    assert {"name": "S&P 500", "symbols": 5} in groups[-1]["indices"]
    assert sorted(a["symbol"] for b in bodies for a in b["alerts"]) == list(SELLOFF)  # each announced once
    assert len(mails) == len(bodies) and any(b"Market-wide: 5 tickers" in m.content for m in mails)
    rows = store.query(
        f"SELECT symbol, count() FROM {store.database}.alerts WHERE status = 'firing' GROUP BY symbol ORDER BY symbol"
    ).rows
    assert rows == [(s, 1) for s in SELLOFF]
    store.close()
