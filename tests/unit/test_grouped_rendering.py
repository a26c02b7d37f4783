"""A market-wide event as every channel renders it: the webhook payload's `group` (with the
index that holds the tickers, from the symbol table), the Slack header and section, the e-mail,
and Alertmanager's annotations."""

from __future__ import annotations

from datetime import UTC, datetime

from alerting import alertmanager, email, webhook
from alerting.alert import NEGATIVE_SPIKE, Alert
from alerting.lifecycle import MarketGroup, Notification
from alerting.symbol_groups import describe, indices_of

T0 = datetime(2026, 11, 2, 14, 31, 20, tzinfo=UTC)
SELLOFF = ("AAPL", "JPM", "MSFT", "NVDA", "XOM")


def alert(symbol: str) -> Alert:
    return Alert(
        symbol=symbol, kind=NEGATIVE_SPIKE, fired_at=T0, severity="warning", statistic=6.0, p_value=1e-6,
        window_minutes=4, window_posts=30, window_negative=20, window_share=2 / 3, baseline_share=0.25,
        expected_total=10.0, episode_id=f"{symbol}:negative-spike:20261102T1428Z",
    )


def grouped(announced: tuple[str, ...] = ("NVDA", "XOM")) -> Notification:
    group = MarketGroup("market-20261102T143120Z", T0, SELLOFF)
    return Notification("firing-x", "firing", T0, tuple(alert(s) for s in announced), group)


def test_the_symbol_table_names_the_index_most_of_them_are_in() -> None:
    shares = {s.name: s.members for s in indices_of(SELLOFF)}
    assert shares["S&P 500"] == 5
    assert "NIKKEI 225" not in shares
    assert describe(SELLOFF).startswith("5 tickers (") and "S&P 500: 5" in describe(SELLOFF)
    assert describe(["AAPL", "NOT-A-TICKER", "ALSO-NOT"]) == "3 tickers"  # no index holds half


def test_the_webhook_payload_carries_the_group_and_each_ticker() -> None:
    body = webhook.payload(grouped())
    assert body["group"]["kind"] == "market-wide" and body["group"]["symbols"] == list(SELLOFF)
    assert {"name": "S&P 500", "symbols": 5} in body["group"]["indices"]
    assert [a["symbol"] for a in body["alerts"]] == ["NVDA", "XOM"]
    assert webhook.payload(Notification("n", "firing", T0, (alert("BA"),)))["group"] is None


def test_slack_and_email_say_market_wide_and_name_every_ticker() -> None:
    note = grouped()
    slack = webhook.slack_payload(note)
    assert slack["text"].startswith("market-wide negative-spike, 5 tickers (")
    section = slack["blocks"][1]["text"]["text"]
    assert section.startswith("*Market-wide:*") and all(s in section for s in SELLOFF)
    text = email.render_text(note)
    assert "Market-wide: 5 tickers" in text and "AAPL, JPM, MSFT, NVDA, XOM" in text
    assert "Market-wide:" in email.render_html(note)
    assert email.build_message(note, email.EmailSettings(host="h", sender="a@b", recipients=("c@d",)))["Subject"].startswith(
        "[moodwire] market-wide negative-spike"
    )


def test_alertmanager_gets_the_group_as_annotations_not_labels() -> None:
    posted = alertmanager.payload(grouped(), alertmanager.AlertmanagerSettings(url="http://am:9093"))
    assert [p["labels"]["symbol"] for p in posted] == ["NVDA", "XOM"]
    assert all("market_group" not in p["labels"] for p in posted)
    assert posted[0]["annotations"]["market_symbols"] == ", ".join(SELLOFF)
    assert posted[0]["annotations"]["market_summary"].startswith("market-wide: 5 tickers")
