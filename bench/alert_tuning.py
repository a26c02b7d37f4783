"""Choosing detector settings on the tuning families, fast: minute counts are computed once per
stream (and kept under bench/results/tuning-cache/), and each candidate is stepped through the
complete minutes only (no minutes-so-far, no late arrivals), which ranks candidates the way the
full replay of bench/alert_bench.py does at a fraction of its cost.

    python -m bench.alert_tuning --grid alpha=1e-6,3e-6,1e-5 confirmed_alpha=5e-5,1e-4

Prints recall, delay and false alerts per 100 ticker-days for every candidate, per family and
pooled. The held-out families are never read here.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerting import backtest
from alerting.detector import step
from alerting.detector_settings import DetectorSettings, SymbolSettings
from alerting.detector_state import DetectorState, from_epoch_minute
from alerting.lifecycle import AlertState, LifecycleSettings, Notification, advance
from bench.alert_bench import TUNING_SEEDS, SeedRun, fired, oracle, score, summarise
from bench.alert_scenarios import FAMILIES, TUNING_FAMILIES, Stream, generate

CACHE = Path(__file__).resolve().parent / "results" / "tuning-cache"


def cached_stream(family: str, seed: int) -> tuple[Stream, dict[int, list[Any]]]:
    path = CACHE / f"{family}-{seed}.pickle"
    if path.exists():
        with path.open("rb") as handle:
            loaded: tuple[Stream, dict[int, list[Any]]] = pickle.load(handle)  # noqa: S301 - our own cache
            return loaded
    stream = generate(FAMILIES[family], seed)
    counts = backtest.minute_counts(backtest.read_posts(stream.jsonl()))
    stream.posts = []  # not needed again; keeps the cache small
    CACHE.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump((stream, counts), handle)
    return stream, counts


def replay_minutes(counts: dict[int, list[Any]], settings: DetectorSettings, lifecycle: LifecycleSettings) -> list[Notification]:
    state, alerts_state, notes = DetectorState(settings), AlertState(), []
    for minute in range(min(counts), max(counts) + 1):
        alerts = step(state, from_epoch_minute(minute), counts.get(minute, ()), settings)
        notes += advance(alerts_state, from_epoch_minute(minute + 1), alerts, lifecycle)
        alerts_state.outbox.clear()
    return notes


def candidates(grid: list[str]) -> list[tuple[str, DetectorSettings]]:
    """`name=v1,v2` per setting (DetectorSettings or SymbolSettings field); every combination."""
    axes = []
    for item in grid:
        name, values = item.split("=", 1)
        axes.append([(name, _value(name, v)) for v in values.split(",")])
    out = []
    for combo in itertools.product(*axes):
        top = {n: v for n, v in combo if n in {f.name for f in fields(DetectorSettings)}}
        per = {n: v for n, v in combo if n in {f.name for f in fields(SymbolSettings)}}
        settings = DetectorSettings(**top)
        settings = replace(settings, default=replace(settings.default, **per))
        out.append((" ".join(f"{n}={v}" for n, v in combo) or "defaults", settings))
    return out


def _value(name: str, text: str) -> Any:
    for f in (*fields(DetectorSettings), *fields(SymbolSettings)):
        if f.name == name:
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind == "bool":
                return text.lower() in ("1", "true", "yes")
            if "int" in kind and "." not in text and "e" not in text:
                return int(text)
            if "float" in kind or "int" in kind:
                return float(text)
            return text
    raise SystemExit(f"unknown setting {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--grid", nargs="*", default=[])
    parser.add_argument("--families", nargs="+", default=list(TUNING_FAMILIES), choices=list(TUNING_FAMILIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    args = parser.parse_args(argv)
    lifecycle = LifecycleSettings()
    streams = {(f, s): cached_stream(f, s) for f in args.families for s in args.seeds}
    chosen = candidates(args.grid)
    for name, settings in chosen:
        runs = []
        for (family, seed), (stream, counts) in streams.items():
            scores = {"minute": score(stream, fired(stream, replay_minutes(counts, settings, lifecycle)))}
            runs.append(SeedRun(family, seed, 0, scores, {}, oracle(stream), 0.0))
        for family in args.families:
            pool = summarise([r for r in runs if r.family == family], ["minute"])["variants"]["minute"]
            print(f"{name:<60} {family:<14} {_line(pool)}")
        pool = summarise(runs, ["minute"])["variants"]["minute"]
        print(f"{name:<60} {'pooled':<14} {_line(pool)}", flush=True)
    return 0


def _line(summary: dict[str, Any]) -> str:
    return (
        f"recall {summary['recall']}  median {summary['median_delay_min']}  p90 {summary['p90_delay_min']}  "
        f"false/100 {summary['false_per_100_symbol_days']} {summary['false_by_cause']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
