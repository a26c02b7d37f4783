"""Alertmanager as a notification channel: moodwire's alerts POSTed to its /api/v2/alerts.

Teams that run Alertmanager get its grouping, silences, inhibition and every receiver it has
(PagerDuty, Opsgenie, Slack, e-mail, ...) for moodwire's alerts as for any Prometheus alert.

Each alert of a notification becomes one Alertmanager alert:

    labels        alertname (MoodwireNegativeSpike | MoodwireVolumeSpike), symbol, kind, severity
    annotations   summary, description, the evidence (window counts, shares, statistic, p-value,
                  episode id, the most negative posts) and, when grafana_url is set, grafana_url:
                  the symbol's dashboard over the alert's window
    startsAt      the end of the alert's window (when it could first have fired)
    endsAt        firing: startsAt + firing_ttl, a backstop only: moodwire sends each episode
                  once, so without an endsAt Alertmanager would call it resolved after its
                  resolve_timeout (5 minutes by default). Resolved: the minute the episode
                  resolved, which ends the same alert (same labels) in Alertmanager.

Alertmanager needs the resolutions, so with this channel configured the job queues a message
when an episode resolves (alerting/notifiers.needs_resolutions).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from moodwire.config import Settings

from alerting.alert import Alert, rfc3339
from alerting.symbol_groups import describe
from alerting.lifecycle import DeliveryOutcome, Notification
from alerting.webhook import RETRY_STATUSES, redact

CHANNEL = "alertmanager"
API_PATH = "/api/v2/alerts"
# The Grafana dashboard an alert links to, and its symbol variable (dashboards/grafana/dashboards).
DASHBOARD_UID = "moodwire-market-sentiment"
DASHBOARD_VARIABLE = "symbol"
# Context around the alert's window on the linked dashboard.
LINK_MARGIN = timedelta(hours=1)
EXAMPLES = 3
EXAMPLE_CHARS = 280

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertmanagerSettings:
    url: str = field(repr=False)  # base URL: http://alertmanager:9093 (userinfo is a secret)
    grafana_url: str | None = None
    timeout_s: float = 5.0
    max_attempts: int = 3
    backoff_s: float = 1.0  # before the 2nd attempt; doubles after each failure
    firing_ttl: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError("alertmanager url must be http(s)")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertmanagerSettings:
        """Needs alertmanager_url set."""
        if not settings.alertmanager_url:
            raise ValueError("alertmanager_url is not set")
        return cls(
            url=settings.alertmanager_url,
            grafana_url=settings.grafana_url,
            timeout_s=settings.alertmanager_timeout_s,
        )

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + API_PATH


# --------------------------------------------------------------------------------------------
# Payload


def alertname(kind: str) -> str:
    """`negative-spike` -> `MoodwireNegativeSpike`: Alertmanager's convention for alert names."""
    return "Moodwire" + "".join(part.capitalize() for part in kind.replace("_", "-").split("-"))


def payload(notification: Notification, settings: AlertmanagerSettings) -> list[dict[str, Any]]:
    """The body of POST /api/v2/alerts: one postable alert per alert of the notification."""
    return [_postable(alert, notification, settings) for alert in notification.alerts]


