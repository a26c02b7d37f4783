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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from moodwire.connector_settings import StocktwitsSettings
from moodwire.schema import SYMBOL_RE

from ingest.polling import USER_AGENT, PollingSource, ResetFormat
from ingest.sources import RawItem, digest_key, dump_json

log = logging.getLogger(__name__)

SOURCE = "stocktwits"
SEEN_PER_SYMBOL = 3_000


@dataclass
class _Stream:
    symbol: str
    interval_s: float
    since: int | None = None
    seen: dict[str, None] = field(default_factory=dict)
    next_poll: float = 0.0
    failures: int = 0

    @property
    def key(self) -> str:
        return self.symbol


class StocktwitsSource(PollingSource[_Stream]):
    name = SOURCE
    reset_format = ResetFormat.UNIX_TIME

    def __init__(
        self,
        settings: StocktwitsSettings,
        state: dict[str, Any] | None = None,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        saved = (state or {}).get("symbols", {})
        streams = []
        for symbol in settings.symbols:
            previous = saved.get(symbol, {})
            since = previous.get("since")
            streams.append(
                _Stream(
                    symbol,
                    settings.interval_s,
                    int(since) if since is not None else None,
                    dict.fromkeys(previous.get("seen", [])),
                )
            )
        client = client or httpx.Client(timeout=settings.timeout_s, headers={"User-Agent": USER_AGENT})
        super().__init__(streams, client, clock=clock, sleep=sleep)
        self._settings = settings

    def checkpoint(self) -> dict[str, Any]:
        return {
            "symbols": {
                s.symbol: {"since": s.since, "seen": list(s.seen)[-SEEN_PER_SYMBOL:]} for s in self._targets
            }
        }

    def poll(self, stream: _Stream) -> list[RawItem]:
        first_run = stream.since is None
        fresh: list[Any] = []
        max_id: int | None = None
        more = False
        for _ in range(1 if first_run else self._settings.max_pages):
            if self.paused:
                return []
            body = self._get_page(stream, max_id)
            if body is None:
                return []
            messages = body.get("messages")
            cursor: dict[str, Any] = body["cursor"] if isinstance(body.get("cursor"), dict) else {}
            if not isinstance(messages, list):
                self.fail(stream, "answer without a messages list")
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
        self.succeeded(stream)
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
            self.fail(stream, f"request failed: {type(exc).__name__}")
            return None
        if not self.answered(stream, response):
            return None
        if response.status_code != 200:
            # 404: StockTwits does not know the symbol; 5xx: it is struggling.
            self.fail(stream, f"HTTP {response.status_code}")
            return None
        try:
            body = response.json()
        except ValueError:
            self.fail(stream, "answer is not JSON")
            return None
        if not isinstance(body, dict):
            self.fail(stream, "answer is not a JSON object")
            return None
        return body


def _key(message: Any) -> str:
    if isinstance(message, dict) and isinstance(message.get("id"), int):
        return str(message["id"])
    return digest_key(message)


def _sort_id(message: Any) -> int:
    return message["id"] if isinstance(message, dict) and isinstance(message.get("id"), int) else 0


def stocktwits_symbol(value: str) -> str | None:
    """StockTwits' symbol -> ours: crypto carries a ".X" suffix there (BTC.X), not here."""
    symbol = value.strip().upper().removesuffix(".X")
    return symbol if SYMBOL_RE.match(symbol) else None


def message_to_item(message: Any) -> RawItem:
    raw = dump_json(message)
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

