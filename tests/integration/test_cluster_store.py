"""moodwire on a sharded ClickHouse cluster: two real clickhouse-server processes as two shards
(remote_servers written by the test), against the session's single server on the same input.

* migrations lay out every node: each table as the shard's own `t_local` and a Distributed `t`
  with the same columns as on a single server; every view there;
* inserts are on their shards when they return (a read right after sees them), a post is on one
  shard whatever number of copies is inserted, and the layout guards refuse a mixed-up database;
* the real scorer (`moodwire score`) and the real alert job over one stream give the same counts,
  the same alerts, the same `moodwire sql` answers and the same report as a single server;
* every dashboard panel runs through the Distributed tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerting.detector_settings import DetectorSettings
from alerting.engine import EngineSettings
from alerting.job import AlertJob
from alerting.lifecycle import LifecycleSettings
from moodwire import counting, report
from moodwire.config import Settings
from moodwire.store import ServerStore, StoreRejected
from tests import services
from tests.conftest import unique
from tests.integration.fault_helpers import distinct_ids, produce, scorer_env, wait_for
from tests.integration.test_dashboards import _check, _run_all, load_stream, scored_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER = "moodwire_test"


@pytest.fixture(scope="module")
def cluster_nodes() -> Iterator[list[services.Service]]:
    nodes = services.start_clickhouse_cluster(CLUSTER, shards=2)
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def on_cluster(settings: Settings, nodes: list[services.Service], node: int = 0) -> Settings:
    return settings.model_copy(update={"clickhouse_port": nodes[node].port, "clickhouse_cluster": CLUSTER})


def node_store(settings: Settings, node: services.Service) -> ServerStore:
    """One node on its own (no cluster): to look at what a shard holds."""
    return ServerStore(settings.model_copy(update={"clickhouse_port": node.port, "clickhouse_cluster": None}))


def tables(store: ServerStore) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """name -> (engine, columns) of every table and view of the store's database on its server."""
    engines = dict(
        store.query("SELECT name, engine FROM system.tables WHERE database = %(db)s", {"db": store.database}).rows
    )
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, name, kind in store.query(
        "SELECT table, name, type FROM system.columns WHERE database = %(db)s", {"db": store.database}
    ).rows:
        columns.setdefault(table, []).append((name, kind))
    return {name: (engine, tuple(columns.get(name, ()))) for name, engine in engines.items()}


# ------------------------------------------------------------------------------ layout


def test_migrations_lay_out_every_node_as_a_single_server_plus_distributed_tables(
    server_settings: Settings, cluster_nodes: list[services.Service]
) -> None:
    single = ServerStore(server_settings)
    single.migrate()
    expected = tables(single)
    settings = on_cluster(server_settings, cluster_nodes)
    store = ServerStore(settings)
    store.migrate()
    store.migrate()  # a second start (or a second service) changes nothing
    versions = {row[0] for row in single.query(f"SELECT version FROM {single.database}.schema_migrations").rows}
    for node in cluster_nodes:
        local = node_store(settings, node)
        got = tables(local)
        for name, (engine, columns) in expected.items():
            if name == "schema_migrations":  # each node's own record of what it applied
                assert got[name] == (engine, columns)
            elif engine.endswith("MergeTree"):
                assert got[f"{name}_local"] == (engine, columns), name
                assert got[name] == ("Distributed", columns), name
            else:  # views and materialized views
                assert got[name][0] == engine, name
        applied = local.query(f"SELECT version FROM {local.database}.schema_migrations").rows
        assert sorted(v for (v,) in applied) == sorted(versions)
        local.close()
    store.close()
    single.close()


