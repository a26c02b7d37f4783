"""`moodwire classify`: JSONL posts in, one scored JSON object out per line, in the same order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

from moodwire.schema import clean_text

# Lines read per round: enough for length-sorted batching to pay off, small enough to stream.
CHUNK_LINES = 2048


def _parse_line(number: int, line: str) -> tuple[dict[str, Any], str | None]:
    """-> (output stub with the id, the text to score or None with stub["error"] set)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"id": f"line:{number}", "error": f"malformed JSON: {exc}"}, None
    if not isinstance(data, dict):
        return {"id": f"line:{number}", "error": "expected a JSON object"}, None
    post_id = data.get("id")
    stub: dict[str, Any] = {"id": str(post_id) if post_id is not None else f"line:{number}"}
    text = data.get("text")
    if not isinstance(text, str):
        stub["error"] = "text: required, must be a string"
        return stub, None
    cleaned = clean_text(text)
    if not cleaned:
        stub["error"] = "text: empty after removing HTML and whitespace"
        return stub, None
    return stub, cleaned


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
) -> int:
    """Score every line; returns how many lines could not be scored (they get an `error`)."""
    from scorer.runtime import OnnxScorer

    # None: the runtime's default for the provider it gets (64 on a CPU, 256 on a GPU).
    scorer = OnnxScorer(model_dir, provider=provider, max_batch=batch_size)  # type: ignore[arg-type]
    explainer = None
    if explain:
        from scorer.explain import explain as explainer

    errors = 0
    number = 0
    for chunk in _chunks(lines):
        stubs: list[dict[str, Any]] = []
        texts: list[str] = []
        positions: list[int] = []
        for line in chunk:
            number += 1
            if not line.strip():
                stubs.append({"id": f"line:{number}", "error": "empty line"})
                continue
            stub, text = _parse_line(number, line)
            if text is not None:
                positions.append(len(stubs))
                texts.append(text)
            stubs.append(stub)
        predictions = scorer.predict(texts) if texts else []
        attributions = explainer(scorer, texts) if explainer is not None and texts else None
        for index, (position, prediction) in enumerate(zip(positions, predictions)):
            stubs[position].update(
                polarity=prediction.polarity,
                polarity_score=round(prediction.polarity_score, 6),
                emotion=prediction.emotion,
                polarity_probs={k: round(v, 6) for k, v in prediction.polarity_probs.items()},
                emotion_probs={k: round(v, 6) for k, v in prediction.emotion_probs.items()},
                model_version=scorer.model_version,
            )
            if attributions is not None:
                stubs[position]["explanation"] = attributions[index]
        for stub in stubs:
            if "error" in stub:
                errors += 1
            out.write(json.dumps(stub, ensure_ascii=False) + "\n")
        out.flush()
    return errors
