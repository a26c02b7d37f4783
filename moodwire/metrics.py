"""Prometheus metrics shared by the services (names carry units and `_total` on counters)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

POSTS_INGESTED = Counter("moodwire_posts_ingested_total", "Posts put on the bus by ingest", ["source"])
POSTS_DUPLICATE = Counter(
    "moodwire_posts_duplicate_total", "Posts dropped at ingest as exact duplicates", ["source", "why"]
)
INGEST_BUS_RETRIES = Counter(
    "moodwire_ingest_bus_retries_total",
    "Batches ingest sent again after the bus refused them (broker away, delivery timed out)",
)
POSTS_FLAGGED = Counter(
    "moodwire_posts_flagged_total", "Posts flagged as spam or bot-like (stored, left out of sentiment)", ["flag"]
)
POSTS_REJECTED = Counter(
    "moodwire_posts_rejected_total", "Posts sent to the dead-letter topic", ["stage", "reason"]
)
POSTS_UNSUPPORTED_LANGUAGE = Counter(
    "moodwire_posts_unsupported_language_total", "Posts stored unscored: the model does not read their language", ["lang"]
)
POSTS_SCORED = Counter("moodwire_posts_scored_total", "Posts scored and stored", ["model_version"])
BATCH_SIZE = Histogram(
    "moodwire_scorer_batch_size_posts",
    "Posts per scorer micro-batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_SECONDS = Histogram(
    "moodwire_scorer_batch_duration_seconds",
    "Wall time of one micro-batch from poll to commit",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INFERENCE_SECONDS = Histogram(
    "moodwire_model_inference_seconds",
    "Time in tokenization + ONNX Runtime per micro-batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EXECUTION_PROVIDER = Gauge(
    "moodwire_model_execution_provider_info", "ONNX Runtime provider in use (1 = active)", ["provider", "model_version"]
)
CONSUMER_LAG = Gauge(
    "moodwire_consumer_lag_messages", "Messages behind the end of each partition", ["topic", "partition"]
)
STORE_INSERT_SECONDS = Histogram(
    "moodwire_store_insert_duration_seconds",
    "ClickHouse insert latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_INSERT_FAILURES = Counter(
    "moodwire_store_insert_failures_total", "ClickHouse inserts that failed and were retried"
)
DEAD_LETTERS = Counter("moodwire_dead_letters_total", "Messages written to the dead-letter topic", ["stage"])
ALERTS_FIRED = Counter("moodwire_alerts_fired_total", "Alerts fired by the detector", ["kind", "severity"])
ALERTS_SENT = Counter("moodwire_alerts_sent_total", "Alert notifications delivered", ["channel"])
ALERTS_FAILED = Counter("moodwire_alerts_failed_total", "Alert notifications that failed after retries", ["channel"])
ALERT_RUN_SECONDS = Histogram(
    "moodwire_alert_run_duration_seconds", "Wall time of one alerting run", buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30)
)
LAST_SUCCESS = Gauge(
    "moodwire_last_success_timestamp_seconds", "Unix time of each stage's last successful cycle", ["stage"]
)


def reason_label(reason: str) -> str:
    """A low-cardinality label for a rejection reason: the field or check it names."""
    return reason.split(":", 1)[0][:40] if ":" in reason else "invalid"


class HealthState:
    """What /healthz and /readyz report: alive unless a loop stalled; ready once started."""

    def __init__(self) -> None:
        self.ready = False
        self.checks: dict[str, Callable[[], bool]] = {}

    def healthy(self) -> bool:
        return all(check() for check in self.checks.values())


def serve_metrics(port: int, health: HealthState, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """/metrics, /healthz and /readyz on one small HTTP server in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            if self.path == "/metrics":
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = health.healthy()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
            elif self.path == "/readyz":
                self._reply(200 if health.ready else 503, b"ready\n" if health.ready else b"starting\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
