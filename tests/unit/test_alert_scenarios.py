"""The scenario generator (bench/alert_scenarios.py): re-ratings, steps in a ticker's share that
stay; and a share that wanders within hours."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.alert_scenarios import FAMILIES, HELD_OUT_FAMILIES, MINUTES_PER_DAY, TUNING_FAMILIES, _logit, _shares


def jumps(family_name: str, shifts_per_day: float, seed: int = 3) -> int:
    """Minute-to-minute moves of the expected negative share's logit larger than 0.4 (midnight,
    where the day-to-day drift steps, left out)."""
    family = FAMILIES[family_name]
    family = replace(family, days=3, mood=replace(family.mood, shifts_per_day=shifts_per_day, shift_sd=1.0))
    negative, positive = _shares(np.random.default_rng(seed), family, family.days * MINUTES_PER_DAY)
    assert ((negative > 0) & (negative < 1) & (positive >= 0) & (negative + positive <= 0.95 + 1e-9)).all()
    moves = np.abs(np.diff(_logit(negative)))
    moves[np.arange(1, family.days) * MINUTES_PER_DAY - 1] = 0.0
    return int((moves > 0.4).sum())


def test_re_ratings_step_the_share_and_other_families_have_none() -> None:
    assert jumps("newsroom", 0.0) == 0
    assert jumps("newsroom", 4.0) >= 4  # about 12 steps of sd 1.0 in three days
    assert FAMILIES["regimes"].mood.shifts_per_day > 0
    assert all(FAMILIES[name].mood.shifts_per_day == 0 for name in ("newsroom", "ramps", "trading-hours", "social", "drifting"))


def hourly_moves(tau_minutes: float, seed: int = 5) -> float:
    """Mean absolute change of the negative share's logit over an hour, on the wander family with
    its time-of-day cycle and day-to-day drift turned off."""
    family = FAMILIES["wander"]
    mood = replace(family.mood, swing=0.0, daily_drift_sd=0.0, intraday_tau_minutes=tau_minutes)
    family = replace(family, days=4, mood=mood)
    negative, _ = _shares(np.random.default_rng(seed), family, family.days * MINUTES_PER_DAY)
    logit = _logit(negative)
    return float(np.abs(logit[60:] - logit[:-60]).mean())


def test_the_wander_family_moves_within_hours_and_the_others_keep_their_streams() -> None:
    assert FAMILIES["wander"].mood.intraday_tau_minutes == 90.0
    # the same drift sd with a shorter memory moves further in an hour
    assert hourly_moves(90.0) > 1.4 * hourly_moves(240.0)
    assert all(FAMILIES[name].mood.intraday_tau_minutes == 240.0 for name in FAMILIES if name != "wander")
    assert not set(TUNING_FAMILIES) & set(HELD_OUT_FAMILIES)
    assert "wander" in TUNING_FAMILIES and "regimes" in HELD_OUT_FAMILIES
