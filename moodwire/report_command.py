"""`moodwire report`: write the offline HTML report (moodwire.report) for a time range."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from moodwire.config import Settings
from moodwire.report import QueryFn, ReportError, check_range, collect, parse_when, render_html
from moodwire.store import QueryResult, StoreError, StoreUnavailable


def open_query(settings: Settings) -> tuple[QueryFn, Callable[[], None]]:
    """Read through the running process when it holds the embedded store, else open the store.

    chDB lets one process open a data dir, so while `moodwire run` holds it, the report asks
    that process's read-only endpoint, exactly as `moodwire sql` does.
    """
    from moodwire.query_server import query_running
    from moodwire.store import open_store

    if settings.store == "chdb":
        if query_running(settings.state_dir, "SELECT 1") is not None:

            def through_endpoint(sql: str) -> QueryResult:
                result = query_running(settings.state_dir, sql)
                if result is None:
                    raise StoreUnavailable("the running moodwire process went away while the report was read")
                return result

            return through_endpoint, lambda: None
        if not settings.chdb_path.exists():
            raise StoreUnavailable(
                f"no embedded store at {settings.chdb_path}: run `moodwire run` first, pass --data-dir, "
                "or set MOODWIRE_STORE=clickhouse"
            )
    store = open_store(settings)
    return store.analyst_query, store.close


def _symbols(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part.strip()]


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        from_: Annotated[
            str, typer.Option("--from", help="Start: RFC 3339 (2026-11-02T09:00:00Z), or now-6h, now-2d, ...")
        ] = "now-24h",
        to: Annotated[str, typer.Option("--to", help="End: RFC 3339, now, or now-1h, ...")] = "now",
        out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML file.")] = Path("report.html"),
        symbols: Annotated[
            Optional[list[str]],
            typer.Option("--symbols", "-s", help="Tickers to plot, comma-separated or repeated (default: alerted, then busiest)."),
        ] = None,
        max_symbols: Annotated[int, typer.Option(min=1, max=50, help="How many symbols to plot without --symbols.")] = 8,
        top_posts: Annotated[int, typer.Option(min=0, max=500, help="How many of the most negative posts to list.")] = 25,
        config: Annotated[
            Optional[Path], typer.Option("--config", "-c", help="TOML settings file (same names as MOODWIRE_* without the prefix).")
        ] = None,
        data_dir: Annotated[Optional[Path], typer.Option(help="Embedded data dir (default: settings).")] = None,
    ) -> None:
        """Write a self-contained HTML report: sentiment and volume per symbol, alerts marked,
        the most negative posts. It needs no network to open; mail it or archive it as it is.
        """
        from moodwire.cli import settings_or_exit

        settings = settings_or_exit(config, data_dir=data_dir)
        logging.getLogger().setLevel(logging.WARNING)
        now = datetime.now(UTC)
        try:
            start, end = parse_when(from_, now), parse_when(to, now)
            check_range(start, end)
            query, close = open_query(settings)
            try:
                data = collect(query, start, end, _symbols(symbols), max_symbols=max_symbols, top_posts=top_posts, now=now)
            finally:
                close()
        except (ReportError, StoreError) as exc:  # StoreUnavailable is a StoreError
            typer.echo(f"moodwire report: {exc}", err=True)
            raise typer.Exit(1) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(data), encoding="utf-8")
        plotted = sum(1 for s in data.series if s.posts)
        typer.echo(f"wrote {out} ({plotted} symbol(s) plotted, {len(data.alerts)} alert(s), {len(data.posts)} negative post(s))")
