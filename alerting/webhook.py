"""Webhook delivery: a versioned JSON payload, signed, with timeouts, retries and backoff.

The payload and the signature are documented in alerting/WEBHOOK.md (keep the two in step:
a change to the payload's shape bumps SCHEMA_VERSION).

Secrets stay secret: the signing key and the URL (a Slack webhook URL is itself a credential)
never reach a log line, an exception message or a `DeliveryOutcome`; only scheme://host does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from alerting.alert import Alert, rfc3339
from alerting.lifecycle import DeliveryOutcome, MarketGroup, Notification
from alerting.symbol_groups import describe, indices_of

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Moodwire-Signature"
TIMESTAMP_HEADER = "X-Moodwire-Timestamp"
DELIVERY_HEADER = "X-Moodwire-Delivery"
SCHEMA_HEADER = "X-Moodwire-Schema-Version"
CHANNEL = "webhook"
# worth another try: the receiver is busy or broken for now, not refusing this payload
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookSettings:
    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    format: Literal["moodwire", "slack"] = "moodwire"
    timeout_s: float = 5.0
    max_attempts: int = 4
    backoff_s: float = 1.0  # before the 2nd attempt; doubles after each failure
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0  # a receiver asking for a longer pause gets none: we stop
    deadline_s: float = 90.0  # all attempts and pauses together
    jitter: bool = True  # spread retries of many senders; off in tests

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(
                "webhook url must be http(s)"
            )  # no URL in the message: it may be secret
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    @property
    def target(self) -> str:
        return redact(self.url)


def redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


# --------------------------------------------------------------------------------------------
# Payloads


def payload(notification: Notification) -> dict[str, Any]:
    """The moodwire JSON payload, schema version 1 (see WEBHOOK.md)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "notification_id": notification.notification_id,
        "status": notification.status,
        "created_at": rfc3339(notification.created_at),
        "group": group_payload(notification.group) if notification.group else None,
        "alerts": [_alert(a) for a in notification.alerts],
    }


def group_payload(group: MarketGroup) -> dict[str, Any]:
    """A market-wide event: every ticker in it so far, and the indices that hold most of them."""
    return {
        "kind": "market-wide",
        "group_id": group.group_id,
        "opened_at": rfc3339(group.opened_at),
        "symbols": list(group.symbols),
        "indices": [{"name": share.name, "symbols": share.members} for share in indices_of(group.symbols)],
    }


def _alert(alert: Alert) -> dict[str, Any]:
    return {
        "episode_id": alert.episode_id,
        "symbol": alert.symbol,
        "kind": alert.kind,
        "severity": alert.severity,
        "fired_at": rfc3339(alert.fired_at),
        "statistic": _number(alert.statistic),
        "p_value": _number(alert.p_value),
        "window": {
            "start": rfc3339(alert.window_start),
            "end": rfc3339(alert.fired_at),
            "minutes": alert.window_minutes,
            "total": alert.window_posts,
            "negative": alert.window_negative,
            "negative_share": _number(alert.window_share),
        },
        "baseline": {
            "negative_share": _number(alert.baseline_share),
            "expected_total": _number(alert.expected_total),
        },
        "share_ratio": _number(alert.share_ratio),
        "examples": [
            {
                "id": e.id,
                "text": e.text,
                "polarity_score": _number(e.polarity_score),
                "published_at": rfc3339(e.published_at),
            }
            for e in alert.examples
        ],
    }


# Slack's limits (Block Kit): a header's text <= 150 characters, a section's text <= 3,000, at
# most 50 blocks, and in practice ~13,000 characters of block text per message (beyond that
# Slack answers msg_blocks_too_long). A refused payload is refused on every retry, so a
# market-wide sell-off naming many tickers must still fit.
SLACK_HEADER_CHARS = 150
SLACK_SECTION_CHARS = 3_000
SLACK_DETAILED_ALERTS = 10  # one section each; the rest are named in one summary section
SLACK_ALERT_SECTION_CHARS = 1_000
SLACK_SUMMARY_CHARS = 2_000


