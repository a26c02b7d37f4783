"""Alert quality benchmark: the detector on the scenario families, held-out families pooled.

    python -m bench.alert_bench [--families ...] [--seeds 1 2 3] [--variants ...] [--tick-s 5]
    python -m bench.alert_bench --tuning   # the tuning families and seeds instead
    python -m bench.alert_bench --tuning --variants sooner --detector recent_level_prior=10.0
        # ... next to a variant with settings changed (explore on the tuning families only)

For every family and seed a stream from `bench.alert_scenarios` is written as scored posts
(JSONL, as `moodwire classify` writes them, with arrival times) and replayed through
`alerting.backtest` (the alert job's own detection loop, `moodwire backtest`) once per
variant, each a step from the detector as it was to the detector as shipped:

* `minute-labels`: complete minutes only, recorded after the lateness (as the job ran before),
  labels counted, the thresholds as they were;
* `minute-probabilities`: the same, with the model's P(negative) as evidence;
* `sooner-no-level`: the minutes so far evaluated every tick as well, without the recent level
  (the baseline follows a share that moved within days only through the last day's share);
* `sooner` (shipped): with it.

The oracle is a reference, not a detector: a binomial test at the detector's loosest alpha (confirmed_alpha) on the stories labelled
negative that knows each spike's onset and true labelled baseline share. The same oracle at
looser alphas (up to 0.05, where a detector that does not know the onset would alert falsely
all day) shows how soon the spikes of a family can be told apart at all.

Scoring (negative-spike alerts only; warm-up days are not scored):
* an alert (the first of an episode: what is notified) matches a negative spike of its ticker
  if it fires after the onset and no later than MATCH_GRACE minutes after the spike ends;
* recall, delay over the spikes that must be found (alert_scenarios: the labelled share
  doubles, >= 10 minutes, >= 12 labelled negatives in the first 10); delay = when the alert
  could be sent (its evidence's end, `fired_at`) - onset, in minutes; "notified" adds the time
  the notification was held for others to join it;
* false alerts: alerts that match no negative spike (decoys, thin noise, background), per 100
  ticker-days; alerts on spikes below the target are real changes and count neither way;
* repeats: alerts beyond the first that match one spike;
* market-wide sell-offs: notifications that announced its tickers (one grouped message and a
  few updates is the aim, not one per ticker).
Writes bench/results/alert_bench.json and prints a table per family and for the held-out pool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerting import backtest
from alerting.alert import NEGATIVE_SPIKE
from alerting.detector_settings import DetectorSettings, SymbolSettings
from alerting.engine import EngineSettings
from alerting.lifecycle import LifecycleSettings, Notification
from alerting.statistics import binomial_sf
from bench.alert_scenarios import FAMILIES, HELD_OUT_FAMILIES, TUNING_FAMILIES, Stream, generate
from moodwire.config import Settings

MATCH_GRACE = 10
ORACLE_ALPHA = SymbolSettings().confirmed_alpha  # the detector's loosest threshold outside sell-offs
# The oracle at looser thresholds: how soon a spike can be told at all, whatever the false
# alerts (a detector that does not know the onset pays for each of these in false alerts)
ORACLE_CURVE = (ORACLE_ALPHA, 1e-3, 1e-2, 5e-2)
RESULTS = Path(__file__).resolve().parent / "results" / "alert_bench.json"
TUNING_SEEDS = (101, 102)
HELD_OUT_SEEDS = (1, 2, 3)
TARGETS = {
    "recall": ">= 0.97",
    "false_per_100_symbol_days": "<= 1 on every family",
    "median_delay_min": "<= 3",
    "p90_delay_min": "<= 6",
    "repeats_within_episode": "0",
}


@dataclass(frozen=True)
class Variant:
    name: str
    detector: DetectorSettings
    engine: EngineSettings
    lifecycle: LifecycleSettings


def variants(shipped: Settings) -> dict[str, Variant]:
    detector = DetectorSettings.from_settings(shipped)
    lifecycle = LifecycleSettings.from_settings(shipped, ("webhook",), notify_resolved=False)
    engine = replace(EngineSettings.from_settings(shipped), first_run_lookback=None)
    minute = replace(engine, evaluate_pending=False)
    return {
        v.name: v
        for v in (
            Variant("minute-labels", replace(DetectorSettings(), evidence="labels", recent_level_minutes=0), minute, lifecycle),
            Variant("minute-probabilities", replace(detector, evidence="probabilities", recent_level_minutes=0), minute, lifecycle),
            Variant("sooner-no-level", replace(detector, recent_level_minutes=0), engine, lifecycle),
            Variant("sooner", detector, engine, lifecycle),
        )
    }


def custom_variant(base: Variant, assignments: list[str]) -> Variant:
    """`base` with detector settings changed by NAME=VALUE assignments (for exploring on the
    tuning families: `--detector recent_level_minutes=240`)."""
    changes: dict[str, Any] = {}
    symbol_changes: dict[str, Any] = {}
    names = {f.name for f in fields(DetectorSettings)} - {"default", "overrides"}
    symbol_names = {f"default.{f.name}" for f in fields(SymbolSettings)}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        value = float(text) if "." in text or "e" in text else int(text)
        if name in names:
            changes[name] = value
        elif name in symbol_names:
            symbol_changes[name.removeprefix("default.")] = value
        else:
            raise SystemExit(f"--detector: no detector setting {name!r} (one of {', '.join(sorted(names | symbol_names))})")
    detector = replace(base.detector, default=replace(base.detector.default, **symbol_changes), **changes)
    return replace(base, name="custom:" + ",".join(assignments), detector=detector)


@dataclass(frozen=True)
class Fired:
    symbol: str
    minute: float  # stream minutes (fractional) of fired_at
    notified: float  # ... of the notification that announced it
    notification: str
    grouped: bool


@dataclass
class Score:
    """Counts (spikes to find and found, alerts true and false, repeats, sell-offs...), delays,
    false alerts by cause, and the ticker-days they were counted over."""

    counts: Counter[str] = field(default_factory=Counter)
    delays: list[float] = field(default_factory=list)
    notified_delays: list[float] = field(default_factory=list)
    false_by_cause: Counter[str] = field(default_factory=Counter)
    symbol_days: float = 0.0

    def merge(self, other: Score) -> Score:
        return Score(
            self.counts + other.counts,
            self.delays + other.delays,
            self.notified_delays + other.notified_delays,
            self.false_by_cause + other.false_by_cause,
            self.symbol_days + other.symbol_days,
        )

    def summary(self) -> dict[str, Any]:
        c = self.counts
        delays, notified = sorted(self.delays), sorted(self.notified_delays)
        return {
            "qualifying_spikes": c["qualifying"],
            "recall": _ratio(c["detected"], c["qualifying"]),
            "median_delay_min": _round(statistics.median(delays)) if delays else None,
            "p90_delay_min": _round(_quantile(delays, 0.9)) if delays else None,
            "within_3_min": _ratio(sum(d <= 3 for d in delays), c["qualifying"]),
            "median_notified_delay_min": _round(statistics.median(notified)) if notified else None,
            "p90_notified_delay_min": _round(_quantile(notified, 0.9)) if notified else None,
            "precision": _ratio(c["true_alerts"], c["true_alerts"] + c["false_alerts"]),
            "false_alerts": c["false_alerts"],
            "false_per_100_symbol_days": round(100 * c["false_alerts"] / self.symbol_days, 3) if self.symbol_days else None,
            "false_by_cause": dict(sorted(self.false_by_cause.items())),
            "repeats_within_episode": c["repeats"],
            "sub_target_spikes": c["sub_target"],
            "sub_target_recall": _ratio(c["sub_target_detected"], c["sub_target"]),
            "symbol_days": self.symbol_days,
            "selloffs": c["selloffs"],
            "selloff_tickers_alerted": c["selloff_tickers"],
            "selloff_notifications": c["selloff_notifications"],
            "selloff_grouped_notifications": c["selloff_grouped"],
        }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _round(value: float) -> float:
    return round(value, 2)


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q, method="inverted_cdf"))


class TruthEvent(Protocol):
    """What scoring needs of a stream's events (bench.alert_scenarios and bench.outside_streams)."""

    symbol: str
    kind: str
    onset: int  # minutes from the stream's start
    minutes: int
    qualifies: bool
    selloff: int | None


