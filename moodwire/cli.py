"""The `moodwire` command line (a stable contract: scripts and tests call these commands)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from moodwire import logs
from moodwire.config import ConfigError, Settings, load_settings
from moodwire.store import Store

app = typer.Typer(
    name="moodwire",
    help=(
        "Streaming sentiment monitor for financial opinion.\n\n"
        "Posts flow source -> bus -> ONNX scorer -> ClickHouse -> alerts. With no configuration, "
        "`moodwire run` runs everything in one process (in-process bus, chDB under ./moodwire-data) "
        "on a bundled sample stream. Settings come from MOODWIRE_* environment variables or a TOML "
        "file (--config or MOODWIRE_CONFIG); see README 'Configuration'."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

log = logging.getLogger("moodwire")

ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="TOML settings file (same names as MOODWIRE_* without the prefix).")
]


def settings_or_exit(config: Path | None, **overrides: object) -> Settings:
    try:
        settings = load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        typer.echo(f"moodwire: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    return settings


def stop_on_signals(shutdown_timeout_s: float | None = None) -> threading.Event:
    """SIGINT/SIGTERM set the event: loops finish their batch, commit, and return.

    With a timeout, a process still alive that long after the signal (a hung insert, a broker
    that won't answer) exits with code 3 instead of hanging: nothing uncommitted is lost, it
    is redelivered on restart.
    """
    stop = threading.Event()

    def give_up() -> None:
        log.error("still running %.0f s after the stop signal; exiting without a clean shutdown", shutdown_timeout_s)
        os._exit(3)

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("received %s; finishing the current batch", signal.Signals(signum).name)
        stop.set()
        if shutdown_timeout_s is not None:
            timer = threading.Timer(shutdown_timeout_s, give_up)
            timer.daemon = True
            timer.start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def open_store_waiting(settings: Settings, stop: threading.Event) -> Store:
    """Open and migrate the store, waiting (with backoff) while the server is down."""
    from moodwire.store import StoreError, StoreUnavailable, open_store

    delay = 1.0
    while True:
        try:
            store = open_store(settings)
            store.migrate()
            return store
        except StoreUnavailable as exc:
            log.warning("%s; retrying in %.0f s", exc, delay)
        except StoreError as exc:
            typer.echo(f"moodwire: the store refused us: {exc}", err=True)
            raise typer.Exit(2) from None
        if stop.wait(delay):
            raise typer.Exit(1)
        delay = min(30.0, delay * 2)


@app.command()
def run(
    config: ConfigOption = None,
    input_file: Annotated[
        Optional[list[Path]],
        typer.Option("--input", "-i", help="JSONL/CSV files to replay instead of the bundled sample (repeatable)."),
    ] = None,
    rate: Annotated[Optional[float], typer.Option(help="Replay speed in posts/s (default: sample_rate).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where chDB and checkpoints live.")] = None,
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="Stop once every input is replayed and scored.")] = False,
) -> None:
    """Run ingest, scorer and alerting in one process on the embedded bus and chDB.

    Without --input and without feeds in the config, replays the bundled sample stream (news and
    social posts with a negative spike on one ticker) as if it were live. While it runs,
    `moodwire sql "..."` queries the same data.
    """
    from moodwire.embedded import run_embedded

    settings = settings_or_exit(config, data_dir=data_dir)
    stop = stop_on_signals(settings.shutdown_timeout_s)
    code = run_embedded(settings, stop, inputs=input_file or [], rate=rate, duration_s=duration, exit_when_done=exit_when_done)
    raise typer.Exit(code)


@app.command()
def ingest(
    files: Annotated[Optional[list[Path]], typer.Argument(help="JSONL/CSV files to read (besides configured feeds).")] = None,
    config: ConfigOption = None,
    rate: Annotated[Optional[float], typer.Option(help="Replay files at this many posts/s.")] = None,
    shift_to_now: Annotated[bool, typer.Option(help="Shift file timestamps so the last post is 'now'.")] = False,
    follow: Annotated[bool, typer.Option(help="Keep running after the files are read (feeds keep polling).")] = False,
) -> None:
    """Production ingest service: files and RSS/Atom feeds -> normalize -> the `posts` topic."""
    from ingest.checkpoint import CheckpointStore
    from ingest.connectors import SourceSettings, build_sources
    from ingest.service import IngestSettings, IngestWorker
    from moodwire.bus import open_bus
    from moodwire.metrics import HealthState, serve_metrics

    settings = settings_or_exit(config)
    stop = stop_on_signals(settings.shutdown_timeout_s)
    bus = open_bus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    checkpoints = CheckpointStore(settings.state_dir / "ingest")
    sources = build_sources(
        SourceSettings.from_settings(settings), checkpoints, files or [], rate=rate, shift_to_now=shift_to_now
    )
    if not sources:
        typer.echo("moodwire ingest: nothing to read: pass files or configure sources (feeds, reddit, mastodon, bluesky, stocktwits, push).", err=True)
        raise typer.Exit(2)
    health = HealthState()
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, health)
    producer = bus.producer()
    worker = IngestWorker(IngestSettings.from_settings(settings), producer, sources, checkpoints)
    health.ready = True
    try:
        total = worker.run(stop, stop_when_exhausted=not follow and not settings.has_live_sources)
    finally:
        worker.close()
    producer.close()
    bus.close()
    log.info("ingest stopped after %d posts", total)


@app.command()
def score(config: ConfigOption = None) -> None:
    """Production scorer service: consume `posts`, score with ONNX Runtime, insert into ClickHouse, commit."""
    from moodwire.bus import open_bus
    from moodwire.metrics import HealthState, serve_metrics
    from scorer.runtime import OnnxScorer
    from scorer.service import ScorerService

    settings = settings_or_exit(config)
    stop = stop_on_signals(settings.shutdown_timeout_s)
    health = HealthState()
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, health)
    store = open_store_waiting(settings, stop)
    runtime = OnnxScorer(settings.model_dir, provider=settings.execution_provider, max_batch=settings.batch_max_size)
    log.info("model %s on %s", runtime.model_version, runtime.provider)
    bus = open_bus(settings)
    bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    consumer = bus.consumer(settings.consumer_group, [settings.posts_topic])
    producer = bus.producer()
    service = ScorerService(settings, consumer, producer, store, runtime)
    health.ready = True
    try:
        service.run(stop)
    finally:
        consumer.close()
        producer.close()
        store.close()
    log.info("scorer stopped: %d posts stored, %d dead-lettered", service.stats.scored, service.stats.rejected)


@app.command()
def alert(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option(help="Evaluate the complete minutes once and exit.")] = False,
) -> None:
    """Production alerting service: every minute, detect negative spikes per ticker and notify."""
    from alerting.job import AlertJob, run_scheduler
    from moodwire.metrics import HealthState, serve_metrics

    settings = settings_or_exit(config)
    stop = stop_on_signals(settings.shutdown_timeout_s)
    store = open_store_waiting(settings, stop)
    job = AlertJob.from_settings(settings, store)
    if once:
        fired = job.run_once()
        typer.echo(f"{len(fired)} alert(s) fired")
        return
    health = HealthState()
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, health)
    health.ready = True
    run_scheduler(job, settings, stop)
    store.close()


@app.command()
def classify(
    file: Annotated[str, typer.Argument(help="JSONL posts (needs `text`; `id` is echoed), or - for stdin.")] = "-",
    model_dir: Annotated[Optional[Path], typer.Option(help="Model directory (default: the bundled model).")] = None,
    explain: Annotated[bool, typer.Option(help="Add per-token attributions for the predicted labels.")] = False,
    batch_size: Annotated[
        Optional[int], typer.Option(min=1, help="Texts per ONNX batch (default: 64 on a CPU, 256 on a GPU).")
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Score posts offline: one JSON object out per JSON line in, same order; needs no servers.

    A line that isn't a valid post gets {"id": ..., "error": "..."} in its place, so outputs
    stay aligned with inputs.
    """
    from scorer.classify import classify_stream

    logs.configure("WARNING")
    source = sys.stdin if file == "-" else open(file, encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        errors = classify_stream(source, sys.stdout, model_dir=model_dir, explain=explain, batch_size=batch_size, provider=provider)
    except FileNotFoundError as exc:
        typer.echo(f"moodwire classify: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if source is not sys.stdin:
            source.close()
    if errors:
        typer.echo(f"moodwire classify: {errors} line(s) could not be scored (see their 'error')", err=True)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only statement (SELECT, SHOW, DESCRIBE, ...).")],
    config: ConfigOption = None,
    output: Annotated[str, typer.Option("--format", "-f", help="table, json or tsv.")] = "table",
    data_dir: Annotated[Optional[Path], typer.Option(help="Embedded data dir (default: settings).")] = None,
) -> None:
    """Query the store: the ClickHouse server, or the embedded chDB (through the running process if one holds it).

    Tables: posts, post_minutes (aggregate states; use uniqExactMerge(posts)), alerts,
    alert_deliveries. The database is `moodwire` unless configured otherwise.
    """
    from moodwire.query_server import query_running
    from moodwire.store import StoreError, StoreUnavailable, open_store

    settings = settings_or_exit(config, data_dir=data_dir)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        result = None
        if settings.store == "chdb":
            result = query_running(settings.state_dir, query)
        if result is None:
            store = open_store(settings)
            try:
                result = store.query(query, read_only=True)
            finally:
                store.close()
    except (StoreError, StoreUnavailable) as exc:
        typer.echo(f"moodwire sql: {exc}", err=True)
        raise typer.Exit(1) from None
    _print_result(result, output)


def _print_result(result: object, output: str) -> None:
    from moodwire.query_server import result_to_json
    from moodwire.store import QueryResult

    assert isinstance(result, QueryResult)
    if output == "json":
        typer.echo(result_to_json(result).decode("utf-8"))
    elif output == "tsv":
        typer.echo("\t".join(result.columns))
        for row in result.rows:
            typer.echo("\t".join("" if v is None else str(v) for v in row))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console().print(table)


def _register_commands() -> None:
    """Commands whose modules own their own options (model lifecycle, backtest, report, bench)."""
    from alerting.commands import register as register_alerting
    from bench.commands import register as register_bench
    from moodwire.report_command import register as register_report
    from scorer.commands import register as register_scorer

    register_scorer(app)
    register_alerting(app)
    register_report(app)
    register_bench(app)


_register_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
