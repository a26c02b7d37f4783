"""Overload benchmark: a burst of 10x the scorer's capacity, on real services.

    python -m bench.overload [--factor 10] [--burst-seconds 10] [--capacity POSTS_PER_S] [--out FILE]

Starts a tansu broker and a ClickHouse server on loopback (tests.services, as the integration
tests do; or uses --kafka / --clickhouse-port), runs the production scorer (`moodwire score`,
shipped batch settings) as its own process, and measures from outside:

1. capacity: OnnxScorer on real posts (bench.corpus) in micro-batches of batch_max_size, in this
   process before the service starts (or --capacity);
2. the burst: a paced publisher (the product's Kafka producer: acks=all, lz4) sends
   factor x capacity posts/s for burst_seconds;
3. every half second: posts acknowledged by the broker, posts queryable in ClickHouse
   (uniqExact(id)), lag = acknowledged - stored, the scorer's RSS (VmRSS);
4. drain time: from the end of the burst until every acknowledged post is stored, and the
   effective drain rate; peak RSS (VmHWM of the scorer process) and its growth over the RSS it
   had before the burst;
5. nothing dropped: stored == acknowledged, one row per id after FINAL, no dead letters, and
   the scorer still stops cleanly on SIGTERM afterwards.
Everything shares this machine's cores (broker, server, publisher, sampler, scorer), so the
numbers are for a one-box deployment. Writes bench/results/overload.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moodwire.config import DEFAULT_BATCH_MAX_SIZE  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"


# ============================================================================================
# Pieces the overload and soak benchmarks share


@dataclass
class Sample:
    t_s: float  # seconds since the phase started
    acked: int
    stored: int
    rss_mb: float

    @property
    def lag(self) -> int:
        return max(0, self.acked - self.stored)


def status_kb(pid: int, field_name: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


@contextmanager
def services_for(kafka: str | None, clickhouse_port: int | None) -> Iterator[tuple[str, int]]:
    """The broker and ClickHouse to use: the given ones, or fresh ones stopped afterwards."""
    from tests import services

    broker = None if kafka else services.start_tansu()
    server = None if clickhouse_port else services.start_clickhouse()
    try:
        yield (kafka or f"127.0.0.1:{broker.port}"), (clickhouse_port or server.port)  # type: ignore[union-attr]
    finally:
        if broker is not None:
            broker.stop()
        if server is not None:
            server.stop()


def bench_settings(kafka: str, clickhouse_port: int, work: Path, tag: str, **overrides: Any) -> Any:
    from moodwire.config import load_settings

    return load_settings(
        bus="kafka",
        store="clickhouse",
        kafka_bootstrap_servers=kafka,
        posts_topic=f"bench_posts_{tag}",
        dead_letter_topic=f"bench_dlq_{tag}",
        consumer_group=f"bench_scorer_{tag}",
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        clickhouse_port=clickhouse_port,
        clickhouse_database=f"bench_{tag}",
        data_dir=work / "data",
        **overrides,
    )


def settings_env(settings: Any) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "bus",
        "store",
        "kafka_bootstrap_servers",
        "posts_topic",
        "dead_letter_topic",
        "consumer_group",
        "kafka_session_timeout_ms",
        "kafka_heartbeat_interval_ms",
        "clickhouse_port",
        "clickhouse_database",
        "batch_max_size",
        "batch_max_wait_ms",
        "data_dir",
    ):
        env[f"MOODWIRE_{name.upper()}"] = str(getattr(settings, name))
    return env


def measure_capacity(texts: list[str], batch: int, seconds: float = 6.0) -> float:
    """Posts/s of the scorer runtime, fed micro-batches of `batch` real posts in arrival order."""
    from scorer.runtime import OnnxScorer

    scorer = OnnxScorer(max_batch=batch)
    scorer.predict(texts[:batch])
    done = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        start = (done % max(1, len(texts) - batch)) if len(texts) > batch else 0
        scorer.predict(texts[start : start + batch])
        done += batch
    return done / (time.perf_counter() - began)


class ScorerProcess:
    """`moodwire score` as its own process, logging to a file."""

    def __init__(self, settings: Any, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moodwire.cli", "score"],
                env=settings_env(settings),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def rss_mb(self) -> float:
        return status_kb(self.process.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        return status_kb(self.process.pid, "VmHWM") / 1024

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM, then the exit code and how long it took."""
        if not self.alive():
            return {"exit_code": self.process.returncode, "stop_s": 0.0}
        from tests.services import stop_process

        began = time.monotonic()
        code = stop_process(self.process, signal.SIGTERM, timeout_s)
        return {"exit_code": code, "stop_s": round(time.monotonic() - began, 2)}

    def log_levels(self) -> dict[str, int]:
        counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0, "Traceback": 0, "dead-lettered": 0}
        for line in self.log_path.read_text(errors="replace").splitlines():
            for key in ("WARNING", "ERROR", "CRITICAL"):
                if f"level={key}" in line:
                    counts[key] += 1
            if line.startswith("Traceback"):
                counts["Traceback"] += 1
            if "dead-lettered a message" in line:
                counts["dead-lettered"] += 1
        return counts


