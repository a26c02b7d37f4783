"""`moodwire classify`: JSONL posts in, one scored JSON object out per line, in the same order.

Each output line is the input object with the scores added (so `moodwire classify | moodwire
backtest -` works on posts that carry id and published_at): polarity, polarity_score, emotion,
polarity_probs, emotion_probs, model_version, and `targets`, one stance per ticker: for the
input's `symbols` when given, else for the symbols the ticker linker finds in the text.
A line that isn't a scorable post gets {"id": ..., "error": "..."} in its place.

`--workers N` scores chunks in N processes (one ONNX session each) and writes them in input
order. On a GPU host the Python around the model (JSON, cleanup, ticker linking, tokenization,
building the output) costs far more than the GPU's share, so one process leaves the GPU mostly
idle; N processes feed it N times as fast, up to the cores (bench/gpu_classify.py measures it).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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


def _chunks(lines: Iterable[str]) -> Iterator[list[str]]:
    iterator = iter(lines)  # once: islice over a list (not an iterator) would start it again each time
    while True:
        chunk = list(islice(iterator, CHUNK_LINES))
        if not chunk:
            return
        yield chunk


class ChunkScorer:
    """Everything one process needs to score chunks of lines: its own ONNX session, the ticker
    linker, the explainer. A worker process of `classify --workers N` holds one."""

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        explain: bool = False,
        batch_size: int | None = None,
        provider: str = "auto",
        find_symbols: SymbolFinder | None = None,
        threads: int | None = None,
    ) -> None:
        from scorer.runtime import OnnxScorer

        # batch_size None: the runtime's default for the provider it gets (64 on a CPU, 256 on a GPU).
        self._scorer = OnnxScorer(model_dir, provider=provider, max_batch=batch_size, threads=threads)  # type: ignore[arg-type]
        self._find_symbols = find_symbols
        self._explainer = None
        if explain:
            from scorer.explain import explain as explainer

            self._explainer = explainer

    def score(self, first_number: int, lines: list[str]) -> tuple[str, int]:
        """Lines `first_number`, `first_number` + 1, ... in -> (their output lines, how many are errors)."""
        from scorer.targets import target_scores

        records: list[dict[str, Any]] = []
        texts: list[str] = []
        symbols: list[list[str]] = []
        positions: list[int] = []
        for number, line in enumerate(lines, start=first_number):
            if not line.strip():
                records.append({"id": f"line:{number}", "error": "empty line"})
                continue
            record, text = _parse_line(number, line)
            if text is not None:
                positions.append(len(records))
                texts.append(text)
                symbols.append(_symbols(record, text, self._find_symbols))
            records.append(record)
        scorer = self._scorer
        predictions = scorer.predict(texts, symbols) if texts else []
        attributions = self._explainer(scorer, texts, symbols) if self._explainer is not None and texts else None
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
        errors = sum(1 for record in records if "error" in record)
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), errors


def classify_stream(
    lines: IO[str],
    out: IO[str],
    *,
    model_dir: Path | None = None,
    explain: bool = False,
    batch_size: int | None = None,
    provider: str = "auto",
    find_symbols: SymbolFinder | None = None,
    workers: int = 1,
) -> tuple[int, int]:
    """Score every line; returns (lines read, lines that could not be scored: they get an `error`).

    With `workers` > 1 the chunks are scored by that many processes, each with its own ONNX
    session (on a GPU host they share the GPU), and written in input order; at most two chunks
    per worker are read ahead, so memory stays bounded on an endless stream.
    """
    options = dict(model_dir=model_dir, explain=explain, batch_size=batch_size, provider=provider, find_symbols=find_symbols)
    if workers > 1:
        return _classify_in_workers(lines, out, workers, options)
    scorer = ChunkScorer(**options)  # type: ignore[arg-type]
    read = errors = 0
    for chunk in _chunks(lines):
        text, failed = scorer.score(read + 1, chunk)
        read += len(chunk)
        errors += failed
        out.write(text)
        out.flush()
    return read, errors


# ------------------------------------------------------------------------------ worker processes

_worker: ChunkScorer | None = None


def _start_worker(options: dict[str, Any], threads: int) -> None:
    """Runs first in each worker process: its share of the cores, then its own session."""
    global _worker
    # The tokenizer's thread pool (Rust, rayon; built at its first use) would otherwise start a
    # thread per core in every worker: N workers x all cores fight over the same cores.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    _worker = ChunkScorer(**options, threads=threads)


def _score_in_worker(first_number: int, lines: list[str]) -> tuple[str, int]:
    assert _worker is not None, "worker not started"
    return _worker.score(first_number, lines)


def _classify_in_workers(lines: IO[str], out: IO[str], workers: int, options: dict[str, Any]) -> tuple[int, int]:
    from scorer import model_files
    from scorer.runtime import available_cores

    # A missing model dir is reported here, as without workers, not as a worker that died.
    model_files.read_meta(options["model_dir"] or model_files.default_model_dir())
    threads = max(1, available_cores() // workers)
    # spawn, not fork: onnxruntime (and CUDA) are not fork-safe once a process has used them, and
    # a forked worker of a process that had scored before hung in its first session.run.
    context = multiprocessing.get_context("spawn")
    pending: deque[Future[tuple[str, int]]] = deque()
    read = errors = 0
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(options, threads)) as pool:
        try:
            for chunk in _chunks(lines):
                pending.append(pool.submit(_score_in_worker, read + 1, chunk))
                read += len(chunk)
                if len(pending) >= 2 * workers:
                    errors += _write_next(pending, out)
            while pending:
                errors += _write_next(pending, out)
        except BrokenProcessPool:
            raise RuntimeError("a classify worker died or could not start (its error is above)") from None
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return read, errors


def _write_next(pending: deque[Future[tuple[str, int]]], out: IO[str]) -> int:
    text, failed = pending.popleft().result()
    out.write(text)
    out.flush()
    return failed
