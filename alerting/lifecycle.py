"""Alert episodes: firing -> resolved, one notification per episode, cooldown, grouping.

The detector reports every minute whose evidence passes; this module turns that stream into
episodes. Per (symbol, kind) there is at most one open episode:

* the first alert opens it and is notified; later alerts of the same episode only update it;
* it resolves after `resolve_after_minutes` without an alert;
* an alert within `cooldown_minutes` of the resolution reopens the same episode silently, so a
  spike that pauses for a few minutes is still one episode and one message;
* every episode opened in the same minute goes out in one notification.

The state is a plain object (`AlertState.to_json` / `from_json`) that an `AlertStateStore`
persists. Notifications wait in `state.outbox` until every channel marked them delivered, so the
job can save the state before sending and a restart neither re-sends nor forgets:

    advance(state, at, alerts, settings); store.save(state)
    for note in pending(state, "webhook"):
        record(state, webhook.deliver(note, webhook_settings), settings)
    store.save(state)

Delivery is at-least-once: a crash between a send and the save after it sends that one again,
with the same `notification_id`, which receivers can use to drop the repeat.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from alerting.alert import Alert

STATE_VERSION = 1
Status = Literal["firing", "resolved"]
_SEVERITY_RANK = {"warning": 0, "critical": 1}


@dataclass(frozen=True)
class LifecycleSettings:
    resolve_after_minutes: int = 15
    cooldown_minutes: int = 60
    notify_resolved: bool = False
    channels: tuple[str, ...] = ("webhook", "email")
    # a notification no channel could deliver for this long is dropped (and counted)
    outbox_ttl_minutes: int = 120


@dataclass
class Episode:
    episode_id: str
    symbol: str
    kind: str
    status: Status
    opened_at: datetime
    last_seen: datetime
    resolved_at: datetime | None
    peak_severity: str
    peak_statistic: float
    alerts_seen: int
    first_alert: Alert

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "symbol": self.symbol,
            "kind": self.kind,
            "status": self.status,
            "opened_at": _iso(self.opened_at),
            "last_seen": _iso(self.last_seen),
            "resolved_at": _iso(self.resolved_at) if self.resolved_at else None,
            "peak_severity": self.peak_severity,
            "peak_statistic": self.peak_statistic,
            "alerts_seen": self.alerts_seen,
            "first_alert": self.first_alert.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        return cls(
            episode_id=data["episode_id"],
            symbol=data["symbol"],
            kind=data["kind"],
            status=data["status"],
            opened_at=_parse(data["opened_at"]),
            last_seen=_parse(data["last_seen"]),
            resolved_at=_parse(data["resolved_at"]) if data["resolved_at"] else None,
            peak_severity=data["peak_severity"],
            peak_statistic=float(data["peak_statistic"]),
            alerts_seen=int(data["alerts_seen"]),
            first_alert=Alert.from_dict(data["first_alert"]),
        )


@dataclass(frozen=True)
class Notification:
    """One message: every alert that opened (or every episode that resolved) in one minute."""

    notification_id: str
    status: Status
    created_at: datetime
    alerts: tuple[Alert, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "alerts": [a.to_dict() for a in self.alerts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(
            notification_id=data["notification_id"],
            status=data["status"],
            created_at=_parse(data["created_at"]),
            alerts=tuple(Alert.from_dict(a) for a in data["alerts"]),
        )


@dataclass(frozen=True)
class DeliveryOutcome:
    """What happened to one notification on one channel; never holds a secret or a full URL."""

    channel: str
    notification_id: str
    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None
    elapsed_s: float
    target: str  # scheme://host[:port] or the SMTP host: enough to tell targets apart

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "notification_id": self.notification_id,
            "delivered": self.delivered,
            "attempts": self.attempts,
            "status_code": self.status_code,
            "error": self.error,
            "elapsed_s": round(self.elapsed_s, 3),
            "target": self.target,
        }


@dataclass
class Outgoing:
    notification: Notification
    delivered: list[str] = field(default_factory=list)


@dataclass
class AlertState:
    last_minute: datetime | None = None
    episodes: dict[str, Episode] = field(default_factory=dict)
    outbox: list[Outgoing] = field(default_factory=list)
    expired: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "last_minute": _iso(self.last_minute) if self.last_minute else None,
            "episodes": {key: ep.to_dict() for key, ep in sorted(self.episodes.items())},
            "outbox": [
                {"notification": o.notification.to_dict(), "delivered": list(o.delivered)}
                for o in self.outbox
            ],
            "expired": self.expired,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown alert state version {data.get('version')!r}")
        return cls(
            last_minute=_parse(data["last_minute"]) if data["last_minute"] else None,
            episodes={k: Episode.from_dict(v) for k, v in data["episodes"].items()},
            outbox=[
                Outgoing(Notification.from_dict(o["notification"]), list(o["delivered"]))
                for o in data["outbox"]
            ],
            expired=int(data.get("expired", 0)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        return cls.from_dict(json.loads(text))


class AlertStateStore(Protocol):
    """Where the alert state lives between runs (ClickHouse in production)."""

    def load(self) -> AlertState:
        """The last saved state, or an empty `AlertState()` when nothing was saved yet."""
        ...

    def save(self, state: AlertState) -> None:
        """Persist `state` durably before returning."""
        ...


class InMemoryAlertStateStore:
    """Keeps the JSON text, so tests exercise the same round trip a real store does."""

    def __init__(self) -> None:
        self.saved: str | None = None
        self.saves = 0

    def load(self) -> AlertState:
        return AlertState.from_json(self.saved) if self.saved else AlertState()

    def save(self, state: AlertState) -> None:
        self.saved = state.to_json()
        self.saves += 1


def episode_key(symbol: str, kind: str) -> str:
    return f"{symbol}|{kind}"


def advance(
    state: AlertState, at: datetime, alerts: Sequence[Alert], settings: LifecycleSettings
) -> list[Notification]:
    """Apply the alerts of the minute ending at `at`; return (and queue) new notifications.

    A minute at or before `state.last_minute` was already applied and is ignored, which is
    what makes a re-run after a restart send nothing twice.
    """
    if state.last_minute is not None and at <= state.last_minute:
        return []
    cooldown = timedelta(minutes=settings.cooldown_minutes)
    quiet = timedelta(minutes=settings.resolve_after_minutes)
    # resolve first, at the moment each episode had been quiet long enough: the job may skip
    # minutes (a pause, a replay that only visits minutes with alerts) and stays correct
    resolved: dict[str, Episode] = {}
    for key, stale in sorted(state.episodes.items()):
        if stale.status == "firing" and at - stale.last_seen >= quiet:
            stale.status = "resolved"
            stale.resolved_at = stale.last_seen + quiet
            resolved[key] = stale
    # an episode past its cooldown can no longer be reopened: forget it
    for key in [
        k
        for k, e in state.episodes.items()
        if e.status == "resolved" and e.resolved_at is not None and at - e.resolved_at >= cooldown
    ]:
        del state.episodes[key]

    opened: list[Alert] = []
    for alert in sorted(alerts, key=lambda a: (a.symbol, a.kind)):
        key = episode_key(alert.symbol, alert.kind)
        episode = state.episodes.get(key)
        if episode is not None:
            # still firing, or back within the cooldown: the same episode, silently
            _absorb(episode, alert, at)
            resolved.pop(key, None)
            continue
        state.episodes[key] = Episode(
            episode_id=alert.episode_id,
            symbol=alert.symbol,
            kind=alert.kind,
            status="firing",
            opened_at=at,
            last_seen=at,
            resolved_at=None,
            peak_severity=alert.severity,
            peak_statistic=alert.statistic,
            alerts_seen=1,
            first_alert=alert,
        )
        opened.append(alert)

    notes = []
    if opened:
        notes.append(_notification("firing", at, opened))
    if resolved and settings.notify_resolved:
        notes.append(_notification("resolved", at, [e.first_alert for e in resolved.values()]))
    state.outbox.extend(Outgoing(n) for n in notes)
    _expire(state, at, settings)
    state.last_minute = at
    return notes


def pending(state: AlertState, channel: str) -> list[Notification]:
    """Queued notifications that `channel` has not delivered yet, oldest first."""
    return [o.notification for o in state.outbox if channel not in o.delivered]


def mark_delivered(
    state: AlertState, notification_id: str, channel: str, settings: LifecycleSettings
) -> None:
    """Record a delivery; a notification leaves the outbox once every channel delivered it."""
    for outgoing in state.outbox:
        ours = outgoing.notification.notification_id == notification_id
        if ours and channel not in outgoing.delivered:
            outgoing.delivered.append(channel)
    state.outbox = [o for o in state.outbox if not set(settings.channels) <= set(o.delivered)]


def record(state: AlertState, outcome: DeliveryOutcome, settings: LifecycleSettings) -> None:
    """Apply a delivery outcome: a success leaves the outbox, a failure stays for the next run."""
    if outcome.delivered:
        mark_delivered(state, outcome.notification_id, outcome.channel, settings)


def _absorb(episode: Episode, alert: Alert, at: datetime) -> None:
    episode.status = "firing"
    episode.resolved_at = None
    episode.last_seen = at
    episode.alerts_seen += 1
    episode.peak_statistic = max(episode.peak_statistic, alert.statistic)
    if _SEVERITY_RANK[alert.severity] > _SEVERITY_RANK[episode.peak_severity]:
        episode.peak_severity = alert.severity


def _notification(status: Status, at: datetime, alerts: list[Alert]) -> Notification:
    ids = ",".join(sorted(a.episode_id for a in alerts))
    digest = hashlib.sha256(f"{status}|{ids}".encode()).hexdigest()[:12]
    return Notification(
        notification_id=f"{status}-{at.strftime('%Y%m%dT%H%MZ')}-{digest}",
        status=status,
        created_at=at,
        alerts=tuple(alerts),
    )


def _expire(state: AlertState, at: datetime, settings: LifecycleSettings) -> None:
    ttl = timedelta(minutes=settings.outbox_ttl_minutes)
    keep = [o for o in state.outbox if at - o.notification.created_at < ttl]
    state.expired += len(state.outbox) - len(keep)
    state.outbox = keep


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)