class Publisher:
    """Publishes posts at a steady rate in a thread, counting those the broker acknowledged."""

    def __init__(self, settings: Any, texts: list[str], prefix: str, rate: float, seconds: float | None) -> None:
        from moodwire.bus import KafkaBus

        self._bus = KafkaBus(settings)
        self._topic = settings.posts_topic
        self._texts = texts
        self._prefix = prefix
        self._rate = rate
        self._seconds = seconds
        self._lock = threading.Lock()
        self._acked = 0
        self.send_failures = 0
        self.stop_event = threading.Event()
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join()

    def _run(self) -> None:
        producer = self._bus.producer()
        chunk = max(1, int(self._rate / 10))  # ~10 flushes a second
        sent = 0
        began = time.monotonic()
        while not self.stop_event.is_set():
            if self._seconds is not None and time.monotonic() - began >= self._seconds:
                break
            values = [post_json(self._prefix, i, self._texts[i % len(self._texts)]) for i in range(sent, sent + chunk)]
            while True:
                try:
                    for index, value in enumerate(values):
                        producer.send(self._topic, value, key=str(sent + index).encode())
                    producer.flush(timeout_s=60)
                    break
                except Exception:
                    self.send_failures += 1
                    time.sleep(0.5)
            sent += chunk
            with self._lock:
                self._acked = sent
            delay = began + sent / self._rate - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
        producer.close()
        self.finished_at = time.monotonic()


def post_json(prefix: str, index: int, text: str) -> bytes:
    symbols = ("AAPL", "TSLA", "NVDA", "BA", "MSFT", "AMZN")
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    post = {
        "id": f"{prefix}:{index}",
        "source": "file",
        "text": text,
        "published_at": now,
        "symbols": [symbols[index % 6]],
    }
    return json.dumps(post, ensure_ascii=False).encode("utf-8")


def stored(store: Any, prefix: str) -> int:
    return int(
        store.query(f"SELECT uniqExact(id) FROM {store.database}.posts WHERE id LIKE %(p)s", {"p": prefix + ":%"}).rows[
            0
        ][0]
    )


def final_rows(store: Any, prefix: str) -> int:
    return int(
        store.query(f"SELECT count() FROM {store.database}.posts FINAL WHERE id LIKE %(p)s", {"p": prefix + ":%"}).rows[
            0
        ][0]
    )


class Sampler:
    """Every `interval_s`: acknowledged, stored and the scorer's RSS."""

    def __init__(self, store: Any, prefix: str, publisher: Publisher, scorer: ScorerProcess, interval_s: float) -> None:
        self._store = store
        self._prefix = prefix
        self._publisher = publisher
        self._scorer = scorer
        self._interval_s = interval_s
        self.samples: list[Sample] = []
        self.query_errors = 0
        self._stop = threading.Event()
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._began = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        while not self._stop.is_set():
            acked = self._publisher.acked
            try:
                count = stored(self._store, self._prefix)
            except Exception:
                self.query_errors += 1
                count = self.samples[-1].stored if self.samples else 0
            self.samples.append(
                Sample(round(time.monotonic() - self._began, 2), acked, count, round(self._scorer.rss_mb(), 1))
            )
            self._stop.wait(self._interval_s)