def test_inserts_are_on_their_shards_when_they_return_and_a_post_lives_on_one_shard(
    server_settings: Settings, cluster_nodes: list[services.Service]
) -> None:
    settings = on_cluster(server_settings, cluster_nodes)
    store = ServerStore(settings)
    store.migrate()
    posts = scored_stream().posts[:1200]
    batches = [posts[start : start + 100] for start in range(0, len(posts), 100)]
    for batch in batches:
        store.insert_posts(batch)
        # What the scorer's already-stored check asks right after an insert.
        ids = tuple(p.post.id for p in batch)
        seen = store.query(f"SELECT uniqExact(id) FROM {store.database}.posts WHERE id IN %(ids)s", {"ids": ids}).rows
        assert seen == [(len(batch),)], "an insert returned before its rows were readable on their shards"
    # The same posts again, scored a second time (a redelivery that raced a rebalance).
    store.insert_posts([p.model_copy(update={"scored_at": p.scored_at + timedelta(minutes=1)}) for p in posts[:300]])

    per_node = []
    for node in cluster_nodes:
        local = node_store(settings, node)
        ids = [row[0] for row in local.query(f"SELECT id FROM {local.database}.posts_local").rows]
        per_node.append(ids)
        local.close()
    assert all(len(set(ids)) > len(posts) // 4 for ids in per_node), "one shard got (almost) nothing"
    assert not set(per_node[0]) & set(per_node[1]), "a post's copies landed on two shards"
    assert sum(len(set(ids)) for ids in per_node) == len(posts)
    assert sum(len(ids) for ids in per_node) == len(posts) + 300
    final = store.query(f"SELECT count() FROM {store.database}.posts FINAL").rows[0][0]
    assert final == len(posts)
    counted = store.query(f"SELECT uniqExactMerge(posts) FROM {store.database}.{counting.STORY_TABLE}").rows[0][0]
    assert counted == len(posts)
    store.close()


def test_a_database_laid_out_for_one_server_and_a_cluster_are_not_mixed_up(
    server_settings: Settings, cluster_nodes: list[services.Service]
) -> None:
    single = server_settings.model_copy(update={"clickhouse_port": cluster_nodes[0].port})
    ServerStore(single).migrate()
    with pytest.raises(StoreRejected, match="not a Distributed table"):
        ServerStore(on_cluster(single, cluster_nodes)).migrate()

    sharded = on_cluster(server_settings.model_copy(update={"clickhouse_database": unique("db")}), cluster_nodes)
    ServerStore(sharded).migrate()
    with pytest.raises(StoreRejected, match="set clickhouse_cluster"):
        ServerStore(sharded.model_copy(update={"clickhouse_cluster": None})).migrate()
    with pytest.raises(StoreRejected, match="not in the remote_servers"):
        ServerStore(sharded.model_copy(update={"clickhouse_cluster": "no_such_cluster"})).migrate()


# ------------------------------------------------------------------------------ same answers

NEGATIVE = (
    "${s} shares plunge after fraud charges, investors furious about the collapse #{i}",
    "${s} is a disaster: guidance slashed, layoffs announced, stock crashes #{i}",
    "Terrible quarter for ${s}, losses widen and the CEO resigns in disgrace #{i}",
)
NEUTRAL = ("${s} will hold its annual shareholder meeting on Tuesday #{i}", "${s} files its quarterly 10-Q report with the SEC #{i}")
POSITIVE = (
    "${s} beats estimates and raises guidance, shares surge to a record high #{i}",
    "Great news for ${s}: strong sales growth and a bigger buyback #{i}",
)


def spike_stream(now: datetime, spike_start: datetime) -> list[dict[str, Any]]:
    """Four hours of BA and AAPL posts at ~20% negative, then 12 minutes of mostly negative BA,
    as raw posts for the bus (the model labels them); some share a story id, so a story's posts
    sit on both shards and its stance is that of its smallest id."""
    rng = random.Random(16)
    posts: list[dict[str, Any]] = []
    minute = now - timedelta(hours=4)
    while minute < now - timedelta(minutes=2):
        for symbol in ("BA", "AAPL"):
            in_spike = symbol == "BA" and spike_start <= minute < spike_start + timedelta(minutes=12)
            cell = rng.randint(2, 4) + (6 if in_spike else 0)
            story = f"story:{symbol}:{int(minute.timestamp())}" if rng.random() < 0.3 else None
            for position in range(cell):
                negative = in_spike or rng.random() < 0.2
                templates = NEGATIVE if negative else rng.choice((NEUTRAL, POSITIVE))
                index = len(posts)
                published = minute + timedelta(seconds=rng.randint(0, 59))
                post = {
                    "id": f"cl:{index:05d}",
                    "source": "file",
                    "text": rng.choice(templates).replace("{s}", symbol).replace("{i}", str(index)),
                    "published_at": published.isoformat().replace("+00:00", "Z"),
                    "symbols": [symbol],
                }
                if story is not None and position < 3:
                    post["story_id"] = story
                posts.append(post)
        minute += timedelta(minutes=1)
    return posts


def moodwire(*args: str) -> list[str]:
    return [sys.executable, "-m", "moodwire.cli", *args]


def start_scorer(settings: Settings, log_file: Path) -> subprocess.Popen[bytes]:
    env = scorer_env(settings, clickhouse_cluster=settings.clickhouse_cluster or "", inference_batch_size=1)
    return subprocess.Popen(moodwire("score"), env=env, stdout=subprocess.DEVNULL, stderr=log_file.open("wb"))


def run_alert_job(store: ServerStore, settings: Settings, now: datetime) -> list[tuple[Any, ...]]:
    """The real alert job with a fixed clock (both stores judge the same minutes); -> alert rows."""
    def job() -> AlertJob:
        return AlertJob(
            store, [], DetectorSettings.from_settings(settings), LifecycleSettings(channels=()),
            engine_settings=EngineSettings.from_settings(settings), clock=lambda: now,
        )

    job().run_once()
    assert job().run_once() == [], "a restarted job fired again: its state was not read back"
    return store.query(
        f"SELECT symbol, kind, severity, status, fired_at, window_minutes, window_posts, window_negative, "
        f"window_share, baseline_share, statistic FROM {store.database}.alerts "
        "ORDER BY fired_at, symbol, status"
    ).rows


def minute_counts(store: ServerStore) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    rows = store.query(counting.minute_counts_sql(store.database)).dicts()
    return {
        (r["symbol"], r["minute"]): (r["stories"], r["negative"], r["neutral"], r["positive"], r["posts"], float(r["expected_negative"]))
        for r in rows
    }


def sql_json(settings: Settings, query: str) -> Any:
    env = scorer_env(settings, clickhouse_cluster=settings.clickhouse_cluster or "", inference_batch_size=1)
    done = subprocess.run(moodwire("sql", query, "--format", "json"), env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


def same(got: Any, expected: Any, where: str = "") -> None:
    """Equal, floats within 0.01 (sums in another order). The scorers score each post alone
    (start_scorer): dynamic int8 scales activations per batch, so a post's probabilities (up to
    ~0.1) and even its label would move with whichever posts shared its batch."""
    if isinstance(expected, float):
        assert isinstance(got, float) and math.isclose(got, expected, rel_tol=0.01, abs_tol=0.01), f"{where}: {got} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), f"{where}: keys differ"
        for key in expected:
            same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(expected), f"{where}: {len(got)} items, {len(expected)} expected"
        for index, (g, e) in enumerate(zip(got, expected)):
            same(g, e, f"{where}[{index}]")
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def test_the_cluster_counts_and_alerts_as_a_single_server_on_the_same_stream(
    server_settings: Settings, cluster_nodes: list[services.Service], tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    posts = spike_stream(now, spike_start=now - timedelta(minutes=40))
    replayed = posts[:200]  # a file read twice: the scorers must not count these twice
    produce(server_settings, posts + replayed)
    single = server_settings.model_copy(update={"data_dir": tmp_path / "single"})
    # Its own consumer group over the same topic; written through node 1, read below through node 2.
    sharded = on_cluster(
        server_settings.model_copy(
            update={"consumer_group": unique("cluster"), "clickhouse_database": unique("cluster"), "data_dir": tmp_path / "cluster"}
        ),
        cluster_nodes,
    )
    single_store, cluster_store = ServerStore(single), ServerStore(sharded)
    single_store.migrate()
    cluster_store.migrate()
    scorers = [start_scorer(s, tmp_path / f"{name}.log") for name, s in (("single", single), ("cluster", sharded))]
    try:
        for store, name in ((single_store, "single"), (cluster_store, "cluster")):
            wait_for(lambda store=store: distinct_ids(store) >= len(posts), 240, f"the {name} store to hold every post")
    finally:
        codes = [services.stop_process(p, signal.SIGTERM, timeout_s=60) for p in scorers]
    assert codes == [0, 0], [(tmp_path / f"{n}.log").read_text()[-2000:] for n in ("single", "cluster")]

    # The posts really are spread over both shards.
    for node in cluster_nodes:
        local = node_store(sharded, node)
        assert local.query(f"SELECT count() FROM {local.database}.posts_local").rows[0][0] > len(posts) // 4
        local.close()

    counts = minute_counts(single_store)
    assert sum(c[4] for c in counts.values()) == len(posts)
    same(minute_counts(cluster_store), counts, "minute counts")

    alerts = run_alert_job(single_store, single, now)
    assert [(a[0], a[1], a[3]) for a in alerts] == [("BA", "negative-spike", "firing")], alerts
    same(run_alert_job(cluster_store, sharded, now), alerts, "alerts")

    # Analysts read the same names: `moodwire sql` (through the other node) and the report.
    question = "SELECT symbol, count() AS n, uniqExact(id) AS ids FROM posts GROUP BY symbol ORDER BY symbol"
    through_node_2 = on_cluster(sharded, cluster_nodes, node=1)
    assert sql_json(through_node_2, question) == sql_json(single, question)
    window = (now - timedelta(hours=5), now)
    # Every negative post of the window (fewer than 500), so the list does not depend on how the
    # near-equal scores of its last places fall.
    single_report, cluster_report = (
        dataclasses.asdict(report.collect(store.analyst_query, *window, top_posts=500, now=now))
        for store in (single_store, cluster_store)
    )
    assert single_report["alerts"] and 0 < len(single_report["posts"]) < 500
    for data in (single_report, cluster_report):
        data["posts"] = {post["text"]: post for post in data["posts"]}
    same(cluster_report, single_report, "report")
    single_store.close()
    cluster_store.close()


def test_every_dashboard_panel_reads_the_cluster_through_the_distributed_tables(
    server_settings: Settings, cluster_nodes: list[services.Service]
) -> None:
    store = ServerStore(on_cluster(server_settings, cluster_nodes))
    stream = scored_stream()
    load_stream(store, stream)
    for interval_s in (20, 300):
        _check(_run_all(store, stream, interval_s), stream)
    store.close()
