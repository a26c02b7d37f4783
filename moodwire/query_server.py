"""A loopback-only, read-only, token-protected SQL endpoint served by the process that owns chDB.

chDB lets one process open a data dir, so while `moodwire run` holds it, `moodwire sql` sends its
query here instead. The endpoint's address and a random token are written to a 0600 file in the
data dir: only the local user who can read that file can query. Queries run through the store's
analyst connection (read-only by the engine, time-limited; see moodwire.analyst_sql), never on
the pipeline's own.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from moodwire.store import QueryResult, Store, StoreError

log = logging.getLogger(__name__)

ENDPOINT_FILE = "query-endpoint.json"
TOKEN_HEADER = "X-Moodwire-Token"
MAX_QUERY_BYTES = 1_000_000


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def result_to_json(result: QueryResult) -> bytes:
    return json.dumps(
        {"columns": result.columns, "types": result.types, "rows": [list(r) for r in result.rows]},
        default=_json_default,
        ensure_ascii=False,
    ).encode("utf-8")


class QueryServer:
    def __init__(self, store: Store, state_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the query endpoint only listens on loopback")
        self._store = store
        self._token = secrets.token_urlsafe(24)
        self._endpoint_file = state_dir / ENDPOINT_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        token = self._token
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib name)
                if not secrets.compare_digest(self.headers.get(TOKEN_HEADER, ""), token):
                    self._reply(401, {"error": "missing or wrong token"})
                    return
                length = int(self.headers.get("Content-Length", "0"))
                if length <= 0 or length > MAX_QUERY_BYTES:
                    self._reply(400, {"error": "send the SQL as the request body"})
                    return
                sql = self.rfile.read(length).decode("utf-8", "replace")
                try:
                    result = owner._store.analyst_query(sql)
                except StoreError as exc:
                    self._reply(400, {"error": str(exc)})
                    return
                self._send(200, result_to_json(result))

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode("utf-8"))

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self.host = host

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, name="query-endpoint", daemon=True).start()
        fd = os.open(self._endpoint_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": f"http://{self.host}:{self.port}/query", "token": self._token, "pid": os.getpid()}, handle)
        log.info("read-only SQL endpoint on %s:%d", self.host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._endpoint_file.unlink(missing_ok=True)


def query_running(state_dir: Path, sql: str, timeout_s: float = 60.0) -> QueryResult | None:
    """Ask the running process's endpoint; None when no process is serving this data dir."""
    endpoint_file = state_dir / ENDPOINT_FILE
    if not endpoint_file.exists():
        return None
    endpoint = json.loads(endpoint_file.read_text())
    try:
        response = httpx.post(
            endpoint["url"], content=sql.encode("utf-8"), headers={TOKEN_HEADER: endpoint["token"]}, timeout=timeout_s
        )
    except httpx.ConnectError:
        return None  # a stale file from a process that died
    body = response.json()
    if response.status_code != 200:
        raise StoreError(body.get("error", f"HTTP {response.status_code}"))
    return QueryResult(body["columns"], body["types"], [tuple(r) for r in body["rows"]])
