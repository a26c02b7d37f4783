"""The alerting job: every `alert_interval_s`, run the detection loop (alerting/engine.py) on
the counts in ClickHouse, write `alerts` and `detector_minutes`, and deliver notifications.
State lives in ClickHouse.

Order of effects per run (what makes a restart neither re-send nor forget):
  1. detect (the minutes so far, and every minute complete since the last run) and advance
     the lifecycle (queues notifications);
  2. write the alert rows and the detector's minutes, save the lifecycle state (outbox
     included);
  3. deliver what is pending per channel, record each outcome, save the state again.
A crash between a delivery and the save after it re-sends that one notification, with the
same notification_id, so receivers can drop the repeat.

Several `moodwire alert` processes may run on one store: one holds the lease (alerting/lease.py)
and works, the others stand by and take over when it stops renewing.
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
from moodwire.store_schema import ALERT_COLUMNS, DELIVERY_COLUMNS, DETECTOR_MINUTE_COLUMNS

from alerting.alert import Alert, ExamplePost, alert_row_id
from alerting.detector_settings import DetectorSettings
from alerting.engine import BinCounts, DetectionEngine, EngineSettings, MinuteRecord, Watermark
from alerting.lease import AlertLease
from alerting.lifecycle import AlertState, LifecycleSettings, Notification, pending, record, release_held
from alerting.notifiers import Notifier
from alerting.series import MinuteCounts

log = logging.getLogger(__name__)

STATE_NAME = "lifecycle"
EXAMPLES_PER_ALERT = 3


class ClickHouseAlertStateStore:
    """The lifecycle state as one JSON document per name in `alert_state` (ReplacingMergeTree).

    Each save carries the lease's fencing token; loading takes the highest token first, so a
    state saved by an instance that lost the lease never wins over its successor's.
    """

    def __init__(self, store: Store, name: str = STATE_NAME, token: Callable[[], int] = lambda: 0) -> None:
        self._store = store
        self._name = name
        self._token = token
        self._revision = 0

    def load(self) -> AlertState:
        rows = self._store.query(
            f"SELECT state, revision FROM {self._store.database}.alert_state WHERE name = %(name)s "
            "ORDER BY token DESC, revision DESC LIMIT 1",
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
            ("name", "state", "updated_at", "revision", "token"),
            [(self._name, state.to_json(), datetime.now(UTC).replace(microsecond=0), self._revision, self._token())],
        )


# What the job asks of the counts: every ticker's minutes in [%(start)s, %(end)s], with the day
# before %(start)s looked at for earlier copies of a story (moodwire.counting).
COUNTS_WINDOW_SQL = "minute >= toDateTime(%(start)s, 'UTC') AND minute <= toDateTime(%(end)s, 'UTC') AND symbol != ''"
COUNTS_SINCE_SQL = "toDateTime(%(start)s, 'UTC')"


def bins_sql(minute_counts: str, bin_minutes: int) -> str:
    """Per symbol and baseline bin: total, negatives and expected negatives of `minute_counts`."""
    return f"""SELECT symbol, intDiv(toUInt32(minute), {bin_minutes * 60}) * {bin_minutes * 60} AS bin_start,
    sum(stories) AS total, sum(negative) AS negatives, sum(expected_negative) AS expected
FROM ({minute_counts})
GROUP BY symbol, bin_start"""


class StoreCounts:
    """The engine's `CountsSource` over ClickHouse, counting as moodwire.counting defines."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._since: datetime | None = None  # the newest published_at seen, less a day

    def watermark(self) -> Watermark:
        where = "WHERE published_at >= toDateTime(%(since)s, 'UTC')" if self._since else ""
        row = self._store.query(
            f"SELECT count(), max(published_at), max(inserted_at) FROM {self._store.database}.posts {where}",
            {"since": self._since.replace(tzinfo=None)} if self._since else None,
        ).rows[0]
        if not row[0]:
            if self._since is not None:  # nothing in the last day: look at everything again
                self._since = None
                return self.watermark()
            return Watermark(0, None, None)
        latest = row[1].astimezone(UTC)
        self._since = latest - timedelta(days=1)
        return Watermark(int(row[0]), latest, row[2].astimezone(UTC))

    def minute_counts(self, first: datetime, last: datetime) -> dict[datetime, list[MinuteCounts]]:
        sql = counting.minute_counts_sql(self._store.database, COUNTS_WINDOW_SQL, since=COUNTS_SINCE_SQL)
        rows = self._store.query(sql, _span(first, last)).dicts()
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

    def bin_counts(self, first: datetime, last: datetime, bin_minutes: int) -> list[BinCounts]:
        counts = counting.minute_counts_sql(self._store.database, COUNTS_WINDOW_SQL, since=COUNTS_SINCE_SQL)
        sql = bins_sql(counts, bin_minutes)
        return [
            BinCounts(str(r[0]), datetime.fromtimestamp(int(r[1]), UTC), int(r[2]), int(r[3]), float(r[4]))
            for r in self._store.query(sql, _span(first, last)).rows
        ]

    def earliest_minute(self, since: datetime) -> datetime | None:
        row = self._store.query(
            f"SELECT count(), min(minute) FROM {self._store.database}.{counting.STORY_TABLE} "
            "WHERE minute >= toDateTime(%(since)s, 'UTC') AND symbol != ''",
            {"since": since.replace(tzinfo=None)},
        ).rows[0]
        return row[1].astimezone(UTC) if row[0] else None


