"""Slack refuses a message that breaks a Block Kit limit with a 400, which is final: the same
payload fails on every retry and the alert is lost. A market-wide sell-off names many tickers at
once; it must still be delivered. The receiver here (a real HTTP server) answers as Slack does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from alerting import webhook
from alerting.detector import NEGATIVE_SPIKE, Alert, ExamplePost
from alerting.lifecycle import Notification

T0 = datetime(2026, 11, 2, 15, 45, tzinfo=UTC)

# Slack's documented limits, and the practical cap on a message's block text (beyond it Slack
# answers msg_blocks_too_long, at ~13,000 characters).
HEADER_MAX = 150
SECTION_MAX = 3_000
BLOCKS_MAX = 50
BLOCK_TEXT_MAX = 12_000


def slack_problems(body: dict[str, Any]) -> list[str]:
    problems = []
    blocks = body.get("blocks", [])
    if len(blocks) > BLOCKS_MAX:
        problems.append(f"{len(blocks)} blocks")
    total = 0
    for block in blocks:
        text = block.get("text", {}).get("text", "")
        total += len(text)
        if block["type"] == "header" and len(text) > HEADER_MAX:
            problems.append(f"header of {len(text)} characters")
        if block["type"] == "section" and len(text) > SECTION_MAX:
            problems.append(f"section of {len(text)} characters")
    if total > BLOCK_TEXT_MAX:
        problems.append(f"{total} characters of block text")
    return problems


@pytest.fixture
def slack() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    accepted: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            problems = slack_problems(body)
            answer = b"invalid_blocks" if problems else b"ok"
            if not problems:
                accepted.append(body)
            self.send_response(400 if problems else 200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX", accepted
    server.shutdown()
    server.server_close()


def sell_off(tickers: int) -> Notification:
    """Every ticker negative at once, with long example posts full of characters Slack escapes."""
    alerts = tuple(
        Alert(
            symbol=f"T{i:03d}X",
            kind=NEGATIVE_SPIKE,
            fired_at=T0,
            severity="critical" if i % 3 == 0 else "warning",  # type: ignore[arg-type]
            statistic=5.0 + i / 10,
            p_value=1e-5,
            window_minutes=5,
            window_posts=80,
            window_negative=60,
            window_share=0.75,
            baseline_share=0.2,
            expected_total=20.0,
            episode_id=f"T{i:03d}X:negative-spike:20261102T1540Z",
            examples=tuple(
                ExamplePost(f"rss:{i}:{j}", "Futures <limit down> & circuit breakers " * 8, -0.95, T0 - timedelta(minutes=1))
                for j in range(3)
            ),
        )
        for i in range(tickers)
    )
    return Notification("firing-20261102T1545Z-selloff", "firing", T0, alerts)


@pytest.mark.parametrize("tickers", [1, 12, 80, 500])
def test_a_sell_off_naming_many_tickers_is_delivered_to_slack(slack: tuple[str, list[dict[str, Any]]], tickers: int) -> None:
    url, accepted = slack
    note = sell_off(tickers)
    outcome = webhook.deliver(note, webhook.WebhookSettings(url=url, format="slack", jitter=False, backoff_s=0.01))
    assert outcome.delivered and outcome.attempts == 1, outcome
    (body,) = accepted
    header = body["blocks"][0]["text"]["text"]
    assert body["text"] == header and header.startswith("negative-spike: T")
    if len(webhook.headline(note)) > HEADER_MAX:
        assert header.endswith("more")
    # Every ticker is accounted for: the most severe in detail, the rest named in one line as
    # far as Slack's limits allow, and the count of those left out.
    text = "\n".join(b["text"]["text"] for b in body["blocks"])
    named = sum(a.symbol in text for a in note.alerts)
    if tickers > webhook.SLACK_DETAILED_ALERTS:
        summary = body["blocks"][-1]["text"]["text"]
        assert summary.startswith(f"*{tickers - webhook.SLACK_DETAILED_ALERTS} more:*")
        left_out = int(summary.rsplit(" and ", 1)[1].split()[0]) if summary.endswith(" more") else 0
        assert named + left_out == tickers
        detailed = [b for b in body["blocks"][1:] if "negative in" in b["text"]["text"]]
        assert len(detailed) == webhook.SLACK_DETAILED_ALERTS
        critical = sum(a.severity == "critical" for a in note.alerts)
        # the critical ones first
        assert sum("(critical)" in b["text"]["text"] for b in detailed) == min(critical, len(detailed))
    if tickers <= 80:
        assert named == tickers


def test_clipping_never_cuts_an_escape_in_half() -> None:
    clipped = webhook._clip("a" * 8 + "&amp;" + "b" * 10, 11)
    assert clipped == "a" * 8 + "\u2026"
