"""The polling base every HTTP connector shares: backoff, Retry-After, rate-limit headers and the
source-wide pause, on an injected clock (no real waiting) and a fake HTTP transport."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import format_datetime
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ingest.polling import (
    IDLE_SLEEP_S,
    MAX_POLL_BACKOFF_S,
    Backoff,
    PollingSource,
    ResetFormat,
    rate_limit_reset_s,
    rate_limit_used_up,
    retry_after_s,
    throttled_wait_s,
)
from ingest.sources import RawItem
from tests.integration.test_connectors import FakeClock

# A fixed wall-clock moment and the server's Date header for it.
NOW = datetime(2026, 11, 2, 14, 0, 0, tzinfo=UTC)
NOW_S = NOW.timestamp()
DATE = format_datetime(NOW, usegmt=True)


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({name.replace("_", "-"): value for name, value in values.items()})


# -- Backoff -------------------------------------------------------------------------------------


def test_backoff_doubles_from_twice_the_base_and_stops_at_its_cap() -> None:
    backoff = Backoff(base_s=60.0, max_s=MAX_POLL_BACKOFF_S)
    assert [backoff.delay(n) for n in range(0, 8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    # A target polled every few seconds stops doubling after six failures, far below the cap.
    fast = Backoff(base_s=2.0, max_s=MAX_POLL_BACKOFF_S)
    assert fast.delay(6) == fast.delay(60) == 128.0
    assert Backoff(base_s=1.0, max_s=300.0, max_doublings=8).delay(100) == 256.0


# -- Retry-After ---------------------------------------------------------------------------------


def test_retry_after_in_seconds() -> None:
    assert retry_after_s(headers(Retry_After="120"), NOW_S) == 120.0
    assert retry_after_s(headers(Retry_After=" 0 "), NOW_S) == 0.0


def test_retry_after_as_an_http_date_is_measured_against_the_servers_clock() -> None:
    later = format_datetime(NOW + timedelta(seconds=45), usegmt=True)
    # Our clock runs 10 minutes fast: the server's Date header decides.
    assert retry_after_s(headers(Retry_After=later, Date=DATE), NOW_S + 600) == 45.0
    # Without a Date header, our own clock.
    assert retry_after_s(headers(Retry_After=later), NOW_S + 15) == 30.0
    # A date already past asks for no wait at all.
    past = format_datetime(NOW - timedelta(minutes=5), usegmt=True)
    assert retry_after_s(headers(Retry_After=past, Date=DATE), NOW_S) == 0.0


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "Mon, 99 Foo 2026 25:00:00 GMT", ""])
def test_unreadable_retry_after_is_none(value: str) -> None:
    assert retry_after_s(headers(Retry_After=value), NOW_S) is None
    assert retry_after_s(headers(), NOW_S) is None


# -- X-RateLimit-* -------------------------------------------------------------------------------


def test_reset_in_each_apis_format() -> None:
    # Reddit: seconds until the window ends.
    assert rate_limit_reset_s(headers(X_RateLimit_Reset="300"), ResetFormat.SECONDS, NOW_S) == 300.0
    # StockTwits: Unix time, against the server's Date header when it sends one.
    unix = headers(X_RateLimit_Reset=str(int(NOW_S) + 600), Date=DATE)
    assert rate_limit_reset_s(unix, ResetFormat.UNIX_TIME, NOW_S - 1_000) == 600.0
    assert rate_limit_reset_s(headers(X_RateLimit_Reset=str(int(NOW_S) + 600)), ResetFormat.UNIX_TIME, NOW_S) == 600.0
    # Mastodon: an ISO 8601 time.
    iso = (NOW + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    assert rate_limit_reset_s(headers(X_RateLimit_Reset=iso, Date=DATE), ResetFormat.TIMESTAMP, 0.0) == 300.0
    # A reset already past: no wait.
    assert rate_limit_reset_s(headers(X_RateLimit_Reset=str(int(NOW_S) - 5)), ResetFormat.UNIX_TIME, NOW_S) == 0.0


@pytest.mark.parametrize(
    ("value", "reset_format"),
    [("soon", ResetFormat.SECONDS), ("nan", ResetFormat.SECONDS), ("300", ResetFormat.TIMESTAMP), ("x", ResetFormat.UNIX_TIME)],
)
def test_unreadable_reset_is_none(value: str, reset_format: ResetFormat) -> None:
    assert rate_limit_reset_s(headers(X_RateLimit_Reset=value), reset_format, NOW_S) is None


def test_remaining_under_one_means_used_up() -> None:
    assert rate_limit_used_up(headers(X_Ratelimit_Remaining="0.0"))  # Reddit writes a float
    assert rate_limit_used_up(headers(X_RateLimit_Remaining="0"))
    assert not rate_limit_used_up(headers(X_RateLimit_Remaining="596.0"))
    assert not rate_limit_used_up(headers(X_RateLimit_Remaining="1"))
    assert not rate_limit_used_up(headers(X_RateLimit_Remaining="lots"))
    assert not rate_limit_used_up(headers())


def test_a_refusal_waits_for_the_reset_before_retry_after() -> None:
    both = headers(X_RateLimit_Reset="30", Retry_After="90")
    assert throttled_wait_s(both, ResetFormat.SECONDS, NOW_S) == 30.0
    assert throttled_wait_s(headers(Retry_After="90"), ResetFormat.SECONDS, NOW_S) == 90.0
    assert throttled_wait_s(headers(), ResetFormat.SECONDS, NOW_S) is None


# -- PollingSource ---------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    interval_s: float
    next_poll: float = 0.0
    failures: int = 0


class OneEndpoint(PollingSource[Target]):
    """The smallest connector: GET /items/{key}, one item per 200 answer."""

    name = "fake"
    reset_format = ResetFormat.SECONDS

    def poll(self, target: Target) -> list[RawItem]:
        response = self._client.get(f"http://api.test/items/{target.key}")
        if not self.answered(target, response):
            return []
        if response.status_code != 200:
            self.fail(target, f"HTTP {response.status_code}")
            return []
        self.succeeded(target)
        return [RawItem("fake", {"id": f"{target.key}:{len(self.requests)}"})]

    def checkpoint(self) -> dict[str, Any]:
        return {}

    requests: list[httpx.Request]


def source_with(answers: list[httpx.Response], *keys: str) -> tuple[OneEndpoint, FakeClock]:
    """A source whose API gives `answers` in turn (then 200s with no rate-limit headers)."""
    clock = FakeClock()
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.pop(0) if answers else httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(handle))
    targets = [Target(key, interval_s=60.0) for key in keys or ("a",)]
    source = OneEndpoint(targets, client, clock=clock, sleep=clock.sleep, wall_clock=lambda: NOW_S)
    source.requests = requests
    return source, clock


def test_a_429_pauses_the_whole_source_until_the_reset() -> None:
    throttled = httpx.Response(429, headers={"X-RateLimit-Reset": "30", "X-RateLimit-Remaining": "0"})
    source, clock = source_with([throttled], "a", "b")
    refused_at = clock.now
    assert source.next_batch().items == []
    # "b" was due too, but the limit is the API client's: nothing more went out.
    assert len(source.requests) == 1
    clock.now = refused_at + 29.5
    assert source.next_batch().items == [] and len(source.requests) == 1
    clock.now = refused_at + 30.5
    assert len(source.next_batch().items) == 2 and len(source.requests) == 3


def test_a_429_with_an_http_date_retry_after_waits_that_long() -> None:
    until = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    source, clock = source_with([httpx.Response(429, headers={"Retry-After": until, "Date": DATE})])
    refused_at = clock.now
    source.next_batch()
    clock.now = refused_at + 89.5
    source.next_batch()
    assert len(source.requests) == 1
    clock.now = refused_at + 90.5
    assert len(source.next_batch().items) == 1


def test_a_429_without_any_hint_backs_off() -> None:
    source, clock = source_with([httpx.Response(429)])
    refused_at = clock.now
    source.next_batch()
    clock.now = refused_at + 119.5  # the first backoff step is two intervals
    source.next_batch()
    assert len(source.requests) == 1
    clock.now = refused_at + 120.5
    assert len(source.next_batch().items) == 1


def test_an_answer_that_uses_up_the_window_counts_then_pauses() -> None:
    last = httpx.Response(200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "120"})
    source, clock = source_with([last])
    answered_at = clock.now
    assert len(source.next_batch().items) == 1
    clock.now = answered_at + 100  # the target is due again after 60 s, the window only after 120 s
    assert source.next_batch().items == [] and len(source.requests) == 1
    clock.now = answered_at + 120.5
    assert len(source.next_batch().items) == 1


def test_failures_back_off_per_target_and_a_success_resets_it() -> None:
    source, clock = source_with([httpx.Response(503), httpx.Response(503)], "a")
    [target] = source._targets
    failed_at = clock.now
    source.next_batch()
    assert target.next_poll == failed_at + 120
    clock.now = failed_at = target.next_poll
    source.next_batch()
    assert target.next_poll == failed_at + 240 and target.failures == 2
    clock.now = polled_at = target.next_poll
    assert len(source.next_batch().items) == 1
    assert target.failures == 0 and target.next_poll == polled_at + 60


def test_an_idle_source_naps_at_most_a_second_at_a_time() -> None:
    source, clock = source_with([], "a")
    source.next_batch()
    before = len(clock.sleeps)
    assert source.next_batch().items == []
    assert clock.sleeps[before:] == [IDLE_SLEEP_S]


def test_a_feed_that_refuses_backs_off_alone_for_at_least_its_retry_after() -> None:
    from ingest.rss import RssSource
    from moodwire.config import FeedConfig

    clock = FakeClock()
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "busy.test":
            return httpx.Response(429, headers={"Retry-After": "900"})
        return httpx.Response(304)

    feeds = [FeedConfig(url="http://busy.test/feed", interval_s=60), FeedConfig(url="http://calm.test/feed", interval_s=60)]
    client = httpx.Client(transport=httpx.MockTransport(handle))
    source = RssSource(feeds, client=client, clock=clock, sleep=clock.sleep)
    refused_at = clock.now
    source.next_batch()
    assert asked == ["busy.test", "calm.test"]  # the other host is not paused
    busy, calm = source._targets
    assert busy.next_poll == refused_at + 900  # longer than its backoff (120 s)
    assert calm.next_poll == refused_at + 60
