"""What every source gives the ingest loop: batches of raw items and a checkpoint to save after them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RawItem:
    """One item as a source saw it: a dict to normalize, or the raw line that failed to parse."""

    source: str
    data: dict[str, Any] | None
    raw: bytes = b""
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
