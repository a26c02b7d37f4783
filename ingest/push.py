"""An HTTP push endpoint for everything without a connector: POST /v1/posts with a bearer token.

    POST /v1/posts
    Authorization: Bearer <token>
    Content-Type: application/json | application/x-ndjson

The body is one JSON post object, a JSON array of them, or JSON lines (one object per line), in
the Post format of the README (`id` and `text` required; `source` defaults to "push",
`published_at` to the time it arrived). Answers:

- 200 `{"accepted": n, "rejected": [{"index", "id", "reason"}]}` once the accepted posts are on
  the bus (with `wait_for_bus`, the default) or queued (without it);
- 422 the same body when nothing in it was acceptable;
- 400 a body that is not UTF-8 or not JSON at all, 401 without the right token, 411 without a
  Content-Length, 413 over `max_body_bytes` or `max_items_per_request`;
- a post over MAX_MESSAGE_BYTES (the bus's message limit) is rejected like any invalid post;
- 503 with Retry-After when the queue is full or the bus did not confirm in `ack_timeout_s`;
  resending is safe because posts are deduplicated by id.

Rejected items are also queued as errors, so they reach the dead-letter topic like any other bad
input. Accepted items wait in a bounded in-memory queue that `next_batch` drains; a process that
dies before the bus confirmed them never answered 200, so the client still holds them.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moodwire.connector_settings import PushSettings
from moodwire.schema import InvalidPost, format_timestamp, validate_post

from ingest.polling import IDLE_SLEEP_S
from ingest.sources import RawItem, SourceBatch, dump_json, too_large

log = logging.getLogger(__name__)

SOURCE = "push"
PATH = "/v1/posts"
BATCH_MAX = 1_000


class _Overloaded(Exception):
    pass


class PushSource:
    name = SOURCE

    def __init__(self, settings: PushSettings, state: dict[str, Any] | None = None) -> None:
        # `state` is accepted for the common constructor shape; nothing of a push survives a
        # restart but what its client resends.
        self._settings = settings
        self._token = settings.token.get_secret_value().encode("utf-8")
        self._queue: deque[tuple[int, RawItem]] = deque()
        self._changed = threading.Condition()
        self._last_seq = 0
        self._committed = 0
        self._server = ThreadingHTTPServer((settings.host, settings.port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="push-endpoint", daemon=True)
        self._thread.start()
        log.info("push endpoint listening on http://%s:%d%s", *self.address, PATH)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def next_batch(self) -> SourceBatch:
        with self._changed:
            if not self._queue:
                self._changed.wait(IDLE_SLEEP_S)
            taken = [self._queue.popleft() for _ in range(min(BATCH_MAX, len(self._queue)))]
        if not taken:
            return SourceBatch([], None)
        # The checkpoint only carries how far this process got, for commit() to release waiters.
        return SourceBatch([item for _, item in taken], {"seq": taken[-1][0]})

    def commit(self, checkpoint: dict[str, Any]) -> None:
        with self._changed:
            self._committed = max(self._committed, int(checkpoint.get("seq", 0)))
            self._changed.notify_all()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    # -- the queue -----------------------------------------------------------------------------

    def _enqueue(self, accepted: list[RawItem], errors: list[RawItem]) -> int:
        """Queue every accepted item or none; errors only where room is left. Returns the last seq."""
        with self._changed:
            if len(self._queue) + len(accepted) > self._settings.queue_size:
                raise _Overloaded
            for item in accepted:
                self._last_seq += 1
                self._queue.append((self._last_seq, item))
            last_accepted = self._last_seq
            for item in errors:
                if len(self._queue) >= self._settings.queue_size:
                    break
                self._last_seq += 1
                self._queue.append((self._last_seq, item))
            self._changed.notify_all()
            return last_accepted

    def _wait_committed(self, seq: int) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: self._committed >= seq, timeout=self._settings.ack_timeout_s
            )

    # -- HTTP ----------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "moodwire-push"

            def do_POST(self) -> None:  # noqa: N802
                source._handle_post(self)

            def do_GET(self) -> None:  # noqa: N802
                _reply(self, 405, {"error": f"use POST {PATH}"}, {"Allow": "POST"})

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("push: " + format, *args)

        return Handler

    def _handle_post(self, request: BaseHTTPRequestHandler) -> None:
        if request.path.split("?", 1)[0] != PATH:
            _reply(request, 404, {"error": f"not found; posts go to {PATH}"}, close=True)
            return
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8"), self._token):
            _reply(
                request,
                401,
                {"error": "missing or wrong bearer token"},
                {"WWW-Authenticate": 'Bearer realm="moodwire"'},
                close=True,
            )
            return
        length_header = request.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            _reply(request, 411, {"error": "Content-Length required"}, close=True)
            return
        length = int(length_header)
        if length > self._settings.max_body_bytes:
            _reply(request, 413, {"error": f"body over {self._settings.max_body_bytes} bytes"}, close=True)
            return
        body = request.rfile.read(length)
        try:
            values = parse_body(body)
        except ValueError as exc:
            _reply(request, 400, {"error": str(exc)})
            return
        if len(values) > self._settings.max_items_per_request:
            _reply(
                request, 413, {"error": f"over {self._settings.max_items_per_request} posts in one request"}
            )
            return
        accepted, errors, rejected = check_items(values, datetime.now(UTC))
        try:
            last = self._enqueue(accepted, errors)
        except _Overloaded:
            _reply(request, 503, {"error": "queue full, retry later", "accepted": 0}, {"Retry-After": "1"})
            return
        if accepted and self._settings.wait_for_bus and not self._wait_committed(last):
            _reply(
                request,
                503,
                {
                    "error": "not confirmed on the bus in time; resending is safe",
                    "accepted": 0,
                    "rejected": rejected,
                },
                {"Retry-After": "1"},
            )
            return
        status = 422 if rejected and not accepted else 200
        _reply(request, status, {"accepted": len(accepted), "rejected": rejected})


def parse_body(body: bytes) -> list[tuple[bytes, Any | ValueError]]:
    """The body -> one (raw bytes, value or the error that spoiled it) per post."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"body is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise ValueError("empty body")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    else:
        if isinstance(whole, dict):
            return [(body, whole)]
        if isinstance(whole, list):
            return [(dump_json(value), value) for value in whole]
        raise ValueError("expected a JSON object, an array of objects, or JSON lines")
    # Not one JSON document: JSON lines, each judged on its own.
    values: list[tuple[bytes, Any | ValueError]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        raw = line.encode("utf-8")
        try:
            values.append((raw, json.loads(line)))
        except ValueError as exc:
            values.append((raw, ValueError(f"line {number}: malformed JSON: {exc}")))
    return values


def check_items(
    values: list[tuple[bytes, Any | ValueError]], received_at: datetime
) -> tuple[list[RawItem], list[RawItem], list[dict[str, Any]]]:
    """Split into accepted items, error items for the dead-letter topic, and the client's report."""
    accepted: list[RawItem] = []
    errors: list[RawItem] = []
    rejected: list[dict[str, Any]] = []
    for index, (raw, value) in enumerate(values):
        post_id = value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), str) else None
        checked = too_large("post", raw) or _checked(value, received_at)
        if isinstance(checked, dict):
            accepted.append(RawItem(SOURCE, checked, raw=raw))
        else:
            rejected.append({"index": index, "id": post_id, "reason": checked})
            errors.append(RawItem(SOURCE, None, raw=raw, error=f"push: {checked}"))
    return accepted, errors, rejected


def _checked(value: Any | ValueError, received_at: datetime) -> dict[str, Any] | str:
    """The post to queue, or why it is refused."""
    if isinstance(value, ValueError):
        return str(value)
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    data = dict(value)
    data.setdefault("source", SOURCE)
    # The same check the normalizer makes, so the client hears now what would fail later.
    probe = dict(data)
    if not probe.get("published_at"):
        probe["published_at"] = format_timestamp(received_at)
    try:
        validate_post(probe)
    except InvalidPost as exc:
        return exc.reason
    return data


def _reply(
    request: BaseHTTPRequestHandler,
    status: int,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    *,
    close: bool = False,
) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    if close:
        # The body (if any) was not read: the connection cannot carry another request.
        request.send_header("Connection", "close")
        request.close_connection = True
    request.end_headers()
    request.wfile.write(body)

