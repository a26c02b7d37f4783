"""`moodwire classify`: JSONL posts in, one scored JSON object out per line, in the same order.

Each output line is the input object with the scores added (so `moodwire classify | moodwire
backtest -` works on posts that carry id and published_at): polarity, polarity_score, emotion,
polarity_probs, emotion_probs, model_version, and `targets`, one stance per ticker: for the
input's `symbols` when given, else for the symbols the ticker linker finds in the text.
A line that isn't a scorable post gets {"id": ..., "error": "..."} in its place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

from moodwire.schema import MAX_SYMBOLS, clean_text

# Lines read per round: enough for length-sorted batching to pay off, small enough to stream.
CHUNK_LINES = 2048

SymbolFinder = Callable[[str], list[str]]


def _parse_line(number: int, line: str) -> tuple[dict[str, Any], str | None]:
    """-> (the input object, or an error stub; the text to score or None with ["error"] set)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return {"id": f"line:{number}", "error": f"malformed JSON: {exc}"[:300]}, None
    if not isinstance(data, dict):
        return {"id": f"line:{number}", "error": "expected a JSON object"}, None
    post_id = data.get("id")
    record: dict[str, Any] = {**data, "id": str(post_id) if post_id is not None else f"line:{number}"}
    text = data.get("text")
    if not isinstance(text, str):
        return {"id": record["id"], "error": "text: required, must be a string"}, None
    cleaned = clean_text(text)
    if not cleaned:
        return {"id": record["id"], "error": "text: empty after removing HTML and whitespace"}, None
    return record, cleaned


def _symbols(record: dict[str, Any], text: str, find: SymbolFinder | None) -> list[str]:
    given = record.get("symbols")
    if isinstance(given, list) and given:
        cleaned = [s.strip().lstrip("$").upper() for s in given if isinstance(s, str) and s.strip()]
        return list(dict.fromkeys(cleaned))[:MAX_SYMBOLS]
    return find(text)[:MAX_SYMBOLS] if find is not None else []


def _chunks(lines: IO[str]) -> Iterator[list[str]]:
    while True:
        chunk = list(islice(lines, CHUNK_LINES))
        if not chunk:
            return
        yield chunk


def classify_stream(
    lines: IO[str],
    out: IO[str],
    *,
    model_dir: Path | None = None,
    explain: bool = False,
    batch_size: int | None = None,
    provider: str = "auto",
    find_symbols: SymbolFinder | None = None,
) -> tuple[int, int]:
    """Score every line; returns (lines read, lines that could not be scored: they get an `error`)."""
    from scorer.runtime import OnnxScorer
    from scorer.targets import target_scores

    # None: the runtime's default for the provider it gets (64 on a CPU, 256 on a GPU).
    scorer = OnnxScorer(model_dir, provider=provider, max_batch=batch_size)  # type: ignore[arg-type]
    explainer = None
    if explain:
        from scorer.explain import explain as explainer

    errors = 0
    number = 0
    for chunk in _chunks(lines):
        records: list[dict[str, Any]] = []
        texts: list[str] = []
        symbols: list[list[str]] = []
        positions: list[int] = []
        for line in chunk:
            number += 1
            if not line.strip():
                records.append({"id": f"line:{number}", "error": "empty line"})
                continue
            record, text = _parse_line(number, line)
            if text is not None:
                positions.append(len(records))
                texts.append(text)
                symbols.append(_symbols(record, text, find_symbols))
            records.append(record)
        predictions = scorer.predict(texts, symbols) if texts else []
        attributions = explainer(scorer, texts, symbols) if explainer is not None and texts else None
        for index, (position, prediction) in enumerate(zip(positions, predictions)):
            records[position].update(
                symbols=symbols[index],
                polarity=prediction.polarity,
                polarity_score=round(prediction.polarity_score, 6),
                emotion=prediction.emotion,
                polarity_probs={k: round(v, 6) for k, v in prediction.polarity_probs.items()},
                emotion_probs={k: round(v, 6) for k, v in prediction.emotion_probs.items()},
                targets=[t.to_dict() for t in target_scores(symbols[index], prediction)],
                model_version=scorer.model_version,
            )
            if attributions is not None:
                records[position]["explanation"] = attributions[index]
        for record in records:
            if "error" in record:
                errors += 1
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    return number, errors
