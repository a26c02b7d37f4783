"""The scenario generator's re-ratings: steps in a ticker's share that stay (bench/alert_scenarios.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.alert_scenarios import FAMILIES, MINUTES_PER_DAY, _logit, _shares


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
