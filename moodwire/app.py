"""The one application object behind every front end.

`moodwire run` (everything in one process: the in-process bus and chDB by default) and the
production commands `moodwire ingest | score | alert` are thin front ends over `Application`:
it owns the settings, the bus, the store, the sources and the services, starts them, serves
/metrics /healthz /readyz, handles SIGINT/SIGTERM, and shuts everything down in order:

    ingest (stop reading, flush, close the sources) -> scorer (finish and commit the batches in
    flight) -> alerting -> query endpoint -> bus -> store

Each service runs on its own thread with its own stop event, so a later stage keeps draining
while an earlier one stops. A service thread that dies stops the application with exit code 1.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from moodwire import metrics
from moodwire.bus import Bus, Consumer, open_bus
from moodwire.config import Settings
from moodwire.metrics import ComponentStatus, HealthState, serve_metrics
from moodwire.store import Store, StoreError, StoreUnavailable, open_store

log = logging.getLogger(__name__)

# A service loop that has not gone round for this long is reported as stuck on /healthz.
STUCK_AFTER_S = 300.0
# How often the bus and the store are probed for /readyz (a service idle between posts would
# otherwise not notice that a dependency went away).
PROBE_INTERVAL_S = 5.0
# How long start-up waits for an embedded data dir another process has open.
CHDB_LOCK_WAIT_S = 15.0


class Role(StrEnum):
    INGEST = "ingest"
    SCORE = "score"
    ALERT = "alert"


EVERYTHING = (Role.INGEST, Role.SCORE, Role.ALERT)


class StartupError(Exception):
    """The application cannot start (a refused store, nothing to read); the message says why."""


def bundled_sample() -> Path:
    return Path(str(resources.files("ingest") / "data" / "sample_stream.jsonl"))


@dataclass(frozen=True)
class RunOptions:
    """How one run is asked for (the CLI flags), apart from the settings."""

    inputs: Sequence[Path] = ()
    rate: float | None = None
    shift_to_now: bool = False
    # Ingest keeps running after its files are read (configured live sources always do).
    follow: bool = False
    # Stop once every input is read, scored, stored and committed (and alerting has run once).
    exit_when_done: bool = False
    duration_s: float | None = None
    # Serve the embedded store's read-only query endpoint (`moodwire sql` while this runs).
    query_endpoint: bool = False


@dataclass
class _Running:
    name: str
    thread: threading.Thread
    stop: threading.Event
    status: Callable[[], ComponentStatus]
    on_stop: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class AppStatus:
    """What `moodwire run` shows while it runs (from the services' own counters)."""

    elapsed_s: float
    ingested: int
    stored: int
    dead_lettered: int
    backlog: int
    alerts: int
    provider: str


class Application:
    def __init__(self, settings: Settings, roles: Sequence[Role], options: RunOptions = RunOptions()) -> None:
        if not roles:
            raise ValueError("an application needs at least one role")
        self.settings = settings
        self.roles = tuple(roles)
        self.options = options
        self.health = HealthState()
        self.bus: Bus | None = None
        self.store: Store | None = None
        self._running: list[_Running] = []
        self._failures: list[tuple[str, BaseException]] = []
        self._closers: list[Callable[[], None]] = []
        self._started = time.monotonic()
        self._ingest_done = threading.Event()
        self.ingest_worker: Any = None
        self.scorer_service: Any = None
        self.alert_job: Any = None
        self.consumer: Consumer | None = None
        self.provider = ""
        # Results of the last dependency probes (True until a probe says otherwise).
        self.bus_reachable = True
        self.store_reachable = True

    # ------------------------------------------------------------------------------- start-up

    def open_store(self, stop: threading.Event) -> Store:
        """Open and migrate the store; a server that is down is waited for, a refusal is fatal.

        An embedded data dir locked by another process is waited for only briefly: a `moodwire
        sql` or `report` reading it holds it for a moment; a second `moodwire run` does not let go.
        """
        waited = 0
        while True:
            try:
                store = open_store(self.settings)
                store.migrate()
                return store
            except StoreUnavailable as exc:
                if self.settings.store == "chdb" and waited * self.settings.store_retry_interval_s >= CHDB_LOCK_WAIT_S:
                    raise StartupError(str(exc)) from None
                if waited == 0 or waited % 30 == 0:
                    log.warning("%s; waiting for the store", exc)
                metrics.STORE_UP.set(0)
            except StoreError as exc:
                raise StartupError(f"the store refused us: {exc}") from None
            if stop.wait(self.settings.store_retry_interval_s):
                raise StartupError("stopped while waiting for the store")
            waited += 1

    @property
    def replays_sample(self) -> bool:
        """The embedded default with nothing to read configured replays the bundled sample."""
        return (
            Role.INGEST in self.roles
            and Role.SCORE in self.roles
            and not self.options.inputs
            and not self.settings.has_live_sources
        )

    def start(self, stop: threading.Event) -> None:
        settings = self.settings
        if settings.metrics_port:
            server = serve_metrics(settings.metrics_port, self.health)
            self._closers.append(server.shutdown)
        if Role.SCORE in self.roles or Role.ALERT in self.roles:
            self.store = self.open_store(stop)
            metrics.STORE_UP.set(1)
        if Role.INGEST in self.roles or Role.SCORE in self.roles:
            self.bus = open_bus(settings)
            self.bus.ensure_topics([settings.posts_topic, settings.dead_letter_topic])
        if self.options.query_endpoint and self.store is not None and settings.store == "chdb":
            from moodwire.query_server import QueryServer

            query_server = QueryServer(self.store, settings.state_dir, settings.query_host, settings.query_port)
            query_server.start()
            self._closers.append(query_server.stop)
        self._start_probes()
        # Start order is the data's order; ingest last, so nothing is produced before a scorer listens.
        if Role.ALERT in self.roles:
            self._start_alerting()
        if Role.SCORE in self.roles:
            self._start_scorer()
        if Role.INGEST in self.roles:
            self._start_ingest()

    def _start_probes(self) -> None:
        """Probe the bus and the store every PROBE_INTERVAL_S on a daemon thread; /readyz reads the
        results (probing inside the HTTP handler would make a health check wait on a dead server)."""
        stop = threading.Event()

        def probe() -> None:
            while not stop.wait(PROBE_INTERVAL_S):
                if self.bus is not None:
                    self.bus_reachable = self.bus.reachable()
                    metrics.BUS_UP.labels(self.roles[0].value if len(self.roles) == 1 else "embedded").set(
                        1 if self.bus_reachable else 0
                    )
                store = self.store
                if store is not None:
                    try:
                        store.ping()
                        self.store_reachable = True
                    except StoreError:
                        self.store_reachable = False

        threading.Thread(target=probe, name="dependency-probe", daemon=True).start()
        self._closers.append(stop.set)

    def _thread(self, name: str, target: Callable[[threading.Event], object], status: Callable[[], ComponentStatus]) -> _Running:
        stop = threading.Event()

        def body() -> None:
            try:
                target(stop)
            except BaseException as exc:  # noqa: BLE001 - any crash stops the whole application, loudly
                log.exception("%s stopped on an error", name)
                self._failures.append((name, exc))

        running = _Running(name, threading.Thread(target=body, name=name, daemon=True), stop, status)
        self.health.register(name, status)
        self._running.append(running)
        running.thread.start()
        return running

    def _start_ingest(self) -> None:
        from ingest.checkpoint import CheckpointStore
        from ingest.connectors import SourceSettings, build_sources
        from ingest.normalize import Normalizer
        from ingest.service import IngestSettings, IngestWorker

        settings = self.settings
        assert self.bus is not None
        files, shift_to_now = list(self.options.inputs), self.options.shift_to_now
        if self.replays_sample:
            files, shift_to_now = [bundled_sample()], True
        checkpoints = CheckpointStore(settings.state_dir / "ingest")
        rate = self.options.rate or (settings.sample_rate if Role.SCORE in self.roles else None)
        sources = build_sources(SourceSettings.from_settings(settings), checkpoints, files, rate=rate, shift_to_now=shift_to_now)
        if not sources:
            raise StartupError(
                "nothing to read: pass files or configure sources (feeds, reddit, mastodon, bluesky, stocktwits, push)"
            )
        producer = self.bus.producer()
        worker = IngestWorker(
            IngestSettings.from_settings(settings),
            producer,
            sources,
            checkpoints,
            normalizer=Normalizer(max_chars=settings.text_max_chars),
        )
        self.ingest_worker = worker
        keep_running = self.options.follow or settings.has_live_sources

        def run(stop: threading.Event) -> None:
            try:
                worker.run(stop, stop_when_exhausted=not keep_running)
            finally:
                self._ingest_done.set()
                worker.close()  # every source: files, HTTP clients, the push endpoint, streams
                producer.close()

        def status() -> ComponentStatus:
            alive = running.thread.is_alive() or self._ingest_done.is_set()
            ok = self.bus_reachable
            return ComponentStatus("ingest", ok, alive, "" if ok else "bus unreachable")

        running = self._thread("ingest", run, status)

    def _start_scorer(self) -> None:
        from scorer.runtime import OnnxScorer
        from scorer.service import ScorerService, ScorerSettings

        settings = self.settings
        assert self.bus is not None and self.store is not None
        if settings.inference_threads is not None:
            # The tokenizer's thread pool (Rust, rayon) reads this when it is first used.
            os.environ["RAYON_NUM_THREADS"] = str(settings.inference_threads)
        runtime = OnnxScorer(
            settings.model_dir,
            provider=settings.execution_provider,
            max_batch=settings.inference_batch_size,
            threads=settings.inference_threads,
        )
        self.provider = runtime.provider
        log.info("model %s on %s", runtime.model_version, runtime.provider)
        consumer = self.bus.consumer(settings.consumer_group, [settings.posts_topic])
        producer = self.bus.producer()
        self.consumer = consumer
        service = ScorerService(ScorerSettings.from_settings(settings), consumer, producer, self.store, runtime)
        self.scorer_service = service

        def run(stop: threading.Event) -> None:
            try:
                service.run(stop)
            finally:
                consumer.close()
                producer.close()

        def status() -> ComponentStatus:
            stuck = time.monotonic() - service.stats.loop_heartbeat > STUCK_AFTER_S
            alive = running.thread.is_alive() and not stuck
            store_ok = service.store_ok and self.store_reachable
            problems = [p for p, bad in (("store unavailable", not store_ok), ("bus unreachable", not self.bus_reachable)) if bad]
            if stuck:
                problems.append(f"loop has not gone round for {STUCK_AFTER_S:.0f} s")
            return ComponentStatus("scorer", not problems, alive, "; ".join(problems))

        running = self._thread("scorer", run, status)

    def _start_alerting(self) -> None:
        from alerting.job import AlertJob, run_scheduler

        assert self.store is not None
        job = AlertJob.from_settings(self.settings, self.store)
        self.alert_job = job

        def run(stop: threading.Event) -> None:
            run_scheduler(job, self.settings, stop)

        def status() -> ComponentStatus:
            ok, detail = job.status()
            if not self.store_reachable:
                ok, detail = False, "; ".join(filter(None, [detail, "store unavailable"]))
            return ComponentStatus("alert", ok, running.thread.is_alive(), detail)

        running = self._thread("alert", run, status)

    # ------------------------------------------------------------------------------- running

    def done(self) -> bool:
        """Every input read, and everything on the bus scored, stored and committed."""
        if not self._ingest_done.is_set() or self.consumer is None:
            return False
        return self.consumer.uncommitted() == 0

    def status(self) -> AppStatus:
        scorer = self.scorer_service
        backlog = self.consumer.uncommitted() if self.consumer is not None else None
        return AppStatus(
            elapsed_s=time.monotonic() - self._started,
            ingested=self.ingest_worker.sent if self.ingest_worker is not None else 0,
            stored=scorer.stats.scored if scorer is not None else 0,
            dead_lettered=scorer.stats.rejected if scorer is not None else 0,
            backlog=backlog or 0,
            alerts=self.alert_job.fired_total if self.alert_job is not None else 0,
            provider=self.provider,
        )

    def run(self, stop: threading.Event, on_tick: Callable[[AppStatus], None] | None = None) -> int:
        """Start, run until `stop` (or the duration, or done, or a failure), shut down; -> exit code."""
        try:
            self.start(stop)
        except StartupError as exc:
            log.error("%s", exc)
            self.shutdown()
            return 2
        deadline = self._started + self.options.duration_s if self.options.duration_s else None
        try:
            while not stop.is_set() and not self._failures:
                if on_tick is not None:
                    on_tick(self.status())
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self.options.exit_when_done and self.done():
                    if self.alert_job is not None:
                        self.alert_job.run_once()
                    break
                if all(not r.thread.is_alive() for r in self._running):
                    break  # e.g. `moodwire ingest` over files: its only service finished
                stop.wait(0.5)
        finally:
            if on_tick is not None:
                on_tick(self.status())
            self.shutdown()
        if self._failures:
            name, exc = self._failures[0]
            log.error("%s failed: %r", name, exc)
            return 1
        return 0

    def shutdown(self) -> None:
        """Stop the services in the data's order, each finishing its work in flight, then close
        the endpoints, the bus and the store."""
        order = {"ingest": 0, "scorer": 1, "alert": 2}
        for running in sorted(self._running, key=lambda r: order.get(r.name, 9)):
            running.stop.set()
            running.thread.join(timeout=self.settings.shutdown_timeout_s)
            if running.thread.is_alive():
                log.error("%s did not stop within %.0f s", running.name, self.settings.shutdown_timeout_s)
        for close in reversed(self._closers):
            close()
        self._closers.clear()
        if self.bus is not None:
            self.bus.close()
            self.bus = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def run_until_signalled(self, on_tick: Callable[[AppStatus], None] | None = None) -> int:
        """`run`, stopped by SIGINT/SIGTERM. A second signal interrupts at once; a process still
        alive shutdown_timeout_s after the first exits with code 3 (nothing uncommitted is lost:
        it is redelivered on restart)."""
        return self.run(stop_on_signals(self.settings.shutdown_timeout_s), on_tick)


def stop_on_signals(shutdown_timeout_s: float | None = None) -> threading.Event:
    """SIGINT/SIGTERM set the returned event; see Application.run_until_signalled."""
    stop = threading.Event()

    def give_up() -> None:
        log.error("still running %.0f s after the stop signal; exiting without a clean shutdown", shutdown_timeout_s)
        os._exit(3)

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("received %s; finishing the work in flight", signal.Signals(signum).name)
        stop.set()
        if shutdown_timeout_s is not None:
            timer = threading.Timer(shutdown_timeout_s, give_up)
            timer.daemon = True
            timer.start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop

