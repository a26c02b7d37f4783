"""StockTwits: the message stream of each configured symbol.

Written from StockTwits' public API documentation (api.stocktwits.com/developers/docs: "streams/
symbol", "Pagination", "Rate Limiting"), not checked against the live service from here (new API
registrations have been closed for years):

- GET https://api.stocktwits.com/api/2/streams/symbol/{SYMBOL}.json with `since` (messages with a
  greater id), `max` (messages with an id less than or equal), `limit` (<= 30) and, when there is
  one, `access_token`. The answer: `{"response": {"status": 200}, "symbol": {...}, "cursor":
  {"more": bool, "since": newest id, "max": oldest id}, "messages": [...]}`, newest first. A
  message: `id`, `body`, `created_at` (RFC 3339), `user.username`, `symbols: [{"symbol": ...}]`,
  `entities.sentiment` (the author's Bullish/Bearish tag, ignored: we score the words).
- Rate limits: X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (Unix time of
  the window's end) on every answer; over the limit, HTTP 429 with the same headers.

Each poll asks for messages newer than the newest one emitted (`since`) and pages back with
`max` while the cursor says there are more, so a gap is read whole before anything is emitted;
a failed page abandons the poll without changing state, and the next poll redoes it.
Checkpoint per symbol: the newest id emitted and a bounded seen-id set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from moodwire.connector_settings import StocktwitsSettings
from ingest.sources import RawItem, SourceBatch, idle_wait, poll_due

log = logging.getLogger(__name__)

SOURCE = "stocktwits"
SEEN_PER_SYMBOL = 3_000
MAX_BACKOFF_S = 3_600.0
USER_AGENT = "moodwire/0.1 (+https://github.com/moodwire/moodwire)"
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,11}$")


@dataclass
class _Stream:
    symbol: str
    since: int | None = None
    seen: dict[str, None] = field(default_factory=dict)
    next_poll: float = 0.0
    failures: int = 0


class StocktwitsSource:
    name = SOURCE

    def __init__(
        self,
        settings: StocktwitsSettings,
        state: dict[str, Any] | None = None,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._client = client or httpx.Client(timeout=settings.timeout_s, headers={"User-Agent": USER_AGENT})
        self._clock = clock
        self._sleep = sleep
        self._not_before = 0.0
        saved = (state or {}).get("symbols", {})
        self._streams = []
        for symbol in settings.symbols:
            previous = saved.get(symbol, {})
            since = previous.get("since")
            self._streams.append(
                _Stream(
                    symbol, int(since) if since is not None else None, dict.fromkeys(previous.get("seen", []))
                )
            )

    def checkpoint(self) -> dict[str, Any]:
        return {
            "symbols": {
                s.symbol: {"since": s.since, "seen": list(s.seen)[-SEEN_PER_SYMBOL:]} for s in self._streams
            }
        }

    def next_batch(self) -> SourceBatch:
        items = poll_due(self._streams, self.poll, self._clock, lambda: self._not_before)
        if not items:
            self._sleep(idle_wait(self._streams, self._clock, self._not_before))
        return SourceBatch(items, self.checkpoint())

    def commit(self, checkpoint: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self._client.close()

    def poll(self, stream: _Stream) -> list[RawItem]:
        first_run = stream.since is None
        fresh: list[Any] = []
        max_id: int | None = None
        more = False
        for _ in range(1 if first_run else self._settings.max_pages):
            if self._clock() < self._not_before:
                return []
            body = self._get_page(stream, max_id)
            if body is None:
                return []
            messages = body.get("messages")
            cursor: dict[str, Any] = body["cursor"] if isinstance(body.get("cursor"), dict) else {}
            if not isinstance(messages, list):
                self._fail(stream, "answer without a messages list")
                return []
            met_known = False
            for message in messages:
                message_id = _sort_id(message)
                if _key(message) in stream.seen or (
                    stream.since is not None and 0 < message_id <= stream.since
                ):
                    # Already emitted, or at/below the watermark (a server that ignored `since`).
                    met_known = True
                    continue
                fresh.append(message)
            ids = [m["id"] for m in messages if isinstance(m, dict) and isinstance(m.get("id"), int)]
            oldest = cursor.get("max") if isinstance(cursor.get("max"), int) else (min(ids) if ids else None)
            # `more` may also mean "older history exists": stop once we are back at known ground.
            more = bool(cursor.get("more")) and bool(messages) and oldest is not None and not met_known
            if not more or first_run:
                break
            # `max` is inclusive: one below the oldest id already read.
            max_id = oldest - 1 if oldest is not None else None
        if more and not first_run:
            log.warning(
                "stocktwits %s: more than %d pages of new messages since the last poll; the oldest of "
                "them are skipped (poll more often or raise max_pages)",
                stream.symbol,
                self._settings.max_pages,
            )
        stream.failures = 0
        stream.next_poll = self._clock() + self._settings.interval_s
        items: list[RawItem] = []
        for message in sorted(fresh, key=_sort_id):
            key = _key(message)
            if key in stream.seen:
                continue  # the same message on two pages
            stream.seen[key] = None
            if isinstance(message, dict) and isinstance(message.get("id"), int):
                stream.since = max(stream.since or 0, message["id"])
            items.append(message_to_item(message))
        while len(stream.seen) > SEEN_PER_SYMBOL:
            del stream.seen[next(iter(stream.seen))]
        return items

    def _get_page(self, stream: _Stream, max_id: int | None) -> dict[str, Any] | None:
        params: dict[str, str | int] = {"limit": self._settings.page_limit}
        if stream.since is not None:
            params["since"] = stream.since
        if max_id is not None:
            params["max"] = max_id
        if self._settings.access_token is not None:
            params["access_token"] = self._settings.access_token.get_secret_value()
        url = f"{self._settings.api_base}/streams/symbol/{stream.symbol}.json"
        try:
            response = self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            self._fail(stream, f"request failed: {type(exc).__name__}")
            return None
        self._note_rate_limit(response)
        if response.status_code == 429:
            wait = _reset_wait(response)
            self._pause(wait if wait is not None else self._backoff(stream), "HTTP 429")
            return None
        if response.status_code != 200:
            # 404: StockTwits does not know the symbol; 5xx: it is struggling.
            self._fail(stream, f"HTTP {response.status_code}")
            return None
        try:
            body = response.json()
        except ValueError:
            self._fail(stream, "answer is not JSON")
            return None
        if not isinstance(body, dict):
            self._fail(stream, "answer is not a JSON object")
            return None
        return body

    def _note_rate_limit(self, response: httpx.Response) -> None:
        remaining = response.headers.get("X-RateLimit-Remaining", "")
        if remaining.strip().isdigit() and int(remaining) < 1:
            wait = _reset_wait(response)
            if wait is not None:
                self._pause(wait, "rate limit used up")

    def _pause(self, seconds: float, why: str) -> None:
        self._not_before = max(self._not_before, self._clock() + seconds)
        log.warning("stocktwits: %s; pausing %.0f s", why, seconds)

    def _backoff(self, stream: _Stream) -> float:
        stream.failures += 1
        return min(MAX_BACKOFF_S, self._settings.interval_s * 2 ** min(stream.failures, 6))

    def _fail(self, stream: _Stream, why: str) -> None:
        delay = self._backoff(stream)
        stream.next_poll = self._clock() + delay
        log.warning("stocktwits %s: %s; next try in %.0f s", stream.symbol, why, delay)


def _reset_wait(response: httpx.Response) -> float | None:
    """Seconds until X-RateLimit-Reset (Unix time), against the server's own Date header."""
    reset = response.headers.get("X-RateLimit-Reset", "").strip()
    if reset.isdigit():
        now = time.time()
        date = response.headers.get("Date")
        if date:
            try:
                now = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                pass
        return max(0.0, int(reset) - now)
    retry_after = response.headers.get("Retry-After", "").strip()
    return float(retry_after) if retry_after.isdigit() else None


