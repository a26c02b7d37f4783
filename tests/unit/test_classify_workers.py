"""`moodwire classify --workers N`: the same lines out, in input order, from N processes, with
bounded read-ahead on a stream."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scorer import classify

pytestmark = [pytest.mark.slow]

LONG = " ".join(f"$AAPL shares fell {n} percent after the guidance cut, analysts furious" for n in range(12))


def input_lines() -> list[str]:
    """Posts (with and without symbols) and every kind of bad line; the first chunks hold long
    posts (slow to score), the last ones only bad lines (instant), so chunks finish out of order."""
    lines = []
    for index in range(120):
        lines.append(json.dumps({"id": f"long:{index}", "text": LONG + f" #{index}"}) + "\n")
    for index in range(240):
        post: dict[str, object] = {"id": f"p:{index}", "text": f"<b>$TSLA</b> deliveries beat estimates #{index}"}
        if index % 3 == 0:
            post["symbols"] = ["tsla", "$nvda"]
        lines.append(json.dumps(post) + "\n")
        if index % 40 == 7:
            lines += ["{not json\n", "\n", "[1, 2]\n", json.dumps({"id": index, "text": "   "}) + "\n"]
    lines += ["{broken\n"] * 150
    return lines


def run(lines: list[str], workers: int) -> list[dict[str, object]]:
    out = io.StringIO()
    read, errors = classify.classify_stream(iter(lines), out, workers=workers)  # type: ignore[arg-type]
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert read == len(lines) == len(records)
    assert errors == sum(1 for r in records if "error" in r)
    return records


def test_workers_write_every_line_in_input_order_with_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classify, "CHUNK_LINES", 40)  # many chunks: more than the workers hold at once
    lines = input_lines()
    alone = run(lines, workers=1)
    together = run(lines, workers=3)
    assert [r["id"] for r in together] == [r["id"] for r in alone]
    assert [r.get("error") for r in together] == [r.get("error") for r in alone]
    assert sum(1 for r in alone if "error" in r) == 150 + 6 * 4
    for mine, reference in zip(together, alone):
        assert mine.keys() == reference.keys()
        if "error" in reference:
            continue
        assert (mine["polarity"], mine["emotion"], mine["symbols"]) == (reference["polarity"], reference["emotion"], reference["symbols"])
        for label, probability in reference["polarity_probs"].items():  # type: ignore[union-attr]
            assert mine["polarity_probs"][label] == pytest.approx(probability, abs=1e-4)  # type: ignore[index]


class CountingLines:
    """A stream of lines that knows how many were taken from it."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.taken += 1
            yield line


class Output(io.StringIO):
    """Notes how many input lines had been read at each write."""

    def __init__(self, source: CountingLines) -> None:
        super().__init__()
        self._source = source
        self.read_at_write: list[int] = []

    def write(self, text: str) -> int:
        self.read_at_write.append(self._source.taken)
        return super().write(text)


def test_workers_read_a_bounded_number_of_chunks_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    chunk, workers = 20, 2
    monkeypatch.setattr(classify, "CHUNK_LINES", chunk)
    source = CountingLines([json.dumps({"id": f"p:{i}", "text": f"$BA shares rose {i}"}) + "\n" for i in range(400)])
    out = Output(source)
    read, errors = classify.classify_stream(source, out, workers=workers)  # type: ignore[arg-type]
    assert (read, errors) == (400, 0)
    assert len(out.getvalue().splitlines()) == 400
    written = 0
    for index, taken in enumerate(out.read_at_write):
        written = (index + 1) * chunk
        # Two chunks per worker in flight, plus the one being read, never more.
        assert taken <= min(400, written - chunk + (2 * workers + 1) * chunk), (index, taken)


def test_the_command_takes_workers(tmp_path: Path) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(json.dumps({"id": f"p:{i}", "text": f"$AAPL beats estimates #{i}"}) + "\n" for i in range(50)))
    done = subprocess.run(
        [sys.executable, "-m", "moodwire.cli", "classify", "--workers", "2", str(posts)], capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    records = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [r["id"] for r in records] == [f"p:{i}" for i in range(50)]
    assert all(r["polarity"] in ("negative", "neutral", "positive") and r["symbols"] == ["AAPL"] for r in records)