def slack_payload(notification: Notification) -> dict[str, Any]:
    """Slack incoming-webhook format: a fallback `text`, a header, one section per alert (the
    most severe first, up to SLACK_DETAILED_ALERTS) and one section naming the rest."""
    title = headline_within(notification, SLACK_HEADER_CHARS)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}}
    ]
    if notification.group is not None:
        group = notification.group
        names = [_slack_escape(s) for s in group.symbols]
        prefix = f"*Market-wide:* {_slack_escape(describe(group.symbols))} so far: "
        blocks.append(_mrkdwn_section(_names_within(prefix, names, SLACK_SUMMARY_CHARS), SLACK_SUMMARY_CHARS))
    ranked = sorted(notification.alerts, key=lambda a: (a.severity != "critical", -a.statistic, a.symbol))
    for alert in ranked[:SLACK_DETAILED_ALERTS]:
        lines = [
            f"*{_slack_escape(alert.symbol)}* {alert.kind} ({alert.severity})",
            (
                f"{alert.window_negative}/{alert.window_posts} negative in "
                f"{alert.window_minutes} min ({alert.window_share:.0%} vs "
                f"{alert.baseline_share:.0%} usual), -log10 p = {alert.statistic:.1f}"
            ),
        ]
        lines += [f"> {_slack_escape(e.text[:200])}" for e in alert.examples[:3]]
        blocks.append(_mrkdwn_section("\n".join(lines), SLACK_ALERT_SECTION_CHARS))
    rest = ranked[SLACK_DETAILED_ALERTS:]
    if rest:
        names = [_slack_escape(_label(a)) for a in rest]
        blocks.append(_mrkdwn_section(_names_within(f"*{len(rest)} more:* ", names, SLACK_SUMMARY_CHARS), SLACK_SUMMARY_CHARS))
    return {"text": title, "blocks": blocks}


def _label(alert: Alert) -> str:
    return f"{alert.symbol} ({alert.severity})" if alert.severity == "critical" else alert.symbol


def _names_within(prefix: str, names: list[str], limit: int) -> str:
    """`prefix` and as many of `names` as fit in `limit` characters, then how many were left out."""
    shown: list[str] = []
    for index, name in enumerate(names):
        left = len(names) - index - 1
        candidate = prefix + ", ".join([*shown, name]) + (f" and {left} more" if left else "")
        if len(candidate) > limit:
            break
        shown.append(name)
    left = len(names) - len(shown)
    return prefix + ", ".join(shown) + (f" and {left} more" if left else "")


def _mrkdwn_section(text: str, limit: int) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, min(limit, SLACK_SECTION_CHARS))}}


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut with an ellipsis, never inside an &amp;-style escape."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    entity = cut.rfind("&")
    if entity != -1 and ";" not in cut[entity:]:
        cut = cut[:entity]
    return cut + "\u2026"


def headline_within(notification: Notification, limit: int) -> str:
    """`headline`, naming as many symbols as fit in `limit` characters and counting the rest."""
    full = headline(notification)
    if len(full) <= limit:
        return full
    prefix = _headline_prefix(notification)
    ranked = sorted(notification.alerts, key=lambda a: (a.severity != "critical", -a.statistic, a.symbol))
    return _clip(_names_within(prefix, [_label(a) for a in ranked], limit), limit)


def headline(notification: Notification) -> str:
    """"negative-spike: ACME (critical), XYZ"; a market-wide event's says so, and how many
    tickers it holds so far: "market-wide negative-spike, 12 tickers (S&P 500: 10): AAPL, ..."."""
    return _headline_prefix(notification) + ", ".join(_label(a) for a in notification.alerts)


def _headline_prefix(notification: Notification) -> str:
    kinds = "/".join(sorted({a.kind for a in notification.alerts}))
    if notification.status == "resolved":
        return f"resolved {kinds}: "
    if notification.group is not None:
        return f"market-wide {kinds}, {describe(notification.group.symbols)}: "
    return f"{kinds}: "


