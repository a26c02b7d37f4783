"""Alert episodes: firing -> resolved, one notification per episode, cooldown, grouping.

The detector reports every evaluation whose evidence passes (every few seconds while a spike
lasts, on the minutes so far, and once more when each minute is complete); this module turns
that stream into episodes. Per (symbol, kind) there is at most one open episode:

* the first alert opens it and is notified; later alerts of the same episode only update it;
* it resolves after `resolve_after_minutes` without an alert and without its share still
  elevated: a negative spike's episode is held open while the ticker's share over the last
  `hold_window_minutes` stays clearly above the baseline it opened on (`still_elevated`), for
  at most `hold_max_minutes` after its last alert. A long sell-off outlasts the detector's
  alerts (its baseline catches up within hours), and without the hold a second swing of the
  same sell-off hours later would open a second episode and a second message;
* an alert within `cooldown_minutes` of the resolution reopens the same episode silently, so a
  spike that pauses for a few minutes is still one episode and one message;
* episodes that open within `group_wait_s` of each other go out in one notification;
* market-wide events: once negative spikes on `market_min_symbols` tickers opened within
  `market_window_minutes`, they go out as one grouped notification naming them all (with the
  ones notified just before), and tickers that join while it lasts are batched into updates
  instead of a message per ticker: the first `market_update_minutes` after the message, each
  later one twice as long after the one before, up to `market_update_max_minutes` (a sell-off
  is news in its first minutes; the tenth ticker joining is not). Every ticker keeps its own
  episode (and its own row in `alerts`, written with the message that names it).

`advance(state, at, alerts, settings)` applies the alerts of a complete minute ending at `at`
(`commit=True`: a minute applied once, never twice, which makes a re-run after a restart send
nothing again), or of an evaluation of the minutes so far at `at` (`commit=False`). Time moves
with the largest `at` seen (`state.clock`).

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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from moodwire.config import Settings

from alerting.alert import NEGATIVE_SPIKE, Alert, iso, parse_iso

STATE_VERSION = 2
Status = Literal["firing", "resolved"]
_SEVERITY_RANK = {"warning": 0, "critical": 1}


@dataclass(frozen=True)
class LifecycleSettings:
    resolve_after_minutes: int = 15
    cooldown_minutes: int = 60
    # a negative spike's episode stays open while the share of its last `hold_window_minutes`
    # still passes the detector's size gates against the baseline it opened on (the spike is
    # still as large as one it would report), with `hold_min_negatives` negative stories, up
    # to `hold_max_minutes` after its last alert (0: off). Looser gates (1.3 times and 5 points
    # above) held episodes open through a ticker's time-of-day swing in its share and hid a
    # second, unrelated spike: recall 0.982 -> 0.978 on the tuning families
    hold_window_minutes: int = 30
    hold_min_negatives: int = 3
    hold_max_minutes: int = 480
    notify_resolved: bool = False
    channels: tuple[str, ...] = ("webhook", "email")
    # a notification no channel could deliver for this long is dropped (and counted)
    outbox_ttl_minutes: int = 120
    # an opened episode waits this long for others to share its message
    group_wait_s: float = 0.0
    market_min_symbols: int = 4
    market_window_minutes: int = 15
    market_update_minutes: int = 2
    # ... doubling after each update up to this: joiners' rows in `alerts` wait for their message
    market_update_max_minutes: int = 8

    @classmethod
    def from_settings(cls, settings: Settings, channels: tuple[str, ...], notify_resolved: bool) -> LifecycleSettings:
        return cls(
            channels=channels,
            notify_resolved=notify_resolved,
            group_wait_s=settings.alert_group_wait_s,
            market_min_symbols=settings.alert_market_min_symbols,
        )


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
    last_elevated: datetime | None = None  # the last complete minute its share was still elevated

    @property
    def active_until(self) -> datetime:
        """The last moment the episode had an alert or, held, a still elevated share."""
        return max(self.last_seen, self.last_elevated) if self.last_elevated else self.last_seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "symbol": self.symbol,
            "kind": self.kind,
            "status": self.status,
            "opened_at": iso(self.opened_at),
            "last_seen": iso(self.last_seen),
            "resolved_at": iso(self.resolved_at) if self.resolved_at else None,
            "peak_severity": self.peak_severity,
            "peak_statistic": self.peak_statistic,
            "alerts_seen": self.alerts_seen,
            "first_alert": self.first_alert.to_dict(),
            "last_elevated": iso(self.last_elevated) if self.last_elevated else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        return cls(
            episode_id=data["episode_id"],
            symbol=data["symbol"],
            kind=data["kind"],
            status=data["status"],
            opened_at=parse_iso(data["opened_at"]),
            last_seen=parse_iso(data["last_seen"]),
            resolved_at=parse_iso(data["resolved_at"]) if data["resolved_at"] else None,
            peak_severity=data["peak_severity"],
            peak_statistic=float(data["peak_statistic"]),
            alerts_seen=int(data["alerts_seen"]),
            first_alert=Alert.from_dict(data["first_alert"]),
            last_elevated=parse_iso(data["last_elevated"]) if data.get("last_elevated") else None,
        )


@dataclass(frozen=True)
class MarketGroup:
    """A market-wide event: negative spikes on many tickers at once. `symbols` are all of its
    tickers so far; the notification's alerts are the ones it announces now."""

    group_id: str
    opened_at: datetime
    symbols: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "opened_at": iso(self.opened_at), "symbols": list(self.symbols)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarketGroup:
        return cls(data["group_id"], parse_iso(data["opened_at"]), tuple(data["symbols"]))


