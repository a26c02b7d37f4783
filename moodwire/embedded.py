"""`moodwire run`: ingest, scorer and alerting as threads of one process, sharing one store.

The services are the same code as in production; only the bus and store behind them differ
(by default the in-process durable log and chDB under the data dir).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from moodwire.bus import open_bus
from moodwire.config import Settings
from moodwire.query_server import QueryServer
from moodwire.store import StoreUnavailable, open_store

log = logging.getLogger(__name__)


def bundled_sample() -> Path:
    return Path(str(resources.files("ingest") / "data" / "sample_stream.jsonl"))


def _status_table(started: float, ingested: int, scored: int, rejected: int, alerts: int, lag: int, provider: str) -> Table:
    elapsed = max(1e-9, time.monotonic() - started)
    table = Table(title="moodwire run (Ctrl-C to stop)", show_header=True, header_style="bold")
    for column in ("elapsed", "ingested", "stored", "posts/s", "backlog", "dead", "alerts", "runs on"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{elapsed:.0f}s", str(ingested), str(scored), f"{scored / elapsed:.1f}", str(lag), str(rejected), str(alerts),
        provider.replace("ExecutionProvider", ""),
    )
    return table


def run_embedded(
    settings: Settings,
    stop: threading.Event,
    *,
    inputs: Sequence[Path] = (),
    rate: float | None = None,
    duration_s: float | None = None,
    exit_when_done: bool = False,
) -> int:
    from alerting.job import AlertJob, run_scheduler
    from ingest.checkpoint import CheckpointStore
    from ingest.connectors import SourceSettings, build_sources
    from ingest.service import IngestSettings, IngestWorker
    from scorer.runtime import OnnxScorer
    from scorer.service import ScorerService

    console = Console(stderr=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    files = list(inputs)
    replaying_sample = not files and not settings.has_live_sources
    if replaying_sample:
        files = [bundled_sample()]
        console.print(f"[bold]No inputs configured: replaying the bundled sample stream[/] ({files[0].name})")
    try:
        store = open_store(settings)
    except StoreUnavailable as exc:
        console.print(f"[red]moodwire run:[/] {exc}")
        return 1
    store.migrate()
    query_server = None
    if settings.store == "chdb":
        query_server = QueryServer(store, settings.state_dir, settings.query_host, settings.query_port)
        query_server.start()

    runtime = OnnxScorer(settings.model_dir, provider=settings.execution_provider, max_batch=settings.batch_max_size)
    console.print(f"model [bold]{runtime.model_version}[/] on {runtime.provider}; data in {settings.data_dir.resolve()}")
    bus = open_bus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    checkpoints = CheckpointStore(settings.state_dir / "ingest")
    sources = build_sources(
        SourceSettings.from_settings(settings),
        checkpoints,
        files,
        rate=rate or settings.sample_rate,
        shift_to_now=replaying_sample,
    )
    ingest_producer = bus.producer()
    worker = IngestWorker(IngestSettings.from_settings(settings), ingest_producer, sources, checkpoints)
    consumer = bus.consumer(settings.consumer_group, [settings.posts_topic])
    scorer_producer = bus.producer()
    service = ScorerService(settings, consumer, scorer_producer, store, runtime)
    job = AlertJob.from_settings(settings, store)

    failures: list[BaseException] = []
    ingest_stop = threading.Event()

    def guarded(name: str, target: object) -> threading.Thread:
        def body() -> None:
            try:
                target()  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001 - any crash stops the whole run, loudly
                log.exception("%s thread failed", name)
                failures.append(exc)
                stop.set()

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread

    ingested = {"n": 0}

    def ingest_loop() -> None:
        ingested["n"] = worker.run(ingest_stop, stop_when_exhausted=not settings.has_live_sources)

    threads = [
        guarded("ingest", ingest_loop),
        guarded("scorer", lambda: service.run(stop)),
        guarded("alerting", lambda: run_scheduler(job, settings, stop)),
    ]
    started = time.monotonic()
    deadline = started + duration_s if duration_s else None

    def status(lag: int) -> Table:
        return _status_table(
            started, _ingested_so_far(bus, settings), service.stats.scored,
            service.stats.rejected, job.fired_total, lag, runtime.provider,
        )

    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                lag = sum(consumer.lag().values())
                live.update(status(lag))
                if deadline and time.monotonic() >= deadline:
                    stop.set()
                if exit_when_done and not threads[0].is_alive() and _all_processed(service.stats.processed, lag, bus, settings):
                    job.run_once()
                    live.update(status(lag))
                    stop.set()
                stop.wait(0.5)
    finally:
        stop.set()
        ingest_stop.set()
        for thread in threads:
            thread.join(timeout=settings.shutdown_timeout_s)
        worker.close()
        ingest_producer.close()
        scorer_producer.close()
        consumer.close()
        if query_server is not None:
            query_server.stop()
        bus.close()
        store.close()
    if failures:
        console.print(f"[red]moodwire run stopped on an error:[/] {failures[0]!r}")
        return 1
    console.print(
        f"stored {service.stats.scored} posts, dead-lettered {service.stats.rejected}, fired {job.fired_total} alert(s). "
        f'Try: moodwire sql "SELECT symbol, count() FROM posts GROUP BY symbol"'
    )
    return 0


def _all_processed(processed: int, lag: int, bus: object, settings: Settings) -> bool:
    """Every message on the bus is scored, stored and committed (not merely fetched)."""
    from moodwire.bus import LocalBus

    if isinstance(bus, LocalBus):
        return processed >= bus.size(settings.posts_topic)
    return lag == 0 and processed > 0


def _ingested_so_far(bus: object, settings: Settings) -> int:
    """Posts on the bus so far (the in-process log knows; a Kafka run shows ingest's own count)."""
    from moodwire.bus import LocalBus

    if isinstance(bus, LocalBus):
        return bus.size(settings.posts_topic)
    from prometheus_client import REGISTRY

    return int(
        sum(s.value for m in REGISTRY.collect() for s in m.samples if s.name == "moodwire_posts_ingested_total")
    )
