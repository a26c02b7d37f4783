"""What every source gives the ingest loop: batches of raw items and a checkpoint to save after them."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar


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


class Polled(Protocol):
    """One thing a polling source fetches on its own schedule (a listing, timeline, stream)."""

    next_poll: float


P = TypeVar("P", bound=Polled)

# The longest an idle polling source naps inside the single-threaded ingest loop.
IDLE_SLEEP_S = 1.0


def poll_due(
    targets: Sequence[P],
    poll: Callable[[P], list[RawItem]],
    clock: Callable[[], float],
    blocked_until: Callable[[], float],
) -> list[RawItem]:
    """Poll every target that is due, stopping as soon as a rate limit blocks the source
    (`blocked_until` is read again after each poll: a response may have just set it)."""
    items: list[RawItem] = []
    for target in targets:
        now = clock()
        if now < blocked_until():
            break
        if target.next_poll <= now:
            items.extend(poll(target))
    return items


def idle_wait(targets: Sequence[Polled], clock: Callable[[], float], blocked_until: float) -> float:
    """How long to nap when nothing was due: until the next target (or the block) is due, capped."""
    due = max(blocked_until, min(target.next_poll for target in targets))
    return max(0.0, min(IDLE_SLEEP_S, due - clock()))
