"""The detection loop (alerting/engine.py) on posts replayed as they arrive: the minutes so far
fire a spike before its minute closes, late posts add evidence to the windows that still cover
their minute, and posts later than that reach the baseline once, counted."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from alerting import backtest
from alerting.detector_settings import DetectorSettings
from alerting.detector_state import to_epoch_minute
from alerting.engine import DetectionEngine, EngineSettings
from alerting.lifecycle import AlertState, Episode, LifecycleSettings

START = datetime(2024, 3, 4, tzinfo=UTC)
SPIKE = START + timedelta(days=1, hours=14)
DETECTOR = DetectorSettings(volume_windows=())
LIFECYCLE = LifecycleSettings()


def post(number: int, symbol: str, published: datetime, stance: str, arrived: datetime | None = None) -> str:
    p_negative = 0.9 if stance == "negative" else 0.05
    record = {
        "id": f"e:{number:07d}",
        "published_at": published.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "polarity": stance,
        "symbols": [symbol],
        "targets": [{"symbol": symbol, "polarity": stance, "polarity_score": 0.0,
                     "polarity_probs": {"negative": p_negative, "neutral": 1 - p_negative - 0.05, "positive": 0.05}}],
    }
    if arrived is not None:
        record["scored_at"] = arrived.strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(record)


def history(minutes: int, late_at: set[int] = frozenset(), late_by: timedelta = timedelta(0)) -> list[str]:
    """Quiet minutes of ACME (3 stories a minute, one in five negative, arriving 2 s after
    publication); minutes in `late_at` arrive `late_by` late instead."""
    rng = np.random.default_rng(4)
    lines = []
    for m in range(minutes):
        at = START + timedelta(minutes=m)
        for j in range(3):
            published = at + timedelta(seconds=int(rng.integers(0, 60)))
            delay = late_by if m in late_at else timedelta(seconds=2)
            stance = "negative" if rng.random() < 0.2 else "neutral"
            lines.append(post(len(lines) + 10 * m + j, "ACME", published, stance, published + delay))
    return lines


def spike(first: int, seconds: int) -> list[str]:
    """Twenty negative stories a minute from SPIKE on, one every 3 s, each arriving 1 s later."""
    return [
        post(first + i, "ACME", SPIKE + timedelta(seconds=3 * i), "negative", SPIKE + timedelta(seconds=3 * i + 1))
        for i in range(seconds // 3)
    ]


def test_the_minutes_so_far_fire_before_the_minute_closes() -> None:
    lines = history(1440 + 14 * 60) + spike(10**6, 600)
    sooner = backtest.run(lines, DETECTOR, LIFECYCLE, examples=0)
    minutes_only = backtest.run(
        lines, DETECTOR, LIFECYCLE, examples=0, engine_settings=EngineSettings(first_run_lookback=None, evaluate_pending=False)
    )
    (first,) = [a for a in sooner.alerts if a.kind == "negative-spike"]
    (late,) = [a for a in minutes_only.alerts if a.kind == "negative-spike"]
    # evidence read mid-minute (the clock is the newest post's time while posts flow), within
    # the spike's first minute
    assert SPIKE < first.fired_at < SPIKE + timedelta(minutes=1)
    # without it, the alert waits for a complete minute, recorded after the lateness
    assert late.fired_at.second == 0 and late.fired_at > first.fired_at
    (note,) = [n for n in minutes_only.notifications if n.alerts[0] == late]
    assert note.created_at >= late.fired_at + EngineSettings().lateness


def replay(lines: list[str], until: datetime, settings: EngineSettings) -> tuple[DetectionEngine, float]:
    table = backtest.read_posts(lines)
    # every bin every time, as the store reports them: what was added once must not be again
    source = backtest.ArrivalReplay(table.arrivals, only_changed_bins=False)
    engine, state, late = DetectionEngine(DETECTOR, LIFECYCLE, settings), AlertState(), 0.0
    moment = START
    while moment <= until:
        source.arrive_until(moment.timestamp())
        late += engine.tick(source, state, moment).late_stories
        moment += timedelta(seconds=30)
    return engine, late


def test_late_posts_add_evidence_to_windows_that_still_cover_their_minute() -> None:
    settings = EngineSettings(first_run_lookback=None)
    late_minute = 600
    on_time, _ = replay(history(620), START + timedelta(minutes=625), settings)
    late, counted = replay(history(620, {late_minute}, timedelta(minutes=4)), START + timedelta(minutes=625), settings)
    assert counted == 0  # four minutes late is within the guard zone: not "too late"
    for engine in (on_time, late):
        assert engine.detector is not None
    sums = [e.detector.window_sums((30,)).total[0, 0] for e in (on_time, late)]  # type: ignore[union-attr]
    assert sums[0] == sums[1] and sums[0] >= 3 * 20


def test_posts_later_than_the_guard_reach_the_baseline_once_and_are_counted() -> None:
    settings = EngineSettings(first_run_lookback=None)
    late_minute = 100
    until = START + timedelta(minutes=400)
    on_time, none_late = replay(history(400), until, settings)
    late, counted = replay(history(400, {late_minute}, timedelta(minutes=150)), until, settings)
    assert none_late == 0
    assert counted == 3  # the minute's three stories, once, though checked again every 5 minutes
    for engine in (on_time, late):
        assert engine.detector is not None
    # the same baseline as if they had been on time
    bins = [e.detector.bin_total.sum() for e in (on_time, late)]  # type: ignore[union-attr]
    assert bins[0] == bins[1]
    assert to_epoch_minute(START + timedelta(minutes=late_minute)) < (late.detector.last_minute or 0) - 60  # type: ignore[union-attr]


def test_an_episode_is_held_open_while_the_share_stays_above_its_opening_baseline() -> None:
    # a ten-minute spike, then two hours of one story in three negative (against one in five):
    # too little to fire, enough to say the episode is not over
    after = SPIKE + timedelta(minutes=10)

    def three_a_minute(first: int, start: datetime, minutes: int, negative_third: bool) -> list[str]:
        """Three stories a minute from `start`, the third negative if `negative_third`."""
        return [
            post(first + 3 * m + j, "ACME", start + timedelta(minutes=m, seconds=20 * j),
                 "negative" if negative_third and j == 2 else "neutral", start + timedelta(minutes=m, seconds=20 * j + 1))
            for m in range(minutes)
            for j in range(3)
        ]

    elevated = three_a_minute(2 * 10**6, after, 120, negative_third=True)
    quiet = three_a_minute(3 * 10**6, after + timedelta(minutes=120), 60, negative_third=False)
    lines = history(1440 + 14 * 60) + spike(10**6, 600) + elevated + quiet

    table = backtest.read_posts(lines)

    def episode(lifecycle: LifecycleSettings) -> Episode:
        """Tick every 30 s through the arrivals; the ticker's episode as it ended."""
        source = backtest.ArrivalReplay(table.arrivals)
        engine, state = DetectionEngine(DETECTOR, lifecycle, EngineSettings(first_run_lookback=None)), AlertState()
        moment, ended = SPIKE - timedelta(hours=2), None
        while moment <= after + timedelta(minutes=185):
            source.arrive_until(moment.timestamp())
            engine.tick(source, state, moment)
            ended = state.episodes.get("ACME|negative-spike", ended)
            moment += timedelta(seconds=30)
        assert ended is not None and ended.status == "resolved" and ended.resolved_at is not None
        return ended

    held = episode(LIFECYCLE)
    unheld = episode(replace(LIFECYCLE, hold_max_minutes=0))
    assert held.last_seen == unheld.last_seen < after + timedelta(minutes=30)  # the detector stopped firing early on
    assert unheld.resolved_at == unheld.last_seen + timedelta(minutes=15)
    # held until the last window that still reads as elevated, then the quiet time
    assert held.resolved_at is not None
    assert after + timedelta(minutes=120 + 15) <= held.resolved_at <= after + timedelta(minutes=120 + 30 + 15)


