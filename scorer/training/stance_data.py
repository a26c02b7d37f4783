"""The hand-written per-ticker stance set (data/stance/batch_*.jsonl): load, validate, describe.

Each row is a post or headline with its post-level polarity and emotion and one target per
instrument it names, each with a stance and the exact substrings (`mentions`) that refer to it.
The rules are in data/stance/GUIDELINES.md. `python -m scorer.training.stance_data --check FILE`
validates a file and prints what it holds (writers run it before handing a batch in).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from moodwire.schema import SYMBOL_RE

REPO = Path(__file__).resolve().parents[2]
STANCE_DIR = REPO / "data" / "stance"
# Batches written last and never looked at while tuning: evaluation only. batch_final.jsonl was
# written after batches a-f; batch_final2.jsonl after g-j, by another author.
FINAL_BATCH = "batch_final.jsonl"
FINAL_BATCH_GLOB = "batch_final*.jsonl"


def is_final(path: Path) -> bool:
    return path.match(FINAL_BATCH_GLOB)

KINDS = ("post", "headline")
REGISTERS = ("stocktwits", "reddit", "fintwit", "wire", "analyst", "forum", "newsletter", "chat")
MAX_TARGETS = 6
_ID_RE = re.compile(r"^st-[a-z0-9]+-\d{4}$")


@dataclass(frozen=True)
class Target:
    symbol: str
    stance: str
    mentions: tuple[str, ...]


@dataclass(frozen=True)
class StanceRow:
    id: str
    text: str
    kind: str
    register: str
    polarity: str
    emotion: str
    targets: tuple[Target, ...]
    batch: str

    @property
    def disagrees(self) -> bool:
        """Two or more targets with different stances: the rows the copied-post baseline gets wrong."""
        return len({t.stance for t in self.targets}) > 1


class StanceDataError(ValueError):
    pass


def parse_row(record: Any, batch: str) -> StanceRow:
    """One JSON object -> a StanceRow, or StanceDataError naming what is wrong."""
    if not isinstance(record, dict):
        raise StanceDataError("not a JSON object")
    row_id = record.get("id")
    if not isinstance(row_id, str) or not _ID_RE.match(row_id):
        raise StanceDataError(f"id {row_id!r} is not st-<batch>-<nnnn>")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise StanceDataError("text is missing or empty")
    checks = (
        ("kind", KINDS),
        ("register", REGISTERS),
        ("polarity", POLARITY_LABELS),
        ("emotion", EMOTION_LABELS),
    )
    for name, allowed in checks:
        if record.get(name) not in allowed:
            raise StanceDataError(f"{name} {record.get(name)!r} is not one of {', '.join(allowed)}")
    raw_targets = record.get("targets")
    if not isinstance(raw_targets, list) or not 1 <= len(raw_targets) <= MAX_TARGETS:
        raise StanceDataError(f"targets must be a list of 1 to {MAX_TARGETS}")
    targets: list[Target] = []
    for raw in raw_targets:
        if not isinstance(raw, dict):
            raise StanceDataError("each target must be an object")
        symbol = raw.get("symbol")
        if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
            raise StanceDataError(f"symbol {symbol!r} is not an upper-case ticker")
        if raw.get("stance") not in POLARITY_LABELS:
            raise StanceDataError(f"{symbol}: stance {raw.get('stance')!r} is not one of {', '.join(POLARITY_LABELS)}")
        mentions = raw.get("mentions")
        if not isinstance(mentions, list) or not mentions or not all(isinstance(m, str) and m for m in mentions):
            raise StanceDataError(f"{symbol}: mentions must be a non-empty list of strings")
        for mention in mentions:
            if mention not in text:
                raise StanceDataError(f"{symbol}: mention {mention!r} is not in the text")
        if any(t.symbol == symbol for t in targets):
            raise StanceDataError(f"{symbol} is listed twice")
        targets.append(Target(symbol, str(raw["stance"]), tuple(dict.fromkeys(mentions))))
    return StanceRow(
        id=row_id,
        text=text.strip(),
        kind=str(record["kind"]),
        register=str(record["register"]),
        polarity=str(record["polarity"]),
        emotion=str(record["emotion"]),
        targets=tuple(targets),
        batch=batch,
    )


def load_file(path: Path) -> tuple[list[StanceRow], list[str]]:
    """Rows that pass, and one message per line that does not."""
    rows: list[StanceRow] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(parse_row(json.loads(line), path.stem))
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}:{number}: not JSON ({exc})")
            except StanceDataError as exc:
                problems.append(f"{path.name}:{number}: {exc}")
    return rows, problems


def load_batches(directory: Path = STANCE_DIR, *, include_final: bool = False) -> list[StanceRow]:
    """Every valid row of every batch, deduplicated by id and by text (first wins).

    The final batch is left out unless asked for: it is evaluation-only and read last.
    """
    rows: list[StanceRow] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    for path in sorted(directory.glob("batch_*.jsonl")):
        if is_final(path) and not include_final:
            continue
        for row in load_file(path)[0]:
            key = " ".join(row.text.lower().split())
            if row.id in seen_ids or key in seen_texts:
                continue
            seen_ids.add(row.id)
            seen_texts.add(key)
            rows.append(row)
    return rows


def load_final(directory: Path = STANCE_DIR, name: str = FINAL_BATCH) -> list[StanceRow]:
    """One evaluation-only batch (batch_final.jsonl by default; batch_final2.jsonl was written last)."""
    path = directory / name
    return load_file(path)[0] if path.is_file() else []


def _word_set(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[\w$#@']+", text.lower()))


def near_copies(rows: Sequence[StanceRow], others: Iterable[StanceRow] = (), jaccard: float = 0.7) -> list[tuple[str, str]]:
    """Pairs (row id, other id) whose word sets are at least `jaccard` alike: rows that only swap names."""
    pool = [(r.id, _word_set(r.text)) for r in others]
    out: list[tuple[str, str]] = []
    mine: list[tuple[str, frozenset[str]]] = []
    for row in rows:
        words = _word_set(row.text)
        if len(words) >= 4:
            for other_id, other in [*pool, *mine]:
                if len(words & other) / len(words | other) >= jaccard:
                    out.append((row.id, other_id))
                    break
        mine.append((row.id, words))
    return out


def describe(rows: Sequence[StanceRow], known_symbols: set[str] | None = None) -> dict[str, Any]:
    targets = [t for r in rows for t in r.targets]
    multi = [r for r in rows if len(r.targets) > 1]
    stats: dict[str, Any] = {
        "rows": len(rows),
        "targets": len(targets),
        "multi_ticker_rows": len(multi),
        "multi_ticker_disagreeing_rows": sum(1 for r in multi if r.disagrees),
        "share_disagreeing": round(sum(1 for r in multi if r.disagrees) / max(1, len(rows)), 3),
        "kind": dict(Counter(r.kind for r in rows)),
        "register": dict(Counter(r.register for r in rows).most_common()),
        "polarity": dict(Counter(r.polarity for r in rows)),
        "emotion": dict(Counter(r.emotion for r in rows)),
        "stance": dict(Counter(t.stance for t in targets)),
        "stance_differs_from_post_polarity": sum(1 for r in rows for t in r.targets if t.stance != r.polarity),
        "distinct_symbols": len({t.symbol for t in targets}),
    }
    if known_symbols is not None:
        missing = Counter(t.symbol for t in targets if t.symbol not in known_symbols)
        stats["symbols_not_in_table"] = dict(missing.most_common(30))
    return stats


def _known_symbols() -> set[str] | None:
    path = REPO / "ingest" / "data" / "symbols.csv"
    if not path.is_file():
        return None
    import csv

    with path.open(encoding="utf-8") as handle:
        return {row["symbol"] for row in csv.DictReader(handle)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate and describe stance batches.")
    parser.add_argument("--check", nargs="+", type=Path, required=True, help="batch files to check")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.check:
        rows, problems = load_file(path)
        others = [r for p in sorted(STANCE_DIR.glob("batch_*.jsonl")) if p.resolve() != path.resolve()
                  for r in load_file(p)[0]]
        for problem in problems:
            print(problem)
        copies = near_copies(rows, others)
        for row_id, other_id in copies[:50]:
            print(f"{path.name}: {row_id} is a near copy of {other_id} (rewrite it)")
        print(json.dumps({"file": str(path), "problems": len(problems), "near_copies": len(copies),
                          **describe(rows, _known_symbols())}, indent=2))
        bad += len(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
