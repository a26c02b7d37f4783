"""A JSONL or CSV file as a source, optionally replayed at a fixed rate as if it were live.

The checkpoint is the byte offset after the last line on the bus, so a restart resumes exactly
there: nothing skipped, nothing re-emitted (beyond the at-least-once window, which ids dedupe).
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from moodwire.schema import format_timestamp, parse_timestamp

from ingest.sources import RawItem, SourceBatch


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
        self._format = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        self._rate = rate
        self._batch_size = batch_size if rate is None else max(1, min(batch_size, int(rate // 4) or 1))
        self._handle = path.open("rb")
        self._csv_header: list[str] | None = None
        if self._format == "csv":
            self._csv_header = next(csv.reader([self._handle.readline().decode("utf-8-sig")]))
            start_offset = max(start_offset, self._handle.tell())
        self._handle.seek(start_offset)
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

    def _compute_shift(self) -> timedelta:
        latest: datetime | None = None
        with self._path.open("rb") as handle:
            for line in handle:
                try:
                    value = json.loads(line).get("published_at")
                    stamp = parse_timestamp(value)
                except (ValueError, AttributeError, TypeError):
                    continue
                latest = stamp if latest is None or stamp > latest else latest
        return timedelta(0) if latest is None else datetime.now(UTC) - latest

    def _parse(self, line: bytes) -> RawItem:
        try:
            if self._format == "csv":
                assert self._csv_header is not None
                values = next(csv.reader(io.StringIO(line.decode("utf-8"))))
                data: Any = dict(zip(self._csv_header, values))
                if isinstance(data.get("symbols"), str):
                    data["symbols"] = [s for s in data["symbols"].replace(",", " ").split() if s]
            else:
                data = json.loads(line)
        except (ValueError, RecursionError, StopIteration, csv.Error) as exc:  # bad UTF-8/JSON, huge ints
            return RawItem("file", None, raw=line, error=f"malformed {self._format} line: {exc}"[:300])
        if not isinstance(data, dict):
            return RawItem("file", None, raw=line, error=f"expected a JSON object, got {type(data).__name__}")
        data.setdefault("source", "file")
        if self._shift and isinstance(data.get("published_at"), str):
            try:
                data["published_at"] = format_timestamp(parse_timestamp(data["published_at"]) + self._shift)
            except ValueError:
                pass  # left as is: validation dead-letters it with the reason
        return RawItem(str(data.get("source", "file")), data, raw=line)

    def next_batch(self) -> SourceBatch:
        items: list[RawItem] = []
        while len(items) < self._batch_size:
            line = self._handle.readline()
            if not line:
                break
            if line.strip():
                items.append(self._parse(line.rstrip(b"\r\n")))
        checkpoint = {"offset": self._handle.tell(), "shift_s": self._shift.total_seconds()}
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
