"""Spam and bot signals, per post, from what ingest has seen recently. Pure and in memory.

A flagged post is still stored (an analyst can look at it) but the per-minute sentiment
aggregates leave it out, so one bot cannot move a ticker's negative share.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from moodwire.schema import URL_RE

from ingest.dedupe import normalize_text

LINK_ONLY = "link_only"
REPEATED_TEXT = "repeated_text"
RATE = "posting_rate"

_WORD_RE = re.compile(r"[^\W\d_]{2,}")
_CASHTAG_RE = re.compile(r"\$[A-Za-z][A-Za-z.]{0,9}\b")


@dataclass(frozen=True)
class SpamSettings:
    # More posts than this from one author within `rate_window` is beyond what a person writes.
    max_posts_per_author: int = 20
    rate_window: timedelta = timedelta(minutes=5)
    # The same words from one author again within this window is a bot or a copy-paste campaign.
    repeat_window: timedelta = timedelta(hours=24)
    max_authors: int = 50_000


def is_link_only(text: str) -> bool:
    """Nothing but links and cashtags: no words an analyst (or the model) could read."""
    rest = _CASHTAG_RE.sub(" ", URL_RE.sub(" ", text))
    return not _WORD_RE.search(rest)


class SpamDetector:
    def __init__(self, settings: SpamSettings | None = None) -> None:
        self._settings = settings or SpamSettings()
        # author -> recent post times; author -> {text key: last time}; both bounded LRU.
        self._times: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._texts: OrderedDict[str, dict[str, datetime]] = OrderedDict()

    def flags(self, author: str | None, text: str, at: datetime) -> tuple[str, ...]:
        found: list[str] = []
        if is_link_only(text):
            found.append(LINK_ONLY)
        if author:
            if self._repeated(author, text, at):
                found.append(REPEATED_TEXT)
            if self._too_fast(author, at):
                found.append(RATE)
        return tuple(found)

    def _repeated(self, author: str, text: str, at: datetime) -> bool:
        key = normalize_text(text)
        if not key:
            return False
        seen = self._texts.setdefault(author, {})
        self._texts.move_to_end(author)
        previous = seen.get(key)
        seen[key] = at
        if len(seen) > 200:  # keep each author's memory small: drop their oldest texts
            for old in sorted(seen, key=seen.__getitem__)[:50]:
                del seen[old]
        self._bound(self._texts)
        return previous is not None and abs(at - previous) <= self._settings.repeat_window

    def _too_fast(self, author: str, at: datetime) -> bool:
        times = self._times.setdefault(author, deque())
        self._times.move_to_end(author)
        times.append(at)
        while times and at - times[0] > self._settings.rate_window:
            times.popleft()
        self._bound(self._times)
        return len(times) > self._settings.max_posts_per_author

    def _bound(self, table: OrderedDict) -> None:  # type: ignore[type-arg]
        while len(table) > self._settings.max_authors:
            table.popitem(last=False)
