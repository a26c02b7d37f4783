"""The store: a ClickHouse server through clickhouse-driver, or chDB in-process for the embedded default.

Both speak the same SQL subset, take parameters the same way (`%(name)s`, escaped by
clickhouse-driver's own escaper: no query is built by concatenating user data) and fail the same
way (moodwire.store_errors: StoreUnavailable, StoreRejected, StoreError), so a caller decides
what to do once for both.

Two kinds of caller, two paths:
* the pipeline (scorer, alert job, migrations): `query`, `insert_rows`, `insert_posts`;
* analysts (`moodwire sql`, the report, the embedded query endpoint): `analyst_query`, on its
  own connection, read-only by the engine (moodwire.analyst_sql), with a time limit. A failing
  or slow analyst query never reaches the pipeline's connection.

On a sharded cluster (`clickhouse_cluster`), the server store migrates every node
(moodwire.store_cluster) and everything else is unchanged: readers and writers use the same
table names, which are Distributed tables there. Inserts into them are synchronous
(`insert_distributed_sync`): the rows are on their shards when the insert returns, so the
offsets committed after it are durable, and the reads that follow writes (the scorer's
already-stored check, the alert state) see them. Asynchronously, ~90% of a batch read back
right after its insert was missing (bench/cluster_bench.py).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from moodwire import analyst_sql, store_cluster, store_schema
from moodwire.config import Settings
from moodwire.schema import ScoredPost
from moodwire.store_errors import StoreError, StoreRejected, StoreUnavailable, classify, code_of, first_line

__all__ = [
    "ChdbStore",
    "QueryResult",
    "ServerStore",
    "Store",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "open_store",
    "post_row",
]

log = logging.getLogger(__name__)

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# "column already exists": a migration interrupted after some of its ALTERs ran.
_COLUMN_EXISTS = 44


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


class Store(Protocol):
    database: str

    def migrate(self) -> None: ...

    def insert_posts(self, posts: Sequence[ScoredPost]) -> None: ...

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult: ...

    def analyst_query(self, sql: str) -> QueryResult: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def check_identifier(name: str) -> str:
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a valid ClickHouse identifier: {name!r}")
    return name


def render(sql: str, params: Mapping[str, Any] | None) -> str:
    """Substitute `%(name)s` placeholders with properly escaped ClickHouse literals."""
    if not params:
        return sql
    from clickhouse_driver.util.escape import escape_params

    # Datetimes become UTC 'YYYY-MM-DD hh:mm:ss' strings: columns are DateTime('UTC'), and the
    # driver's own datetime escaping needs a live server connection to learn its time zone.
    prepared = {
        key: _naive_utc(value).strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else value
        for key, value in params.items()
    }
    return sql % escape_params(prepared, {})


def post_row(scored: ScoredPost) -> tuple[Any, ...]:
    post = scored.post
    targets = scored.targets
    return (
        post.id,
        post.source,
        post.text,
        post.published_at,
        post.author or "",
        post.url or "",
        post.lang or "",
        list(post.symbols),
        post.symbols[0] if post.symbols else "",
        post.kind,
        post.story_id or "",
        list(post.flags),
        scored.polarity,
        scored.polarity_score,
        scored.emotion,
        *(scored.polarity_probs[c[2:]] for c in store_schema.POLARITY_COLUMNS),
        *(scored.emotion_probs[c[2:]] for c in store_schema.EMOTION_COLUMNS),
        scored.model_version,
        scored.scored_at,
        scored.status,
        [t.symbol for t in targets],
        [t.polarity for t in targets],
        [t.polarity_score for t in targets],
        [t.polarity_probs["negative"] for t in targets],
        [t.polarity_probs["neutral"] for t in targets],
        [t.polarity_probs["positive"] for t in targets],
        [t.basis for t in targets],
    )


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


# --------------------------------------------------------------------------------------------


# How long a readiness probe waits for the server (at most clickhouse_timeout_s).
PROBE_TIMEOUT_S = 3.0


class ServerStore:
    """A ClickHouse server over the native protocol: one connection for the pipeline, one for analysts."""

    def __init__(self, settings: Settings) -> None:
        from clickhouse_driver import Client

        self.database = check_identifier(settings.clickhouse_database)
        self._lock = threading.Lock()
        self._analyst_lock = threading.Lock()
        self._analyst_timeout_s = settings.analyst_query_timeout_s
        client_settings: dict[str, Any] = {"use_client_time_zone": False}
        self._connection = dict(
            host=settings.clickhouse_host,
            port=settings.clickhouse_port,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            connect_timeout=min(10.0, settings.clickhouse_timeout_s),
            send_receive_timeout=settings.clickhouse_timeout_s,
            sync_request_timeout=min(5.0, settings.clickhouse_timeout_s),
            settings=client_settings,
        )
        self.cluster = settings.clickhouse_cluster
        self._settings = settings
        pipeline = dict(self._connection, settings={**client_settings, **_cluster_settings(self.cluster)})
        # Unqualified names in analysts' queries (`FROM posts`) resolve to the moodwire database.
        self._client = Client(database=self.database, **pipeline)
        # Without the cluster's settings: a read-only session may not send a setting it cannot change.
        analyst = dict(self._connection, send_receive_timeout=settings.analyst_query_timeout_s + 10)
        self._analyst = Client(database=self.database, **analyst)
        # Readiness probes get their own connection with a short timeout: on the pipeline's, a
        # ping would queue behind an insert hanging on a frozen server and report it only when
        # that insert times out.
        probe_timeout = min(PROBE_TIMEOUT_S, settings.clickhouse_timeout_s)
        self._probe_lock = threading.Lock()
        self._probe = Client(
            database=self.database,
            **dict(self._connection, connect_timeout=probe_timeout, send_receive_timeout=probe_timeout),
        )
        self._flavour: store_schema.Flavour | None = None

    def _execute(self, sql: str, params: Any = None, *, analyst: bool = False, probe: bool = False, **kwargs: Any) -> Any:
        from clickhouse_driver.errors import NetworkError, ServerException, SocketTimeoutError, UnexpectedPacketFromServerError

        if probe:
            client, lock = self._probe, self._probe_lock
        else:
            client, lock = (self._analyst, self._analyst_lock) if analyst else (self._client, self._lock)
        with lock:
            try:
                return client.execute(sql, params, **kwargs)
            except ServerException as exc:
                raise classify(exc.code, str(exc)) from None
            except (NetworkError, SocketTimeoutError, UnexpectedPacketFromServerError, ConnectionError, OSError, EOFError) as exc:
                # Network errors, timeouts, a connection cut mid-answer: reconnect on the next call.
                client.disconnect()
                raise StoreUnavailable(f"ClickHouse server unreachable: {type(exc).__name__}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - the driver could not encode a value: the rows' fault
                # The connection may be mid-packet: start the next call on a fresh one.
                client.disconnect()
                raise StoreError(f"ClickHouse client refused the data: {type(exc).__name__}: {exc}"[:500]) from None

    @property
    def flavour(self) -> store_schema.Flavour:
        if self._flavour is None:
            version = self._execute("SELECT version()")[0][0]
            self._flavour = store_schema.server_flavour(version)
        return self._flavour

    def migrate(self) -> None:
        from clickhouse_driver import Client
        from clickhouse_driver.errors import ServerException

        if self.cluster is not None:
            self._migrate_cluster(self.cluster)
        else:
            self._create_database()
            _apply_migrations(self, store_schema.migrations(self.database, self.flavour))
        self._check_layout()

    def _create_database(self) -> None:
        from clickhouse_driver import Client
        from clickhouse_driver.errors import ServerException

        bootstrap = Client(database="default", **self._connection)  # the database may not exist yet
        try:
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        except ServerException as exc:
            raise classify(exc.code, str(exc)) from None
        except Exception as exc:
            raise StoreUnavailable(f"ClickHouse server unreachable: {type(exc).__name__}: {exc}") from None
        finally:
            bootstrap.disconnect()

    def cluster_nodes(self, cluster: str) -> list[tuple[str, int]]:
        """(host, native port) of every node of `cluster`, from the server's own remote_servers."""
        rows = self.query(
            "SELECT DISTINCT host_address, port FROM system.clusters WHERE cluster = %(cluster)s "
            "ORDER BY host_address, port",
            {"cluster": cluster},
        ).rows
        if not rows:
            raise StoreRejected(
                f"cluster {cluster!r} is not in the remote_servers of the ClickHouse server at "
                f"{self._connection['host']}:{self._connection['port']} (clickhouse_cluster)"
            )
        return [(str(host), int(port)) for host, port in rows]

    def _migrate_cluster(self, cluster: str) -> None:
        """Apply every migration, rendered for the cluster, on every node of it (18.x has no
        `ON CLUSTER` without ZooKeeper; one node at a time works on every version)."""
        self._create_database()  # this connection's database must exist to ask anything
        for host, port in self.cluster_nodes(cluster):
            node = ServerStore(
                self._settings.model_copy(update={"clickhouse_host": host, "clickhouse_port": port, "clickhouse_cluster": None})
            )
            try:
                node._create_database()
                plain = store_schema.migrations(self.database, node.flavour)
                _apply_migrations(node, store_cluster.cluster_migrations(plain, self.database, cluster))
            finally:
                node.close()
            log.info("schema of %s is up to date on cluster %s node %s:%d", self.database, cluster, host, port)

    def _check_layout(self) -> None:
        """A database laid out for one server must not be used as a cluster's, nor the reverse:
        either would split or hide the rows."""
        rows = self.query(
            "SELECT engine FROM system.tables WHERE database = %(database)s AND name = 'posts'",
            {"database": self.database},
        ).rows
        distributed = bool(rows) and rows[0][0] == "Distributed"
        if self.cluster is not None and not distributed:
            raise StoreRejected(
                f"clickhouse_cluster is {self.cluster!r}, but {self.database}.posts on this server is not a Distributed "
                "table: the database was created for a single server (move its data to a new database on the cluster)"
            )
        if self.cluster is None and distributed:
            raise StoreRejected(
                f"{self.database}.posts is a Distributed table: this database is sharded; set clickhouse_cluster"
            )

    def run_ddl(self, sql: str) -> None:
        self._execute(sql)

    def insert_posts(self, posts: Sequence[ScoredPost]) -> None:
        self.insert_rows("posts", store_schema.POST_COLUMNS, [post_row(p) for p in posts])

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        names = ", ".join(check_identifier(c) for c in columns)
        prepared = [tuple(_naive_utc(v) for v in row) for row in rows]
        self._execute(f"INSERT INTO {self.database}.{check_identifier(table)} ({names}) VALUES", prepared)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        rows, column_types = self._execute(sql, dict(params) if params else None, with_column_types=True)
        return _result(rows, column_types)

    def analyst_query(self, sql: str) -> QueryResult:
        try:
            wrapped = analyst_sql.wrap(sql)
        except ValueError as exc:
            raise StoreRejected(str(exc)) from None
        rows, column_types = self._execute(
            wrapped,
            None,
            analyst=True,
            with_column_types=True,
            settings=analyst_sql.session_settings(self._analyst_timeout_s),
        )
        return _result(rows, column_types)

    def ping(self) -> None:
        self._execute("SELECT 1", probe=True)

    def close(self) -> None:
        self._client.disconnect()
        self._analyst.disconnect()
        self._probe.disconnect()


