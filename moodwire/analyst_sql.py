"""Analysts' SQL (`moodwire sql`, the embedded query endpoint, the report): read-only by the engine.

Nothing here decides what is safe by looking for keywords. An analyst's statement is run

* inside `SELECT * FROM ( ... )`, so ClickHouse's own parser refuses anything that is not one
  query: a second statement, INSERT/ALTER/DROP (even behind `WITH`), SET, `INTO OUTFILE`,
  `FORMAT`;
* on a connection whose `readonly = 1` is set before the analyst gets it (chDB) or sent with
  every query (server), so the engine refuses writes, changing any setting (`SETTINGS readonly
  = 0` included) and table functions (`file()`, `url()`, `s3()`, `remote()`, ...);
* with a time limit and a cap on result rows.

The few statements analysts type that are not queries (DESCRIBE t, SHOW TABLES, SHOW DATABASES,
EXISTS t) are rewritten into the equivalent query over system tables before wrapping; their
names must be plain identifiers.
"""

from __future__ import annotations

import re

DEFAULT_TIMEOUT_S = 60
MAX_RESULT_ROWS = 100_000

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = rf"(?:`?(?P<db>{_IDENT})`?\.)?`?(?P<table>{_IDENT})`?"
_DESCRIBE = re.compile(rf"^(?:DESCRIBE|DESC)\s+(?:TABLE\s+)?{_NAME}$", re.IGNORECASE)
_EXISTS = re.compile(rf"^EXISTS\s+(?:TABLE\s+)?{_NAME}$", re.IGNORECASE)
_SHOW_TABLES = re.compile(rf"^SHOW\s+TABLES(?:\s+(?:FROM|IN)\s+`?(?P<db>{_IDENT})`?)?$", re.IGNORECASE)
_SHOW_DATABASES = re.compile(r"^SHOW\s+DATABASES$", re.IGNORECASE)


def _database(name: str | None) -> str:
    return f"'{name}'" if name else "currentDatabase()"


def _rewrite(statement: str) -> str:
    """DESCRIBE/EXISTS/SHOW as the query they stand for; anything else unchanged."""
    if match := _DESCRIBE.match(statement):
        return (
            "SELECT name, type FROM system.columns "
            f"WHERE database = {_database(match['db'])} AND table = '{match['table']}'"
        )
    if match := _EXISTS.match(statement):
        return (
            "SELECT count() AS result FROM system.tables "
            f"WHERE database = {_database(match['db'])} AND name = '{match['table']}'"
        )
    if match := _SHOW_TABLES.match(statement):
        return f"SELECT name FROM system.tables WHERE database = {_database(match['db'])} ORDER BY name"
    if _SHOW_DATABASES.match(statement):
        return "SELECT name FROM system.databases ORDER BY name"
    return statement


def wrap(sql: str) -> str:
    """The statement to send: the analyst's text inside a subquery, one trailing ';' allowed.

    The newline before the closing parenthesis keeps a trailing `-- comment` from swallowing it.
    """
    statement = sql.strip()
    if statement.endswith(";"):
        statement = statement[:-1].rstrip()
    if not statement:
        raise ValueError("empty query")
    return f"SELECT * FROM (\n{_rewrite(statement)}\n)"


def session_settings(timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, int | str]:
    """Settings every analyst query runs under (readonly last: it freezes the others)."""
    return {
        "max_execution_time": max(1, int(timeout_s)),
        "max_result_rows": MAX_RESULT_ROWS,
        "result_overflow_mode": "throw",
        "readonly": 1,
    }
