"""The cluster rendering of the schema: one rule by kind of statement, for every migration."""

from __future__ import annotations

import re

import pytest

from moodwire import store_cluster, store_schema
from moodwire.store_cluster import UnrenderableStatement, cluster_migrations, render_statement, sharding_key
from moodwire.store_schema import Migration

DB = "mw"
CLUSTER = "shards"


@pytest.mark.parametrize("flavour", ["modern", "legacy"])
def test_every_migration_renders_for_a_cluster(flavour: store_schema.Flavour) -> None:
    plain = store_schema.migrations(DB, flavour)
    rendered = cluster_migrations(plain, DB, CLUSTER)
    assert [(m.version, m.description) for m in rendered] == [(m.version, m.description) for m in plain]
    statements = [s for m in rendered for s in m.statements]
    # Every table a migration creates exists twice: the shard's own and a Distributed one over all shards.
    created = [m for s in statements if (m := re.match(r"\s*CREATE TABLE IF NOT EXISTS mw\.(\w+)", s))]
    tables = {m[1] for m in created}
    for table in store_cluster.sharded_tables(plain):
        assert f"{table}_local" in tables
        distributed = [s for s in statements if s.startswith(f"CREATE TABLE IF NOT EXISTS mw.{table} AS mw.{table}_local")]
        assert len(distributed) == 1
        assert f"ENGINE = Distributed({CLUSTER}, {DB}, {table}_local, " in distributed[0]


def test_posts_are_placed_by_a_hash_of_the_post_id() -> None:
    statements = [s for m in cluster_migrations(store_schema.migrations(DB, "legacy"), DB, CLUSTER) for s in m.statements]
    (posts,) = [s for s in statements if s.startswith("CREATE TABLE IF NOT EXISTS mw.posts AS")]
    assert posts.endswith("Distributed(shards, mw, posts_local, cityHash64(id))")


def test_the_materialized_view_and_the_backfill_run_on_the_shards_own_tables() -> None:
    statements = [s for m in cluster_migrations(store_schema.migrations(DB, "legacy"), DB, CLUSTER) for s in m.statements]
    (view,) = [s for s in statements if "MATERIALIZED VIEW IF NOT EXISTS mw.ticker_stories_mv" in s]
    assert "TO mw.ticker_stories_local AS" in view and "FROM mw.posts_local" in view
    assert not re.search(r"mw\.posts\b", view) and not re.search(r"mw\.ticker_stories\b", view)
    (backfill,) = [s for s in statements if s.startswith("INSERT INTO")]
    assert backfill.startswith("INSERT INTO mw.ticker_stories_local") and "FROM mw.posts_local" in backfill
    # Analysts' view reads through the Distributed table, like every reader.
    (targets,) = [s for s in statements if "VIEW IF NOT EXISTS mw.post_targets" in s]
    assert "FROM mw.posts\n" in targets


def test_a_migration_added_later_is_rendered_by_the_same_rule() -> None:
    later = Migration(
        3,
        "a table added later",
        (
            """
CREATE TABLE IF NOT EXISTS mw.detector_minutes (
    symbol String,
    minute DateTime('UTC'),
    state String,
    revision UInt64
) ENGINE = ReplacingMergeTree(revision)
ORDER BY (symbol, toStartOfHour(minute), minute)""",
            "ALTER TABLE mw.detector_minutes ADD COLUMN note String DEFAULT ''",
            "ALTER TABLE mw.detector_minutes DELETE WHERE minute < now() - 86400",
            "ALTER TABLE mw.posts MODIFY COLUMN author String DEFAULT ''",
            "DROP TABLE IF EXISTS mw.detector_minutes",
            "CREATE VIEW IF NOT EXISTS mw.recent AS SELECT * FROM mw.detector_minutes",
        ),
    )
    (rendered,) = cluster_migrations([*store_schema.migrations(DB, "legacy"), later], DB, CLUSTER)[-1:]
    assert rendered.statements[0].lstrip().startswith("CREATE TABLE IF NOT EXISTS mw.detector_minutes_local (")
    assert rendered.statements[1] == (
        "CREATE TABLE IF NOT EXISTS mw.detector_minutes AS mw.detector_minutes_local "
        "ENGINE = Distributed(shards, mw, detector_minutes_local, cityHash64(symbol, minute))"
    )
    assert rendered.statements[2:] == (
        "ALTER TABLE mw.detector_minutes_local ADD COLUMN note String DEFAULT ''",
        "ALTER TABLE mw.detector_minutes ADD COLUMN note String DEFAULT ''",
        "ALTER TABLE mw.detector_minutes_local DELETE WHERE minute < now() - 86400",
        "ALTER TABLE mw.posts_local MODIFY COLUMN author String DEFAULT ''",
        "ALTER TABLE mw.posts MODIFY COLUMN author String DEFAULT ''",
        "DROP TABLE IF EXISTS mw.detector_minutes",
        "DROP TABLE IF EXISTS mw.detector_minutes_local",
        "CREATE VIEW IF NOT EXISTS mw.recent AS SELECT * FROM mw.detector_minutes",
    )


@pytest.mark.parametrize(
    ("order_by", "key"),
    [
        ("ORDER BY (toStartOfHour(published_at), id)", "cityHash64(id)"),
        ("ORDER BY name", "cityHash64(name)"),
        ("ORDER BY (alert_id, status)", "cityHash64(alert_id, status)"),
        ("ORDER BY tuple()", "rand()"),
        ("ORDER BY (symbol, minute) SETTINGS index_granularity = 8192", "cityHash64(symbol, minute)"),
    ],
)
def test_the_sharding_key_hashes_the_plain_columns_of_the_sorting_key(order_by: str, key: str) -> None:
    assert sharding_key(f"CREATE TABLE IF NOT EXISTS mw.t (a String) ENGINE = MergeTree() {order_by}") == key


def test_names_that_merely_start_like_a_table_are_left_alone() -> None:
    sharded = frozenset({"posts", "ticker_stories"})
    statement = "INSERT INTO mw.ticker_stories SELECT * FROM mw.posts_archive JOIN mw.posts USING id"
    (rendered,) = render_statement(statement, DB, CLUSTER, sharded)
    assert rendered.startswith("INSERT INTO mw.ticker_stories_local SELECT * FROM mw.posts_archive JOIN mw.posts_local")


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE IF NOT EXISTS mw.scratch (a String) ENGINE = Memory",
        "RENAME TABLE mw.posts TO mw.posts_old",
        "OPTIMIZE TABLE mw.posts FINAL",
    ],
)
def test_a_statement_of_an_unknown_kind_is_refused_by_name(statement: str) -> None:
    migration = Migration(9, "odd", (statement,))
    with pytest.raises(UnrenderableStatement, match=re.escape(statement[:20])):
        cluster_migrations([*store_schema.migrations(DB, "legacy"), migration], DB, CLUSTER)
