"""Soak benchmark: a steady stream at a fraction of the scorer's capacity for a long time.

    python -m bench.soak --minutes 60 [--load 0.5] [--capacity POSTS_PER_S] [--out FILE]

The same setup as bench.overload (real tansu broker and ClickHouse server, `moodwire score` as
its own process, the product's Kafka producer publishing real posts from bench.corpus), but
paced at load x capacity (default 50%) for --minutes. Every --sample-seconds it records posts
acknowledged, posts stored, lag and the scorer's RSS. It reports:

* memory growth: RSS at the end minus RSS after the warm-up (the first 10% of the run, at most
  5 minutes), the least-squares slope in MB/hour after the warm-up, and the peak (VmHWM);
* lag: max, p95, mean and final (posts acknowledged but not yet queryable), in posts and in
  seconds of stream at the offered rate;
* errors: WARNING/ERROR lines and tracebacks in the scorer's log, dead letters, publisher send
  failures, sampler query errors; and whether every post was stored once (uniqExact and FINAL)
  and the scorer stopped cleanly on SIGTERM at the end.
Writes bench/results/soak.json and prints a summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moodwire.config import DEFAULT_BATCH_MAX_SIZE  # noqa: E402
from bench.overload import (  # noqa: E402
    RESULTS_DIR,
    Publisher,
    Sample,
    Sampler,
    downsample,
    finish,
    report_header,
    scorer_stand,
    write_result,
)


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 60.0
    load: float = 0.5
    batch_max_size: int = 64
    batch_max_wait_ms: int = 250
    sample_interval_s: float = 5.0
    drain_timeout_s: float = 300.0
    capacity: float | None = None


def slope_mb_per_hour(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    xs = [s.t_s for s in samples]
    ys = [s.rss_mb for s in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var * 3600


def percentile(values: list[int], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))])


def run(
    config: SoakConfig, kafka: str | None = None, clickhouse_port: int | None = None, out: Path | None = None
) -> dict[str, Any]:
    report = report_header("soak", config)
    seconds = config.minutes * 60
    prefix = "soak"
    with scorer_stand("soak", config.capacity, config.batch_max_size, config.batch_max_wait_ms, kafka, clickhouse_port) as stand:
        capacity, ready_s, scorer = stand.capacity, stand.ready_s, stand.scorer
        rate = capacity * config.load
        report["capacity_posts_per_s"] = round(capacity, 1)
        report["rate_posts_per_s"] = round(rate, 1)
        print(f"scorer runtime capacity {capacity:.0f} posts/s; soaking at {rate:.0f} posts/s for {config.minutes:g} min")
        publisher = Publisher(stand.settings, stand.texts, prefix, rate, seconds)
        began = time.monotonic()
        sampler = Sampler(stand.store, prefix, publisher, scorer, config.sample_interval_s).start()
        publisher.start()
        next_report = began + 60
        while publisher.finished_at is None and scorer.alive():
            time.sleep(1.0)
            latest = sampler.latest()
            if time.monotonic() >= next_report and latest is not None:
                print(f"  {latest.t_s / 60:5.1f} min: acked {latest.acked}, stored {latest.stored}, lag {latest.lag}, RSS {latest.rss_mb:.0f} MB")
                next_report += 60
        publisher.join()
        stream_end = publisher.finished_at or time.monotonic()
        total = publisher.acked
        while time.monotonic() - stream_end < config.drain_timeout_s and scorer.alive():
            latest = sampler.latest()
            if latest is not None and latest.stored >= total and latest.t_s >= stream_end - began:
                break
            time.sleep(config.sample_interval_s / 5)
        drain_s = time.monotonic() - stream_end
        done = finish(stand, sampler, prefix)
    stored_total, rows_final, peak_rss, samples = done.stored, done.rows_final, done.peak_rss_mb, done.samples
    stop, levels = done.stop, done.log_levels

    during = [s for s in samples if s.t_s <= stream_end - began]
    warmup_s = min(300.0, 0.1 * seconds)
    steady = [s for s in during if s.t_s >= warmup_s] or during
    lags = [s.lag for s in during]
    rss_after_warmup = steady[0].rss_mb if steady else 0.0
    rss_end = steady[-1].rss_mb if steady else 0.0
    report.update(
        {
            "minutes": round((stream_end - began) / 60, 2),
            "scorer_ready_s": round(ready_s, 1),
            "posts_acknowledged": total,
            "posts_stored": stored_total,
            "rows_after_final": rows_final,
            "dropped": total - stored_total,
            "drain_s_after_stream": round(drain_s, 1),
            "memory": {
                "warmup_s": warmup_s,
                "rss_mb_after_warmup": rss_after_warmup,
                "rss_mb_end": rss_end,
                "growth_mb": round(rss_end - rss_after_warmup, 1),
                "slope_mb_per_hour": round(slope_mb_per_hour(steady), 1),
                "rss_mb_peak_vmhwm": round(peak_rss, 1),
            },
            "lag_posts": {
                "max": max(lags, default=0),
                "p95": percentile(lags, 95),
                "mean": round(statistics.fmean(lags), 1) if lags else 0.0,
                "final": lags[-1] if lags else 0,
                "max_seconds_of_stream": round(max(lags, default=0) / rate, 2),
            },
            "errors": {
                "scorer_log": levels,
                "publisher_send_failures": publisher.send_failures,
                "sampler_query_errors": sampler.query_errors,
            },
            "scorer_stop": stop,
            "samples": downsample(samples, max(config.sample_interval_s, seconds / 200)),
        }
    )
    memory, lag = report["memory"], report["lag_posts"]
    print(
        f"{total} posts acknowledged, {stored_total} stored (FINAL rows {rows_final}) in {report['minutes']} min; "
        f"RSS {memory['rss_mb_after_warmup']} -> {memory['rss_mb_end']} MB (growth {memory['growth_mb']} MB, "
        f"{memory['slope_mb_per_hour']} MB/h, peak {memory['rss_mb_peak_vmhwm']} MB); lag max {lag['max']} "
        f"p95 {lag['p95']} final {lag['final']}; errors {report['errors']}; SIGTERM -> exit {stop['exit_code']} "
        f"in {stop['stop_s']} s"
    )
    target = out or RESULTS_DIR / "soak.json"
    write_result(report, target)
    print(f"wrote {target}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to stream (default 60)")
    parser.add_argument("--load", type=float, default=0.5, help="offered rate as a fraction of capacity")
    parser.add_argument("--capacity", type=float, help="scorer capacity in posts/s (default: measured)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_MAX_SIZE, help="batch_max_size of the scorer (default: as shipped)")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--kafka", help="use this broker instead of starting tansu")
    parser.add_argument("--clickhouse-port", type=int, help="use this ClickHouse server instead of starting one")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/soak.json)")
    args = parser.parse_args(argv)
    config = SoakConfig(
        minutes=args.minutes,
        load=args.load,
        capacity=args.capacity,
        batch_max_size=args.batch_size,
        sample_interval_s=args.sample_seconds,
    )
    report = run(config, args.kafka, args.clickhouse_port, args.out)
    ok = (
        report["dropped"] == 0
        and report["rows_after_final"] == report["posts_acknowledged"]
        and report["scorer_stop"]["exit_code"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