def chatter(first: int, symbol: str, start: datetime, minutes: int, per_minute: int, negative: float, seed: int) -> list[str]:
    """`per_minute` stories a minute of `symbol` from `start`, each negative with chance `negative`."""
    rng = np.random.default_rng(seed)
    lines = []
    for m in range(minutes):
        for _ in range(per_minute):
            published = start + timedelta(minutes=m, seconds=int(rng.integers(0, 60)))
            stance = "negative" if rng.random() < negative else "neutral"
            lines.append(post(first + len(lines), symbol, published, stance, published + timedelta(seconds=2)))
    return lines


def market_history(symbols: tuple[str, ...]) -> list[str]:
    """Each symbol chatters at 3 stories a minute, one in five negative, around SPIKE's clock
    time on the three days before, and for the three hours up to SPIKE."""
    watched_since = START - timedelta(days=2)  # the midnight before the first of those days
    lines: list[str] = []
    for n, symbol in enumerate(symbols):
        lines.append(post(9 * 10**7 + n, symbol, watched_since, "neutral", watched_since))
        for day in range(4):
            start = SPIKE - timedelta(days=3 - day, hours=1 if day < 3 else 3)
            lines += chatter((10 * n + day) * 10**5, symbol, start, 120 if day < 3 else 180, 3, 0.2, seed=10 * n + day)
    return lines


