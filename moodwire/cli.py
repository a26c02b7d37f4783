"""The `moodwire` command line (a stable contract: scripts and tests call these commands)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from moodwire import logs
from moodwire.config import ConfigError, Settings, load_settings

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
    exit_when_done: Annotated[
        bool, typer.Option(help="Stop once every input is read, scored, stored and committed, after one alerting run.")
    ] = False,
) -> None:
    """Run ingest, scorer and alerting in one process on the embedded bus and chDB.

    Without --input and without feeds in the config, replays the bundled sample stream (news and
    social posts with a negative spike on one ticker) as if it were live. While it runs,
    `moodwire sql "..."` queries the same data. Serves /metrics, /healthz and /readyz when
    metrics_port is set.
    """
    from moodwire.app import RunOptions
    from moodwire.embedded import run_embedded

    settings = settings_or_exit(config, data_dir=data_dir)
    options = RunOptions(
        inputs=tuple(input_file or ()),
        rate=rate,
        exit_when_done=exit_when_done,
        duration_s=duration,
        query_endpoint=True,
    )
    raise typer.Exit(run_embedded(settings, options))


def _serve(settings: Settings, role: str, options: object | None = None) -> int:
    from moodwire.app import Application, Role, RunOptions

    app_ = Application(settings, [Role(role)], options if isinstance(options, RunOptions) else RunOptions())
    return app_.run_until_signalled()


@app.command()
def ingest(
    files: Annotated[Optional[list[Path]], typer.Argument(help="JSONL/CSV files to read (besides configured sources).")] = None,
    config: ConfigOption = None,
    rate: Annotated[Optional[float], typer.Option(help="Replay files at this many posts/s.")] = None,
    shift_to_now: Annotated[bool, typer.Option(help="Shift file timestamps so the last post is 'now'.")] = False,
    follow: Annotated[bool, typer.Option(help="Keep running after the files are read (configured sources keep polling).")] = False,
) -> None:
    """Production ingest service: files and configured sources -> normalize -> the `posts` topic."""
    from moodwire.app import RunOptions

    settings = settings_or_exit(config)
    options = RunOptions(inputs=tuple(files or ()), rate=rate, shift_to_now=shift_to_now, follow=follow)
    raise typer.Exit(_serve(settings, "ingest", options))


@app.command()
def score(config: ConfigOption = None) -> None:
    """Production scorer service: consume `posts`, score with ONNX Runtime, insert into ClickHouse, commit.

    Scale out by starting more of these with the same consumer_group: the topic's partitions are
    shared among them (one partition is read by one scorer at a time).
    """
    settings = settings_or_exit(config)
    raise typer.Exit(_serve(settings, "score"))


@app.command()
def alert(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option(help="Evaluate the complete minutes once, deliver, and exit.")] = False,
) -> None:
    """Production alerting service: every minute, detect negative spikes per ticker and notify."""
    settings = settings_or_exit(config)
    if not once:
        raise typer.Exit(_serve(settings, "alert"))
    import threading

    from alerting.job import AlertJob
    from moodwire.app import Application, Role, StartupError

    app_ = Application(settings, [Role.ALERT])
    try:
        store = app_.open_store(threading.Event())
    except StartupError as exc:
        typer.echo(f"moodwire alert: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        fired = AlertJob.from_settings(settings, store).run_once()
    finally:
        store.close()
    typer.echo(f"{len(fired)} alert(s) fired")


@app.command()
def classify(
    file: Annotated[str, typer.Argument(help="JSONL posts (needs `text`), or - for stdin.")] = "-",
    model_dir: Annotated[Optional[Path], typer.Option(help="Model directory (default: the bundled model).")] = None,
    explain: Annotated[bool, typer.Option(help="Add per-word attributions for the predicted labels.")] = False,
    batch_size: Annotated[
        Optional[int], typer.Option(min=1, help="Texts per ONNX batch (default: 64 on a CPU, 256 on a GPU).")
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes scoring chunks side by side, one ONNX session each (output order kept). "
            "On a GPU host the Python around the model is the bottleneck: use about half the cores.",
        ),
    ] = 1,
) -> None:
    """Score posts offline: one JSON object out per JSON line in, same order; needs no servers.

    Each output object is the input object with the scores added: polarity, polarity_score,
    emotion, the probabilities, model_version, and `targets` (one stance per ticker: for the
    input's `symbols`, else for the tickers found in the text). Pipe it into `moodwire backtest -`
    when the posts carry `id` and `published_at`. A line that isn't a valid post gets
    {"id": ..., "error": "..."} in its place, so outputs stay aligned with inputs; the command
    fails when no line could be scored.
    """
    from ingest.tickers import SymbolLinker, SymbolTable
    from scorer.classify import classify_stream

    logs.configure("WARNING")
    source = sys.stdin if file == "-" else open(file, encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        read, errors = classify_stream(
            source,
            sys.stdout,
            model_dir=model_dir,
            explain=explain,
            batch_size=batch_size,
            provider=provider,
            find_symbols=SymbolLinker(SymbolTable.load()).link,
            workers=workers,
        )
    except FileNotFoundError as exc:
        typer.echo(f"moodwire classify: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if source is not sys.stdin:
            source.close()
    if errors:
        typer.echo(f"moodwire classify: {errors} of {read} line(s) could not be scored (see their 'error')", err=True)
    if read == 0 or errors == read:
        typer.echo("moodwire classify: nothing could be scored", err=True)
        raise typer.Exit(1)


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
    from moodwire.store import StoreError, open_store

    settings = settings_or_exit(config, data_dir=data_dir)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        result = None
        if settings.store == "chdb":
            result = query_running(settings.state_dir, query)
        if result is None:
            store = open_store(settings)
            try:
                result = store.analyst_query(query)
            finally:
                store.close()
    except StoreError as exc:
        typer.echo(
            f"moodwire sql: {exc}\n(queries are read-only: one SELECT or WITH query, or DESCRIBE/SHOW TABLES/"
            "EXISTS; ClickHouse refuses writes, settings changes and table functions)",
            err=True,
        )
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
