"""The detector's thresholds and shape: frozen settings, per symbol where a watchlist tunes them.

How each number is used is described in alerting/detector.py; the defaults were chosen on the
tuning families of bench/alert_scenarios.py (bench/alert_bench.py reports the held-out ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from moodwire.config import Settings

MINUTES_PER_DAY: Final = 1440
Evidence = Literal["labels", "probabilities"]


@dataclass(frozen=True)
class SymbolSettings:
    """Thresholds that a watchlist may tune per symbol."""

    enabled: bool = True
    alpha: float = 3e-6
    # while the window also has `confirm_volume_ratio` x its usual volume, something is
    # happening and a spike is far more likely a priori: a looser alpha costs few false alerts
    confirmed_alpha: float = 5e-5
    confirm_volume_ratio: float = 3.0
    confirm_min_total: int = 10
    # while a market-wide sell-off is open (negative spikes on `alert_market_min_symbols`
    # tickers within `alert_market_window_minutes`, the event the grouped message announces),
    # another ticker's surge whose share has reached `market_min_ratio` x its baseline (the
    # size of a spike that must be found) is far more likely the same news than chance: its
    # confirmed alpha is at least `market_alpha` then (0: as at any other time). Surges only:
    # over a quiet ticker's every window it would fire on chance within hours. 5e-3 and 2x:
    # held-out trading-hours recall 0.993 -> 0.997, median delay 3.3 -> 2.7 min, false alerts
    # 9 -> 10; outside tokens seeds 5-8 (see the README); at 1.6x the tuning families'
    # volume-burst decoys fired during chance market events (false alerts 13 -> 15)
    market_alpha: float = 5e-3
    market_min_ratio: float = 2.0
    critical_alpha: float = 1e-10
    critical_ratio: float = 2.5
    # a spike that must be found has >= 12 negatives in its first 10 minutes (issue 17's rule);
    # below 10, a window is more often one conversation's echo than news: 6 -> 10 cut false
    # alerts on the tuning families (0.645 -> 0.599 per 100 ticker-days) at the same recall, and
    # on the outside streams chosen for diagnosis (bench.outside_bench) 3.2 -> 1.7
    min_negatives: int = 10
    min_excess: float = 4.0
    min_ratio: float = 1.6
    min_share_increase: float = 0.10
    volume_enabled: bool = True
    volume_alpha: float = 1e-9
    volume_min_ratio: float = 4.0
    volume_min_total: int = 40


@dataclass(frozen=True)
class DetectorSettings:
    windows: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
    volume_windows: tuple[int, ...] = (5, 10, 15, 30)
    guard_minutes: int = 60
    baseline_days: int = 7
    bin_minutes: int = 10
    # pseudo-posts: how strongly a thin symbol's share is pulled to the cross-symbol share,
    # and a short time-of-day history to the symbol's own day share
    prior_posts: float = 30.0
    time_of_day_prior_posts: float = 200.0
    max_concentration: float = 300.0
    # Measured wander: the concentration also follows how far the baseline's own predictions
    # of the symbol's bins missed over about a day (a share that wanders within hours is
    # trusted less), pulled towards `max_concentration` by this much evidence, in sum (n - 1)^2
    # over bins of n stories (a day of 10-story bins is about 12,000); 0: off. Off as shipped:
    # on the tuning families it traded recall for false alerts no better than a lower cap
    # (50,000: recall 0.982 -> 0.969, false alerts 0.645 -> 0.415 per 100 ticker-days).
    wander_prior_weight: float = 0.0
    # the usual volume needs this many minutes at this clock time on previous days
    min_volume_history_minutes: int = 30
    # the last hours before the guard set the level of the time-of-day baseline (0: off); 2 hours
    # chosen on the tuning families with the share wandering within hours (alert_bench --tuning)
    recent_level_minutes: int = 120
    recent_level_prior: float = 30.0  # expected negatives of pseudo-evidence for "as before"
    # how far the level may scale the share down and up
    min_recent_level: float = 0.5
    max_recent_level: float = 2.0
    min_baseline_share: float = 0.02
    default_share: float = 0.25
    # What the share test counts: stories labelled negative, or the sum of the model's
    # P(negative) over stories ("probabilities"; the gates stay on labels either way).
    evidence: Evidence = "labels"
    # Probability evidence: how much more a story's P(negative) may weigh than its label
    # (the ratio of a label's variance to the observed variance of P(negative)), at most
    max_information_gain: float = 4.0
    # ... and how many stories of label-like variance that ratio starts from (a prior)
    dispersion_prior_stories: float = 200.0
    # Minutes older than the re-read window whose counts still change (late posts) are added
    # to the baseline for this long; later ones are lost
    late_horizon_minutes: int = 360
    default: SymbolSettings = SymbolSettings()
    overrides: Mapping[str, SymbolSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # frozen means frozen: a caller's dict must not change thresholds behind our back
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        if not self.windows or min(self.windows) < 1:
            raise ValueError("windows must be positive minute counts")
        if self.volume_windows and min(self.volume_windows) < 1:
            raise ValueError("volume_windows must be positive minute counts")
        if MINUTES_PER_DAY % self.bin_minutes:
            raise ValueError("bin_minutes must divide a day")
        if self.guard_minutes < max(self.longest_window, self.bin_minutes):
            raise ValueError("guard_minutes must cover the longest window and one bin")
        if self.guard_minutes + 2 * self.bin_minutes > MINUTES_PER_DAY:
            raise ValueError("guard_minutes is too long for a time-of-day baseline")
        if self.baseline_days < 1:
            raise ValueError("baseline_days must be >= 1")
        if self.max_information_gain < 1:
            raise ValueError("max_information_gain must be >= 1 (1: probabilities weigh as labels)")
        if self.recent_level_minutes < 0 or self.recent_level_prior <= 0:
            raise ValueError("recent_level_minutes must be >= 0 and recent_level_prior > 0")
        if not 0 < self.min_recent_level <= 1 <= self.max_recent_level:
            raise ValueError("the recent level's range must hold 1: 0 < min_recent_level <= 1 <= max_recent_level")
        if self.wander_prior_weight < 0:
            raise ValueError("wander_prior_weight must be >= 0 (0: the concentration ignores measured wander)")
        if self.late_horizon_minutes < self.guard_minutes:
            raise ValueError("late_horizon_minutes must cover the guard")

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectorSettings:
        return cls(baseline_days=settings.alert_baseline_days, evidence=settings.alert_evidence)

    @property
    def longest_window(self) -> int:
        return max((*self.windows, *self.volume_windows))

    @property
    def state_shape(self) -> tuple[int, ...]:
        """What a DetectorState's arrays depend on: settings that differ here need a new state."""
        return (self.guard_minutes, self.longest_window, self.bin_minutes, self.baseline_days, self.late_horizon_minutes)

    def for_symbol(self, symbol: str) -> SymbolSettings:
        return self.overrides.get(symbol, self.default)