def body_bytes(notification: Notification, style: Literal["moodwire", "slack"]) -> bytes:
    data = slack_payload(notification) if style == "slack" else payload(notification)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------------------------
# Signature


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (no replays)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# --------------------------------------------------------------------------------------------
# Delivery


def deliver(
    notification: Notification,
    settings: WebhookSettings,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> DeliveryOutcome:
    """POST the notification until a 2xx, a refusal, or the attempts or deadline run out."""
    body = body_bytes(notification, settings.format)
    own_client = client is None
    http = client or httpx.Client(follow_redirects=False)
    began = monotonic()
    attempts, status, error = 0, None, None
    try:
        while True:
            attempts += 1
            status, error, retry_after = _attempt(http, notification, settings, body, wall_clock)
            if status is not None and 200 <= status < 300:
                return _outcome(
                    notification, settings, True, attempts, status, None, began, monotonic
                )
            retryable = status is None or status in RETRY_STATUSES
            if not retryable or attempts >= settings.max_attempts:
                break
            backoff = min(settings.max_backoff_s, settings.backoff_s * 2 ** (attempts - 1))
            if settings.jitter:
                backoff *= random.uniform(0.5, 1.0)
            if retry_after is not None:
                if retry_after > settings.max_retry_after_s:
                    error = f"{error}; receiver asked to wait {retry_after:.0f}s, more than allowed"
                    break
                backoff = max(backoff, retry_after)
            if monotonic() - began + backoff > settings.deadline_s:
                error = f"{error}; deadline of {settings.deadline_s:.0f}s reached"
                break
            sleep(backoff)
    finally:
        if own_client:
            http.close()
    return _outcome(notification, settings, False, attempts, status, error, began, monotonic)


def _attempt(
    http: httpx.Client,
    notification: Notification,
    settings: WebhookSettings,
    body: bytes,
    wall_clock: Callable[[], float],
) -> tuple[int | None, str | None, float | None]:
    """One POST: (status or None, error text or None, Retry-After seconds or None)."""
    timestamp = str(int(wall_clock()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "moodwire-alerting",
        DELIVERY_HEADER: notification.notification_id,
        TIMESTAMP_HEADER: timestamp,
        SCHEMA_HEADER: str(SCHEMA_VERSION),
    }
    if settings.secret:
        headers[SIGNATURE_HEADER] = sign(settings.secret, timestamp, body)
    try:
        response = http.post(
            settings.url, content=body, headers=headers, timeout=settings.timeout_s
        )
    except httpx.TimeoutException as exc:
        # the exception text can carry the URL: keep only its kind
        return None, f"timeout ({type(exc).__name__})", None
    except httpx.HTTPError as exc:
        return None, f"transport error ({type(exc).__name__})", None
    if 200 <= response.status_code < 300:
        return response.status_code, None, None
    return (
        response.status_code,
        f"HTTP {response.status_code}",
        retry_after_seconds(response.headers.get("Retry-After"), wall_clock()),
    )


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _outcome(
    notification: Notification,
    settings: WebhookSettings,
    delivered: bool,
    attempts: int,
    status: int | None,
    error: str | None,
    began: float,
    monotonic: Callable[[], float],
) -> DeliveryOutcome:
    outcome = DeliveryOutcome(
        channel=CHANNEL,
        notification_id=notification.notification_id,
        delivered=delivered,
        attempts=attempts,
        status_code=status,
        error=error,
        elapsed_s=monotonic() - began,
        target=settings.target,
    )
    level = logging.INFO if delivered else logging.WARNING
    log.log(
        level,
        "webhook %s to %s: %s after %d attempt(s)%s",
        notification.notification_id,
        outcome.target,
        "delivered" if delivered else "failed",
        attempts,
        f" ({error})" if error else "",
    )
    return outcome


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None




def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
