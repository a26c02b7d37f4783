"""The alerting commands of the `moodwire` CLI (moodwire/cli.py calls `register`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, TextIO

import typer

from alerting import backtest
from alerting.detector_settings import DetectorSettings
from alerting.engine import EngineSettings
from alerting.lifecycle import LifecycleSettings
from moodwire.config import ConfigError, load_settings

# paragraphs are single lines: the help renderer wraps them to the terminal
BACKTEST_HELP = (
    "Replay scored posts through the alert detector and print the alerts it would have sent."
    "\n\n"
    "FILE holds one scored post per line (JSON with id, published_at, polarity and either "
    "per-ticker targets or symbols; story_id, flags and status when present; text is kept as "
    "evidence), as `moodwire classify` writes them; '-' reads standard input. Posts are "
    "counted as everywhere else in moodwire (scored and unflagged posts, each ticker under "
    "the post's stance toward it, a story once). Lines that can't be read are counted and "
    "reported; when no line can be read the command fails."
    "\n\n"
    "Posts are replayed in the order they arrived (scored_at when a post has one, else "
    "published_at) through the alert service's own detection loop, ticking in simulated time "
    "as the service does every alert_interval_s: the minutes so far are evaluated as they "
    "grow, complete minutes once the lateness passed, late posts add evidence. So an episode "
    "is reported once, when it would have been notified. Settings (alert_evidence, "
    "alert_lateness_minutes, alert_interval_s, alert_group_wait_s, ...) are the service's: "
    "MOODWIRE_* variables or MOODWIRE_CONFIG."
    "\n\n"
    "Output: one JSON object per alert on standard output with symbol, kind "
    "(negative-spike or volume-spike), fired_at (RFC 3339, the end of the evidence), "
    "notified_at (when its notification went out), group (a market-wide event it was "
    "announced with), severity, statistic (-log10 p), p_value, episode_id and evidence "
    "(window counts, baseline share, the most negative posts). A summary goes to standard "
    "error."
)


def register(app: typer.Typer) -> None:
    app.command("backtest", help=BACKTEST_HELP, no_args_is_help=True)(backtest_command)


def backtest_command(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="JSONL of scored posts, or '-' for stdin.")
    ],
    examples: Annotated[
        int, typer.Option(min=0, help="Most negative posts attached to each alert.")
    ] = 3,
    volume_spikes: Annotated[
        bool,
        typer.Option(
            "--volume-spikes/--no-volume-spikes",
            help="Also report volume spikes (bursts of posts, whatever their tone).",
        ),
    ] = True,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No summary on standard error.")
    ] = False,
) -> None:
    try:
        service = load_settings()
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = DetectorSettings.from_settings(service)
    if not volume_spikes:
        settings = replace(settings, default=replace(settings.default, volume_enabled=False))
    lifecycle = LifecycleSettings.from_settings(service, ("replay",), notify_resolved=False)
    engine = replace(EngineSettings.from_settings(service), first_run_lookback=None)
    with _open(file) as lines:
        result = backtest.run(lines, settings, lifecycle, examples, engine, service.alert_interval_s)
    out = sys.stdout
    for line in backtest.alert_lines(result.alerts, result.notifications):
        out.write(line + "\n")
    out.flush()
    if not quiet:
        _summary(result, sys.stderr)
    if result.posts_read == 0 or result.invalid == result.posts_read:
        sys.stderr.write(
            "moodwire backtest: no line was a scored post (each needs id, published_at and polarity, "
            "as `moodwire classify` writes them for posts that have an id and published_at)\n"
        )
        raise typer.Exit(1)


@contextmanager
def _open(file: str) -> Iterator[TextIO]:
    if file == "-":
        yield sys.stdin
        return
    path = Path(file)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE")
    with path.open(encoding="utf-8") as handle:
        yield handle


def _summary(result: backtest.BacktestResult, err: TextIO) -> None:
    kinds: dict[str, int] = {}
    for alert in result.alerts:
        kinds[alert.kind] = kinds.get(alert.kind, 0) + 1
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no alerts"
    err.write(
        f"{result.posts_read} posts read ({result.duplicates} duplicate ids, "
        f"{result.invalid} invalid, {result.not_counted} not counted (unscored or flagged), "
        f"{result.without_symbols} without symbols), "
        f"{result.symbols} symbols over {result.minutes} minutes: {counts}"
        + (f"; {result.late_stories:.0f} stories arrived too late for their windows" if result.late_stories else "")
        + "\n"
    )
    err.writelines(f"skipped {problem}\n" for problem in result.problems)
