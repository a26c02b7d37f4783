"""Raw source items -> clean, validated Posts with tickers, language and a story id.

Pure logic: no I/O beyond loading the symbol table once. Every item ends as exactly one of
Accepted, Duplicate or Rejected (with a reason for the dead-letter topic).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from moodwire.schema import DEFAULT_TEXT_MAX_CHARS, InvalidPost, Post, clean_text, format_timestamp, validate_post

from ingest.dedupe import ExactDeduper
from ingest.sources import RawItem
from ingest.tickers import SymbolLinker, SymbolTable


@dataclass(frozen=True)
class Accepted:
    post: Post


@dataclass(frozen=True)
class Duplicate:
    post_id: str
    why: str


@dataclass(frozen=True)
class Rejected:
    raw: bytes
    reason: str


Outcome = Accepted | Duplicate | Rejected


def text_fingerprint(text: str) -> str:
    """Case- and spacing-insensitive hash of a text: the same story from two feeds shares it."""
    normal = " ".join(text.lower().split())
    return hashlib.sha1(normal.encode("utf-8")).hexdigest()[:20]


class Normalizer:
    def __init__(
        self,
        linker: SymbolLinker | None = None,
        deduper: ExactDeduper | None = None,
        *,
        max_chars: int = DEFAULT_TEXT_MAX_CHARS,
        detect_language: bool = True,
    ) -> None:
        self._linker = linker or SymbolLinker(SymbolTable.load())
        self._deduper = deduper or ExactDeduper()
        self._max_chars = max_chars
        self._detect = None
        if detect_language:
            from ingest.language import detect_language as detect

            self._detect = detect

    def normalize(self, item: RawItem, received_at: datetime | None = None) -> Outcome:
        raw = item.raw or b""
        if item.error is not None or item.data is None:
            return Rejected(raw, item.error or "empty item")
        data: dict[str, Any] = dict(item.data)
        data.setdefault("source", item.source)
        if not data.get("published_at"):
            # ARCHITECTURE: received_at stands in when the source gives no publication time.
            data["published_at"] = format_timestamp(received_at or datetime.now(UTC))
        text = data.get("text")
        if isinstance(text, str):
            data["text"] = clean_text(text[: self._max_chars * 4], self._max_chars)
        try:
            post = validate_post(data, self._max_chars)
        except InvalidPost as exc:
            return Rejected(raw or _to_bytes(item.data), exc.reason)
        symbols = list(post.symbols)
        for symbol in self._linker.link(post.text):
            if symbol not in symbols:
                symbols.append(symbol)
        fingerprint = text_fingerprint(post.text)
        updates: dict[str, Any] = {"symbols": tuple(symbols[:20])}
        if post.story_id is None:
            updates["story_id"] = f"txt:{fingerprint}"
        if post.lang is None and self._detect is not None:
            updates["lang"] = self._detect(post.text)
        post = post.model_copy(update=updates)
        why = self._deduper.seen(post.id, fingerprint)
        if why is not None:
            return Duplicate(post.id, why)
        return Accepted(post)


def _to_bytes(data: Any) -> bytes:
    import json

    try:
        return json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
    except (TypeError, ValueError):
        return repr(data).encode("utf-8", "replace")
