"""Measure the ticker linker on the hand-labelled sample data/tickers_eval.jsonl.

Each line: {"id", "text", "symbols": gold tickers, "tags": [...]}. Labelling rules used for gold:
a company counts when it is named (name, common short name, ticker, cashtag or exchange-prefixed
ticker), in any case, with its primary listing as the table has it (US line for ADRs); people,
products and subsidiaries' brands (Tim Cook, iPhone, Instagram, AWS) do not; coins count under
their symbol; market indices count when named (S&P 500 -> SPX, the Dow -> DJI) but "Nasdaq" or
"S&P" alone do not; a capitalised cashtag counts even when the symbol is unknown.

Texts tagged "heldout" were written after the linker's rules were settled on the rest ("dev"),
and first scored blind; both splits are reported, since rules were tuned while reading dev errors.

Scores are micro-averaged over (text, symbol) pairs; per-tag scores and every miss and false
positive are listed so changes can be judged on what they break. Speed is texts per second over
the whole sample, repeated, after one warm-up pass.

Run: python bench/tickers_eval.py [--data PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.tickers import SymbolLinker, SymbolTable  # noqa: E402


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    texts: int = 0
    exact: int = 0

    def add(self, gold: set[str], predicted: set[str]) -> None:
        self.tp += len(gold & predicted)
        self.fp += len(predicted - gold)
        self.fn += len(gold - predicted)
        self.texts += 1
        self.exact += gold == predicted

    def scores(self) -> dict[str, float | int]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "texts": self.texts,
            "exact_match": round(self.exact / self.texts, 4) if self.texts else 0.0,
        }


@dataclass
class Report:
    overall: Counts = field(default_factory=Counts)
    by_split: dict[str, Counts] = field(default_factory=lambda: {"dev": Counts(), "heldout": Counts()})
    by_tag: dict[str, Counts] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


def evaluate(linker: SymbolLinker, examples: list[dict[str, Any]]) -> Report:
    report = Report()
    for example in examples:
        gold = set(example["symbols"])
        predicted_list = linker.link(example["text"])
        predicted = set(predicted_list)
        report.overall.add(gold, predicted)
        report.by_split["heldout" if "heldout" in example.get("tags", []) else "dev"].add(gold, predicted)
        for tag in example.get("tags", []):
            report.by_tag.setdefault(tag, Counts()).add(gold, predicted)
        if gold != predicted:
            report.errors.append({
                "id": example["id"], "text": example["text"],
                "missed": sorted(gold - predicted), "extra": sorted(predicted - gold),
            })
    return report


def texts_per_second(linker: SymbolLinker, texts: list[str], min_seconds: float = 1.0) -> float:
    for text in texts:
        linker.link(text)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        for text in texts:
            linker.link(text)
        done += len(texts)
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "tickers_eval.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tickers_eval.json")
    args = parser.parse_args()

    examples = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line]
    start = time.perf_counter()
    table = SymbolTable.load()
    linker = SymbolLinker(table)
    load_seconds = time.perf_counter() - start

    report = evaluate(linker, examples)
    speed = texts_per_second(linker, [e["text"] for e in examples])
    overall = report.overall.scores()

    print(f"ticker linking on {len(examples)} texts ({len(table)} symbols, loaded in {load_seconds:.2f}s)")
    print(f"precision {overall['precision']:.3f}  recall {overall['recall']:.3f}  f1 {overall['f1']:.3f}"
          f"  (tp {overall['tp']}, fp {overall['fp']}, fn {overall['fn']}; exact {overall['exact_match']:.3f})")
    print(f"speed {speed:,.0f} texts/s")
    for split, counts in report.by_split.items():
        s = counts.scores()
        print(f"  {split:8s} n={s['texts']:3d}  P {s['precision']:.3f}  R {s['recall']:.3f}  F1 {s['f1']:.3f}")
    print("\nby tag:")
    for tag, counts in sorted(report.by_tag.items()):
        s = counts.scores()
        print(f"  {tag:22s} n={s['texts']:3d}  P {s['precision']:.3f}  R {s['recall']:.3f}  F1 {s['f1']:.3f}")
    print(f"\n{len(report.errors)} texts with errors:")
    for error in report.errors:
        print(f"  {error['id']} missed={error['missed']} extra={error['extra']}  {error['text'][:90]!r}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT) else args.data),
        "texts": len(examples),
        "symbols_in_table": len(table),
        "overall": overall,
        "texts_per_second": round(speed),
        "by_split": {split: counts.scores() for split, counts in report.by_split.items()},
        "by_tag": {tag: counts.scores() for tag, counts in sorted(report.by_tag.items())},
        "errors": report.errors,
    }
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
