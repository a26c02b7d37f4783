"""Shared fixtures: real services for integration tests, started once per session.

If MOODWIRE_TEST_KAFKA / MOODWIRE_TEST_CLICKHOUSE_PORT are set (scripts/test.sh may do so), the
tests use those; otherwise they start a tansu broker and a ClickHouse server themselves.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from moodwire.config import Settings, load_settings
from tests import services

# scripts/test.sh (what CI runs) sets this: every test the README says runs must run, so a skip
# is a failure there, named in the summary.
FAIL_ON_SKIP_ENV = "MOODWIRE_FAIL_ON_SKIP"
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _skipped and os.environ.get(FAIL_ON_SKIP_ENV):
        terminalreporter.write_line(
            f"{len(_skipped)} test(s) skipped, and {FAIL_ON_SKIP_ENV} is set: the run fails", red=True
        )
        for nodeid in _skipped:
            terminalreporter.write_line(f"  skipped: {nodeid}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and os.environ.get(FAIL_ON_SKIP_ENV) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("MOODWIRE_TEST_KAFKA")
    if given:
        yield given
        return
    broker = services.start_tansu()
    try:
        yield f"127.0.0.1:{broker.port}"
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def clickhouse_port() -> Iterator[int]:
    given = os.environ.get("MOODWIRE_TEST_CLICKHOUSE_PORT")
    if given:
        yield int(given)
        return
    server = services.start_clickhouse()
    try:
        yield server.port
    finally:
        server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server_settings(kafka_bootstrap: str, clickhouse_port: int, tmp_path: Path) -> Settings:
    """Settings for the production path: Kafka and the ClickHouse server, unique names per test."""
    return load_settings(
        bus="kafka",
        store="clickhouse",
        kafka_bootstrap_servers=kafka_bootstrap,
        posts_topic=unique("posts"),
        dead_letter_topic=unique("dlq"),
        consumer_group=unique("group"),
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        clickhouse_port=clickhouse_port,
        clickhouse_database=unique("db"),
        data_dir=tmp_path / "data",
        batch_max_size=64,
        batch_max_wait_ms=100,
    )


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", batch_max_size=64, batch_max_wait_ms=50)


def make_post(index: int, *, symbol: str = "AAPL", text: str | None = None, minutes_ago: int = 5) -> dict[str, Any]:
    published = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return {
        "id": f"test:{index}",
        "source": "file",
        "text": text or f"Post number {index}: ${symbol} shares moved after the quarterly report #{index}",
        "published_at": published.isoformat().replace("+00:00", "Z"),
        "symbols": [symbol],
    }
