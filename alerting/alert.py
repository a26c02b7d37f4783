"""What the detector reports: one `Alert` per symbol and minute whose evidence passes.

Plain records with a JSON form (the lifecycle state keeps them in ClickHouse); nothing here
decides anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

NEGATIVE_SPIKE: Final = "negative-spike"
VOLUME_SPIKE: Final = "volume-spike"
AlertKind = Literal["negative-spike", "volume-spike"]
Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class ExamplePost:
    """One of the most negative posts behind an alert (attached at the edges, not here)."""

    id: str
    text: str
    polarity_score: float
    published_at: datetime


@dataclass(frozen=True)
class Alert:
    """The evidence of one symbol firing at one moment.

    `fired_at` is the end of the evidence: the end of the last minute counted, or, for an
    alert on the minutes so far (not yet complete), the moment they were read. It is the
    earliest moment the alert could have been sent. `statistic` is -log10(p_value) of the
    window that fired. `episode_id` is a proposal (symbol, kind, start of that window); the
    lifecycle replaces it with the id of the episode the alert joins, so every record of one
    episode carries one id. `expected_negative` is the sum of P(negative) over the window's
    stories (None when only labels were known).
    """

    symbol: str
    kind: AlertKind
    fired_at: datetime
    severity: Severity
    statistic: float
    p_value: float
    window_minutes: int
    window_posts: int
    window_negative: int
    window_share: float
    baseline_share: float
    expected_total: float
    episode_id: str
    examples: tuple[ExamplePost, ...] = ()
    expected_negative: float | None = None

    @property
    def window_start(self) -> datetime:
        return window_start(self.fired_at, self.window_minutes)

    @property
    def share_ratio(self) -> float:
        return self.window_share / self.baseline_share if self.baseline_share > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["fired_at"] = iso(self.fired_at)
        out["examples"] = [{**_fields_of(e), "published_at": iso(e.published_at)} for e in self.examples]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        values = dict(data)
        if "window_total" in values:  # state saved before the field took the stored column's name
            values["window_posts"] = values.pop("window_total")
        values["fired_at"] = parse_iso(values["fired_at"])
        values["examples"] = tuple(
            ExamplePost(
                id=e["id"],
                text=e["text"],
                polarity_score=float(e["polarity_score"]),
                published_at=parse_iso(e["published_at"]),
            )
            for e in values.get("examples", ())
        )
        return cls(**values)


def window_start(fired_at: datetime, minutes: int) -> datetime:
    """The start of a window of `minutes` whose evidence ends at `fired_at`: it ends with the
    minute that `fired_at` closes (a minute boundary) or is inside (the minutes so far)."""
    floor = fired_at.replace(second=0, microsecond=0)
    last_minute = floor - timedelta(minutes=1) if floor == fired_at else floor
    return last_minute - timedelta(minutes=minutes - 1)


def _fields_of(post: ExamplePost) -> dict[str, Any]:
    return {f.name: getattr(post, f.name) for f in fields(post)}


def iso(moment: datetime) -> str:
    """Exact UTC time for state that is read back (microseconds kept)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rfc3339(moment: datetime) -> str:
    """UTC time to the second for what people and other systems read (webhooks, Alertmanager)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def alert_row_id(episode_id: str, status: str) -> str:
    """`alert_id` of an episode's row in `alerts` for one status (firing, resolved), and of the
    deliveries of that notification in `alert_deliveries`: the two tables join on it."""
    return f"{episode_id}:{status}"


def episode_proposal(symbol: str, kind: str, window_start: datetime) -> str:
    return f"{symbol}:{kind}:{window_start.strftime('%Y%m%dT%H%MZ')}"