def _span(first: datetime, last: datetime) -> dict[str, Any]:
    return {"start": first.replace(tzinfo=None), "end": last.replace(tzinfo=None)}


class AlertJob:
    def __init__(
        self,
        store: Store,
        notifiers: Sequence[Notifier],
        detector_settings: DetectorSettings,
        lifecycle_settings: LifecycleSettings,
        *,
        lateness: timedelta = timedelta(minutes=1),
        engine_settings: EngineSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease: AlertLease | None = None,
    ) -> None:
        self._store = store
        self._notifiers = list(notifiers)
        self._lifecycle_settings = lifecycle_settings
        self._lease = lease
        self._state_store = ClickHouseAlertStateStore(store, token=lambda: (lease.token or 0) if lease else 0)
        self._clock = clock
        self._source = StoreCounts(store)
        self._engine = DetectionEngine(
            detector_settings,
            lifecycle_settings,
            engine_settings or EngineSettings(lateness=lateness),
            examples=self.examples,
            records=True,
        )
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
        metrics.ALERT_LATE_POSTS.inc(0)
        metrics.ALERT_LEASE_HELD.set(0 if lease else 1)

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, *, lease: bool = True) -> AlertJob:
        from alerting.notifiers import needs_resolutions, notifiers_from_settings  # noqa: PLC0415

        notifiers = notifiers_from_settings(settings)
        lifecycle = LifecycleSettings.from_settings(
            settings, tuple(n.channel for n in notifiers), needs_resolutions(notifiers)
        )
        return cls(
            store,
            notifiers,
            DetectorSettings.from_settings(settings),
            lifecycle,
            engine_settings=EngineSettings.from_settings(settings),
            lease=AlertLease(store, settings.alert_lease_s) if lease else None,
        )

    def status(self) -> tuple[bool, str]:
        """(ready, detail): not ready while detection fails (the store is unreachable, say). An
        instance standing by while another holds the lease is ready: it is what it should be."""
        error = self.last_errors.get("detection")
        if error:
            return False, f"detection failing: {error}"
        if self._lease is not None and not self._lease.held():
            return True, f"standing by (lease held by {self._lease.other or 'nobody yet'})"
        return True, ""

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

    # ---------------------------------------------------------------------------- data

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

    def run_once(self) -> list[Alert]:
        """Detect, send what is held, deliver: one full cycle (for `alert --once` and tests)."""
        opened = self.detect(release=True)
        self.deliver_pending()
        return opened

    def working(self) -> bool:
        """Whether this instance does the work now: no lease to share, or it holds it."""
        if self._lease is None:
            return True
        was = self._lease.held()
        held = self._lease.acquire()
        metrics.ALERT_LEASE_HELD.set(1 if held else 0)
        if not held or not was:
            # another holder may have moved the state on: rebuild it from the store
            self._engine.reset()
            self._state = None
        return held

    def detect(self, release: bool = False) -> list[Alert]:
        """Evaluate what is new; return the alerts whose notifications were queued. With
        `release`, notifications held for others to join are queued now too."""
        with self._lock:
            try:
                if not self.working():
                    metrics.LAST_SUCCESS.labels("alert").set(time.time())  # standing by works as it should
                    return []
                opened = self._detect(release)
            except Exception as exc:
                if isinstance(exc, StoreUnavailable):
                    metrics.STORE_UP.set(0)
                # The detector may have stepped past minutes whose state was never saved:
                # rebuild both from the store on the next run rather than trust them.
                self._engine.reset()
                self._state = None
                raise
            # A run with nothing to evaluate (no posts yet) is a successful run too.
            metrics.LAST_SUCCESS.labels("alert").set(time.time())
            metrics.STORE_UP.set(1)
            return opened

    def _detect(self, release: bool) -> list[Alert]:
        started = time.perf_counter()
        if self._state is None:
            self._state = self._state_store.load()
        state = self._state
        result = self._engine.tick(self._source, state, self._clock())
        notes = [*result.notifications]
        if release and result.clock is not None:
            notes += release_held(state, result.clock, self._lifecycle_settings)
        if result.late_stories:
            metrics.ALERT_LATE_POSTS.inc(result.late_stories)
        self._record(notes)
        self._record_minutes(result.minutes)
        if result.recorded or notes:
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
                    "%s %s alert on %s at %s: %d of %d stories negative (baseline share %.2f, statistic %.1f)",
                    alert.severity, alert.kind, alert.symbol, alert.fired_at.isoformat(),
                    alert.window_negative, alert.window_posts, alert.baseline_share, alert.statistic,
                )
                evidence = {
                    "notification_id": note.notification_id,
                    "notified_at": note.created_at.isoformat(),
                    "expected_total": alert.expected_total,
                    "expected_negative": alert.expected_negative,
                    "examples": [
                        {"id": e.id, "text": e.text, "polarity_score": e.polarity_score,
                         "published_at": e.published_at.isoformat()}
                        for e in alert.examples
                    ],
                }
                if note.group is not None:
                    evidence["group"] = {"group_id": note.group.group_id, "symbols": list(note.group.symbols)}
                rows.append(
                    (
                        alert_row_id(alert.episode_id, note.status), alert.episode_id, alert.symbol, alert.kind,
                        alert.severity, note.status, alert.fired_at.replace(microsecond=0), alert.statistic,
                        alert.p_value, alert.window_minutes, alert.window_posts, alert.window_negative,
                        alert.window_share, alert.baseline_share, json.dumps(evidence, ensure_ascii=False), created,
                    )
                )
        if rows:
            self._store.insert_rows("alerts", ALERT_COLUMNS, rows)

    def _record_minutes(self, minutes: Sequence[MinuteRecord]) -> None:
        if not minutes:
            return
        evaluated = datetime.now(UTC).replace(microsecond=0)
        version = time.time_ns()
        self._store.insert_rows(
            "detector_minutes",
            DETECTOR_MINUTE_COLUMNS,
            [
                (m.minute, m.symbol, m.stories, m.negative, m.expected_negative, m.baseline_share,
                 m.baseline_probability, m.baseline_stories, m.information_gain, m.window_minutes,
                 m.window_stories, m.window_negative, m.window_baseline_share, evaluated, version)
                for m in minutes
            ],
        )

    def deliver_pending(self) -> None:
        """Send every queued notification on every channel; failures stay queued for the next
        round until the outbox TTL gives up on them. Each outcome is recorded."""
        for notifier in self._notifiers:
            with self._lock:
                if self._lease is not None and not self._lease.held():
                    return  # standing by: the lease holder delivers
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
                    (alert_row_id(a.episode_id, note.status), notifier.channel, "sent" if outcome.delivered else "failed", outcome.attempts,
                     (outcome.error or "")[:500], datetime.now(UTC).replace(microsecond=0))
                    for a in note.alerts
                ]
                try:
                    self._store.insert_rows("alert_deliveries", DELIVERY_COLUMNS, rows)
                except StoreError:
                    log.exception("could not record the delivery outcome of %s", note.notification_id)

    def stop(self) -> None:
        """On a clean stop, hand the lease over at once."""
        if self._lease is not None:
            try:
                self._lease.release()
            except StoreError:
                log.warning("could not release the alerting lease; another instance takes it when it expires")


def run_scheduler(job: AlertJob, settings: Settings, stop: threading.Event) -> None:
    """APScheduler: detection and delivery every alert_interval_s, each never overlapping
    itself, missed runs coalesced after a pause."""
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

    interval = settings.alert_interval_s
    common = dict(max_instances=1, coalesce=True, misfire_grace_time=max(1, int(interval)))
    scheduler.add_job(
        guarded(job.detect, "detection"), "interval", seconds=interval,
        next_run_time=datetime.now(UTC) + timedelta(seconds=min(5.0, interval)), id="detect", **common,
    )
    scheduler.add_job(guarded(job.deliver_pending, "delivery"), "interval", seconds=interval, id="deliver", **common)
    scheduler.start()
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        job.stop()