def _result(rows: list[tuple[Any, ...]], column_types: list[tuple[str, str]]) -> QueryResult:
    columns = [name for name, _ in column_types]
    types = [kind for _, kind in column_types]
    return QueryResult(columns, types, [tuple(_aware(v) for v in row) for row in rows])


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --------------------------------------------------------------------------------------------


class _ChdbConnection:
    """One chDB connection to the store's directory, replaced after every failure.

    chDB returns the partial output of a query that failed mid-stream as the result of the next
    query on the same connection; a fresh connection (a few milliseconds) is the recovery step.
    """

    def __init__(self, path: Path, setup: Sequence[str]) -> None:
        self._path = path
        self._setup = tuple(setup)
        self._lock = threading.Lock()
        self._conn: Any = None

    def _open(self) -> Any:
        import chdb

        try:
            conn = chdb.connect(str(self._path))
        except Exception as exc:  # chDB raises plain RuntimeError for a locked directory
            raise StoreUnavailable(
                f"cannot open the embedded store at {self._path}: {exc}. Is another moodwire process "
                "using this data dir? Use `moodwire sql` against it, or stop it first."
            ) from None
        try:
            for statement in self._setup:
                conn.query(statement, "CSV")
        except Exception as exc:
            conn.close()
            raise _chdb_error(exc) from None
        return conn

    def run(self, sql: str, fmt: str) -> bytes:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            try:
                result = self._conn.query(sql, fmt)
            except Exception as exc:
                self._reset()
                raise _chdb_error(exc) from None
            return bytes(result.bytes()) if hasattr(result, "bytes") else bytes(result)

    def _reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
                log.debug("closing a failed chDB connection failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._reset()


def _chdb_error(exc: Exception) -> StoreError:
    message = str(exc)
    return classify(code_of(message), message)


class ChdbStore:
    """ClickHouse in-process (chDB), persistent under one directory; one process per directory.

    The pipeline and analysts get separate connections to the same directory; the analysts'
    one is made read-only (and time-limited) before any analyst statement runs on it.
    """

    def __init__(self, path: Path, database: str = "moodwire", analyst_timeout_s: float = analyst_sql.DEFAULT_TIMEOUT_S) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.database = check_identifier(database)
        self._pipeline = _ChdbConnection(
            path,
            (
                "SET output_format_json_quote_64bit_integers = 0",
                "SET output_format_json_quote_denormals = 1",
                f"CREATE DATABASE IF NOT EXISTS {self.database}",
                f"USE {self.database}",
            ),
        )
        # Opening the pipeline connection first surfaces a locked directory at start-up.
        self._pipeline.run("SELECT 1", "CSV")
        settings = analyst_sql.session_settings(analyst_timeout_s)
        self._analyst = _ChdbConnection(
            path,
            (
                "SET output_format_json_quote_64bit_integers = 0",
                "SET output_format_json_quote_denormals = 1",
                f"USE {self.database}",
                *(f"SET {name} = {_setting_literal(value)}" for name, value in settings.items()),
            ),
        )

    def migrate(self) -> None:
        _apply_migrations(self, store_schema.migrations(self.database, "modern"))

    def run_ddl(self, sql: str) -> None:
        self._pipeline.run(sql, "CSV")

    def insert_posts(self, posts: Sequence[ScoredPost]) -> None:
        self.insert_rows("posts", store_schema.POST_COLUMNS, [post_row(p) for p in posts])

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        for column in columns:
            check_identifier(column)
        # JSONEachRow keeps user text as data, never as SQL.
        lines = [json.dumps(dict(zip(columns, (_json_value(v) for v in row))), ensure_ascii=False) for row in rows]
        payload = "\n".join(lines)
        self._pipeline.run(
            f"INSERT INTO {self.database}.{check_identifier(table)} ({', '.join(columns)}) "
            f"SETTINGS date_time_input_format = 'best_effort' FORMAT JSONEachRow\n{payload}",
            "CSV",
        )

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        return _parse_json_compact(self._pipeline.run(render(sql, params), "JSONCompact"))

    def analyst_query(self, sql: str) -> QueryResult:
        try:
            wrapped = analyst_sql.wrap(sql)
        except ValueError as exc:
            raise StoreRejected(str(exc)) from None
        return _parse_json_compact(self._analyst.run(wrapped, "JSONCompact"))

    def ping(self) -> None:
        self._pipeline.run("SELECT 1", "CSV")

    def close(self) -> None:
        self._analyst.close()
        self._pipeline.close()


def _setting_literal(value: int | str) -> str:
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "") + "'"


