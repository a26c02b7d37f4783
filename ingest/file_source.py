"""A JSONL or CSV file as a source, optionally replayed at a fixed rate as if it were live.

JSONL holds one post per line. CSV holds a header row naming the fields, then one post per
record, read by the csv module: a quoted field may span lines. The checkpoint is the byte offset
after the last record on the bus, so a restart resumes exactly there: nothing skipped, nothing
re-emitted (beyond the at-least-once window, which ids dedupe).

A line or record over MAX_MESSAGE_BYTES is read through in pieces, never held whole and never
parsed: it becomes one refused item carrying its first bytes, size and SHA-256 (for the dead
letter), and reading goes on after it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from moodwire.dead_letters import DEAD_LETTER_KEEP_BYTES, MAX_MESSAGE_BYTES, OversizedOriginal
from moodwire.schema import format_timestamp, parse_timestamp

from ingest.sources import RawItem, SourceBatch, too_large

# How much of a line is read at a time: the most a line over the limit costs beyond the limit.
CHUNK_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"


class _RecordBytes:
    """One record's bytes as they are read, without its final line ending: all of them while
    within MAX_MESSAGE_BYTES, after that only the first DEAD_LETTER_KEEP_BYTES, the size and the
    SHA-256 (of all of it)."""

    def __init__(self) -> None:
        self._kept = bytearray()
        self._size = 0
        self._sha256 = hashlib.sha256()
        # A line's ending belongs to the record only if another line of it follows.
        self._line_end = b""

    @property
    def oversized(self) -> bool:
        return self._size > MAX_MESSAGE_BYTES

    def add(self, piece: bytes) -> None:
        if self._line_end:
            self._take(self._line_end)
            self._line_end = b""
        self._take(piece)

    def end_line(self, line_end: bytes) -> None:
        self._line_end = line_end

    def _take(self, piece: bytes) -> None:
        self._size += len(piece)
        self._sha256.update(piece)
        if not self.oversized or len(self._kept) < DEAD_LETTER_KEEP_BYTES:
            self._kept += piece
        if self.oversized:
            del self._kept[DEAD_LETTER_KEEP_BYTES:]

    def value(self) -> bytes | OversizedOriginal:
        if self.oversized:
            return OversizedOriginal(bytes(self._kept), self._size, self._sha256.hexdigest())
        return bytes(self._kept)


def _read_line(
    handle: BinaryIO, record: _RecordBytes, shape: Callable[[bytes], bytes] | None = None
) -> bytes | None:
    """Read one line into `record`, CHUNK_BYTES at a time; None at the end of the file.

    Returns the line with its ending while the record is within MAX_MESSAGE_BYTES; once it is
    over, `shape` of the line (what a parser still needs of it), or b"" without a shape.
    """
    kept: list[bytes] = []
    shaped = False

    def keep(piece: bytes) -> None:
        nonlocal kept, shaped
        if record.oversized and not shaped:
            kept, shaped = ([shape(p) for p in kept] if shape else []), True
        if not shaped:
            kept.append(piece)
        elif shape:
            kept.append(shape(piece))

    read_any = False
    held = b""  # a "\r" that ended a chunk: part of the line's ending if "\n" comes next
    while True:
        chunk = handle.readline(CHUNK_BYTES)
        if not chunk:  # the end of the file
            if held:
                record.add(held)
                keep(held)
            break
        read_any = True
        chunk, held = held + chunk, b""
        ending = b""
        if chunk.endswith(b"\n"):
            ending = b"\r\n" if chunk.endswith(b"\r\n") else b"\n"
        elif chunk.endswith(b"\r"):
            chunk, held = chunk[:-1], b"\r"
        record.add(chunk[: len(chunk) - len(ending)])
        keep(chunk)
        if ending:
            record.end_line(ending)
            break
    return b"".join(kept) if read_any else None


class _Reader(Protocol):
    offset: int  # the byte offset after the last record returned

    def next_item(self) -> RawItem | None: ...


class _JsonLines:
    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.offset = handle.tell()

    def next_item(self) -> RawItem | None:
        while True:
            record = _RecordBytes()
            line = _read_line(self._handle, record)
            if line is None:
                return None
            self.offset = self._handle.tell()
            value = record.value()
            if isinstance(value, OversizedOriginal):
                return RawItem("file", None, raw=value, error=too_large("line", value))
            if value.strip():
                return _json_item(value)


def _json_item(line: bytes) -> RawItem:
    try:
        data: Any = json.loads(line)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, integers over 4300 digits
        return RawItem("file", None, raw=line, error=f"malformed jsonl line: {exc}"[:300])
    if not isinstance(data, dict):
        return RawItem("file", None, raw=line, error=f"expected a JSON object, got {type(data).__name__}")
    return RawItem("file", data, raw=line)


# What decides where a CSV record ends, the rest collapsed: a run of quotes acts as one or two
# quotes (by its parity), and a run of anything else but line breaks as its last character
# (a comma, or one ordinary character). The csv module then finds the same record end in a
# record over the limit without its megabytes being held.
_CSV_RUN = re.compile(rb'"+|[^"\r\n]+')


def _csv_shape(piece: bytes) -> bytes:
    def collapse(run: re.Match[bytes]) -> bytes:
        text = run.group()
        if text.startswith(b'"'):
            return b'"' if len(text) % 2 else b'""'
        return b"," if text.endswith(b",") else b"x"

    return _CSV_RUN.sub(collapse, piece)


class _CsvRecords:
    def __init__(self, handle: BinaryIO) -> None:
        # The csv module refuses fields over 128 KiB by default; a record here is bounded by
        # MAX_MESSAGE_BYTES, and so is every field in it.
        if csv.field_size_limit() <= MAX_MESSAGE_BYTES:
            csv.field_size_limit(MAX_MESSAGE_BYTES + 1)
        self._handle = handle
        if handle.read(len(_BOM)) != _BOM:
            handle.seek(0)
        self._record = _RecordBytes()
        self._reader = csv.reader(self._lines())
        self.header: list[str] = []
        while not self.header:
            self._record = _RecordBytes()
            try:
                self.header = next(self._reader)
            except StopIteration:
                break
        self.offset = handle.tell()

    def _lines(self) -> Iterator[str]:
        # The csv module asks for a line only while a record is unfinished, so after it returns
        # a record the handle stands exactly at that record's end.
        while True:
            line = _read_line(self._handle, self._record, _csv_shape)
            if line is None:
                return
            yield line.decode("utf-8", "surrogateescape")

    def next_item(self) -> RawItem | None:
        while True:
            self._record = _RecordBytes()
            try:
                values = next(self._reader)
                problem = None
            except StopIteration:
                return None
            except csv.Error as exc:
                values, problem = [], f"malformed csv record: {exc}"[:300]
            self.offset = self._handle.tell()
            raw = self._record.value()
            if isinstance(raw, OversizedOriginal):
                return RawItem("file", None, raw=raw, error=too_large("csv record", raw))
            if problem is not None:
                return RawItem("file", None, raw=raw, error=problem)
            if any(value.strip() for value in values):
                return self._item(values, raw)

    def _item(self, values: list[str], raw: bytes) -> RawItem:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RawItem("file", None, raw=raw, error=f"malformed csv record: not UTF-8 at byte {exc.start}")
        data: dict[str, Any] = dict(zip(self.header, values))
        if isinstance(data.get("symbols"), str):
            data["symbols"] = [s for s in data["symbols"].replace(",", " ").split() if s]
        return RawItem("file", data, raw=raw)


class FileSource:
    def __init__(
        self,
        path: Path,
        *,
        rate: float | None = None,
        batch_size: int = 200,
        start_offset: int = 0,
        shift_to_now: bool = False,
        shift: timedelta | None = None,
    ) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"input file {path} does not exist")
        self.name = self.source_name(path)
        self._path = path
        self._csv = path.suffix.lower() == ".csv"
        self._rate = rate
        self._batch_size = batch_size if rate is None else max(1, min(batch_size, int(rate // 4) or 1))
        self._handle = path.open("rb")
        self._reader = self._reader_for(self._handle)
        if start_offset > self._reader.offset:
            self._handle.seek(start_offset)
            self._reader.offset = start_offset
        self._next_emit = time.monotonic()
        # Replaying an old file "as live": move every timestamp by one fixed amount so the last post
        # lands at the moment the replay started; relative spacing (and so any spike) is kept.
        # The shift is part of the checkpoint: a resumed replay must give a re-read post the same
        # timestamp as before, or it would land in another minute and be counted twice.
        if shift is not None:
            self._shift = shift
        else:
            self._shift = self._compute_shift() if shift_to_now else timedelta(0)

    @staticmethod
    def source_name(path: Path) -> str:
        return f"file:{path.resolve()}"

    def _reader_for(self, handle: BinaryIO) -> _Reader:
        return _CsvRecords(handle) if self._csv else _JsonLines(handle)

    def _compute_shift(self) -> timedelta:
        latest: datetime | None = None
        with self._path.open("rb") as handle:
            reader = self._reader_for(handle)
            while (item := reader.next_item()) is not None:
                if item.data is None:
                    continue
                try:
                    stamp = parse_timestamp(item.data.get("published_at"))
                except ValueError:
                    continue
                latest = stamp if latest is None or stamp > latest else latest
        return timedelta(0) if latest is None else datetime.now(UTC) - latest

    def _shifted(self, item: RawItem) -> RawItem:
        if item.data is None:
            return item
        data = dict(item.data)
        data.setdefault("source", "file")
        if self._shift and isinstance(data.get("published_at"), str):
            try:
                data["published_at"] = format_timestamp(parse_timestamp(data["published_at"]) + self._shift)
            except ValueError:
                pass  # left as is: validation dead-letters it with the reason
        return RawItem(str(data.get("source", "file")), data, raw=item.raw)

    def next_batch(self) -> SourceBatch:
        items: list[RawItem] = []
        while len(items) < self._batch_size:
            item = self._reader.next_item()
            if item is None:
                break
            items.append(self._shifted(item))
        checkpoint = {"offset": self._reader.offset, "shift_s": self._shift.total_seconds()}
        batch = SourceBatch(items, checkpoint, exhausted=not items)
        if self._rate and items:
            self._next_emit += len(items) / self._rate
            delay = self._next_emit - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return batch

    def commit(self, checkpoint: dict[str, Any]) -> None:
        pass  # the ingest loop persists the checkpoint; the file needs nothing more

    def close(self) -> None:
        self._handle.close()
