"""The store: a ClickHouse server through clickhouse-driver, or chDB in-process for the embedded default.

Both speak the same SQL subset, take parameters the same way (`%(name)s`, escaped by
clickhouse-driver's own escaper: no query is built by concatenating user data) and raise
`StoreUnavailable` when the server can't be reached, so callers can back off and retry.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from moodwire import store_schema
from moodwire.config import Settings
from moodwire.schema import ScoredPost

log = logging.getLogger(__name__)

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_READ_ONLY_START_RE = re.compile(r"^\s*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS)\b", re.IGNORECASE)


class StoreError(Exception):
    """A query failed; the message is ClickHouse's."""


class StoreUnavailable(StoreError):
    """The store can't be reached right now; retry later."""


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

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, read_only: bool = False) -> QueryResult: ...

    def close(self) -> None: ...


def check_identifier(name: str) -> str:
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a valid ClickHouse identifier: {name!r}")
    return name


def check_read_only(sql: str) -> str:
    """Reject anything but a single read statement (the embedded query endpoint's guard)."""
    statement = sql.strip().rstrip(";").strip()
    if ";" in statement:
        raise StoreError("one statement at a time, please")
    if not _READ_ONLY_START_RE.match(statement):
        raise StoreError("read-only: only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS are allowed")
    return statement


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
    )


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


# --------------------------------------------------------------------------------------------


class ServerStore:
    """A ClickHouse server over the native protocol."""

    def __init__(self, settings: Settings) -> None:
        from clickhouse_driver import Client

        self.database = check_identifier(settings.clickhouse_database)
        self._lock = threading.Lock()
        self._connection = dict(
            host=settings.clickhouse_host,
            port=settings.clickhouse_port,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            connect_timeout=min(10.0, settings.clickhouse_timeout_s),
            send_receive_timeout=settings.clickhouse_timeout_s,
            sync_request_timeout=min(5.0, settings.clickhouse_timeout_s),
            settings={"use_client_time_zone": False},
        )
        # Unqualified names in analysts' queries (`FROM posts`) resolve to the moodwire database.
        self._client = Client(database=self.database, **self._connection)
        self._flavour: store_schema.Flavour | None = None

    def _execute(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        from clickhouse_driver.errors import Error as DriverError
        from clickhouse_driver.errors import NetworkError, ServerException, SocketTimeoutError

        with self._lock:
            try:
                return self._client.execute(sql, params, **kwargs)
            except (NetworkError, SocketTimeoutError, ConnectionError, OSError, EOFError) as exc:
                self._client.disconnect()
                raise StoreUnavailable(f"ClickHouse server unreachable: {exc}") from None
            except ServerException as exc:
                raise StoreError(str(exc).split("Stack trace")[0].strip()) from None
            except DriverError as exc:
                self._client.disconnect()
                raise StoreUnavailable(f"ClickHouse error: {exc}") from None

    @property
    def flavour(self) -> store_schema.Flavour:
        if self._flavour is None:
            version = self._execute("SELECT version()")[0][0]
            self._flavour = store_schema.server_flavour(version)
        return self._flavour

    def migrate(self) -> None:
        from clickhouse_driver import Client

        from clickhouse_driver.errors import ServerException

        bootstrap = Client(database="default", **self._connection)  # the database may not exist yet
        try:
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        except ServerException as exc:  # e.g. a wrong password: retrying will not help
            raise StoreError(str(exc).split("Stack trace")[0].strip()) from None
        except Exception as exc:
            raise StoreUnavailable(f"ClickHouse server unreachable: {type(exc).__name__}: {exc}") from None
        finally:
            bootstrap.disconnect()
        _apply_migrations(self, self.flavour)

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

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, read_only: bool = False) -> QueryResult:
        settings = {"readonly": 1} if read_only else None
        rows, column_types = self._execute(
            sql, dict(params) if params else None, with_column_types=True, settings=settings
        )
        columns = [name for name, _ in column_types]
        types = [kind for _, kind in column_types]
        converted = [tuple(_aware(v) for v in row) for row in rows]
        return QueryResult(columns, types, converted)

    def close(self) -> None:
        self._client.disconnect()


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --------------------------------------------------------------------------------------------


class ChdbStore:
    """ClickHouse in-process (chDB), persistent under one directory; one process per directory."""

    def __init__(self, path: Path, database: str = "moodwire") -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self.database = check_identifier(database)
        self._lock = threading.Lock()
        try:
            self._session = session.Session(str(path))
        except Exception as exc:  # chDB raises plain RuntimeError for a locked directory
            raise StoreUnavailable(
                f"cannot open the embedded store at {path}: {exc}. Is another moodwire process "
                "using this data dir? Use `moodwire sql` against it, or stop it first."
            ) from None
        self._raw("SET output_format_json_quote_64bit_integers = 0")
        self._raw("SET output_format_json_quote_denormals = 1")
        self._raw(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._raw(f"USE {self.database}")

    def _raw(self, sql: str, fmt: str = "CSV") -> Any:
        with self._lock:
            try:
                return self._session.query(sql, fmt)
            except Exception as exc:
                raise StoreError(str(exc).split("Stack trace")[0].strip()) from None

    def migrate(self) -> None:
        self._raw(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        _apply_migrations(self, "modern")

    def run_ddl(self, sql: str) -> None:
        self._raw(sql)

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
        self._raw(
            f"INSERT INTO {self.database}.{check_identifier(table)} ({', '.join(columns)}) "
            f"SETTINGS date_time_input_format = 'best_effort' FORMAT JSONEachRow\n{payload}"
        )

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, read_only: bool = False) -> QueryResult:
        if read_only:
            sql = check_read_only(sql)
        result = self._raw(render(sql, params), "JSONCompact")
        raw = result.bytes() if hasattr(result, "bytes") else bytes(result)
        if not raw.strip():
            return QueryResult([], [], [])
        document = json.loads(raw)
        meta = document.get("meta", [])
        columns = [m["name"] for m in meta]
        types = [m["type"] for m in meta]
        parsers = [_parser_for(t) for t in types]
        rows = [tuple(p(v) for p, v in zip(parsers, row)) for row in document.get("data", [])]
        return QueryResult(columns, types, rows)

    def close(self) -> None:
        with self._lock:
            self._session.close()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return value


def _parser_for(kind: str) -> Any:
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


def _apply_migrations(store: ServerStore | ChdbStore, flavour: store_schema.Flavour) -> None:
    store.run_ddl(store_schema.migrations_table(store.database))
    applied = {row[0] for row in store.query(f"SELECT version FROM {store.database}.schema_migrations").rows}
    for migration in store_schema.migrations(store.database, flavour):
        if migration.version in applied:
            continue
        for statement in migration.statements:
            store.run_ddl(statement)
        store.insert_rows(
            "schema_migrations", ("version", "description"), [(migration.version, migration.description)]
        )
        log.info("applied schema migration %d: %s", migration.version, migration.description)


def open_store(settings: Settings) -> ServerStore | ChdbStore:
    if settings.store == "clickhouse":
        return ServerStore(settings)
    return ChdbStore(settings.chdb_path, settings.clickhouse_database)
