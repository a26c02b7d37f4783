"""Inserts into a sharded cluster, synchronous against asynchronous, beside a single server.

    python -m bench.cluster_bench [--batches N] [--out FILE]
    moodwire bench --suite cluster

Starts a single ClickHouse server and two servers as the two shards of one cluster (on loopback,
private data dirs: tests.services, as the integration tests do), migrates a store on each, and
inserts the same scored posts (corpus texts, fresh ids) in the scorer's batches (batch_max_size
rows) through `ServerStore.insert_posts`, exactly as the scorer does, three ways:

* `single`: one server;
* `cluster_async`: the cluster's Distributed tables with ClickHouse's default
  (insert_distributed_sync = 0: the initiator spools the rows and sends them to their shards
  later, in the background);
* `cluster_sync`: what moodwire uses on a cluster (insert_distributed_sync = 1: the insert
  returns once every shard has its rows).

After every insert the scorer's next question is asked at once: how many of the batch's ids the
table has (the already-stored check of the next batch, and of a redelivered one). Reported per
way: insert latency p50/p99, rows/s over the inserts alone, and the share of a batch that was
not readable right after its insert returned. Writes bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import corpus  # noqa: E402
from bench.overload import write_result  # noqa: E402
from moodwire.config import DEFAULT_BATCH_MAX_SIZE  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "cluster.json"
CLUSTER = "bench_cluster"


def _scored(posts: list[corpus.CorpusPost], prefix: str) -> list[Any]:
    from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
    from moodwire.schema import Post, ScoredPost, TargetScore

    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for index, item in enumerate(posts):
        polarity = POLARITY_LABELS[index % 3]
        probs = {label: 0.8 if label == polarity else 0.1 for label in POLARITY_LABELS}
        post = Post(
            id=f"{prefix}:{index}",
            source="file",
            text=item.text,
            published_at=now - timedelta(seconds=index % 3600),
            symbols=item.symbols,
        )
        out.append(
            ScoredPost(
                post=post,
                polarity=polarity,
                polarity_score=probs["positive"] - probs["negative"],
                emotion="neutral",
                polarity_probs=probs,
                emotion_probs={label: 1 / len(EMOTION_LABELS) for label in EMOTION_LABELS},
                model_version="bench",
                scored_at=now,
                targets=tuple(
                    TargetScore(symbol=s, polarity=polarity, polarity_score=0.0, polarity_probs=probs, basis="post")
                    for s in item.symbols
                ),
            )
        )
    return out


def _measure(store: Any, posts: list[Any], batch: int) -> dict[str, Any]:
    latencies, missed = [], 0
    for start in range(0, len(posts), batch):
        rows = posts[start : start + batch]
        began = time.perf_counter()
        store.insert_posts(rows)
        latencies.append(time.perf_counter() - began)
        ids = tuple(p.post.id for p in rows)
        seen = store.query(f"SELECT uniqExact(id) FROM {store.database}.posts WHERE id IN %(ids)s", {"ids": ids}).rows[0][0]
        missed += len(rows) - int(seen)
    return {
        "batches": len(latencies),
        "rows": len(posts),
        "insert_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "insert_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "insert_rows_per_s": round(len(posts) / sum(latencies), 1),
        "unreadable_right_after_insert": round(missed / len(posts), 4),
    }


def run(batches: int = 40, batch: int = DEFAULT_BATCH_MAX_SIZE, out: Path | None = RESULTS, echo: Callable[[str], None] = print) -> dict[str, Any]:
    from bench.runtime_bench import describe_machine
    from moodwire.config import load_settings
    from moodwire.store import ServerStore

    if str(REPO) not in sys.path:  # tests/ is not installed; `moodwire bench` runs from the checkout
        sys.path.insert(0, str(REPO))
    from tests import services

    source = corpus.load_posts()
    needed = batches * batch
    items = (source * (needed // len(source) + 1))[:needed]
    report: dict[str, Any] = {
        "benchmark": "cluster",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "batch_rows": batch,
        "definitions": {
            "insert_*": "ServerStore.insert_posts of one batch, call to return",
            "unreadable_right_after_insert": "share of a batch's ids a query sent right after the insert returned did not find",
        },
    }
    single = services.start_clickhouse()
    nodes = services.start_clickhouse_cluster(CLUSTER, shards=2)
    try:
        with tempfile.TemporaryDirectory(prefix="moodwire-cluster-bench-") as tmp:
            base = dict(store="clickhouse", data_dir=Path(tmp), clickhouse_database=f"bench_{uuid.uuid4().hex[:8]}")
            ways = {
                "single": (load_settings(**base, clickhouse_port=single.port), {}),
                "cluster_async": (
                    load_settings(**base, clickhouse_port=nodes[0].port, clickhouse_cluster=CLUSTER),
                    {"insert_distributed_sync": 0},
                ),
                "cluster_sync": (load_settings(**base, clickhouse_port=nodes[0].port, clickhouse_cluster=CLUSTER), {}),
            }
            results: dict[str, Any] = {}
            for name, (settings, override) in ways.items():
                store = ServerStore(settings)
                store.migrate()
                # ClickHouse's default, which moodwire does not use: set on the pipeline's client only
                # for this measurement.
                store._client.settings.update(override)
                echo(f"{name}: {batches} inserts of {batch} rows ...")
                results[name] = _measure(store, _scored(items, f"{name}-{uuid.uuid4().hex[:6]}"), batch)
                echo(f"  {json.dumps(results[name])}")
                store.close()
            report["results"] = results
    finally:
        single.stop()
        for node in nodes:
            node.stop()
    if out is not None:
        write_result(report, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cluster inserts, synchronous against asynchronous (see the module docstring)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run(args.batches, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
