"""What every connector that polls an HTTP API shares: when each target is due, backoff after
failures, the source-wide pause a rate limit imposes (X-RateLimit-* headers, HTTP 429,
Retry-After), and the checkpoint handed to the ingest loop with every batch.

A target is one thing a source fetches on its own schedule: a subreddit listing, a Mastodon
timeline, a StockTwits symbol stream, an RSS feed. A failing target waits longer after each
failure in a row (Backoff); a rate limit pauses the whole source, since the limit belongs to the
API client, not to one target. The ingest loop is single-threaded and shared by every source, so
a source never blocks it for more than IDLE_SLEEP_S: a pause is a time before which nothing is
requested, not a sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

import httpx

from moodwire.schema import parse_timestamp

from ingest.sources import RawItem, SourceBatch

log = logging.getLogger(__name__)

# The longest a failing poll target (listing, timeline, symbol stream, feed) waits for its next
# try, and how long a connector whose credentials were refused waits before asking again.
MAX_POLL_BACKOFF_S = 3_600.0
# The longest a dropped stream (Jetstream, Mastodon streaming) waits before reconnecting.
MAX_RECONNECT_BACKOFF_S = 300.0
# The longest an idle source naps inside the single-threaded ingest loop.
IDLE_SLEEP_S = 1.0
USER_AGENT = "moodwire/0.1 (+https://github.com/moodwire/moodwire)"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: after n failures in a row, wait base_s * 2**n, at most max_s.

    The exponent stops at max_doublings, so a target polled every few seconds is retried within
    minutes, not after max_s.
    """

    base_s: float
    max_s: float
    max_doublings: int = 6

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.base_s * 2 ** min(max(failures, 0), self.max_doublings))


# Reconnecting a stream: 2 s, 4 s, ... 256 s.
RECONNECT_BACKOFF = Backoff(base_s=1.0, max_s=MAX_RECONNECT_BACKOFF_S, max_doublings=8)


# -- rate-limit headers --------------------------------------------------------------------------


