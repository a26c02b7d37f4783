"""FileSource: CSV records through the csv module with exact byte offsets, and lines or records
over MAX_MESSAGE_BYTES read through in pieces, refused, and never held whole."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.file_source import CHUNK_BYTES, FileSource
from ingest.sources import RawItem
from moodwire.dead_letters import DEAD_LETTER_KEEP_BYTES, MAX_MESSAGE_BYTES, OversizedOriginal

HEADER = ["id", "source", "text", "published_at", "symbols"]


def csv_bytes(rows: list[list[str]], *, bom: bool = False, line_end: str = "\r\n") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=line_end).writerows([HEADER, *rows])
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8")


def read_all(source: FileSource) -> tuple[list[RawItem], list[int]]:
    """Every item, and the checkpoint offset after each batch."""
    items: list[RawItem] = []
    offsets: list[int] = []
    while not (batch := source.next_batch()).exhausted:
        items.extend(batch.items)
        assert batch.checkpoint is not None
        offsets.append(batch.checkpoint["offset"])
    source.close()
    return items, offsets


def ids(items: list[RawItem]) -> list[Any]:
    return [item.data["id"] if item.data else item.error for item in items]


ROWS = [
    ["c1", "csv", "Line one\nline two, with a comma", "2026-11-02T14:00:00Z", "AAPL, MSFT"],
    ["c2", "csv", 'He said "buy"\r\nthen\n\nsold', "2026-11-02T14:01:00Z", ""],
    ["c3", "csv", "plain", "2026-11-02T14:02:00Z", "TSLA"],
    ["c4", "csv", "ends with a newline\n", "2026-11-02T14:03:00Z", ""],
    ["c5", "csv", "ünïcødé, \"quoted\"", "2026-11-02T14:04:00Z", "NVDA"],
]


@pytest.mark.parametrize("line_end", ["\r\n", "\n"])
def test_csv_records_with_multi_line_quoted_fields_come_out_whole(tmp_path: Path, line_end: str) -> None:
    path = tmp_path / "posts.csv"
    path.write_bytes(csv_bytes(ROWS, bom=True, line_end=line_end))
    items, _ = read_all(FileSource(path, batch_size=2))
    assert [item.data for item in items] == [
        {"id": row[0], "source": "csv", "text": row[2], "published_at": row[3],
         "symbols": row[4].replace(",", " ").split()}
        for row in ROWS
    ]


def test_every_csv_checkpoint_is_a_record_boundary(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    data = csv_bytes(ROWS)
    path.write_bytes(data)
    _, offsets = read_all(FileSource(path, batch_size=1))
    # The offset after record n is where the bytes of records 1..n end.
    ends = [len(csv_bytes(ROWS[: n + 1])) for n in range(len(ROWS))]
    assert offsets == ends
    # Resuming at any of them gives exactly the records after it.
    for n, offset in enumerate(offsets):
        resumed, _ = read_all(FileSource(path, start_offset=offset))
        assert ids(resumed) == [row[0] for row in ROWS[n + 1 :]]


def test_blank_lines_are_skipped_and_a_broken_record_is_one_item(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    rows = csv_bytes(ROWS[:1]) + b"\r\n   \r\n" + b'c9,csv,"bad \xff byte",2026-11-02T14:00:00Z,\r\n' + csv_bytes(ROWS[2:3])[len(csv_bytes([])):]
    path.write_bytes(rows)
    items, _ = read_all(FileSource(path))
    assert ids(items) == ["c1", "malformed csv record: not UTF-8 at byte 12", "c3"]
    assert items[1].raw == b'c9,csv,"bad \xff byte",2026-11-02T14:00:00Z,'


def oversized_line_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    """A JSONL file with a `size`-byte line (a post with a huge text) between four good ones."""
    start = b'{"id": "big", "source": "file", "text": "'
    big = start + b"x" * (size - len(start) - 2) + b'"}'
    good = [json.dumps({"id": f"g{i}", "text": f"post {i}"}).encode() for i in range(4)]
    path = tmp_path / "posts.jsonl"
    path.write_bytes(b"\n".join([good[0], good[1], big, good[2], good[3]]) + b"\n")
    return path, big


def test_a_10_mb_line_is_refused_without_being_held_or_parsed(tmp_path: Path) -> None:
    path, big = oversized_line_file(tmp_path, 10 * 1024 * 1024)
    source = FileSource(path, batch_size=100)
    tracemalloc.start()
    try:
        batch = source.next_batch()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    source.close()
    # What reading past a line over the limit may cost: the limit itself plus a few pieces.
    assert peak < MAX_MESSAGE_BYTES + 8 * CHUNK_BYTES, f"{peak} bytes allocated reading a {len(big)}-byte line"
    assert ids(batch.items) == ["g0", "g1", f"line is {len(big)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit", "g2", "g3"]
    refused = batch.items[2]
    assert refused.data is None and isinstance(refused.raw, OversizedOriginal)
    assert refused.raw.size == len(big)
    assert refused.raw.sha256 == hashlib.sha256(big).hexdigest()
    assert refused.raw.head == big[:DEAD_LETTER_KEEP_BYTES]
    assert batch.checkpoint == {"offset": path.stat().st_size, "shift_s": 0.0}


def test_a_crlf_split_between_two_reads_is_still_the_line_ending(tmp_path: Path) -> None:
    # The "\r" is the last byte of a 64 KiB read and the "\n" the first of the next one.
    big = b"x" * (MAX_MESSAGE_BYTES + CHUNK_BYTES - (MAX_MESSAGE_BYTES % CHUNK_BYTES) - 1)
    path = tmp_path / "posts.jsonl"
    path.write_bytes(big + b"\r\n" + json.dumps({"id": "after", "text": "x"}).encode() + b"\r\n")
    items, offsets = read_all(FileSource(path))
    assert isinstance(items[0].raw, OversizedOriginal)
    assert (items[0].raw.size, items[0].raw.sha256) == (len(big), hashlib.sha256(big).hexdigest())
    assert ids(items)[1:] == ["after"] and offsets == [path.stat().st_size]


def test_a_csv_record_over_the_limit_spanning_lines_is_one_item_and_the_next_record_is_intact(
    tmp_path: Path,
) -> None:
    # A quoted field of many lines, with quotes, commas and blank lines inside, crossing the limit.
    text = "\n".join(f'line {i}, "quoted" {"y" * 5_000}' if i % 7 else "" for i in range(400))
    rows = [ROWS[0], ["huge", "csv", text, "2026-11-02T14:00:00Z", ""], ROWS[2]]
    path = tmp_path / "posts.csv"
    path.write_bytes(csv_bytes(rows))
    items, offsets = read_all(FileSource(path, batch_size=1))
    record = csv_bytes(rows[:2])[len(csv_bytes(rows[:1])) :].removesuffix(b"\r\n")
    assert len(record) > MAX_MESSAGE_BYTES
    assert ids(items) == ["c1", f"csv record is {len(record)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit", "c3"]
    assert isinstance(items[1].raw, OversizedOriginal)
    assert items[1].raw.sha256 == hashlib.sha256(record).hexdigest()
    assert items[2].data is not None and items[2].data["text"] == "plain"
    assert offsets == [len(csv_bytes(rows[:n])) for n in (1, 2, 3)]


def csv_module_records(lines: list[bytes]) -> list[int]:
    """How many lines each record takes, as the csv module reads them (a refused record too)."""
    taken = 0

    def feed() -> Any:
        nonlocal taken
        for line in lines:
            taken += 1
            yield line.decode("latin-1")

    reader = csv.reader(feed())
    counts: list[int] = []
    while True:
        before = taken
        try:
            next(reader)
        except StopIteration:
            return counts
        except csv.Error:
            pass
        counts.append(taken - before)


def tracked_records(lines: list[bytes]) -> list[int]:
    """The same, from the state tracker FileSource uses for records over the limit."""
    from ingest.file_source import _Csv, _csv_after

    counts: list[int] = []
    state, taken = _Csv.FIELD_START, 0
    for line in lines:
        taken += 1
        content = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
        state = _csv_after(state, content)
        if state is not _Csv.QUOTED:
            counts.append(taken)
            state, taken = _Csv.FIELD_START, 0
    return counts + ([taken] if taken else [])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", "b,", ",", '"', '""', "\r", " "]), max_size=40), st.data())
def test_the_record_end_tracker_agrees_with_the_csv_module(tokens: list[str], data: st.DataObject) -> None:
    text = "".join(tokens)
    breaks = data.draw(st.lists(st.integers(0, len(text)), max_size=6, unique=True))
    for at in sorted(breaks, reverse=True):
        text = text[:at] + data.draw(st.sampled_from(["\n", "\r\n"])) + text[at:]
    # Lines as FileSource reads them: split after each "\n" only.
    lines = re.findall(rb"[^\n]*\n|[^\n]+$", text.encode())
    assert tracked_records(lines) == csv_module_records(lines), lines
