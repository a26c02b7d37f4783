"""Prometheus metrics shared by the services (names carry units and `_total` on counters)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    "moodwire_last_success_timestamp_seconds",
    "Unix time of each stage's last successful cycle (scorer: last commit; alert: last detection run); "
    "the process start until the first one",
    ["stage"],
)
BUS_UP = Gauge("moodwire_bus_up", "1 while the service reaches the bus, 0 while it does not", ["service"])
CONSUMER_REBALANCES = Counter(
    "moodwire_consumer_rebalances_total", "Partitions taken away from or given to this scorer", ["event"]
)
ASSIGNED_PARTITIONS = Gauge(
    "moodwire_consumer_assigned_partitions", "Partitions of the posts topic this scorer owns"
)
ALERT_RUN_FAILURES = Counter(
    "moodwire_alert_run_failures_total", "Alerting runs that failed (detection or delivery)", ["step"]
)
ALERT_LATE_POSTS = Counter(
    "moodwire_alert_late_posts_total",
    "Stories (as moodwire.counting counts them) that arrived after the detector had left their minute "
    "behind; they were added to its baseline",
)
ALERT_LEASE_HELD = Gauge(
    "moodwire_alert_lease_held", "1 while this alert process holds the alerting lease and works, 0 while it stands by"
)
STORE_UP = Gauge(
    "moodwire_store_up",
    "1 while this process reaches ClickHouse, 0 after a call found it unreachable (set by the scorer and alert services)",
)


def mark_started(stage: str) -> None:
    """Stamp a stage's last-success gauge with the start time, so that a rule saying "no success
    for N minutes" also fires for a process that never succeeds once."""
    LAST_SUCCESS.labels(stage).set(time.time())


def initialise_channels(channels: Iterable[str]) -> None:
    """Create the delivery counters at 0 for every configured channel: a counter series that is
    born at its first failure has no increase for a rule to see, so that failure would go unseen."""
    for channel in channels:
        ALERTS_SENT.labels(channel)
        ALERTS_FAILED.labels(channel)


def reason_label(reason: str) -> str:
    """A low-cardinality label for a rejection reason: the field or check it names."""
    if ":" in reason:
        return reason.split(":", 1)[0][:40]
    return "duplicate id" if reason.startswith("duplicate id") else "invalid"


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    ready: bool  # its dependencies answer and it is serving
    alive: bool  # its loop runs (a dead or stuck loop needs a restart)
    detail: str = ""


class HealthState:
    """What /healthz and /readyz report: every registered component's own account of itself.

    /readyz is 200 only while every component is ready (the store and bus it needs answer);
    /healthz is 200 while every component's loop is alive. Both list each component.
    """

    def __init__(self) -> None:
        self._components: dict[str, Callable[[], ComponentStatus]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, status: Callable[[], ComponentStatus]) -> None:
        with self._lock:
            self._components[name] = status

    def statuses(self) -> list[ComponentStatus]:
        with self._lock:
            probes = list(self._components.items())
        out = []
        for name, probe in probes:
            try:
                out.append(probe())
            except Exception as exc:  # noqa: BLE001 - a failing probe means "not ready", not a dead server
                out.append(ComponentStatus(name, False, True, f"status probe failed: {exc}"))
        return out

    def ready(self) -> bool:
        statuses = self.statuses()
        return bool(statuses) and all(s.ready for s in statuses)

    def healthy(self) -> bool:
        return all(s.alive for s in self.statuses())

    def report(self) -> dict[str, object]:
        statuses = self.statuses()
        return {
            "ready": bool(statuses) and all(s.ready for s in statuses),
            "alive": all(s.alive for s in statuses),
            "components": {s.name: {"ready": s.ready, "alive": s.alive, "detail": s.detail} for s in statuses},
        }


def serve_metrics(port: int, health: HealthState, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """/metrics, /healthz and /readyz on one small HTTP server in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            if self.path == "/metrics":
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                report = health.report()
                ok = report["alive"] if self.path == "/healthz" else report["ready"]
                self._reply(200 if ok else 503, json.dumps(report).encode() + b"\n", "application/json")
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