def _postable(alert: Alert, notification: Notification, settings: AlertmanagerSettings) -> dict[str, Any]:
    starts = alert.fired_at
    if notification.status == "resolved":
        ends = max(notification.created_at, starts)
    else:
        ends = starts + settings.firing_ttl
    link = grafana_link(settings.grafana_url, alert) if settings.grafana_url else None
    annotations = {
        "summary": (
            f"{alert.symbol} {alert.kind} ({alert.severity}): {alert.window_negative} of "
            f"{alert.window_posts} stories negative in {alert.window_minutes} min"
        ),
        "description": (
            f"{alert.window_share:.0%} of posts about {alert.symbol} were negative in the "
            f"{alert.window_minutes} minutes to {rfc3339(alert.fired_at)}, against "
            f"{alert.baseline_share:.0%} usually at this time of day (-log10 p = {alert.statistic:.1f})."
        ),
        "episode_id": alert.episode_id,
        "window_start": rfc3339(alert.window_start),
        "window_end": rfc3339(alert.fired_at),
        "window_posts": str(alert.window_posts),
        "window_negative": str(alert.window_negative),
        "negative_share": f"{alert.window_share:.4f}",
        "baseline_share": f"{alert.baseline_share:.4f}",
        "expected_posts": f"{alert.expected_total:.1f}",
        "statistic": f"{alert.statistic:.2f}",
        "p_value": f"{alert.p_value:.3g}",
        "examples": "\n".join(
            f"[{e.polarity_score:+.2f}] {e.text[:EXAMPLE_CHARS]} ({e.id})" for e in alert.examples[:EXAMPLES]
        ),
        "notification_id": notification.notification_id,
    }
    if notification.group is not None:
        annotations["market_group"] = notification.group.group_id
        annotations["market_symbols"] = ", ".join(notification.group.symbols)
        annotations["market_summary"] = f"market-wide: {describe(notification.group.symbols)}"
    if link:
        annotations["grafana_url"] = link
    body: dict[str, Any] = {
        "labels": {
            "alertname": alertname(alert.kind),
            "symbol": alert.symbol,
            "kind": alert.kind,
            "severity": alert.severity,
        },
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }
    if link:
        body["generatorURL"] = link
    return body


def grafana_link(base: str, alert: Alert) -> str:
    """The market-sentiment dashboard for the alert's symbol, around the alert's window."""
    start = alert.window_start - LINK_MARGIN
    end = alert.fired_at + LINK_MARGIN
    query = urlencode(
        {
            f"var-{DASHBOARD_VARIABLE}": alert.symbol,
            "from": int(start.timestamp() * 1000),
            "to": int(end.timestamp() * 1000),
        }
    )
    return f"{base.rstrip('/')}/d/{DASHBOARD_UID}/?{query}"


# --------------------------------------------------------------------------------------------
# Delivery


def deliver(
    notification: Notification,
    settings: AlertmanagerSettings,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryOutcome:
    """POST the alerts until a 2xx, a refusal (other 4xx) or the attempts run out."""
    body = json.dumps(payload(notification, settings), ensure_ascii=False).encode()
    own_client = client is None
    http = client or httpx.Client(follow_redirects=False)
    began = time.monotonic()
    attempts, status, error = 0, None, None
    try:
        while True:
            attempts += 1
            try:
                response = http.post(
                    settings.endpoint,
                    content=body,
                    headers={"Content-Type": "application/json", "User-Agent": "moodwire-alerting"},
                    timeout=settings.timeout_s,
                )
                status = response.status_code
                error = None if 200 <= status < 300 else f"HTTP {status}: {response.text[:200]}"
            except httpx.HTTPError as exc:  # the message can carry the URL: keep only its kind
                status, error = None, f"transport error ({type(exc).__name__})"
            if error is None:
                break
            if (status is not None and status not in RETRY_STATUSES) or attempts >= settings.max_attempts:
                break
            sleep(settings.backoff_s * 2 ** (attempts - 1))
    finally:
        if own_client:
            http.close()
    outcome = DeliveryOutcome(
        channel=CHANNEL,
        notification_id=notification.notification_id,
        delivered=error is None,
        attempts=attempts,
        status_code=status,
        error=error,
        elapsed_s=time.monotonic() - began,
        target=redact(settings.url),
    )
    log.log(
        logging.INFO if outcome.delivered else logging.WARNING,
        "alertmanager %s to %s: %s after %d attempt(s)%s",
        notification.notification_id,
        outcome.target,
        "delivered" if outcome.delivered else "failed",
        attempts,
        f" ({error})" if error else "",
    )
    return outcome