def _key(message: Any) -> str:
    if isinstance(message, dict) and isinstance(message.get("id"), int):
        return str(message["id"])
    return "raw:" + hashlib.sha1(_dump(message)).hexdigest()[:20]


def _sort_id(message: Any) -> int:
    return message["id"] if isinstance(message, dict) and isinstance(message.get("id"), int) else 0


def stocktwits_symbol(value: str) -> str | None:
    """StockTwits' symbol -> ours: crypto carries a ".X" suffix there (BTC.X), not here."""
    symbol = value.strip().upper().removesuffix(".X")
    return symbol if _SYMBOL_RE.match(symbol) else None


def message_to_item(message: Any) -> RawItem:
    raw = _dump(message)
    if not isinstance(message, dict):
        return RawItem(SOURCE, None, raw=raw, error="stocktwits: message is not a JSON object")
    message_id = message.get("id")
    if not isinstance(message_id, int):
        return RawItem(SOURCE, None, raw=raw, error="stocktwits: message without an integer id")
    created = message.get("created_at")
    if not isinstance(created, str):
        return RawItem(SOURCE, None, raw=raw, error=f"stocktwits: message {message_id} without created_at")
    post: dict[str, Any] = {
        "id": f"stocktwits:{message_id}",
        "source": SOURCE,
        "text": message.get("body"),
        "published_at": created,
        "kind": "post",
    }
    symbols: list[str] = []
    for entry in message.get("symbols") or []:
        if isinstance(entry, dict) and isinstance(entry.get("symbol"), str):
            symbol = stocktwits_symbol(entry["symbol"])
            if symbol and symbol not in symbols:
                symbols.append(symbol)
    if symbols:
        post["symbols"] = symbols
    user = message.get("user")
    if isinstance(user, dict) and isinstance(user.get("username"), str):
        post["author"] = user["username"]
        post["url"] = f"https://stocktwits.com/{user['username']}/message/{message_id}"
    return RawItem(SOURCE, post, raw=raw)


def _dump(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except (TypeError, ValueError):
        return repr(value).encode("utf-8", "replace")
