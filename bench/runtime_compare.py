"""Two model dirs on the runtime bench corpus, interleaved, in one process: is the new one as fast?

    python -m bench.runtime_compare OLD_DIR NEW_DIR [--repeats 5] [--size N] [--out FILE]

The scorer runtime's throughput as bench.runtime_bench measures it for `moodwire_int8` (the whole
corpus handed to OnnxScorer.predict in one call, tokenization and result objects included), but
for two model dirs taking turns (old, new, old, new, ...) so that both see the same machine load:
on a shared machine the load moves more between runs than a model change does. Also the new dir
with each post's symbols (the post's own, else the ticker linker's), as the scorer service calls
it, which adds the span finder and the per-ticker stance read. No checkpoint needed (unlike the
runtime bench's torch and pipeline variants).

Writes bench/results/runtime_compare.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_compare.json"


def compare(old_dir: Path, new_dir: Path, repeats: int = 5, size: int | None = None) -> dict[str, Any]:
    from ingest.tickers import SymbolLinker, SymbolTable
    from scorer.runtime import OnnxScorer, available_cores, cpu_model

    posts = corpus.load_posts(size)
    texts = [p.text for p in posts]
    linker = SymbolLinker(SymbolTable.load())
    symbols = [list(p.symbols) or linker.link(p.text) for p in posts]
    old = OnnxScorer(old_dir, provider="cpu")
    new = OnnxScorer(new_dir, provider="cpu")
    runs: dict[str, Callable[[], Any]] = {
        "old": lambda: old.predict(texts),
        "new": lambda: new.predict(texts),
        "new_with_symbols": lambda: new.predict(texts, symbols),
    }
    for run in runs.values():  # warm: first calls pay for allocations and the span finder's build
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            rates[name].append(len(texts) / (time.perf_counter() - began))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {available_cores()} cores",
        "posts": len(texts),
        "posts_with_symbols": sum(1 for s in symbols if s),
        "old": {"model_dir": str(old_dir), "model_version": old.model_version},
        "new": {"model_dir": str(new_dir), "model_version": new.model_version, "stance_head": new.has_stance_head},
        "posts_per_s": {name: [round(r, 1) for r in values] for name, values in rates.items()},
        "median_posts_per_s": {name: round(m, 1) for name, m in medians.items()},
        "new_over_old": round(medians["new"] / medians["old"], 3),
        "new_with_symbols_over_old": round(medians["new_with_symbols"] / medians["old"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old_dir", type=Path)
    parser.add_argument("new_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=None, help="the first N posts of the corpus (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = compare(args.old_dir, args.new_dir, args.repeats, args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
