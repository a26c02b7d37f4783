"""The alerting job: every minute, feed the complete minutes to the detector, run the alert
lifecycle, write `alerts`, and deliver notifications. State lives in ClickHouse.

Order of effects per run (what makes a restart neither re-send nor forget):
  1. detect over the new complete minutes and advance the lifecycle (queues notifications);
  2. write the alert rows and save the lifecycle state (outbox included);
  3. deliver what is pending per channel, record each outcome, save the state again.
A crash between a delivery and the save after it re-sends that one notification, with the
same notification_id, so receivers can drop the repeat.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from moodwire import counting, metrics
from moodwire.config import Settings
from moodwire.store import Store, StoreError, StoreUnavailable

from alerting.detector import Alert, DetectorSettings, DetectorState, ExamplePost, observe, step
from alerting.notifiers import Notifier
from alerting.lifecycle import AlertState, LifecycleSettings, Notification, advance, pending, record
from alerting.series import MINUTE, MinuteCounts, floor_minute

log = logging.getLogger(__name__)

STATE_NAME = "lifecycle"
EXAMPLES_PER_ALERT = 3


class ClickHouseAlertStateStore:
    """The lifecycle state as one JSON document per name in `alert_state` (ReplacingMergeTree)."""

    def __init__(self, store: Store, name: str = STATE_NAME) -> None:
        self._store = store
        self._name = name
        self._revision = 0

    def load(self) -> AlertState:
        rows = self._store.query(
            f"SELECT state, revision FROM {self._store.database}.alert_state WHERE name = %(name)s "
            "ORDER BY revision DESC LIMIT 1",
            {"name": self._name},
        ).rows
        if not rows:
            return AlertState()
        self._revision = int(rows[0][1])
        return AlertState.from_json(rows[0][0])

    def save(self, state: AlertState) -> None:
        # A revision from the clock (not a counter) stays monotonic across restarts and processes.
        self._revision = max(self._revision + 1, time.time_ns())
        self._store.insert_rows(
            "alert_state",
            ("name", "state", "updated_at", "revision"),
            [(self._name, state.to_json(), datetime.now(UTC).replace(microsecond=0), self._revision)],
        )


class AlertJob:
    def __init__(
        self,
        store: Store,
        notifiers: Sequence[Notifier],
        detector_settings: DetectorSettings,
        lifecycle_settings: LifecycleSettings,
        *,
        lateness: timedelta = timedelta(minutes=1),
        idle_after: timedelta = timedelta(seconds=30),
        first_run_lookback: timedelta = timedelta(hours=3),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._notifiers = list(notifiers)
        self._detector_settings = detector_settings
        self._lifecycle_settings = lifecycle_settings
        self._state_store = ClickHouseAlertStateStore(store)
        self._lateness = lateness
        self._idle_after = idle_after
        self._first_run_lookback = first_run_lookback
        self._clock = clock
        self._detector: DetectorState | None = None
        self._state: AlertState | None = None
        # Detection and delivery run on separate schedules; the lock guards the shared state,
        # never a network call, so a dead endpoint cannot hold up detection.
        self._lock = threading.Lock()
        self.fired_total = 0
        # The last error of each step (None once it succeeds again): what /readyz reports.
        self.last_errors: dict[str, str | None] = {"detection": None, "delivery": None}
        metrics.initialise_channels(n.channel for n in self._notifiers)
        metrics.mark_started("alert")
        metrics.STORE_UP.set(1)  # the caller opened (and migrated) the store

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> AlertJob:
        from alerting.notifiers import needs_resolutions, notifiers_from_settings  # noqa: PLC0415

        notifiers = notifiers_from_settings(settings)
        lifecycle = LifecycleSettings(
            channels=tuple(n.channel for n in notifiers), notify_resolved=needs_resolutions(notifiers)
        )
        return cls(
            store,
            notifiers,
            DetectorSettings.from_settings(settings),
            lifecycle,
            lateness=timedelta(minutes=settings.alert_lateness_minutes),
        )

    def status(self) -> tuple[bool, str]:
        """(ready, detail): not ready while detection fails (the store is unreachable, say)."""
        error = self.last_errors.get("detection")
        return error is None, f"detection failing: {error}" if error else ""

    def note_outcome(self, step: str, error: BaseException | None) -> None:
        """Record how a scheduled step ended: counted, logged once per change, kept for status()."""
        previous = self.last_errors.get(step)
        if error is None:
            if previous is not None:
                log.info("alerting %s works again", step)
            self.last_errors[step] = None
            return
        metrics.ALERT_RUN_FAILURES.labels(step).inc()
        message = f"{type(error).__name__}: {error}"
        if previous is None:
            log.error("alerting %s failed (%s); the next run retries", step, message, exc_info=error)
        self.last_errors[step] = message

    # ---------------------------------------------------------------------------- time

    def last_complete_minute(self, now: datetime) -> datetime | None:
        """The newest minute whose posts have all arrived, allowing `lateness` for late ones.

        Event time leads while posts flow (a replay of old posts is judged by its own clock);
        once nothing has been stored for `idle_after`, the wall clock takes over so quiet
        minutes still count as complete.
        """
        db = self._store.database
        row = self._store.query(f"SELECT count(), max(published_at), max(inserted_at) FROM {db}.posts").rows[0]
        if not row[0]:
            return None
        latest_published, latest_inserted = row[1], row[2]
        clock = latest_published
        if latest_inserted <= now - self._idle_after:
            clock = max(clock, now)
        clock = min(clock, now)
        return floor_minute(clock - self._lateness) - MINUTE

    # ---------------------------------------------------------------------------- data

    def minute_counts(self, start: datetime, end: datetime) -> dict[datetime, list[MinuteCounts]]:
        """Counts per symbol and minute in [start, end], as moodwire.counting defines them."""
        sql = counting.minute_counts_sql(
            self._store.database,
            "minute >= toDateTime(%(start)s, 'UTC') AND minute <= toDateTime(%(end)s, 'UTC') AND symbol != ''",
        )
        rows = self._store.query(sql, {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)}).dicts()
        by_minute: dict[datetime, list[MinuteCounts]] = defaultdict(list)
        for row in rows:
            minute = row["minute"].astimezone(UTC)
            by_minute[minute].append(
                MinuteCounts(
                    row["symbol"], minute, int(row["stories"]), int(row["negative"]), int(row["neutral"]),
                    int(row["positive"]), float(row["expected_negative"]),
                )
            )
        return by_minute

    def earliest_minute(self, since: datetime) -> datetime | None:
        row = self._store.query(
            f"SELECT count(), min(minute) FROM {self._store.database}.{counting.STORY_TABLE} "
            "WHERE minute >= toDateTime(%(since)s, 'UTC')",
            {"since": since.replace(tzinfo=None)},
        ).rows[0]
        return row[1].astimezone(UTC) if row[0] else None

    def examples(self, alert: Alert) -> Alert:
        """Attach the most negative posts about the ticker in the alert's window (the evidence)."""
        rows = self._store.query(
            counting.negative_examples_sql(self._store.database),
            {
                "symbol": alert.symbol,
                "start": alert.window_start.replace(tzinfo=None),
                "end": alert.fired_at.replace(tzinfo=None),  # fired_at ends the window
                "limit": EXAMPLES_PER_ALERT,
            },
        ).rows
        posts = tuple(ExamplePost(r[0], r[1], float(r[2]), r[3].astimezone(UTC)) for r in rows)
        return replace(alert, examples=posts)

    # ---------------------------------------------------------------------------- the run

    def _walk(self, state: AlertState, start: datetime, end: datetime, evaluate: bool) -> list[Notification]:
        """Feed minutes [start, end] to the detector; with `evaluate`, run the lifecycle too."""
        assert self._detector is not None
        notes: list[Notification] = []
        chunk = timedelta(hours=6)
        cursor = start
        while cursor <= end:
            chunk_end = min(end, cursor + chunk - MINUTE)
            counts = self.minute_counts(cursor, chunk_end)
            minute = cursor
            while minute <= chunk_end:
                if not evaluate:
                    observe(self._detector, minute, counts.get(minute, ()))
                else:
                    alerts = step(self._detector, minute, counts.get(minute, ()), self._detector_settings)
                    alerts = [self.examples(a) for a in alerts]
                    for note in advance(state, minute + MINUTE, alerts, self._lifecycle_settings):
                        notes.append(note)
                minute += MINUTE
            cursor = chunk_end + MINUTE
        return notes

    def run_once(self) -> list[Alert]:
        """Detect, then deliver what is pending: one full cycle (for `alert --once` and tests)."""
        opened = self.detect()
        self.deliver_pending()
        return opened

    def detect(self) -> list[Alert]:
        """Evaluate every complete minute not yet evaluated; return the alerts that opened episodes."""
        with self._lock:
            try:
                opened = self._detect()
            except Exception as exc:
                if isinstance(exc, StoreUnavailable):
                    metrics.STORE_UP.set(0)
                # The detector may have stepped past minutes whose state was never saved:
                # rebuild both from the store on the next run rather than trust them.
                self._detector = None
                self._state = None
                raise
            # A run with nothing to evaluate (no posts yet) is a successful run too.
            metrics.LAST_SUCCESS.labels("alert").set(time.time())
            metrics.STORE_UP.set(1)
            return opened

    def _detect(self) -> list[Alert]:
        started = time.perf_counter()
        now = self._clock()
        last_complete = self.last_complete_minute(now)
        if self._state is None:
            self._state = self._state_store.load()
        state = self._state
        if last_complete is None:
            return []
        # lifecycle's last_minute is the end of the last evaluated minute
        evaluated_until = state.last_minute - MINUTE if state.last_minute else None
        if self._detector is None:
            self._detector = DetectorState(self._detector_settings)
            history = timedelta(days=self._detector_settings.baseline_days)
            warm_until = evaluated_until or (last_complete - self._first_run_lookback)
            first = self.earliest_minute(warm_until - history)
            if first is not None and first <= warm_until:
                self._walk(state, first, warm_until, evaluate=False)
            evaluated_until = warm_until if self._detector.last_minute is not None else None
        if evaluated_until is None:
            first = self.earliest_minute(last_complete - self._first_run_lookback)
            if first is None:
                return []
            start = first
        else:
            start = evaluated_until + MINUTE
        notes: list[Notification] = []
        if start <= last_complete:
            notes = self._walk(state, start, last_complete, evaluate=True)
        self._record(notes)
        self._state_store.save(state)
        metrics.ALERT_RUN_SECONDS.observe(time.perf_counter() - started)
        opened = [a for note in notes if note.status == "firing" for a in note.alerts]
        self.fired_total += len(opened)
        return opened

    def _record(self, notes: Sequence[Notification]) -> None:
        rows: list[tuple[Any, ...]] = []
        created = datetime.now(UTC).replace(microsecond=0)
        for note in notes:
            for alert in note.alerts:
                metrics.ALERTS_FIRED.labels(alert.kind, alert.severity).inc()
                log.warning(
                    "%s %s alert on %s at %s: %d of %d posts negative (baseline share %.2f, statistic %.1f)",
                    alert.severity, alert.kind, alert.symbol, alert.fired_at.isoformat(),
                    alert.window_negative, alert.window_total, alert.baseline_share, alert.statistic,
                )
                evidence = json.dumps(
                    {
                        "notification_id": note.notification_id,
                        "expected_total": alert.expected_total,
                        "examples": [
                            {"id": e.id, "text": e.text, "polarity_score": e.polarity_score,
                             "published_at": e.published_at.isoformat()}
                            for e in alert.examples
                        ],
                    },
                    ensure_ascii=False,
                )
                rows.append(
                    (
                        f"{alert.episode_id}:{note.status}", alert.episode_id, alert.symbol, alert.kind,
                        alert.severity, note.status, alert.fired_at, alert.statistic, alert.p_value,
                        alert.window_minutes, alert.window_total, alert.window_negative, alert.window_share,
                        alert.baseline_share, evidence, created,
                    )
                )
        if rows:
            from moodwire.store_schema import ALERT_COLUMNS

            self._store.insert_rows("alerts", ALERT_COLUMNS, rows)

    def deliver_pending(self) -> None:
        """Send every queued notification on every channel; failures stay queued for the next
        round until the outbox TTL gives up on them. Each outcome is recorded."""
        from moodwire.store_schema import DELIVERY_COLUMNS

        for notifier in self._notifiers:
            with self._lock:
                if self._state is None:
                    self._state = self._state_store.load()
                queued = pending(self._state, notifier.channel)
            for note in queued:
                outcome = notifier.deliver(note)  # retries and backoff inside, outside the lock
                with self._lock:
                    if self._state is None:
                        break  # a failed detection run dropped the state; the next round reloads it
                    record(self._state, outcome, self._lifecycle_settings)
                    self._state_store.save(self._state)
                (metrics.ALERTS_SENT if outcome.delivered else metrics.ALERTS_FAILED).labels(notifier.channel).inc()
                rows = [
                    (a.episode_id, notifier.channel, "sent" if outcome.delivered else "failed", outcome.attempts,
                     (outcome.error or "")[:500], datetime.now(UTC).replace(microsecond=0))
                    for a in note.alerts
                ]
                try:
                    self._store.insert_rows("alert_deliveries", DELIVERY_COLUMNS, rows)
                except StoreError:
                    log.exception("could not record the delivery outcome of %s", note.notification_id)


def run_scheduler(job: AlertJob, settings: Settings, stop: threading.Event) -> None:
    """APScheduler: detection every alert_interval_s and delivery more often, each never
    overlapping itself, missed runs coalesced after a pause."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone=UTC)

    def guarded(step: Callable[[], object], what: str) -> Callable[[], None]:
        def run() -> None:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - counted, surfaced on /readyz, retried next run
                job.note_outcome(what, exc)
            else:
                job.note_outcome(what, None)

        return run

    common = dict(max_instances=1, coalesce=True, misfire_grace_time=int(settings.alert_interval_s))
    scheduler.add_job(
        guarded(job.detect, "detection"), "interval", seconds=settings.alert_interval_s,
        next_run_time=datetime.now(UTC) + timedelta(seconds=5), id="detect", **common,
    )
    scheduler.add_job(
        guarded(job.deliver_pending, "delivery"), "interval", seconds=max(5.0, settings.alert_interval_s / 4),
        id="deliver", **common,
    )
    scheduler.start()
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
