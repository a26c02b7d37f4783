"""Alert quality on streams written by other hands: bench.outside_streams through the detector.

    python -m bench.outside_bench [--families ...] [--seeds 1 2 3] [--detector NAME=VALUE ...]

bench.alert_scenarios, the streams the detector's settings were chosen on (and held out from),
is one generator with one author's idea of a market. bench.outside_streams was written by
another author who read neither the detector nor that generator, with its own assumptions
(see its docstring): nothing was tuned on it. Each stream is replayed through
`alerting.backtest` (the alert job's own loop, `moodwire backtest`) with the shipped settings,
and scored as bench.alert_bench scores: recall and delay of the spikes that must be found,
false alerts per 100 ticker-days by cause, repeats within an episode. Windows that meet the
must-find rule on labels where nothing was planted ("organic-flurry") count neither way, like a
spike below the target. There is no oracle: the outside streams do not expose the true share.

How the families are used: earnings and crowd, seed 1, were looked at to find what the false
alerts and misses are (the `min_negatives` gate came from there); drift and tokens, and seed 2
of every family, were not looked at before the result was taken.
Writes bench/results/outside_bench.json and prints a table per family and pooled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerting import backtest
from bench.alert_bench import Score, Variant, custom_variant, fired, pool, print_table, score, variants
from bench.outside_streams import OUTSIDE_FAMILIES, OutsideStream, generate
from moodwire.config import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "outside_bench.json"
SEEDS = (1, 2)


# Label-level spikes nobody planted (chance, a cascade that got out of hand): on labels they are
# a small real spike, so they count neither way, like bench.alert_bench's sub-target spikes
UNPLANNED = "organic-flurry"


def scored_events(stream: OutsideStream) -> OutsideStream:
    """The stream with its unplanned flurries as non-qualifying negative spikes."""
    events = [replace(e, kind="negative-spike", qualifies=False) if e.kind == UNPLANNED else e for e in stream.events]
    return replace(stream, events=events)


def run(family: str, seed: int, chosen: dict[str, Variant], tick_s: float, days: int | None = None) -> tuple[int, dict[str, Score]]:
    began = time.perf_counter()
    stream = scored_events(generate(family, seed, days=days))
    table = backtest.read_posts(stream.posts)
    scores = {}
    for name, variant in chosen.items():
        notes, _late = backtest.replay(table, variant.detector, variant.lifecycle, variant.engine, tick_s)
        scores[name] = score(stream, fired(stream, notes))
    print(f"{family} seed {seed}: {table.read} posts ({table.duplicates} duplicates), "
          f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return table.read, scores


def pooled(scores: list[dict[str, Score]], names: list[str]) -> dict[str, Any]:
    return {"variants": {name: pool([s[name] for s in scores]).summary() for name in names}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--families", nargs="+", choices=list(OUTSIDE_FAMILIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--detector", nargs="+", metavar="NAME=VALUE",
                        help="also run the shipped detector with these settings changed")
    parser.add_argument("--days", type=int, help="shorter streams (a smoke run), default: each family's own length")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    shipped = Settings()
    chosen = {"shipped": variants(shipped)["sooner"]}
    if args.detector:
        custom = custom_variant(chosen["shipped"], args.detector)
        chosen[custom.name] = custom
    names = list(chosen)
    families = args.families or list(OUTSIDE_FAMILIES)
    runs = {(f, s): run(f, s, chosen, shipped.alert_interval_s, args.days) for f in families for s in args.seeds}
    report: dict[str, Any] = {"families": families, "seeds": args.seeds, "days": args.days, "per_family": {}, "per_seed": [
        {"family": f, "seed": s, "posts": posts, **{n: sc.summary() for n, sc in scores.items()}}
        for (f, s), (posts, scores) in runs.items()
    ]}
    for family in families:
        summary = pooled([sc for (f, _), (_, sc) in runs.items() if f == family], names)
        report["per_family"][family] = summary
        print_table(f"outside family {family!r}", summary)
    report["pooled"] = pooled([sc for _, sc in runs.values()], names)
    print_table(f"pooled over {', '.join(families)}, seeds {args.seeds}", report["pooled"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