class ResetFormat(StrEnum):
    """How an API writes X-RateLimit-Reset."""

    SECONDS = "seconds"  # seconds until the window ends (Reddit)
    UNIX_TIME = "unix_time"  # the window's end as Unix time (StockTwits)
    TIMESTAMP = "timestamp"  # the window's end as an ISO 8601 time (Mastodon)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _server_now(headers: Mapping[str, str], now: float) -> float:
    """The server's time from its Date header (absolute times it sends are on its clock), else `now`."""
    date = headers.get("Date")
    if date:
        try:
            return parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return now


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds a Retry-After header asks for: delay-seconds, or an HTTP date (measured against the
    server's Date header, else `now`, Unix time). None when absent or unreadable."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, at.timestamp() - _server_now(headers, now))


def rate_limit_reset_s(headers: Mapping[str, str], reset_format: ResetFormat, now: float) -> float | None:
    """Seconds until the rate-limit window ends, from X-RateLimit-Reset as this API writes it;
    absolute times are measured against the server's Date header, else `now` (Unix time)."""
    value = headers.get("X-RateLimit-Reset")
    if value is None:
        return None
    if reset_format is ResetFormat.TIMESTAMP:
        try:
            at = parse_timestamp(value).timestamp()
        except ValueError:
            return None
        return max(0.0, at - _server_now(headers, now))
    number = _number(value)
    if number is None:
        return None
    if reset_format is ResetFormat.UNIX_TIME:
        return max(0.0, number - _server_now(headers, now))
    return max(0.0, number)


def rate_limit_used_up(headers: Mapping[str, str]) -> bool:
    """X-RateLimit-Remaining says no request is left in this window."""
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    return remaining is not None and remaining < 1.0


def throttled_wait_s(headers: Mapping[str, str], reset_format: ResetFormat, now: float) -> float | None:
    """How long a refusal (HTTP 429) asks us to wait: until the window resets, else Retry-After."""
    reset = rate_limit_reset_s(headers, reset_format, now)
    return reset if reset is not None else retry_after_s(headers, now)


# -- the polling skeleton ------------------------------------------------------------------------


class PollTarget(Protocol):
    """One thing a source polls on its own schedule."""

    @property
    def key(self) -> str: ...  # names it in logs and checkpoints

    @property
    def interval_s(self) -> float: ...  # seconds between polls; the first backoff step is twice this

    next_poll: float
    failures: int


T = TypeVar("T", bound=PollTarget)


class PollingSource(Generic[T]):
    """The skeleton of a polling connector. A subclass lists its targets, fetches one in `poll`
    (reporting each outcome with `succeeded`, `fail` or `answered`) and says what its
    `checkpoint` is; this class decides what is due, paces, and hands out batches."""

    name: str
    reset_format: ResetFormat = ResetFormat.SECONDS

    def __init__(
        self,
        targets: list[T],
        client: httpx.Client,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._targets = targets
        self._client = client
        self._clock = clock
        self._sleep = sleep
        # Rate-limit headers carry wall-clock times; pauses are kept on the monotonic clock.
        self._wall_clock = wall_clock
        self._not_before = 0.0

    # -- what a subclass supplies --------------------------------------------------------------

    def poll(self, target: T) -> list[RawItem]:
        """Everything new in one target, oldest first; on failure nothing (and no state change)."""
        raise NotImplementedError

    def checkpoint(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- the Source interface ------------------------------------------------------------------

    def next_batch(self) -> SourceBatch:
        items = self.poll_due()
        if not items:
            self._sleep(self.idle_wait())
        return SourceBatch(items, self.checkpoint())

    def commit(self, checkpoint: dict[str, Any]) -> None:
        pass  # the ingest loop saves the checkpoint; the API needs nothing more

    def close(self) -> None:
        self._client.close()

    # -- scheduling ----------------------------------------------------------------------------

    def poll_due(self) -> list[RawItem]:
        """Poll every target that is due, stopping as soon as a rate limit pauses the source
        (a response may have just set one)."""
        items: list[RawItem] = []
        for target in self._targets:
            if self.paused:
                break
            if target.next_poll <= self._clock():
                items.extend(self.poll(target))
        return items

    def idle_wait(self) -> float:
        """How long to nap when nothing came: until the next target (or the pause) is due, capped."""
        due = max(self._not_before, min((t.next_poll for t in self._targets), default=self._clock()))
        return max(0.0, min(IDLE_SLEEP_S, due - self._clock()))

    @property
    def paused(self) -> bool:
        return self._clock() < self._not_before

    def pause(self, seconds: float, why: str) -> None:
        """Send nothing to the API for `seconds` (a rate limit, refused credentials)."""
        self._not_before = max(self._not_before, self._clock() + seconds)
        log.warning("%s: %s; pausing %.0f s", self.name, why, seconds)

    def succeeded(self, target: T, next_poll_in_s: float | None = None) -> None:
        """The poll went through: reset the backoff, poll again after the interval (or sooner)."""
        target.failures = 0
        target.next_poll = self._clock() + (target.interval_s if next_poll_in_s is None else next_poll_in_s)

    def backoff(self, target: T) -> float:
        """Count one more failure of `target`; the wait it has earned."""
        target.failures += 1
        return Backoff(target.interval_s, MAX_POLL_BACKOFF_S).delay(target.failures)

    def fail(self, target: T, why: str, *, at_least_s: float | None = None) -> None:
        """The poll failed: try this target again after its backoff (or `at_least_s`, if longer)."""
        delay = max(self.backoff(target), at_least_s or 0.0)
        target.next_poll = self._clock() + delay
        log.warning("%s %s: %s; next try in %.0f s", self.name, target.key, why, delay)

    def answered(self, target: T, response: httpx.Response) -> bool:
        """Read an answer's rate-limit headers: False when it was refused with HTTP 429 (the whole
        source is then paused until the window resets), True otherwise. An answer that used up
        the window counts, and pauses the source until the reset."""
        now = self._wall_clock()
        if response.status_code == 429:
            wait = throttled_wait_s(response.headers, self.reset_format, now)
            self.pause(self.backoff(target) if wait is None else wait, "HTTP 429")
            return False
        if rate_limit_used_up(response.headers):
            wait = throttled_wait_s(response.headers, self.reset_format, now)
            if wait is not None:
                self.pause(wait, f"rate limit used up ({response.headers.get('X-RateLimit-Used', '?')} requests)")
        return True
