"""A row the real store refuses is dead-lettered alone, with its original message; the rest of
its batch is stored. On the ClickHouse server (the driver cannot encode the row) and on chDB
(the server cannot parse it), through the real scorer loop and bus."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from moodwire.bus import REASON_HEADER, LocalBus, Message
from moodwire.config import Settings
from moodwire.schema import ScoredPost
from moodwire.store import ChdbStore, ServerStore, post_row
from tests.conftest import make_post
from tests.integration.fault_helpers import scorer_service

pytestmark = pytest.mark.integration

BAD = "test:7"


def _corrupt(rows: list[tuple[Any, ...]], posts: Sequence[ScoredPost], value: Any) -> list[tuple[Any, ...]]:
    """The rows, with published_at of the post BAD replaced by `value` (what a store would refuse)."""
    return [(*row[:3], value, *row[4:]) if post.post.id == BAD else row for row, post in zip(rows, posts)]


class ServerStoreWithABadRow(ServerStore):
    def insert_posts(self, posts: Sequence[ScoredPost]) -> None:
        from moodwire import store_schema

        self.insert_rows("posts", store_schema.POST_COLUMNS, _corrupt([post_row(p) for p in posts], posts, "not a date"))


class ChdbStoreWithABadRow(ChdbStore):
    def insert_posts(self, posts: Sequence[ScoredPost]) -> None:
        from moodwire import store_schema

        # JSONEachRow: chDB itself fails to parse this DateTime.
        self.insert_rows("posts", store_schema.POST_COLUMNS, _corrupt([post_row(p) for p in posts], posts, "not a date"))


def run_batch(settings: Settings, store: Any, tmp_path: Path) -> tuple[set[str], list[Message]]:
    """Twenty posts, one of which the store refuses, through one scorer batch; the store is
    migrated first and closed after. -> (ids stored, dead letters)."""
    try:
        store.migrate()
        bus = LocalBus(tmp_path / "bus")
        bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
        producer = bus.producer()
        values = [json.dumps(make_post(i)).encode() for i in range(20)]
        for value in values:
            producer.send(settings.posts_topic, value)
        producer.flush()
        service = scorer_service(settings, bus, store)
        service.process(service.poll_batch(threading.Event()))
        stored = {row[0] for row in store.query(f"SELECT id FROM {store.database}.posts").rows}
        dead = bus.read(settings.dead_letter_topic, 0, 10, timeout_s=0.1)
        assert bus.committed(settings.consumer_group, settings.posts_topic) == len(values)
        assert [m.value for m in dead] == [values[7]]
        return stored, dead
    finally:
        store.close()


def test_a_row_the_server_refuses_is_dead_lettered_alone(server_settings: Settings, tmp_path: Path) -> None:
    stored, dead = run_batch(server_settings, ServerStoreWithABadRow(server_settings), tmp_path)
    assert stored == {f"test:{i}" for i in range(20)} - {BAD}
    assert dict(dead[0].headers)[REASON_HEADER].decode().startswith("store: ClickHouse client refused the data")


def test_a_row_chdb_refuses_is_dead_lettered_alone(embedded_settings: Settings, tmp_path: Path) -> None:
    stored, dead = run_batch(embedded_settings, ChdbStoreWithABadRow(embedded_settings.chdb_path), tmp_path)
    assert stored == {f"test:{i}" for i in range(20)} - {BAD}
    assert dict(dead[0].headers)[REASON_HEADER].decode().startswith("store: Code: ")
