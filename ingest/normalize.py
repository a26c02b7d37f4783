"""Raw source items -> clean, validated Posts with tickers, language and a story id.

Pure logic: no I/O beyond loading the symbol table once. Every item ends as exactly one of
Accepted, Duplicate or Rejected (with a reason for the dead-letter topic).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from moodwire.dead_letters import OversizedOriginal
from moodwire.schema import (
    DEFAULT_TEXT_MAX_CHARS,
    MAX_SYMBOLS,
    InvalidPost,
    Post,
    format_timestamp,
    validate_post,
)

from ingest.dedupe import DuplicateKind, ExactDeduper, NearDuplicateIndex
from ingest.sources import RawItem, dump_json, too_large
from ingest.spam import SpamDetector
from ingest.tickers import SymbolLinker, SymbolTable


@dataclass(frozen=True)
class Accepted:
    post: Post


@dataclass(frozen=True)
class Duplicate:
    post_id: str
    why: str
    # The dropped copy, when it differs from the post already sent under its id: it goes to the
    # dead-letter topic (with DIFFERENT_TEXT_REASON) so nothing disappears without a trace.
    dropped: bytes | OversizedOriginal | None = None


@dataclass(frozen=True)
class Rejected:
    raw: bytes | OversizedOriginal
    reason: str


DIFFERENT_TEXT_REASON = "duplicate id, different text"


Outcome = Accepted | Duplicate | Rejected


class Normalizer:
    def __init__(
        self,
        linker: SymbolLinker | None = None,
        deduper: ExactDeduper | None = None,
        stories: NearDuplicateIndex | None = None,
        spam: SpamDetector | None = None,
        *,
        max_chars: int = DEFAULT_TEXT_MAX_CHARS,
        detect_language: bool = True,
    ) -> None:
        self._linker = linker or SymbolLinker(SymbolTable.load())
        self._deduper = deduper or ExactDeduper()
        self._stories = stories or NearDuplicateIndex()
        self._spam = spam or SpamDetector()
        self._max_chars = max_chars
        self._detect = None
        if detect_language:
            from ingest.language import detect_language as detect

            self._detect = detect

    def normalize(self, item: RawItem, received_at: datetime | None = None) -> Outcome:
        raw = item.raw
        if item.error is not None or item.data is None:
            return Rejected(raw, item.error or "empty item")
        # The bus carries nothing larger; the text inside would be capped anyway.
        oversized = too_large("item", raw)
        if oversized is not None:
            return Rejected(raw, oversized)
        data: dict[str, Any] = dict(item.data)
        data.setdefault("source", item.source)
        if data.get("published_at") in (None, ""):
            # ARCHITECTURE: received_at stands in when the source gives no publication time.
            data["published_at"] = format_timestamp(received_at or datetime.now(UTC))
        try:
            post = validate_post(data, self._max_chars)
        except InvalidPost as exc:
            return Rejected(raw or dump_json(item.data), exc.reason)
        symbols = list(post.symbols)
        for symbol in self._linker.link(post.text):
            if symbol not in symbols:
                symbols.append(symbol)
        # Only the same id is dropped: the same text from another outlet is the same story
        # (kept, clustered below, so the outlets carrying it stay countable) and from the same
        # author it is flagged as spam (kept, left out of the sentiment aggregates).
        verdict = self._deduper.check(post.id, post.text)
        if verdict is DuplicateKind.SAME_ID:
            return Duplicate(post.id, verdict.value)
        if verdict is DuplicateKind.SAME_ID_DIFFERENT_TEXT:
            return Duplicate(post.id, verdict.value, dropped=raw or dump_json(item.data))
        updates: dict[str, Any] = {"symbols": tuple(symbols[:MAX_SYMBOLS])}
        flags = self._spam.flags(post.author and f"{post.source}:{post.author}", post.text, post.published_at)
        if flags:
            updates["flags"] = tuple(dict.fromkeys((*post.flags, *flags)))
        if post.story_id is None:
            # The same wire story from many outlets shares a story id: aggregates count it once.
            updates["story_id"] = self._stories.add(post.id, post.text, post.published_at)
        if post.lang is None and self._detect is not None:
            updates["lang"] = self._detect(post.text)
        return Accepted(post.model_copy(update=updates))

