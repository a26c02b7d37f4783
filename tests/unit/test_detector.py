"""The negative-spike detector: fires fast on real spikes, never on the decoys."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from alerting.detector import (
    NEGATIVE_SPIKE,
    VOLUME_SPIKE,
    Alert,
    DetectorSettings,
    DetectorState,
    SymbolSettings,
    baseline,
    observe,
    step,
)
from alerting.lifecycle import AlertState, LifecycleSettings, advance
from alerting.series import MinuteCounts

START = datetime(2024, 3, 4, tzinfo=UTC)
DAY = 1440
HISTORY_DAYS = 2


@dataclass(frozen=True)
class Regime:
    """Posts per minute and polarity shares of one symbol in one minute."""

    rate: float
    negative: float
    positive: float = 0.3


Shape = Callable[[int], Regime]  # minute index -> regime


def at(i: int) -> datetime:
    return START + timedelta(minutes=i)


def counts(rng: np.random.Generator, symbol: str, i: int, regime: Regime) -> MinuteCounts:
    total = int(rng.poisson(regime.rate))
    negative = int(rng.binomial(total, regime.negative))
    positive = int(rng.binomial(total - negative, regime.positive / (1 - regime.negative)))
    return MinuteCounts(symbol, at(i), total, negative, total - negative - positive, positive)


def replay(
    shapes: dict[str, Shape],
    minutes: int,
    settings: DetectorSettings | None = None,
    seed: int = 7,
    market_wide: bool = False,
) -> dict[int, list[Alert]]:
    """Warm up on HISTORY_DAYS days without evaluating, then evaluate every later minute
    (`market_wide`: as if a market-wide sell-off were open all along)."""
    settings = settings or DetectorSettings()
    rng = np.random.default_rng(seed)
    state = DetectorState(settings)
    fired: dict[int, list[Alert]] = {}
    for i in range(minutes):
        rows = [counts(rng, symbol, i, shape(i)) for symbol, shape in shapes.items()]
        if i < HISTORY_DAYS * DAY:
            observe(state, at(i), rows, settings)
            continue
        alerts = step(state, at(i), rows, settings, market_wide)
        if alerts:
            fired[i] = alerts
    return fired


def of_kind(fired: dict[int, list[Alert]], kind: str) -> list[Alert]:
    return [a for alerts in fired.values() for a in alerts if a.kind == kind]


ONSET = HISTORY_DAYS * DAY + 14 * 60  # 14:00 on the third day
QUIET = Regime(rate=3.0, negative=0.2)


def steady(regime: Regime) -> Shape:
    return lambda i: regime


def event(regime: Regime, start: int, length: int) -> Shape:
    return lambda i: regime if start <= i < start + length else QUIET


def test_a_real_spike_fires_within_a_few_minutes() -> None:
    spike = Regime(rate=20.0, negative=0.7, positive=0.1)
    fired = replay({"ACME": event(spike, ONSET, 20)}, ONSET + 60)
    negatives = of_kind(fired, NEGATIVE_SPIKE)
    assert negatives, "the spike was missed"
    first = min(negatives, key=lambda a: a.fired_at)
    delay = (first.fired_at - at(ONSET)) / timedelta(minutes=1)
    assert 1 <= delay <= 3
    assert first.window_share > 2 * first.baseline_share
    assert first.baseline_share == pytest.approx(0.2, abs=0.05)
    assert first.p_value <= first.statistic and math.isclose(
        first.statistic, -math.log10(first.p_value)
    )
    assert first.episode_id.startswith("ACME:negative-spike:")
    # nothing before the onset
    assert all(a.fired_at > at(ONSET) for a in negatives)


def test_a_spike_that_pauses_is_one_notified_episode() -> None:
    spike = Regime(rate=20.0, negative=0.7, positive=0.1)

    def shape(i: int) -> Regime:
        in_first = ONSET <= i < ONSET + 15
        in_second = ONSET + 25 <= i < ONSET + 40
        return spike if in_first or in_second else QUIET

    fired = replay({"ACME": shape}, ONSET + 120)
    assert len(of_kind(fired, NEGATIVE_SPIKE)) > 5  # the detector reports every minute...
    state, notified = AlertState(), []
    for i in sorted(fired):
        notified += advance(state, at(i + 1), fired[i], LifecycleSettings())
    negative_notes = [a for n in notified for a in n.alerts if a.kind == NEGATIVE_SPIKE]
    assert len(negative_notes) == 1  # ...the lifecycle sends it once


def test_a_market_wide_sell_off_lowers_the_bar_for_a_surge_with_a_rising_share() -> None:
    # four times the posts with a share of 0.32 against 0.2: too weak alone, news in a sell-off
    surge = event(Regime(rate=12.0, negative=0.32, positive=0.2), ONSET, 20)
    settings = DetectorSettings(volume_windows=(), default=SymbolSettings(market_alpha=5e-3, market_min_ratio=1.5))
    for seed in (7, 8):
        assert not of_kind(replay({"ACME": surge}, ONSET + 60, settings, seed), NEGATIVE_SPIKE)
        during = of_kind(replay({"ACME": surge}, ONSET + 60, settings, seed, market_wide=True), NEGATIVE_SPIKE)
        assert during and all(a.fired_at > at(ONSET) for a in during)
        assert min(a.fired_at for a in during) <= at(ONSET + 20)
        assert 1e-4 < min(a.p_value for a in during) <= 5e-3
        # only windows whose share reached market_min_ratio x the baseline get market_alpha
        strict = replace(settings, default=replace(settings.default, market_min_ratio=2.0))
        loose = [a for a in of_kind(replay({"ACME": surge}, ONSET + 60, strict, seed, market_wide=True), NEGATIVE_SPIKE)
                 if a.p_value > settings.default.confirmed_alpha]
        assert len(loose) < len(during) and all(a.window_share >= 2 * a.baseline_share for a in loose)
    # a quiet ticker's chance clusters are not surges: a day of an open sell-off fires nothing
    assert not of_kind(replay({"ACME": steady(QUIET)}, ONSET + 60, settings, market_wide=True), NEGATIVE_SPIKE)


def test_volume_burst_with_an_unchanged_share_is_not_a_negative_spike() -> None:
    burst = Regime(rate=45.0, negative=0.2)  # 15x the posts, the same tone
    fired = replay({"ACME": event(burst, ONSET, 60)}, ONSET + 90)
    assert of_kind(fired, NEGATIVE_SPIKE) == []
    assert of_kind(fired, VOLUME_SPIKE), "a burst this size is a volume spike"


def test_positive_spike_is_not_a_negative_spike() -> None:
    cheer = Regime(rate=15.0, negative=0.1, positive=0.75)
    fired = replay({"ACME": event(cheer, ONSET, 45)}, ONSET + 90)
    assert of_kind(fired, NEGATIVE_SPIKE) == []


def test_thin_symbol_noise_does_not_fire() -> None:
    thin = Regime(rate=0.02, negative=0.3)
    rng = np.random.default_rng(3)
    clusters = set(rng.integers(HISTORY_DAYS * DAY, 4 * DAY, 12).tolist())

    def shape(i: int) -> Regime:
        # now and then one account posts a handful of negative posts within a minute or two
        if any(c <= i < c + 2 for c in clusters):
            return Regime(rate=2.5, negative=0.95, positive=0.02)
        return thin

    fired = replay({"THIN": shape}, 4 * DAY)
    assert of_kind(fired, NEGATIVE_SPIKE) == []


def test_busy_symbol_without_events_stays_quiet() -> None:
    fired = replay({"BUSY": steady(Regime(rate=8.0, negative=0.25))}, 4 * DAY)
    assert of_kind(fired, NEGATIVE_SPIKE) == []


def test_time_of_day_baseline_expects_a_gloomier_night() -> None:
    def shape(i: int) -> Regime:
        # 50% negative at 03:00, 10% at 15:00, every day
        hour = (i % DAY) / 60
        return Regime(rate=4.0, negative=0.3 + 0.2 * math.cos(2 * math.pi * (hour - 3) / 24))

    fired = replay({"NITE": shape}, 6 * DAY)
    assert of_kind(fired, NEGATIVE_SPIKE) == []
    # without the time of day (nor the recent level, which follows so slow a cycle too, nor
    # measured wander, which learns that the baseline misses it) the same nights look like spikes
    blind = DetectorSettings(time_of_day_prior_posts=1e12, recent_level_minutes=0, wander_prior_weight=0)
    assert len(of_kind(replay({"NITE": shape}, 4 * DAY, blind), NEGATIVE_SPIKE)) > 10


def test_a_share_that_steps_to_a_new_level_is_the_new_normal_within_hours() -> None:
    # a re-rating: from 20% to 36% negative at noon on the third day, for good
    step_at = HISTORY_DAYS * DAY + 12 * 60

    def shape(i: int) -> Regime:
        return Regime(rate=3.0, negative=0.2 if i < step_at else 0.36)

    def after_six_hours(settings: DetectorSettings) -> list[Alert]:
        fired = replay({"RERA": shape}, step_at + 2 * DAY, settings)
        return [a for a in of_kind(fired, NEGATIVE_SPIKE) if a.fired_at >= at(step_at + 6 * 60)]

    following = DetectorSettings()
    assert after_six_hours(following) == []
    # a baseline of the same clock time on previous days keeps calling the new level a spike
    # (measured wander off: it would learn the misses too, more slowly)
    assert len(after_six_hours(DetectorSettings(recent_level_minutes=0, wander_prior_weight=0))) >= 3
    # ... and a real spike on top of the new level is still found, against the new level
    spike = Regime(rate=20.0, negative=0.8, positive=0.1)
    onset = step_at + DAY

    def with_spike(i: int) -> Regime:
        return spike if onset <= i < onset + 20 else shape(i)

    fired = of_kind(replay({"RERA": with_spike}, onset + 30, following), NEGATIVE_SPIKE)
    first = min((a for a in fired if a.fired_at > at(onset)), key=lambda a: a.fired_at)
    assert first.fired_at <= at(onset + 3)
    assert first.baseline_share == pytest.approx(0.36, abs=0.06)


def test_per_symbol_override_can_mute_a_symbol() -> None:
    spike = Regime(rate=20.0, negative=0.7, positive=0.1)
    settings = DetectorSettings(overrides={"ACME": SymbolSettings(enabled=False)})
    fired = replay(
        {"ACME": event(spike, ONSET, 20), "OTHR": event(spike, ONSET, 20)},
        ONSET + 40,
        settings,
    )
    symbols = {a.symbol for a in of_kind(fired, NEGATIVE_SPIKE)}
    assert symbols == {"OTHR"}
    assert settings.for_symbol("ACME").enabled is False
    assert settings.for_symbol("ANY") is settings.default


def test_overrides_cannot_change_behind_the_settings_back() -> None:
    overrides = {"ACME": SymbolSettings(alpha=1e-3)}
    settings = DetectorSettings(overrides=overrides)
    overrides["ACME"] = SymbolSettings(alpha=0.5)
    assert settings.for_symbol("ACME").alpha == 1e-3


def test_minutes_must_move_forward_and_gaps_are_empty_minutes() -> None:
    settings = DetectorSettings()
    state = DetectorState(settings)
    row = MinuteCounts("ACME", at(0), 3, 1, 1, 1)
    step(state, at(0), [row], settings)
    with pytest.raises(ValueError):
        step(state, at(0), [], settings)
    step(state, at(10), [MinuteCounts("ACME", at(10), 2, 0, 1, 1)], settings)
    sums = state.window_sums((10, 11))
    assert sums.total[0].tolist() == [2, 5]  # minutes 1..9 were recorded as empty
    with pytest.raises(ValueError):
        step(state, at(11), [MinuteCounts("ACME", at(12), 1, 1, 0, 0)], settings)


def test_settings_that_change_the_state_shape_are_refused() -> None:
    state = DetectorState(DetectorSettings())
    with pytest.raises(ValueError):
        step(state, at(0), [], DetectorSettings(guard_minutes=90))


def test_minute_counts_validate() -> None:
    with pytest.raises(ValueError):
        MinuteCounts("A", datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC), 1, 1, 0, 0)
    with pytest.raises(ValueError):
        MinuteCounts("A", datetime(2024, 1, 1), 1, 1, 0, 0)
    with pytest.raises(ValueError):
        MinuteCounts("A", at(0), 1, 1, 1, 0)


def test_measured_wander_trusts_a_share_that_moves_within_hours_less() -> None:
    # two equally busy symbols at 25% negative; one's share wanders (AR(1) in log-odds, sd 0.35,
    # an hour's memory) in a way no time-of-day baseline can foresee
    settings = DetectorSettings(wander_prior_weight=50_000)
    rng = np.random.default_rng(3)
    state = DetectorState(settings)
    memory, wander = math.exp(-1 / 60), 0.0
    for i in range(2 * DAY):
        wander = memory * wander + math.sqrt(1 - memory**2) * 0.35 * rng.standard_normal()
        share = 1 / (1 + math.exp(-(math.log(0.25 / 0.75) + wander)))
        rows = [counts(rng, "CALM", i, Regime(8.0, 0.25)), counts(rng, "MOODY", i, Regime(8.0, share))]
        observe(state, at(i), rows, settings)
    concentration = dict(zip(state.symbols, baseline(state, settings, (10,)).concentration))
    # the spread beyond the binomial is about 0.35^2 * 0.75 * 0.25 / (0.25 * 0.75): a concentration near 40
    assert 20 < concentration["MOODY"] < 80
    assert concentration["CALM"] > 200
    # off: both get the cap
    off = DetectorSettings(wander_prior_weight=0)
    assert set(baseline(state, off, (10,)).concentration) == {off.max_concentration}


def test_measured_wander_leaves_spike_minutes_out() -> None:
    # a steady symbol with one detected 20-minute spike a day: the spike is not "wander"
    settings = DetectorSettings(wander_prior_weight=50_000)
    spike = Regime(rate=30.0, negative=0.8, positive=0.1)
    onset = HISTORY_DAYS * DAY + 10 * 60

    def shape(i: int) -> Regime:
        return spike if onset <= i < onset + 20 else Regime(8.0, 0.25)

    rng = np.random.default_rng(5)
    state = DetectorState(settings)
    for i in range(onset + 6 * 60):
        rows = [counts(rng, "ACME", i, shape(i))]
        if i < HISTORY_DAYS * DAY:
            observe(state, at(i), rows, settings)
        else:
            step(state, at(i), rows, settings)
    assert baseline(state, settings, (10,)).concentration[0] > 200