def _parse_json_compact(raw: bytes) -> QueryResult:
    if not raw.strip():
        return QueryResult([], [], [])
    try:
        document = json.loads(raw)
    except ValueError as exc:  # never seen since connections are replaced after failures; say so if it is
        raise StoreError(f"unreadable result from chDB: {exc}") from None
    meta = document.get("meta", [])
    columns = [m["name"] for m in meta]
    types = [m["type"] for m in meta]
    parsers = [_parser_for(t) for t in types]
    rows = [tuple(p(v) for p, v in zip(parsers, row)) for row in document.get("data", [])]
    return QueryResult(columns, types, rows)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return value


def _parser_for(kind: str) -> Callable[[Any], Any]:
    base = kind
    for wrapper in ("Nullable(", "LowCardinality("):
        if base.startswith(wrapper):
            base = base[len(wrapper) : -1]
    if base.startswith("DateTime"):
        return lambda v: None if v is None else datetime.fromisoformat(v).replace(tzinfo=UTC)
    if base.startswith(("Int", "UInt")) and "(" not in base:
        return lambda v: None if v is None else int(v)
    if base.startswith("Float") or base.startswith("Decimal"):
        return lambda v: None if v is None else float(v)
    return lambda v: v


# --------------------------------------------------------------------------------------------