@dataclass(frozen=True)
class Notification:
    """One message: the alerts that opened episodes together (or the episodes that resolved
    together), with the market-wide event they belong to, if any."""

    notification_id: str
    status: Status
    created_at: datetime
    alerts: tuple[Alert, ...]
    group: MarketGroup | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "status": self.status,
            "created_at": iso(self.created_at),
            "alerts": [a.to_dict() for a in self.alerts],
            "group": self.group.to_dict() if self.group else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(
            notification_id=data["notification_id"],
            status=data["status"],
            created_at=parse_iso(data["created_at"]),
            alerts=tuple(Alert.from_dict(a) for a in data["alerts"]),
            group=MarketGroup.from_dict(data["group"]) if data.get("group") else None,
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
class Held:
    """An alert that opened an episode and waits for its notification."""

    alert: Alert
    since: datetime


@dataclass
class MarketEvent:
    group: MarketGroup
    last_joined: datetime
    last_notified: datetime
    updates: int = 0  # updates sent since the grouped message

    def next_update(self, settings: LifecycleSettings) -> datetime:
        """When joiners may go out: each interval doubles, up to `market_update_max_minutes`."""
        minutes = min(settings.market_update_minutes * 2**self.updates, settings.market_update_max_minutes)
        return self.last_notified + timedelta(minutes=minutes)


@dataclass
class AlertState:
    last_minute: datetime | None = None  # the end of the last complete minute applied
    episodes: dict[str, Episode] = field(default_factory=dict)
    outbox: list[Outgoing] = field(default_factory=list)
    expired: int = 0
    clock: datetime | None = None  # the largest `at` seen
    held: list[Held] = field(default_factory=list)
    market: MarketEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        market = self.market
        return {
            "version": STATE_VERSION,
            "last_minute": iso(self.last_minute) if self.last_minute else None,
            "episodes": {key: ep.to_dict() for key, ep in sorted(self.episodes.items())},
            "outbox": [
                {"notification": o.notification.to_dict(), "delivered": list(o.delivered)}
                for o in self.outbox
            ],
            "expired": self.expired,
            "clock": iso(self.clock) if self.clock else None,
            "held": [{"alert": h.alert.to_dict(), "since": iso(h.since)} for h in self.held],
            "market": None
            if market is None
            else {
                "group": market.group.to_dict(),
                "last_joined": iso(market.last_joined),
                "last_notified": iso(market.last_notified),
                "updates": market.updates,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        if data.get("version") not in (1, STATE_VERSION):  # 1: before grouping; read as no holds
            raise ValueError(f"unknown alert state version {data.get('version')!r}")
        market = data.get("market")
        return cls(
            last_minute=parse_iso(data["last_minute"]) if data["last_minute"] else None,
            episodes={k: Episode.from_dict(v) for k, v in data["episodes"].items()},
            outbox=[
                Outgoing(Notification.from_dict(o["notification"]), list(o["delivered"]))
                for o in data["outbox"]
            ],
            expired=int(data.get("expired", 0)),
            clock=parse_iso(data["clock"]) if data.get("clock") else None,
            held=[Held(Alert.from_dict(h["alert"]), parse_iso(h["since"])) for h in data.get("held", [])],
            market=None
            if not market
            else MarketEvent(
                MarketGroup.from_dict(market["group"]),
                parse_iso(market["last_joined"]),
                parse_iso(market["last_notified"]),
                int(market.get("updates", 0)),  # saved before updates were spaced out
            ),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        return cls.from_dict(json.loads(text))


class SizeGates(Protocol):
    """The detector's gates on a spike's size (alerting.detector_settings.SymbolSettings)."""

    @property
    def min_ratio(self) -> float: ...

    @property
    def min_share_increase(self) -> float: ...


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


def still_elevated(
    episode: Episode, at: datetime, stories: int, negative: int, gates: SizeGates, settings: LifecycleSettings
) -> bool:
    """Whether a firing negative-spike episode is held open at `at`: its ticker's last
    `hold_window_minutes` held `stories` stories, `negative` of them negative, a share that
    still passes the detector's size `gates` against the baseline the episode opened on, and
    its last alert is recent enough."""
    if settings.hold_max_minutes <= 0 or not _holdable(episode):
        return False
    if at - episode.last_seen > timedelta(minutes=settings.hold_max_minutes):
        return False
    if stories <= 0 or negative < settings.hold_min_negatives:
        return False
    opened_on = episode.first_alert.baseline_share
    share = negative / stories
    return share >= opened_on * gates.min_ratio and share >= opened_on + gates.min_share_increase


def held_open(state: AlertState) -> list[Episode]:
    """The episodes a share can hold open: the firing negative spikes."""
    return [e for e in state.episodes.values() if _holdable(e)]


def _holdable(episode: Episode) -> bool:
    return episode.status == "firing" and episode.kind == NEGATIVE_SPIKE


def market_wide(state: AlertState, at: datetime, settings: LifecycleSettings) -> bool:
    """Whether a market-wide event is open at `at`: the one the grouped message announces,
    until `market_window_minutes` pass without a ticker joining it."""
    market = state.market
    return market is not None and at - market.last_joined <= timedelta(minutes=settings.market_window_minutes)


def advance(
    state: AlertState,
    at: datetime,
    alerts: Sequence[Alert],
    settings: LifecycleSettings,
    *,
    commit: bool = True,
    now: datetime | None = None,
    elevated: Sequence[str] = (),
) -> list[Notification]:
    """Apply the alerts of the minute ending at `at` (or, with commit=False, of an evaluation of
    the minutes so far at `at`); return (and queue) the notifications that are due, made `now`
    (when this runs; `at` by default: a job catching up on past minutes still times episodes
    by the minutes they were in). `elevated`: the keys of the episodes whose share was still
    elevated in that minute (`still_elevated`), held open for another `resolve_after_minutes`.

    A complete minute at or before `state.last_minute` was already applied and is ignored,
    which is what makes a re-run after a restart send nothing twice.
    """
    if commit and state.last_minute is not None and at <= state.last_minute:
        return []
    clock = max(state.clock, at) if state.clock is not None else at
    state.clock = clock
    cooldown = timedelta(minutes=settings.cooldown_minutes)
    quiet = timedelta(minutes=settings.resolve_after_minutes)
    for key in elevated:
        held = state.episodes.get(key)
        if held is not None and held.status == "firing":
            held.last_elevated = max(held.last_elevated, at) if held.last_elevated else at
    # resolve first, at the moment each episode had been quiet long enough: the job may skip
    # minutes (a pause, a replay that only visits minutes with alerts) and stays correct
    resolved: dict[str, Episode] = {}
    for key, stale in sorted(state.episodes.items()):
        if stale.status == "firing" and clock - stale.active_until >= quiet:
            stale.status = "resolved"
            stale.resolved_at = stale.active_until + quiet
            resolved[key] = stale
    # an episode past its cooldown can no longer be reopened: forget it
    for key in [
        k
        for k, e in state.episodes.items()
        if e.status == "resolved" and e.resolved_at is not None and clock - e.resolved_at >= cooldown
    ]:
        del state.episodes[key]

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
            opened_at=clock,
            last_seen=at,
            resolved_at=None,
            peak_severity=alert.severity,
            peak_statistic=alert.statistic,
            alerts_seen=1,
            first_alert=alert,
        )
        state.held.append(Held(alert, clock))

    made = max(now, clock) if now is not None else clock
    notes = _due(state, clock, settings, made)
    if resolved and settings.notify_resolved:
        notes.append(_notification("resolved", made, [e.first_alert for e in resolved.values()]))
    state.outbox.extend(Outgoing(n) for n in notes)
    _expire(state, clock, settings)
    if commit:
        state.last_minute = at
    return notes


def _due(state: AlertState, clock: datetime, settings: LifecycleSettings, made: datetime) -> list[Notification]:
    """The held alerts whose notification is due at `clock`: a market-wide event's, or those
    that waited `group_wait_s`; their notifications are stamped `made`."""
    window = timedelta(minutes=settings.market_window_minutes)
    market = state.market
    if market is not None and not market_wide(state, clock, settings):
        state.market = market = None
    negative = [h for h in state.held if h.alert.kind == NEGATIVE_SPIKE]
    notes: list[Notification] = []
    if negative:
        recent = sorted(
            {e.symbol for e in state.episodes.values() if e.kind == NEGATIVE_SPIKE and clock - e.opened_at <= window}
        )
        if market is None and len(recent) >= settings.market_min_symbols:
            group = MarketGroup(f"market-{clock.strftime('%Y%m%dT%H%M%SZ')}", clock, tuple(recent))
            state.market = MarketEvent(group, clock, clock)
            notes.append(_notification("firing", made, [h.alert for h in negative], group))
            state.held = [h for h in state.held if h.alert.kind != NEGATIVE_SPIKE]
        elif market is not None:
            market.last_joined = max(market.last_joined, max(h.since for h in negative))
            if clock >= market.next_update(settings):
                joined = tuple(sorted({*market.group.symbols, *(h.alert.symbol for h in negative)}))
                market.group = MarketGroup(market.group.group_id, market.group.opened_at, joined)
                market.last_notified = clock
                market.updates += 1
                notes.append(_notification("firing", made, [h.alert for h in negative], market.group))
                state.held = [h for h in state.held if h.alert.kind != NEGATIVE_SPIKE]
    # the rest go out together once the first of them has waited group_wait_s
    wait = timedelta(seconds=settings.group_wait_s)
    waiting = _waiting_for_group(state)
    if waiting and clock - min(h.since for h in waiting) >= wait:
        notes.append(_notification("firing", made, [h.alert for h in waiting]))
        state.held = [h for h in state.held if h not in waiting]
    return notes


def release_held(state: AlertState, at: datetime, settings: LifecycleSettings) -> list[Notification]:
    """Queue every held notification now (a last run: `moodwire alert --once`)."""
    clock = max(state.clock, at) if state.clock is not None else at
    notes = _due(state, clock, replace(settings, group_wait_s=0.0, market_update_minutes=0), max(at, clock))
    state.outbox.extend(Outgoing(n) for n in notes)
    return notes


def next_due(state: AlertState, settings: LifecycleSettings) -> datetime | None:
    """When the next held notification falls due if nothing else happens (None: nothing held)."""
    if not state.held:
        return None
    waiting = _waiting_for_group(state)
    times = [min(h.since for h in waiting) + timedelta(seconds=settings.group_wait_s)] if waiting else []
    if state.market is not None and len(waiting) < len(state.held):
        times.append(state.market.next_update(settings))
    return min(times)


def _waiting_for_group(state: AlertState) -> list[Held]:
    """The held alerts that go out once the first of them waited group_wait_s: all of them,
    except a market-wide event's negative spikes, which wait for the event's next update."""
    in_market = state.market is not None
    return [h for h in state.held if not (in_market and h.alert.kind == NEGATIVE_SPIKE)]


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
    episode.last_seen = max(episode.last_seen, at)
    episode.alerts_seen += 1
    episode.peak_statistic = max(episode.peak_statistic, alert.statistic)
    if _SEVERITY_RANK[alert.severity] > _SEVERITY_RANK[episode.peak_severity]:
        episode.peak_severity = alert.severity


def _notification(status: Status, at: datetime, alerts: list[Alert], group: MarketGroup | None = None) -> Notification:
    ids = ",".join(sorted(a.episode_id for a in alerts))
    digest = hashlib.sha256(f"{status}|{group.group_id if group else ''}|{ids}".encode()).hexdigest()[:12]
    return Notification(
        notification_id=f"{status}-{at.strftime('%Y%m%dT%H%MZ')}-{digest}",
        status=status,
        created_at=at,
        alerts=tuple(sorted(alerts, key=lambda a: (a.symbol, a.kind))),
        group=group,
    )


def _expire(state: AlertState, at: datetime, settings: LifecycleSettings) -> None:
    ttl = timedelta(minutes=settings.outbox_ttl_minutes)
    keep = [o for o in state.outbox if at - o.notification.created_at < ttl]
    state.expired += len(state.outbox) - len(keep)
    state.outbox = keep


