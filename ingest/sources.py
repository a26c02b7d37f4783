"""What every source gives the ingest loop: batches of raw items and a checkpoint to save after them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from moodwire.dead_letters import MAX_MESSAGE_BYTES, OversizedOriginal


@dataclass(frozen=True)
class RawItem:
    """One item as a source saw it: a dict to normalize, or the raw input that failed to parse.

    `raw` is the input as it came (a file line, an API object as JSON): what a dead letter carries.
    An input over MAX_MESSAGE_BYTES that was never held whole is an OversizedOriginal instead.
    """

    source: str
    data: dict[str, Any] | None
    raw: bytes | OversizedOriginal = b""
    error: str | None = None


@dataclass
class SourceBatch:
    items: list[RawItem] = field(default_factory=list)
    # The source's state once these items are on the bus; saved only after the producer flushed.
    checkpoint: dict[str, Any] | None = None
    exhausted: bool = False


class Source(Protocol):
    name: str

    def next_batch(self) -> SourceBatch: ...

    def commit(self, checkpoint: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Release what the source holds (file handle, HTTP client, server, stream threads)."""
        ...


def size_of(raw: bytes | OversizedOriginal) -> int:
    return raw.size if isinstance(raw, OversizedOriginal) else len(raw)


def too_large(what: str, raw: bytes | OversizedOriginal) -> str | None:
    """The reason to refuse an input over MAX_MESSAGE_BYTES, else None."""
    size = size_of(raw)
    if size <= MAX_MESSAGE_BYTES:
        return None
    return f"{what} is {size} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"


def dump_json(value: Any) -> bytes:
    """An API object as the bytes a dead letter keeps (whatever it holds)."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except (TypeError, ValueError):
        return repr(value).encode("utf-8", "replace")


def digest_key(value: Any) -> str:
    """A stable key for an API object too broken to have an id of its own."""
    return "raw:" + hashlib.sha1(dump_json(value)).hexdigest()[:20]