class ScoredStream(Protocol):
    """What scoring needs of a stream: its truth, its start and what is scored."""

    @property
    def events(self) -> Sequence[TruthEvent]: ...
    @property
    def thin(self) -> Sequence[str]: ...
    @property
    def start(self) -> datetime: ...
    @property
    def evaluation_start(self) -> int: ...
    @property
    def evaluated_symbol_days(self) -> float: ...


def fired(stream: ScoredStream, notes: list[Notification]) -> list[Fired]:
    start = stream.start.timestamp()
    return [
        Fired(
            a.symbol,
            (a.fired_at.timestamp() - start) / 60,
            (n.created_at.timestamp() - start) / 60,
            n.notification_id,
            n.group is not None,
        )
        for n in notes
        for a in n.alerts
        if a.kind == NEGATIVE_SPIKE
    ]


def score(stream: ScoredStream, alerts: list[Fired]) -> Score:
    alerts = [a for a in alerts if a.minute > stream.evaluation_start]
    spikes = [e for e in stream.events if e.kind == "negative-spike"]
    decoys = [e for e in stream.events if e.kind != "negative-spike"]
    matched: dict[int, list[Fired]] = {i: [] for i in range(len(spikes))}
    result = Score(symbol_days=stream.evaluated_symbol_days)
    c = result.counts
    for alert in alerts:
        hit = next(
            (i for i, e in enumerate(spikes) if e.symbol == alert.symbol and e.onset < alert.minute <= e.onset + e.minutes + MATCH_GRACE),
            None,
        )
        if hit is None:
            c["false_alerts"] += 1
            result.false_by_cause[_cause(stream, decoys, alert)] += 1
            continue
        matched[hit].append(alert)
        c["true_alerts"] += spikes[hit].qualifies
    for i, spike in enumerate(spikes):
        hits = sorted(matched[i], key=lambda f: f.minute)
        c["repeats"] += max(0, len(hits) - 1)
        if spike.qualifies:
            c["qualifying"] += 1
            if hits:
                c["detected"] += 1
                result.delays.append(hits[0].minute - spike.onset)
                result.notified_delays.append(hits[0].notified - spike.onset)
        else:
            c["sub_target"] += 1
            c["sub_target_detected"] += bool(hits)
    for number in sorted({e.selloff for e in spikes if e.selloff is not None}):
        hits = [a for i, e in enumerate(spikes) if e.selloff == number for a in matched[i]]
        c["selloffs"] += 1
        c["selloff_tickers"] += len({a.symbol for a in hits})
        c["selloff_notifications"] += len({a.notification for a in hits})
        c["selloff_grouped"] += len({a.notification for a in hits if a.grouped})
    return result


