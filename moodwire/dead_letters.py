"""Dead letters: input that can't be accepted goes to the dead-letter topic with its reason, and
never stops the stream.

One size rule at every edge (ingest, the bus, the scorer, the dead-letter topic):
MAX_MESSAGE_BYTES is the largest message a moodwire topic carries. Anything larger is refused
where it is first seen, and its dead letter is a truncated copy plus the original's size and
SHA-256, so a 10 MB line costs one small dead letter instead of a broker error that stops the
producer (Kafka's default `message.max.bytes` is about 1 MB; the producer's `max_request_size`
is set to PRODUCER_MAX_REQUEST_BYTES, which leaves room for keys and headers).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from moodwire import metrics
from moodwire.bus import ORIGIN_HEADER, REASON_HEADER, Producer
from moodwire.limits import MAX_MESSAGE_BYTES, PRODUCER_MAX_REQUEST_BYTES

__all__ = ["MAX_MESSAGE_BYTES", "PRODUCER_MAX_REQUEST_BYTES", "dead_letter_record", "send_dead_letter"]

log = logging.getLogger(__name__)
# A dead letter keeps at most this much of an oversized original (enough to see what it was).
DEAD_LETTER_KEEP_BYTES = 64 * 1024
MAX_REASON_CHARS = 500

SIZE_HEADER = "moodwire-original-size"
SHA256_HEADER = "moodwire-original-sha256"
TRUNCATED_HEADER = "moodwire-truncated"
SOURCE_HEADER = "moodwire-source"


@dataclass(frozen=True)
class OversizedOriginal:
    """An original over MAX_MESSAGE_BYTES that was read in pieces and never held whole (a 10 MB
    file line): its first DEAD_LETTER_KEEP_BYTES, its size and its SHA-256 (hex)."""

    head: bytes
    size: int
    sha256: str


def dead_letter_record(
    value: bytes | OversizedOriginal, reason: str, origin: str, source_ref: str | None = None
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of the dead letter for `value`: the original when it fits, else its
    first DEAD_LETTER_KEEP_BYTES with the original size and hash in headers."""
    if isinstance(value, bytes) and len(value) > MAX_MESSAGE_BYTES:
        value = OversizedOriginal(value[:DEAD_LETTER_KEEP_BYTES], len(value), hashlib.sha256(value).hexdigest())
    headers = [
        (REASON_HEADER, reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
        (ORIGIN_HEADER, origin.encode("utf-8")),
    ]
    if source_ref:
        headers.append((SOURCE_HEADER, source_ref.encode("utf-8", "replace")))
    if isinstance(value, OversizedOriginal):
        headers += [
            (SIZE_HEADER, str(value.size).encode()),
            (SHA256_HEADER, value.sha256.encode()),
            (TRUNCATED_HEADER, b"true"),
        ]
        return value.head[:DEAD_LETTER_KEEP_BYTES], headers
    return value, headers


def send_dead_letter(
    producer: Producer,
    topic: str,
    value: bytes | OversizedOriginal,
    reason: str,
    *,
    stage: str,
    key: bytes | None = None,
    source_ref: str | None = None,
) -> None:
    """Queue one dead letter (the caller flushes) and count it under its stage and reason."""
    payload, headers = dead_letter_record(value, reason, stage, source_ref)
    if key is not None and len(key) > DEAD_LETTER_KEEP_BYTES:
        key = key[:DEAD_LETTER_KEEP_BYTES]
    producer.send(topic, payload, key=key, headers=headers)
    metrics.POSTS_REJECTED.labels(stage, metrics.reason_label(reason)).inc()
    metrics.DEAD_LETTERS.labels(stage).inc()
    log.warning("dead-lettered a message at %s: %s", stage, reason[:200])


def header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None
