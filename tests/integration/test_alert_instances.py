"""Two `moodwire alert` processes on one ClickHouse server: one works, the other stands by; an
alert is fired and delivered once; when the working one is killed (SIGKILL: no goodbye), the
other takes the lease once it expires and carries on, without sending anything twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from moodwire.config import load_settings
from moodwire.store import ServerStore
from tests.conftest import unique
from tests.integration.test_alert_job import SECRET, WebhookReceiver, scored, stream

pytestmark = pytest.mark.integration

LEASE_S = 6.0
INTERVAL_S = 1.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.server.shutdown()


def read_lease(store: ServerStore, database: str) -> tuple[str, int, int]:
    """(holder, token, expires_ms) of the lease now."""
    row = store.query(f"SELECT holder, token, expires_ms FROM {database}.alert_leases ORDER BY version DESC LIMIT 1").rows[0]
    return str(row[0]), int(row[1]), int(row[2])


def wait_until(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_alert_instances_fire_once_and_one_takes_over_when_the_other_dies(
    clickhouse_port: int, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    database = unique("instances")
    settings = load_settings(store="clickhouse", clickhouse_port=clickhouse_port, clickhouse_database=database, data_dir=tmp_path)
    store = ServerStore(settings)
    store.migrate()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    store.insert_posts(stream(now, now - timedelta(minutes=40)))  # hours of chatter, a spike on BA

    env = {
        **os.environ,
        "MOODWIRE_STORE": "clickhouse",
        "MOODWIRE_CLICKHOUSE_PORT": str(clickhouse_port),
        "MOODWIRE_CLICKHOUSE_DATABASE": database,
        "MOODWIRE_WEBHOOK_URL": receiver.url,
        "MOODWIRE_WEBHOOK_SECRET": SECRET,
        "MOODWIRE_ALERT_LEASE_S": str(LEASE_S),
        "MOODWIRE_ALERT_INTERVAL_S": str(INTERVAL_S),
        "MOODWIRE_ALERT_GROUP_WAIT_S": "0",
    }
    logs = [tmp_path / f"alert-{i}.log" for i in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "moodwire.cli", "alert"],
            env={**env, "MOODWIRE_DATA_DIR": str(tmp_path / f"data-{i}")},
            stdout=subprocess.DEVNULL,
            stderr=logs[i].open("wb"),
        )
        for i in range(2)
    ]
    try:
        wait_until(lambda: "BA" in receiver.symbols(), 120, "the BA alert")
        lease = read_lease(store, database)
        pids = {p.pid: p for p in processes}
        holder = pids[int(str(lease[0]).split(":")[1])]
        survivor = next(p for p in processes if p is not holder)
        time.sleep(3 * INTERVAL_S)  # the stand-by has had its chances to send it too
        assert receiver.symbols() == ["BA"]

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        killed_ms = time.time_ns() // 1_000_000
        dead_expiry = read_lease(store, database)[2]  # its last renewal before it died
        # a new spike on AAPL, now: only the survivor can see it
        rng = random.Random(3)
        spike = [
            scored(100_000 + i, "AAPL", datetime.now(UTC) - timedelta(seconds=rng.randint(0, 170)), "negative")
            for i in range(60)
        ]
        store.insert_posts(spike)
        wait_until(lambda: read_lease(store, database)[0] != lease[0], 60, "the survivor to take the lease")
        taken = read_lease(store, database)
        wait_until(lambda: "AAPL" in receiver.symbols(), 120, "the AAPL alert from the survivor")
        time.sleep(3 * INTERVAL_S)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()

    failures = "\n".join(log.read_text()[-2000:] for log in logs)
    # each alert delivered once: the stand-by never sent BA, the survivor did not resend it
    assert sorted(receiver.symbols()) == ["AAPL", "BA"], failures
    assert receiver.bad_signatures == 0
    ids = [body["notification_id"] for body in receiver.bodies]
    assert len(ids) == len(set(ids))
    firing = store.query(f"SELECT symbol, count() FROM {database}.alerts WHERE status = 'firing' GROUP BY symbol ORDER BY symbol").rows
    assert firing == [("AAPL", 1), ("BA", 1)]
    # the survivor took the lease after the dead holder's had expired, and within one more
    # lease time (its claim's token is the moment it claimed)
    taken_ms = taken[1] // 1_000_000
    assert taken[0].split(":")[1] == str(survivor.pid)
    assert killed_ms <= taken_ms and dead_expiry <= taken_ms <= dead_expiry + LEASE_S * 1000, failures
    assert survivor.returncode == 0, failures
    store.close()