def _cause(stream: ScoredStream, decoys: list[Any], alert: Fired) -> str:
    for event in decoys:
        if event.symbol == alert.symbol and event.onset < alert.minute <= event.onset + event.minutes + 30:
            return str(event.kind)
    return "thin-noise" if alert.symbol in stream.thin else "background"


def oracle(stream: Stream, alpha: float = ORACLE_ALPHA) -> Score:
    """Delay of a binomial test that knows each qualifying spike's onset and labelled share."""
    index = {s: i for i, s in enumerate(stream.symbols)}
    result = Score()
    for event in stream.events:
        if event.kind != "negative-spike" or not event.qualifies:
            continue
        result.counts["qualifying"] += 1
        i, onset = index[event.symbol], event.onset
        n = np.cumsum(stream.labelled_total[i, onset : onset + 30])
        k = np.cumsum(stream.labelled_negative[i, onset : onset + 30])
        hits = np.nonzero(binomial_sf(k, n, event.base_share) <= alpha)[0]
        if len(hits):
            result.counts["detected"] += 1
            result.delays.append(float(hits[0]) + 1)  # minutes of evidence
            result.notified_delays.append(float(hits[0]) + 1)
    return result


@dataclass
class SeedRun:
    family: str
    seed: int
    posts: int
    scores: dict[str, Score]
    seconds: dict[str, float]
    late_stories: float
    oracle_curve: dict[float, Score]  # by alpha; ORACLE_ALPHA's is the bound in the tables


def run_seed(family: str, seed: int, chosen: dict[str, Variant], tick_s: float, echo: Any) -> SeedRun:
    began = time.perf_counter()
    stream = generate(FAMILIES[family], seed)
    table = backtest.read_posts(stream.jsonl())
    scores, seconds, late = {}, {}, 0.0
    for name, variant in chosen.items():
        started = time.perf_counter()
        notes, late = backtest.replay(table, variant.detector, variant.lifecycle, variant.engine, tick_s)
        seconds[name] = round(time.perf_counter() - started, 1)
        scores[name] = score(stream, fired(stream, notes))
    echo(
        f"{family} seed {seed}: {table.read} posts ({table.duplicates} duplicates), "
        f"{time.perf_counter() - began:.0f} s ({', '.join(f'{k} {v} s' for k, v in seconds.items())})"
    )
    curve = {alpha: oracle(stream, alpha) for alpha in ORACLE_CURVE}
    return SeedRun(family, seed, table.read, scores, seconds, late, curve)


def pool(scores: list[Score]) -> Score:
    out = Score()
    for s in scores:
        out = out.merge(s)
    return out


def summarise(runs: list[SeedRun], names: list[str]) -> dict[str, Any]:
    return {
        "variants": {name: pool([r.scores[name] for r in runs]).summary() for name in names},
        "oracle_bound": pool([r.oracle_curve[ORACLE_ALPHA] for r in runs]).summary(),
        "oracle_curve": {
            str(alpha): {k: v for k, v in pool([r.oracle_curve[alpha] for r in runs]).summary().items()
                         if k in ("recall", "median_delay_min", "p90_delay_min", "within_3_min")}
            for alpha in ORACLE_CURVE
        },
        "posts": sum(r.posts for r in runs),
        "late_stories_added_to_baselines": round(sum(r.late_stories for r in runs), 1),
    }