def wait_until_serving(store: Any, settings: Any, texts: list[str], scorer: ScorerProcess, timeout_s: float) -> float:
    """Publish a few warm-up posts and wait until they are stored: the scorer has joined its group."""
    from moodwire.bus import KafkaBus

    producer = KafkaBus(settings).producer()
    count = settings.batch_max_size * 2
    for i in range(count):
        producer.send(settings.posts_topic, post_json("warmup", i, texts[i % len(texts)]))
    producer.flush()
    producer.close()
    began = time.monotonic()
    while stored(store, "warmup") < count:
        if not scorer.alive():
            raise RuntimeError(f"the scorer exited early:\n{scorer.log_path.read_text()[-3000:]}")
        if time.monotonic() - began > timeout_s:
            raise TimeoutError("the scorer did not start serving")
        time.sleep(0.25)
    return time.monotonic() - began


def downsample(samples: list[Sample], every_s: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    next_t = 0.0
    for sample in samples:
        if sample.t_s >= next_t or sample is samples[-1]:
            out.append({**asdict(sample), "lag": sample.lag})
            next_t = sample.t_s + every_s
    return out


def write_result(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


@dataclass
class Stand:
    """A scorer serving on real services: what both benchmarks run their load against."""

    settings: Any
    store: Any
    scorer: ScorerProcess
    texts: list[str]
    capacity: float
    ready_s: float


@contextmanager
def scorer_stand(
    name: str, capacity: float | None, batch_max_size: int, batch_max_wait_ms: int, kafka: str | None, clickhouse_port: int | None
) -> Iterator[Stand]:
    """Measure the runtime's capacity (unless given), start the services (or use the given ones)
    and `moodwire score`, and wait until it serves; stop and clean up afterwards."""
    from bench import corpus
    from moodwire.bus import KafkaBus
    from moodwire.store import ServerStore

    texts = corpus.load(2000)
    capacity = capacity or measure_capacity(texts, batch_max_size)
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix=f"moodwire-{name}-") as tmp, services_for(kafka, clickhouse_port) as (broker, port):
        work = Path(tmp)
        settings = bench_settings(broker, port, work, tag, batch_max_size=batch_max_size, batch_max_wait_ms=batch_max_wait_ms)
        KafkaBus(settings).ensure_topics([settings.posts_topic, settings.dead_letter_topic])
        store = ServerStore(settings)
        store.migrate()
        scorer = ScorerProcess(settings, work / "scorer.log")
        try:
            ready_s = wait_until_serving(store, settings, texts, scorer, timeout_s=180)
            yield Stand(settings, store, scorer, texts, capacity, ready_s)
        finally:
            if scorer.alive():
                scorer.stop()
            store.close()


@dataclass
class Finished:
    """What a run ends with: posts stored, the scorer's peak memory, how it stopped, its log."""

    stored: int
    rows_final: int
    peak_rss_mb: float
    samples: list[Sample]
    stop: dict[str, Any]
    log_levels: dict[str, int]


def finish(stand: Stand, sampler: Sampler, prefix: str) -> Finished:
    """Stop sampling, count what was stored, stop the scorer with SIGTERM."""
    sampler.stop()
    stored_total = stored(stand.store, prefix)
    peak_rss = stand.scorer.peak_rss_mb()
    stop = stand.scorer.stop()
    return Finished(stored_total, final_rows(stand.store, prefix), peak_rss, sampler.samples, stop, stand.scorer.log_levels())


def report_header(name: str, config: Any) -> dict[str, Any]:
    return {
        "benchmark": name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": asdict(config),
    }


# ============================================================================================
# The overload run


@dataclass(frozen=True)
class OverloadConfig:
    factor: float = 10.0
    burst_seconds: float = 10.0
    batch_max_size: int = DEFAULT_BATCH_MAX_SIZE  # as shipped
    batch_max_wait_ms: int = 250
    sample_interval_s: float = 0.5
    drain_timeout_s: float = 900.0
    capacity: float | None = None  # posts/s; measured when None


def run(
    config: OverloadConfig, kafka: str | None = None, clickhouse_port: int | None = None, out: Path | None = None
) -> dict[str, Any]:
    report = report_header("overload", config)
    with scorer_stand("overload", config.capacity, config.batch_max_size, config.batch_max_wait_ms, kafka, clickhouse_port) as stand:
        capacity = stand.capacity
        report["capacity_posts_per_s"] = round(capacity, 1)
        print(f"scorer runtime capacity: {capacity:.0f} posts/s (batches of {config.batch_max_size})")
        ready_s, scorer = stand.ready_s, stand.scorer
        baseline_rss = scorer.rss_mb()
        rate = capacity * config.factor
        prefix = "burst"
        print(
            f"scorer serving after {ready_s:.1f} s, RSS {baseline_rss:.0f} MB; "
            f"burst {rate:.0f} posts/s for {config.burst_seconds:.0f} s"
        )
        publisher = Publisher(stand.settings, stand.texts, prefix, rate, config.burst_seconds)
        began = time.monotonic()
        sampler = Sampler(stand.store, prefix, publisher, scorer, config.sample_interval_s).start()
        publisher.start()
        publisher.join()
        burst_end = publisher.finished_at or time.monotonic()
        total = publisher.acked
        print(f"burst sent: {total} posts acknowledged in {burst_end - began:.1f} s")
        while True:
            latest = sampler.latest()
            if latest is not None and latest.stored >= total and latest.t_s >= burst_end - began:
                break
            if time.monotonic() - burst_end > config.drain_timeout_s or not scorer.alive():
                break
            time.sleep(config.sample_interval_s)
        drained_at = time.monotonic()
        done = finish(stand, sampler, prefix)
    stored_total, rows_final, peak_rss, samples = done.stored, done.rows_final, done.peak_rss_mb, done.samples
    stop, levels = done.stop, done.log_levels

    max_lag = max((s.lag for s in samples), default=0)
    drain_s = drained_at - burst_end
    report.update(
        {
            "burst_rate_posts_per_s": round(rate, 1),
            "burst_seconds": round(burst_end - began, 2),
            "posts_acknowledged": total,
            "posts_stored": stored_total,
            "rows_after_final": rows_final,
            "dropped": total - stored_total,
            "drained": stored_total >= total,
            "max_lag_posts": max_lag,
            "lag_at_burst_end": next((s.lag for s in samples if s.t_s >= burst_end - began), max_lag),
            "drain_s_after_burst": round(drain_s, 1),
            "total_s_burst_start_to_drained": round(drained_at - began, 1),
            "drain_rate_posts_per_s": round(stored_total / max(1e-9, drained_at - began), 1),
            "scorer_ready_s": round(ready_s, 1),
            "rss_mb_before_burst": round(baseline_rss, 1),
            "rss_mb_peak_sampled": max((s.rss_mb for s in samples), default=0.0),
            "rss_mb_peak_vmhwm": round(peak_rss, 1),
            "rss_mb_growth_over_baseline": round(max((s.rss_mb for s in samples), default=0.0) - baseline_rss, 1),
            "scorer_stop": stop,
            "scorer_log": levels,
            "publisher_send_failures": publisher.send_failures,
            "sampler_query_errors": sampler.query_errors,
            "lag_curve": downsample(samples, 5.0),
        }
    )
    print(
        f"acknowledged {total}, stored {stored_total} (FINAL rows {rows_final}), max lag {max_lag}, "
        f"drained {drain_s:.1f} s after the burst ({report['drain_rate_posts_per_s']} posts/s overall); "
        f"RSS {baseline_rss:.0f} MB before, peak {peak_rss:.0f} MB (VmHWM); "
        f"SIGTERM -> exit {stop['exit_code']} in {stop['stop_s']} s; log {levels}"
    )
    write_result(report, out or RESULTS_DIR / "overload.json")
    print(f"wrote {out or RESULTS_DIR / 'overload.json'}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=float, default=10.0, help="burst rate as a multiple of capacity")
    parser.add_argument("--burst-seconds", type=float, default=10.0)
    parser.add_argument("--capacity", type=float, help="scorer capacity in posts/s (default: measured)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_MAX_SIZE, help="batch_max_size of the scorer (default: as shipped)")
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--kafka", help="use this broker instead of starting tansu")
    parser.add_argument("--clickhouse-port", type=int, help="use this ClickHouse server instead of starting one")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/overload.json)")
    args = parser.parse_args(argv)
    config = OverloadConfig(
        factor=args.factor,
        burst_seconds=args.burst_seconds,
        capacity=args.capacity,
        batch_max_size=args.batch_size,
        drain_timeout_s=args.drain_timeout,
    )
    report = run(config, args.kafka, args.clickhouse_port, args.out)
    return (
        0
        if report["drained"] and report["dropped"] == 0 and report["rows_after_final"] == report["posts_acknowledged"]
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