def test_a_surge_with_a_rising_share_joins_an_open_market_wide_sell_off() -> None:
    # at SPIKE four tickers sell off together, and two minutes later EEE gets four times its
    # posts at 0.36 negative: too weak alone, news while the sell-off is open
    sellers, joiner = ("AAA", "BBB", "CCC", "DDD"), "EEE"
    lines = market_history((*sellers, joiner))
    for n, symbol in enumerate(sellers):
        lines += chatter(10**7 + n * 10**5, symbol, SPIKE, 20, 20, 0.8, seed=100 + n)
    lines += chatter(2 * 10**7, joiner, SPIKE + timedelta(minutes=2), 20, 12, 0.36, seed=200)

    def first_alert(market_alpha: float) -> datetime | None:
        # 1.8x its baseline: under the shipped 2x, so the ratio is lowered to show the wiring
        detector = replace(DETECTOR, default=replace(DETECTOR.default, market_alpha=market_alpha, market_min_ratio=1.5))
        result = backtest.run(lines, detector, LIFECYCLE, examples=0)
        fired = {a.symbol for a in result.alerts if a.kind == "negative-spike"}
        assert set(sellers) <= fired
        grouped = [n for n in result.notifications if n.group is not None]
        assert grouped and set(sellers) <= set(grouped[0].group.symbols)  # type: ignore[union-attr]
        return min((a.fired_at for a in result.alerts if a.symbol == joiner and a.kind == "negative-spike"), default=None)

    assert first_alert(0.0) is None
    joined = first_alert(5e-3)
    assert joined is not None and SPIKE + timedelta(minutes=2) < joined <= SPIKE + timedelta(minutes=22)


def test_a_sell_off_that_opens_retests_at_once_a_surge_that_came_just_before_it() -> None:
    # EEE's burst: 60 stories in SPIKE's first 15 s, 25 of them negative (0.42 against about
    # 0.2: too weak alone), then nothing. At SPIKE + 20 s four tickers sell off hard and open a
    # market-wide event within the minute. From that moment EEE's surge meets the joiners' bar:
    # it fires then, not once its minute is recorded (at SPIKE + 2 min, for the minute's end)
    sellers, joiner = ("AAA", "BBB", "CCC", "DDD"), "EEE"
    lines = market_history((*sellers, joiner))
    for i in range(60):
        at = SPIKE + timedelta(seconds=i // 4)
        lines.append(post(3 * 10**7 + i, joiner, at, "negative" if i % 12 < 5 else "neutral", at + timedelta(seconds=1)))
    for n, symbol in enumerate(sellers):
        for i in range(60):
            at = SPIKE + timedelta(seconds=20 + i // 3)
            lines.append(post(4 * 10**7 + n * 10**5 + i, symbol, at, "negative", at + timedelta(seconds=1)))

    def run(market_alpha: float) -> tuple[list[datetime], datetime]:
        # about 2x its baseline: the ratio is lowered so that chance in the chatter cannot decide
        default = replace(DETECTOR.default, market_alpha=market_alpha, market_min_ratio=1.5)
        result = backtest.run(lines, replace(DETECTOR, default=default), LIFECYCLE, examples=0)
        grouped = [n for n in result.notifications if n.group is not None]
        assert grouped and set(sellers) <= set(grouped[0].group.symbols)  # type: ignore[union-attr]
        opened = grouped[0].group.opened_at  # type: ignore[union-attr]
        return sorted(a.fired_at for a in result.alerts if a.symbol == joiner and a.kind == "negative-spike"), opened

    alone, _ = run(0.0)
    assert alone == []
    joined, opened = run(5e-3)
    assert opened < SPIKE + timedelta(minutes=1)
    assert joined and joined[0] == opened