def _cluster_settings(cluster: str | None) -> dict[str, Any]:
    """Settings every query of a cluster's store runs with: inserts return once on their shards."""
    return {"insert_distributed_sync": 1} if cluster else {}


def _apply_migrations(store: ServerStore | ChdbStore, migrations: Sequence[store_schema.Migration]) -> None:
    store.run_ddl(store_schema.migrations_table(store.database))
    applied = {row[0] for row in store.query(f"SELECT version FROM {store.database}.schema_migrations").rows}
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            try:
                store.run_ddl(statement)
            except StoreError as exc:
                # An interrupted migration is run again from its start; 18.x cannot say
                # ADD COLUMN IF NOT EXISTS, so a column already added is fine.
                if exc.code == _COLUMN_EXISTS and "ADD COLUMN" in statement:
                    continue
                raise
        store.insert_rows(
            "schema_migrations", ("version", "description"), [(migration.version, migration.description)]
        )
        log.info("applied schema migration %d: %s", migration.version, migration.description)


def open_store(settings: Settings) -> ServerStore | ChdbStore:
    if settings.store == "clickhouse":
        return ServerStore(settings)
    return ChdbStore(settings.chdb_path, settings.clickhouse_database, settings.analyst_query_timeout_s)


def describe_error(exc: StoreError) -> str:
    """One line for logs and CLI messages."""
    return first_line(str(exc))
