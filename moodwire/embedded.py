"""`moodwire run`'s front end: the Application with every role, and a live status table.

The services are the same code as in production; only the bus and store behind them differ
(by default the in-process durable log and chDB under the data dir).
"""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.table import Table

from moodwire.app import EVERYTHING, AppStatus, Application, RunOptions
from moodwire.config import Settings


def status_table(status: AppStatus) -> Table:
    elapsed = max(1e-9, status.elapsed_s)
    table = Table(title="moodwire run (Ctrl-C to stop)", show_header=True, header_style="bold")
    for column in ("elapsed", "ingested", "stored", "posts/s", "backlog", "dead", "alerts", "runs on"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{elapsed:.0f}s",
        str(status.ingested),
        str(status.stored),
        f"{status.stored / elapsed:.1f}",
        str(status.backlog),
        str(status.dead_lettered),
        str(status.alerts),
        status.provider.replace("ExecutionProvider", ""),
    )
    return table


def run_embedded(settings: Settings, options: RunOptions) -> int:
    console = Console(stderr=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Application(settings, EVERYTHING, options)
    if app.replays_sample:
        console.print("[bold]No inputs configured: replaying the bundled sample stream[/]")
    console.print(f"data in {settings.data_dir.resolve()}")
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        code = app.run_until_signalled(on_tick=lambda status: live.update(status_table(status)))
    if code == 0:
        final = app.status()
        console.print(
            f"stored {final.stored} posts, dead-lettered {final.dead_lettered}, fired {final.alerts} alert(s). "
            'Try: moodwire sql "SELECT symbol, count() FROM posts GROUP BY symbol"'
        )
    else:
        console.print(f"[red]moodwire run stopped with exit code {code}[/] (see the log above)")
    return code
