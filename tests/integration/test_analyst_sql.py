"""Analysts' SQL is read-only by the engine, on both stores: an attack corpus changes nothing.

Each statement below is what someone holding the query token (or a ClickHouse login for
analysts) might try: writes hidden behind WITH, comments and case tricks, second statements,
settings overrides, table functions that read files or make requests, INTO OUTFILE, system
commands. Every one is run through `analyst_query` on the ClickHouse 18.16 server, on chDB, and
through the embedded query endpoint `moodwire sql` talks to while `moodwire run` holds chDB.
Afterwards nothing in the database changed, no file was written, the secret file's content
never came back, and the local HTTP server received no request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from moodwire.config import load_settings
from moodwire.query_server import QueryServer, query_running
from moodwire.store import ChdbStore, QueryResult, ServerStore, StoreError
from tests.conftest import unique
from tests.services import free_port

pytestmark = pytest.mark.integration

SECRET = "moodwire-secret-9f3a1c"


class Trap:
    """A local HTTP server that counts every request: none may arrive."""

    def __init__(self) -> None:
        trap = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                trap.requests.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(SECRET.encode())

            do_POST = do_GET  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attacks(secret_file: Path, out_dir: Path, port: int, db: str) -> list[str]:
    url = f"http://127.0.0.1:{port}/x"
    out = out_dir / "written.txt"
    return [
        # writes, plain and disguised
        f"INSERT INTO {db}.posts (id) VALUES ('attack')",
        f"WITH 1 AS x INSERT INTO {db}.posts (id) VALUES ('attack')",
        f"with 1 as x insert into {db}.posts (id) values ('attack')",
        f"/* a comment */ INSERT INTO {db}.posts (id) VALUES ('attack')",
        f"-- comment\nINSERT INTO {db}.posts (id) VALUES ('attack')",
        f"SELECT 1; INSERT INTO {db}.posts (id) VALUES ('attack')",
        f"SELECT 1 /* ; */ ; DROP TABLE {db}.alerts",
        f"sElEcT 1;\nDrOp TaBlE {db}.alerts",
        f"INSERT INTO FUNCTION file('{out}', 'CSV', 'x String') VALUES ('attack')",
        # DDL and system commands
        f"DROP TABLE {db}.alerts",
        f"TRUNCATE TABLE {db}.posts",
        f"ALTER TABLE {db}.posts DELETE WHERE 1",
        f"ALTER TABLE {db}.posts ADD COLUMN attack String",
        f"CREATE TABLE {db}.attack (x String) ENGINE = Memory",
        f"RENAME TABLE {db}.alerts TO {db}.attack",
        f"OPTIMIZE TABLE {db}.posts FINAL",
        f"CREATE DATABASE attack_{db}",
        "SYSTEM FLUSH LOGS",
        "SYSTEM SHUTDOWN",
        "KILL QUERY WHERE 1",
        # settings
        "SET readonly = 0",
        "SELECT 1 SETTINGS readonly = 0",
        f"SELECT * FROM file('{secret_file}', 'LineAsString') SETTINGS readonly = 0",
        "SELECT * FROM (SELECT 1) SETTINGS readonly = 2, allow_ddl = 1",
        # table functions: files, requests, other servers
        f"SELECT * FROM file('{secret_file}', 'LineAsString')",
        f"select * from FILE('{secret_file}', 'LineAsString')",
        f"SELECT * FROM url('{url}', 'LineAsString', 'x String')",
        f"SELECT * FROM s3('{url}', 'LineAsString')",
        f"SELECT * FROM remote('127.0.0.1:{port}', system.one)",
        f"SELECT * FROM mysql('127.0.0.1:{port}', 'db', 't', 'u', 'p')",
        f"SELECT * FROM postgresql('127.0.0.1:{port}', 'db', 't', 'u', 'p')",
        "SELECT * FROM executable('cat /etc/passwd', 'LineAsString')",
        f"SELECT count() FROM {db}.posts WHERE id IN (SELECT * FROM file('{secret_file}', 'LineAsString'))",
        f"SELECT * FROM {db}.posts UNION ALL SELECT * FROM url('{url}', 'LineAsString', 'x String')",
        # output redirection
        f"SELECT 1 INTO OUTFILE '{out}'",
        f"SELECT * FROM {db}.posts INTO OUTFILE '{out}' FORMAT CSV",
        "SELECT 1 FORMAT Native",
        # system tables that expose settings and paths: may be read, must change nothing
        "SELECT name, value FROM system.settings WHERE changed",
        "SELECT * FROM system.disks",
        "SELECT * FROM system.macros",
    ]


def snapshot(query: Callable[[str], QueryResult], db: str) -> tuple[object, ...]:
    tables = query(f"SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name").rows
    databases = query("SELECT name FROM system.databases ORDER BY name").rows
    counts = tuple(query(f"SELECT count() FROM {db}.{name}").rows[0][0] for (name,) in tables if name != "post_targets")
    columns = query(f"SELECT count() FROM system.columns WHERE database = '{db}'").rows[0][0]
    return tuple(tables), tuple(databases), counts, columns


def seed(store: ServerStore | ChdbStore) -> None:
    store.migrate()
    store.insert_rows(
        "alerts",
        ("alert_id", "episode_id", "symbol", "kind", "severity", "status", "fired_at", "evidence", "created_at"),
        [("a:firing", "a", "BA", "negative-spike", "warning", "firing", datetime.now(UTC).replace(microsecond=0), "{}",
          datetime.now(UTC).replace(microsecond=0))],
    )


def run_corpus(analyst: Callable[[str], QueryResult], pipeline: Callable[[str], QueryResult], db: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    trap = Trap()
    try:
        before = snapshot(pipeline, db)
        statements = attacks(secret_file, out_dir, trap.port, db)
        assert len(statements) >= 30
        answered = []
        for statement in statements:
            try:
                result = analyst(statement)
            except StoreError:
                continue
            answered.append(statement)
            assert SECRET not in repr(result.rows), f"{statement!r} returned the secret file's content"
        assert snapshot(pipeline, db) == before, "an analyst statement changed the database"
        assert list(out_dir.iterdir()) == [], "an analyst statement wrote a file"
        assert trap.requests == [], f"an analyst statement made the process send requests: {trap.requests}"
        # Only plain reads may be answered: the system tables, and `SELECT 1` whose SETTINGS clause
        # chDB ignores inside the wrapping subquery (readonly stays 1: the file() read with the same
        # clause above is refused).
        harmless = {s for s in statements if s.startswith("SELECT name, value FROM system.settings")
                    or s.startswith("SELECT * FROM system.") or s.startswith(("SELECT * FROM (SELECT 1) SETTINGS",
                                                                           "SELECT 1 SETTINGS"))}
        assert set(answered) <= harmless, set(answered) - harmless
        # The pipeline's own connection is untouched: still writable, not read-only.
        assert pipeline("SELECT value FROM system.settings WHERE name = 'readonly'").rows[0][0] in (0, "0")
        assert analyst("SELECT count() FROM posts").rows[0][0] == 0
    finally:
        trap.close()


def test_the_attack_corpus_changes_nothing_on_the_clickhouse_server(clickhouse_port: int, tmp_path: Path) -> None:
    db = unique("db")
    store = ServerStore(load_settings(store="clickhouse", clickhouse_port=clickhouse_port, clickhouse_database=db))
    try:
        seed(store)
        run_corpus(store.analyst_query, store.query, db, tmp_path)
    finally:
        store.close()


@pytest.fixture
def chdb_store(tmp_path: Path) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path / "chdb", "moodwire")
    seed(store)
    yield store
    store.close()


def test_the_attack_corpus_changes_nothing_on_chdb(chdb_store: ChdbStore, tmp_path: Path) -> None:
    run_corpus(chdb_store.analyst_query, chdb_store.query, "moodwire", tmp_path)


def test_the_attack_corpus_changes_nothing_through_the_embedded_query_endpoint(chdb_store: ChdbStore, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = QueryServer(chdb_store, state)
    server.start()
    try:

        def through_endpoint(sql: str) -> QueryResult:
            result = query_running(state, sql)
            assert result is not None, "the endpoint is not serving"
            return result

        run_corpus(through_endpoint, chdb_store.query, "moodwire", tmp_path)
    finally:
        server.stop()


def test_a_failing_analyst_query_never_reaches_the_pipelines_connection(chdb_store: ChdbStore) -> None:
    """chDB hands the partial output of a failed query to the next query on the same connection;
    analysts have their own, replaced after each failure."""
    for _ in range(3):
        with pytest.raises(StoreError):
            chdb_store.analyst_query("SELECT throwIf(number = 3) FROM system.numbers LIMIT 10")
        assert chdb_store.query("SELECT 41 + 1 AS answer").rows == [(42,)]
        assert chdb_store.analyst_query("SELECT 7 AS seven").rows == [(7,)]


def test_analyst_queries_have_a_time_limit(tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "chdb", "moodwire", analyst_timeout_s=1)
    try:
        with pytest.raises(StoreError, match="Code: 159"):  # TIMEOUT_EXCEEDED
            store.analyst_query("SELECT count() FROM system.numbers WHERE sipHash64(number) = 0")
        assert store.query("SELECT 1").rows == [(1,)]
    finally:
        store.close()
