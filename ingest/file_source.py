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
import itertools
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import Enum
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
        self.started = False
        self._kept = bytearray()
        self._size = 0
        self._sha256 = hashlib.sha256()
        # A line's ending belongs to the record only if another line of it follows.
        self._line_end = b""

    @property
    def oversized(self) -> bool:
        return self._size > MAX_MESSAGE_BYTES

    def add(self, piece: bytes, line_end: bytes = b"") -> None:
        """Add a piece of a line; `line_end` if the piece ends the line ("\n", "\r\n")."""
        self.started = True
        if self._line_end:
            self._take(self._line_end)
        self._take(piece)
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


def _line_pieces(handle: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    """The next line as (piece, ending) pairs of at most CHUNK_BYTES, so a huge line is never
    held whole; the ending ("\n", "\r\n") comes with the last piece, b"" before it and at the
    end of the file. Nothing at all at the end of the file."""
    held = b""  # a "\r" that ended a chunk: part of the ending if "\n" comes next
    while True:
        chunk = handle.readline(CHUNK_BYTES)
        if not chunk:
            if held:
                yield held, b""
            return
        chunk, held = held + chunk, b""
        if chunk.endswith(b"\n"):
            ending = b"\r\n" if chunk.endswith(b"\r\n") else b"\n"
            yield chunk[: -len(ending)], ending
            return
        if chunk.endswith(b"\r"):
            chunk, held = chunk[:-1], b"\r"
        yield chunk, b""


def _read_line(handle: BinaryIO, record: _RecordBytes) -> bool:
    """Read the next line into `record`; False at the end of the file."""
    read = False
    for piece, ending in _line_pieces(handle):
        read = True
        record.add(piece, ending)
    return read


class _Csv(Enum):
    """Where the csv module (excel dialect, not strict) stands inside a record."""

    FIELD_START = "field start"
    UNQUOTED = "unquoted field"
    QUOTED = "quoted field"
    QUOTE_IN_QUOTED = "quote in a quoted field"  # the field's end, or the first of two quotes
    LINE_ENDS_RECORD = "line ends the record"  # a "\r" outside quotes: the record ends with the line


_CSV_TOKEN = re.compile(rb'"+|\r|[^"\r]+')


def _csv_after(state: _Csv, piece: bytes) -> _Csv:
    """The csv module's state after `piece` (no line break in it), computed run by run: a run of
    quotes acts by its parity, a run of anything else by its last character."""
    for token in _CSV_TOKEN.findall(piece):
        if state is _Csv.LINE_ENDS_RECORD:
            break
        if token.startswith(b'"'):
            if state is _Csv.UNQUOTED:
                continue  # a quote inside an unquoted field is data
            count = len(token)
            if state in (_Csv.FIELD_START, _Csv.QUOTE_IN_QUOTED):
                state, count = _Csv.QUOTED, count - 1  # opens the field, or is an escaped quote
            if count % 2:
                state = _Csv.QUOTE_IN_QUOTED if state is _Csv.QUOTED else _Csv.QUOTED
        elif state is not _Csv.QUOTED:
            if token == b"\r":
                state = _Csv.LINE_ENDS_RECORD
            else:
                state = _Csv.FIELD_START if token.endswith(b",") else _Csv.UNQUOTED
    return state


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
            if not _read_line(self._handle, record):
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
            line = self._line()
            if line is None:
                return
            yield line.decode("utf-8", "surrogateescape")

    def _line(self) -> bytes | None:
        """The next line for the csv module. A record that grows over MAX_MESSAGE_BYTES is read to
        its end here (counted and hashed, never held) and the csv module gets a stand-in line that
        ends the record it is in."""
        record = self._record
        # Between two lines the csv module stands at a record's start or inside a quoted field.
        in_quotes = record.started
        kept: list[bytes] = []
        ending = b""
        pieces = _line_pieces(self._handle)
        for piece, ending in pieces:
            record.add(piece, ending)
            kept.append(piece)
            if record.oversized:
                state = _Csv.QUOTED if in_quotes else _Csv.FIELD_START
                for earlier in kept:
                    state = _csv_after(state, earlier)
                self._read_past_record(pieces, state)
                return b'"\n' if in_quotes else b"\n"
        return b"".join(kept) + ending if kept else None

    def _read_past_record(self, line: Iterator[tuple[bytes, bytes]], state: _Csv) -> None:
        """Read the rest of a record over the limit into self._record, following the csv
        module's state to find where the record ends."""
        while True:
            for piece, ending in line:
                self._record.add(piece, ending)
                state = _csv_after(state, piece)
            if state is not _Csv.QUOTED:
                return  # this line ended the record
            # The quoted field goes on with the next line.
            line = _line_pieces(self._handle)
            first = next(line, None)
            if first is None:
                return  # the file ended inside the quoted field, and so does the record
            line = itertools.chain([first], line)

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
