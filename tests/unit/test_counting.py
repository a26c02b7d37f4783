"""moodwire.counting in Python: a story counts once per ticker, in the minute of its first copy
(a copy more than a day after the previous one counts again), and copies still add volume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerting.backtest import Arrival, ArrivalReplay
from moodwire.counting import STORY_LOOKBACK, StoryTally, TickerVote

T0 = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
NEGATIVE = (TickerVote("ACME", "negative", 0.9),)


def minute_of(at: datetime) -> int:
    return int(at.timestamp()) // 60


def by_minute(tally: StoryTally) -> dict[datetime, tuple[int, int, int]]:
    return {t.minute: (t.stories, t.negative, t.posts) for t in tally.totals() if t.symbol == "ACME"}


def test_a_story_counts_once_in_the_minute_of_its_first_copy_and_every_copy_is_volume() -> None:
    tally = StoryTally()
    for i, minutes in enumerate((0, 0, 3, 9)):  # a brigade pasting the same text for 9 minutes
        tally.add(f"t:{i + 1}", T0 + timedelta(minutes=minutes), NEGATIVE, story_id="t:1")
    tally.add("t:9", T0 + timedelta(minutes=3), NEGATIVE)  # another story
    assert by_minute(tally) == {
        T0: (1, 1, 2),
        T0 + timedelta(minutes=3): (1, 1, 2),
        T0 + timedelta(minutes=9): (0, 0, 1),
    }


def test_a_late_copy_published_earlier_moves_the_story_and_reports_the_minutes_it_changed() -> None:
    tally = StoryTally()
    tally.add("t:5", T0, NEGATIVE, story_id="t:1")
    tally.add("t:6", T0 + timedelta(minutes=2), NEGATIVE, story_id="t:1")
    tally.take_changed()
    tally.add("t:4", T0 - timedelta(minutes=1), NEGATIVE, story_id="t:1")
    assert tally.take_changed() == {minute_of(T0 - timedelta(minutes=1)), minute_of(T0)}
    assert by_minute(tally) == {
        T0 - timedelta(minutes=1): (1, 1, 1),
        T0: (0, 0, 1),
        T0 + timedelta(minutes=2): (0, 0, 1),
    }


def test_a_copy_more_than_a_day_after_the_previous_one_counts_again() -> None:
    tally = StoryTally()
    within = T0 + STORY_LOOKBACK
    beyond = within + STORY_LOOKBACK + timedelta(minutes=1)
    for i, at in enumerate((T0, within, beyond)):
        tally.add(f"t:{i + 1}", at, NEGATIVE, story_id="t:1")
    assert by_minute(tally) == {T0: (1, 1, 1), within: (0, 0, 1), beyond: (1, 1, 1)}


def test_a_story_counts_once_per_ticker_it_names() -> None:
    tally = StoryTally()
    votes = (TickerVote("ACME", "negative", 0.9), TickerVote("XYZ", "positive", 0.1))
    tally.add("t:1", T0, votes, story_id="t:1")
    tally.add("t:2", T0 + timedelta(minutes=1), votes[1:], story_id="t:1")
    totals = {(t.symbol, t.minute): t.stories for t in tally.totals()}
    assert totals == {("ACME", T0): 1, ("XYZ", T0): 1, ("XYZ", T0 + timedelta(minutes=1)): 0}


def test_the_replay_reads_a_minute_again_when_a_late_copy_takes_its_story() -> None:
    def arrival(i: int, at: datetime, arrived: datetime) -> Arrival:
        return Arrival(arrived.timestamp(), f"t:{i}", at, NEGATIVE, "t:1")

    replay = ArrivalReplay(
        [arrival(2, T0, T0 + timedelta(seconds=5)), arrival(1, T0 - timedelta(minutes=2), T0 + timedelta(minutes=1))]
    )
    replay.arrive_until((T0 + timedelta(seconds=10)).timestamp())
    first = replay.minute_counts(T0 - timedelta(minutes=2), T0)
    assert [(c.total, c.negative) for c in first[T0]] == [(1, 1)]
    replay.arrive_until((T0 + timedelta(minutes=1)).timestamp())
    again = replay.minute_counts(T0 - timedelta(minutes=2), T0)
    assert [(c.total, c.negative) for c in again[T0]] == [(0, 0)]
    assert [(c.total, c.negative) for c in again[T0 - timedelta(minutes=2)]] == [(1, 1)]
    bins = replay.bin_counts(T0 - timedelta(minutes=2), T0, 60)
    assert sum(b.total for b in bins) == 1