_ROWS = [
    ("spikes to find", "qualifying_spikes", ""),
    ("recall", "recall", ">= 0.97"),
    ("median delay (min)", "median_delay_min", "<= 3"),
    ("p90 delay (min)", "p90_delay_min", "<= 6"),
    ("median notified (min)", "median_notified_delay_min", ""),
    ("p90 notified (min)", "p90_notified_delay_min", ""),
    ("false alerts", "false_alerts", ""),
    ("false / 100 ticker-days", "false_per_100_symbol_days", "<= 1"),
    ("repeats in an episode", "repeats_within_episode", "0"),
    ("sub-target recall", "sub_target_recall", ""),
    ("sell-offs", "selloffs", ""),
    ("sell-off notifications", "selloff_notifications", ""),
]
_ORACLE_KEYS = {"qualifying_spikes", "recall", "median_delay_min", "p90_delay_min"}


def print_table(title: str, summary: dict[str, Any], echo: Any = print) -> None:
    # streams without an oracle (bench.outside_streams) print the variants only
    oracle_column = [("oracle", summary["oracle_bound"])] if "oracle_bound" in summary else []
    columns = [*summary["variants"].items(), *oracle_column]
    echo(f"\n{title}")
    echo(f"{'metric':<25}" + "".join(f"{name:>22}" for name, _ in columns) + f"{'target':>10}")
    for label, key, target in _ROWS:
        cells = "".join(
            f"{'-' if name == 'oracle' and key not in _ORACLE_KEYS else _fmt(col[key]):>22}" for name, col in columns
        )
        echo(f"{label:<25}{cells}{target:>10}")
    for name, col in summary["variants"].items():
        echo(f"false alerts by cause, {name}: {col['false_by_cause']}")
    if "oracle_curve" not in summary:
        return
    echo("oracle by alpha (recall, median, p90, within 3 min): " + "; ".join(
        f"{alpha}: {_fmt(o['recall'])}, {_fmt(o['median_delay_min'])}, {_fmt(o['p90_delay_min'])}, {_fmt(o['within_3_min'])}"
        for alpha, o in summary["oracle_curve"].items()))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tuning", action="store_true", help="the tuning families and seeds")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES))
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--variants", nargs="*", help="the variants to run (none: only --detector's)")
    parser.add_argument("--detector", nargs="+", metavar="NAME=VALUE",
                        help="add a variant: the shipped one with these detector settings changed")
    parser.add_argument("--tick-s", type=float, help="the job's alert_interval_s (default: as shipped)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    shipped = Settings()
    chosen = variants(shipped)
    custom = custom_variant(chosen["sooner"], args.detector) if args.detector else None
    if args.variants is not None:
        chosen = {name: chosen[name] for name in args.variants}
    if custom is not None:
        chosen[custom.name] = custom
    families = args.families or list(TUNING_FAMILIES if args.tuning else HELD_OUT_FAMILIES)
    seeds = args.seeds or list(TUNING_SEEDS if args.tuning else HELD_OUT_SEEDS)
    tick_s = args.tick_s or shipped.alert_interval_s
    echo = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    runs = [run_seed(f, s, chosen, tick_s, echo) for f in families for s in seeds]
    names = list(chosen)
    report: dict[str, Any] = {
        "families": {f: FAMILIES[f].about for f in families},
        "seeds": seeds,
        "held_out": not args.tuning,
        "tick_s": tick_s,
        "delay_definition": "fired_at (the end of the evidence) - onset, minutes; notified: + the hold before sending",
        "targets": TARGETS,
        "variants": {name: {"detector": _settings_dict(v.detector), "engine": _engine_dict(v.engine), "lifecycle": asdict(v.lifecycle)} for name, v in chosen.items()},
        "per_family": {},
        "per_seed": [
            {"family": r.family, "seed": r.seed, "posts": r.posts, "replay_seconds": r.seconds,
             **{name: s.summary() for name, s in r.scores.items()}}
            for r in runs
        ],
    }
    for family in families:
        summary = summarise([r for r in runs if r.family == family], names)
        report["per_family"][family] = summary
        print_table(f"family {family!r}: {FAMILIES[family].about}", summary)
    pooled = summarise(runs, names)
    report["pooled"] = pooled
    print_table(f"pooled over {', '.join(families)}, seeds {seeds}", pooled)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    echo(f"wrote {args.out}")
    return 0


def _settings_dict(settings: DetectorSettings) -> dict[str, Any]:
    out = {f.name: getattr(settings, f.name) for f in fields(settings)}
    out["default"] = asdict(settings.default)
    out["overrides"] = {k: asdict(v) for k, v in settings.overrides.items()}
    return out


def _engine_dict(settings: EngineSettings) -> dict[str, Any]:
    return {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in asdict(settings).items()}


if __name__ == "__main__":
    raise SystemExit(main())
