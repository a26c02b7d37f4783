"""One of several `moodwire alert` processes works; the others stand by and take over.

A lease in ClickHouse, which has no transactions and no compare-and-set (18.16 and chDB alike),
so the claim is made the way Fischer's mutual exclusion does it with a shared register:

* the lease is one row per name in `alert_leases` (ReplacingMergeTree): holder, fencing
  token, expiry; the row with the highest `version` (the writer's clock in ns) is the lease
  (so the instances' clocks must agree to well within the lease time, as NTP keeps them);
* a holder renews it while it works; nobody else touches an unexpired lease;
* to take a free (or expired) lease, write a claim with a new token, wait `settle_s`, and read
  the lease back: only the claim written last is still there, so of two instances that claimed
  at once, exactly one sees its own. This holds as long as reading the lease and writing the
  claim take less than `settle_s` (the claim is dropped if they took longer);
* the fencing token (the claim's version) goes with every alert state the holder saves, and
  loading takes the state with the highest token: an instance that was paused past its lease
  and wakes up cannot overwrite the new holder's state. Notifications it had queued may still
  go out once more (delivery is at least once; receivers drop repeats by notification_id).

Why one lease and not an owner per symbol shard: a market-wide notification names every
ticker that spiked together, so grouping needs one place that sees all of them; detection of
every watched ticker is cheap for one process (the scorer is what scales out).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from moodwire.store import Store
from moodwire.store_schema import LEASE_COLUMNS

log = logging.getLogger(__name__)

LEASE_NAME = "alerting"


@dataclass(frozen=True)
class LeaseRow:
    holder: str
    token: int
    expires_ms: int
    version: int


def instance_id() -> str:
    """Who this process is, in logs and in the lease row."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class AlertLease:
    def __init__(
        self,
        store: Store,
        lease_s: float,
        holder: str | None = None,
        *,
        name: str = LEASE_NAME,
        settle_s: float | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self.lease_ms = int(lease_s * 1000)
        self.holder = holder or instance_id()
        self.name = name
        self.settle_s = settle_s if settle_s is not None else min(2.0, lease_s / 10)
        self._wall_ms = wall_ms
        self._sleep = sleep
        self.token: int | None = None  # the fencing token while held
        self._expires_ms = 0
        self.other: str | None = None  # the holder seen last, when not us

    def held(self) -> bool:
        """Whether this instance holds the lease now (by its own clock, with a margin)."""
        return self.token is not None and self._wall_ms() < self._expires_ms - self.lease_ms // 10

    def read(self) -> LeaseRow | None:
        rows = self._store.query(
            f"SELECT holder, token, expires_ms, version FROM {self._store.database}.alert_leases "
            "WHERE name = %(name)s ORDER BY version DESC LIMIT 1",
            {"name": self.name},
        ).rows
        return LeaseRow(str(rows[0][0]), int(rows[0][1]), int(rows[0][2]), int(rows[0][3])) if rows else None

    def _write(self, token: int | None, expires_ms: int) -> int:
        """Write the lease row; a claim (token None) takes its own version as its token: unique,
        and larger for a later claim. Returns the token."""
        version = time.time_ns()
        token = version if token is None else token
        self._store.insert_rows("alert_leases", LEASE_COLUMNS, [(self.name, self.holder, token, expires_ms, version)])
        return token

    def acquire(self) -> bool:
        """Renew the lease if this instance holds it, take it if it is free; True if held."""
        started = time.monotonic()
        row = self.read()
        now = self._wall_ms()
        if row is not None and row.holder == self.holder and row.token == self.token and now < row.expires_ms:
            self._expires_ms = now + self.lease_ms
            self._write(row.token, self._expires_ms)
            return True
        if row is not None and row.holder != self.holder and now < row.expires_ms:
            self._lose(row.holder)
            return False
        # free, expired, or ours but lost in between: claim it
        if time.monotonic() - started > self.settle_s / 2:
            return False  # reading took too long for a safe claim; try again next time
        expires = now + self.lease_ms
        claim = self._write(None, expires)
        self._sleep(self.settle_s)
        latest = self.read()
        if latest is not None and latest.holder == self.holder and latest.token == claim:
            if self.token != claim:
                log.info("alerting lease taken by %s (token %d)%s", self.holder, claim,
                         f"; {row.holder} had it" if row is not None and row.holder != self.holder else "")
            self.token, self._expires_ms, self.other = claim, expires, None
            return True
        self._lose(latest.holder if latest is not None else None)
        return False

    def _lose(self, other: str | None) -> None:
        if self.token is not None:
            log.warning("alerting lease lost to %s; standing by", other)
        self.token = None
        self._expires_ms = 0
        self.other = other

    def release(self) -> None:
        """Let another instance take over at once (on a clean stop)."""
        if self.token is None:
            return
        row = self.read()
        if row is not None and row.holder == self.holder and row.token == self.token:
            self._write(self.token, 0)
        self.token = None
