"""The schema on a sharded ClickHouse cluster: every migration, rendered for every node by one rule.

A migration is written once, for one server (moodwire.store_schema). With `clickhouse_cluster`
set, each of its statements is rewritten by the kind of statement it is, never by the table it
names, so a migration added later is rendered the same way:

* `CREATE TABLE db.t (...) ENGINE = ...MergeTree...` becomes the shard's own table `db.t_local`
  and, under the name every reader uses, `db.t`, a Distributed table over the `t_local` of every
  shard. Rows are placed by a hash of the plain columns of the table's sorting key: a function of
  the key, so rows that a ReplacingMergeTree collapses (the same key) always meet on one shard.
  For `posts` that is a hash of the post id, so a replayed post lands where its first copy is.
* `CREATE MATERIALIZED VIEW ... TO db.t AS SELECT ... FROM db.s` and `INSERT INTO db.t SELECT ...
  FROM db.s` run on the shards' own tables (`t_local`, `s_local`): each shard aggregates its own
  posts, and a read through the Distributed table merges the aggregate states of all shards
  (uniqExact sets, argMin by id), so every count is the count a single server gives.
* `CREATE VIEW` is kept: it reads through the Distributed tables.
* `ALTER TABLE db.t ADD|DROP|MODIFY COLUMN` changes both `t_local` and `t` (their columns must
  match); any other ALTER (a mutation) runs on `t_local`. `DROP TABLE db.t` drops both.
* Anything else is refused with the statement named, so a migration of a new shape fails its
  unit test rather than a production cluster.

ClickHouse 18.16 cannot run `ON CLUSTER` DDL without ZooKeeper; the store applies the rendered
statements on every node it finds in `system.clusters`, which works on every version. Each node
records what it applied in its own (not distributed) `schema_migrations`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from moodwire.store_schema import Migration

LOCAL_SUFFIX = "_local"
# Tables whose names this module never rewrites: the migration runner's own bookkeeping, one per node.
_NODE_TABLES = frozenset({"schema_migrations"})

_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<db>\w+)\.(?P<table>\w+)\s*\(.*\)\s*"
    r"ENGINE\s*=\s*(?P<engine>\w+)",
    re.IGNORECASE | re.DOTALL,
)
_CREATE_MATERIALIZED_VIEW = re.compile(r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s", re.IGNORECASE)
_CREATE_VIEW = re.compile(r"^\s*CREATE\s+VIEW\s", re.IGNORECASE)
_INSERT_SELECT = re.compile(r"^\s*INSERT\s+INTO\s+\w+\.\w+\s.*\bSELECT\b", re.IGNORECASE | re.DOTALL)
_ALTER = re.compile(r"^\s*ALTER\s+TABLE\s+(?P<db>\w+)\.(?P<table>\w+)\s+(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_COLUMN_CHANGE = re.compile(r"^(?:ADD|DROP|MODIFY|CLEAR|COMMENT|RENAME)\s+COLUMN\b", re.IGNORECASE)
_DROP_TABLE = re.compile(r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<db>\w+)\.(?P<table>\w+)\s*$", re.IGNORECASE)
_ORDER_BY = re.compile(
    r"\bORDER\s+BY\s+(?P<key>.+?)\s*(?:\bPRIMARY\s+KEY\b|\bSAMPLE\s+BY\b|\bTTL\b|\bSETTINGS\b|$)",
    re.IGNORECASE | re.DOTALL,
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnrenderableStatement(ValueError):
    """A migration statement of a kind the cluster rule does not know."""


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def sharded_tables(migrations: Iterable[Migration]) -> frozenset[str]:
    """Every MergeTree-family table any migration creates: the ones that live on the shards."""
    names = set()
    for migration in migrations:
        for statement in migration.statements:
            match = _CREATE_TABLE.match(statement)
            if match and match["engine"].endswith("MergeTree") and match["table"] not in _NODE_TABLES:
                names.add(match["table"])
    return frozenset(names)


def sharding_key(create_table: str) -> str:
    """A hash of the plain columns of the sorting key (`rand()` when it has none)."""
    match = _ORDER_BY.search(create_table)
    if match is None:
        return "rand()"
    key = match["key"].strip()
    if key.startswith("(") and key.endswith(")") and _balanced(key[1:-1]):
        key = key[1:-1]
    columns = [part.strip() for part in _split_top_level(key) if _IDENTIFIER.match(part.strip())]
    return f"cityHash64({', '.join(columns)})" if columns else "rand()"


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current.append(char)
    parts.append("".join(current))
    return parts


def _to_local(statement: str, database: str, sharded: frozenset[str]) -> str:
    """Every `database.t` of a sharded table t in the statement, as `database.t_local`."""
    if not sharded:
        return statement
    names = "|".join(sorted(map(re.escape, sharded), key=len, reverse=True))
    pattern = re.compile(rf"\b{re.escape(database)}\.({names})\b")
    return pattern.sub(lambda m: f"{database}.{local_name(m[1])}", statement)


def render_statement(statement: str, database: str, cluster: str, sharded: frozenset[str]) -> list[str]:
    """The statements one node runs for one statement written for a single server."""
    if match := _CREATE_TABLE.match(statement):
        table = match["table"]
        if table not in sharded:
            raise UnrenderableStatement(f"a table that is not of the MergeTree family: {statement.strip()[:200]}")
        local = local_name(table)
        return [
            _to_local(statement, database, sharded),
            f"CREATE TABLE IF NOT EXISTS {database}.{table} AS {database}.{local} "
            f"ENGINE = Distributed({cluster}, {database}, {local}, {sharding_key(statement)})",
        ]
    if _CREATE_MATERIALIZED_VIEW.match(statement) or _INSERT_SELECT.match(statement):
        return [_to_local(statement, database, sharded)]
    if _CREATE_VIEW.match(statement):
        return [statement]
    if match := _ALTER.match(statement):
        table = match["table"]
        if table not in sharded:
            return [statement]
        local = _to_local(statement, database, sharded)
        # The Distributed table must keep the local table's columns; a mutation touches the data only.
        return [local, statement] if _COLUMN_CHANGE.match(match["rest"].strip()) else [local]
    if match := _DROP_TABLE.match(statement):
        table = match["table"]
        if table not in sharded:
            return [statement]
        return [statement, f"DROP TABLE IF EXISTS {database}.{local_name(table)}"]
    raise UnrenderableStatement(f"no cluster rendering for this statement: {statement.strip()[:200]}")


def cluster_migrations(migrations: Sequence[Migration], database: str, cluster: str) -> list[Migration]:
    """The same migrations (same versions and descriptions), as every node of the cluster runs them."""
    sharded = sharded_tables(migrations)
    return [
        Migration(
            migration.version,
            migration.description,
            tuple(
                rendered
                for statement in migration.statements
                for rendered in render_statement(statement, database, cluster, sharded)
            ),
        )
        for migration in migrations
    ]
