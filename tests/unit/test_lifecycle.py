"""Episodes: one message per episode, resolution, cooldown, grouping, restarts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alerting.detector import NEGATIVE_SPIKE, VOLUME_SPIKE, Alert, ExamplePost
from alerting.detector_settings import SymbolSettings
from alerting.lifecycle import (
    AlertState,
    DeliveryOutcome,
    InMemoryAlertStateStore,
    LifecycleSettings,
    Notification,
    advance,
    held_open,
    mark_delivered,
    market_wide,
    next_due,
    pending,
    record,
    release_held,
    still_elevated,
)

T0 = datetime(2024, 3, 5, 14, 0, tzinfo=UTC)
SETTINGS = LifecycleSettings(resolve_after_minutes=15, cooldown_minutes=60)


def minute(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def alert(symbol: str, i: int, kind: str = NEGATIVE_SPIKE, severity: str = "warning") -> Alert:
    return Alert(
        symbol=symbol,
        kind=kind,  # type: ignore[arg-type]
        fired_at=minute(i),
        severity=severity,  # type: ignore[arg-type]
        statistic=7.5,
        p_value=10**-7.5,
        window_minutes=5,
        window_posts=40,
        window_negative=24,
        window_share=0.6,
        baseline_share=0.2,
        expected_total=12.0,
        episode_id=f"{symbol}:{kind}:{minute(i - 5):%Y%m%dT%H%MZ}",
        examples=(ExamplePost("p1", "awful news", -0.97, minute(i - 2)),),
    )


def run(
    state: AlertState, alerts_by_minute: dict[int, list[Alert]], last: int
) -> list[Notification]:
    notes: list[Notification] = []
    for i in range(last + 1):
        notes += advance(state, minute(i), alerts_by_minute.get(i, []), SETTINGS)
    return notes


def test_an_episode_is_notified_once_while_it_lasts() -> None:
    state = AlertState()
    notes = run(state, {i: [alert("ACME", i)] for i in range(3, 40)}, 60)
    assert len(notes) == 1
    (note,) = notes
    assert note.status == "firing" and note.created_at == minute(3)
    assert [a.symbol for a in note.alerts] == ["ACME"]
    episode = state.episodes["ACME|negative-spike"]
    assert episode.alerts_seen == 37
    assert episode.status == "resolved" and episode.resolved_at == minute(39 + 15)


def test_a_pause_shorter_than_the_resolution_time_is_the_same_episode() -> None:
    state = AlertState()
    firing = {i: [alert("ACME", i)] for i in [*range(3, 10), *range(20, 30)]}
    assert len(run(state, firing, 50)) == 1


def test_a_return_within_the_cooldown_reopens_silently_and_after_it_is_new() -> None:
    state = AlertState()
    firing = {i: [alert("ACME", i)] for i in [*range(5), *range(40, 45), *range(200, 205)]}
    notes = run(state, firing, 230)
    # 0..4 opens; resolved at 19; 40 is within 60 min of that: same episode;
    # resolved at 59; 200 is past the cooldown: a new episode, a new message
    assert [n.created_at for n in notes] == [minute(0), minute(200)]
    assert notes[0].alerts[0].episode_id != notes[1].alerts[0].episode_id


def test_symbols_firing_in_the_same_minute_share_one_message() -> None:
    state = AlertState()
    notes = run(
        state,
        {
            5: [
                alert("ACME", 5),
                alert("XYZ", 5, severity="critical"),
                alert("ACME", 5, VOLUME_SPIKE),
            ],
            6: [alert("ACME", 6), alert("QQQ", 6)],
        },
        10,
    )
    assert [len(n.alerts) for n in notes] == [3, 1]
    assert {(a.symbol, a.kind) for a in notes[0].alerts} == {
        ("ACME", NEGATIVE_SPIKE),
        ("XYZ", NEGATIVE_SPIKE),
        ("ACME", VOLUME_SPIKE),
    }
    assert notes[1].alerts[0].symbol == "QQQ"


def test_severity_escalation_is_recorded_not_resent() -> None:
    state = AlertState()
    notes = run(state, {1: [alert("ACME", 1)], 2: [alert("ACME", 2, severity="critical")]}, 5)
    assert len(notes) == 1
    assert state.episodes["ACME|negative-spike"].peak_severity == "critical"


def test_resolution_messages_when_asked_for() -> None:
    state = AlertState()
    settings = LifecycleSettings(resolve_after_minutes=15, notify_resolved=True)
    notes = []
    for i in range(30):
        notes += advance(state, minute(i), [alert("ACME", i)] if i < 3 else [], settings)
    assert [n.status for n in notes] == ["firing", "resolved"]
    assert notes[1].created_at == minute(17)
    assert notes[1].alerts[0].episode_id == notes[0].alerts[0].episode_id


def test_skipped_minutes_resolve_at_the_right_moment() -> None:
    state = AlertState()
    advance(state, minute(0), [alert("ACME", 0)], SETTINGS)
    # the job was paused for two hours: the episode ended 15 minutes after it was last seen,
    # and the cooldown has passed, so this is a new episode
    notes = advance(state, minute(120), [alert("ACME", 120)], SETTINGS)
    assert len(notes) == 1


def test_a_restart_neither_resends_nor_forgets() -> None:
    store = InMemoryAlertStateStore()
    state = store.load()
    assert state == AlertState()
    advance(state, minute(1), [alert("ACME", 1)], SETTINGS)
    store.save(state)

    # the service restarts and re-runs the same minute, then carries on
    state = store.load()
    assert advance(state, minute(1), [alert("ACME", 1)], SETTINGS) == []
    assert advance(state, minute(0), [alert("ACME", 0)], SETTINGS) == []
    assert advance(state, minute(2), [alert("ACME", 2)], SETTINGS) == []
    store.save(state)
    assert [n.created_at for n in pending(store.load(), "webhook")] == [minute(1)]


def test_the_outbox_keeps_a_notification_until_every_channel_delivered() -> None:
    state = AlertState()
    (note,) = advance(state, minute(1), [alert("ACME", 1)], SETTINGS)
    failed = DeliveryOutcome(
        "email", note.notification_id, False, 1, None, "boom", 0.1, "smtp://h:25"
    )
    record(state, failed, SETTINGS)
    record(
        state,
        DeliveryOutcome("webhook", note.notification_id, True, 1, 200, None, 0.1, "https://h"),
        SETTINGS,
    )
    assert pending(state, "webhook") == []
    assert pending(state, "email") == [note]
    mark_delivered(state, note.notification_id, "email", SETTINGS)
    assert state.outbox == []


def test_undeliverable_notifications_expire() -> None:
    state = AlertState()
    advance(state, minute(1), [alert("ACME", 1)], SETTINGS)
    advance(state, minute(1 + SETTINGS.outbox_ttl_minutes), [], SETTINGS)
    assert state.outbox == [] and state.expired == 1


def test_state_survives_json_round_trip() -> None:
    state = AlertState()
    run(state, {3: [alert("ACME", 3), alert("XYZ", 3, VOLUME_SPIKE)], 4: [alert("ACME", 4)]}, 5)
    text = state.to_json()
    again = AlertState.from_json(text)
    assert again == state
    assert again.to_json() == text


# ---------------------------------------------------------------------------------------------
# holding and market-wide grouping

GROUPING = LifecycleSettings(group_wait_s=30, market_min_symbols=4, market_window_minutes=15, market_update_minutes=2)


def at_s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_opened_episode_waits_group_wait_for_others_then_goes_out_with_them() -> None:
    state = AlertState()
    assert advance(state, at_s(10), [alert("ACME", 1)], GROUPING, commit=False) == []
    assert next_due(state, GROUPING) == at_s(40)
    assert advance(state, at_s(25), [alert("XYZ", 1)], GROUPING, commit=False) == []
    (note,) = advance(state, at_s(40), [], GROUPING, commit=False)
    assert [a.symbol for a in note.alerts] == ["ACME", "XYZ"] and note.created_at == at_s(40)
    assert note.group is None and state.held == [] and next_due(state, GROUPING) is None
    # later alerts of the same episodes are absorbed, never sent again
    assert advance(state, at_s(90), [alert("ACME", 2), alert("XYZ", 2)], GROUPING, commit=False) == []


def test_many_tickers_at_once_are_one_market_wide_message_and_joiners_are_batched() -> None:
    state = AlertState()
    notes = advance(state, at_s(0), [alert("AAPL", 1)], GROUPING, commit=False)
    notes += advance(state, at_s(40), [alert("MSFT", 1)], GROUPING, commit=False)
    notes += advance(state, at_s(80), [alert("NVDA", 1)], GROUPING, commit=False)
    # AAPL waited 30 s and went out with MSFT (held since 40 s); NVDA is held
    assert [([a.symbol for a in n.alerts], n.group) for n in notes] == [(["AAPL", "MSFT"], None)]
    assert not market_wide(state, at_s(80), GROUPING)
    grouped = advance(state, at_s(85), [alert("JPM", 1)], GROUPING, commit=False)
    (first,) = grouped
    assert first.group is not None and first.group.symbols == ("AAPL", "JPM", "MSFT", "NVDA")
    assert {a.symbol for a in first.alerts} == {"JPM", "NVDA"}  # the two not announced yet
    # from here the detector tests other tickers' surges at market_alpha
    assert market_wide(state, at_s(85), GROUPING)
    # tickers joining within the next two minutes wait for one update together
    assert advance(state, at_s(100), [alert("XOM", 1)], GROUPING, commit=False) == []
    assert advance(state, at_s(150), [alert("CVX", 1)], GROUPING, commit=False) == []
    (update,) = advance(state, at_s(205), [], GROUPING, commit=False)
    assert update.group is not None and update.group.group_id == first.group.group_id
    assert {a.symbol for a in update.alerts} == {"CVX", "XOM"}
    assert set(update.group.symbols) == {"AAPL", "CVX", "JPM", "MSFT", "NVDA", "XOM"}
    # a volume spike during the event is not part of it
    (volume,) = advance(state, at_s(240), [alert("KO", 1, VOLUME_SPIKE)], GROUPING, commit=False) + advance(
        state, at_s(270), [], GROUPING, commit=False
    )
    assert volume.group is None
    # each later update waits twice as long as the one before: 4 minutes after the first
    assert advance(state, at_s(280), [alert("BAC", 1)], GROUPING, commit=False) == []
    assert next_due(state, GROUPING) == at_s(205 + 4 * 60)
    assert advance(state, at_s(205 + 4 * 60 - 1), [], GROUPING, commit=False) == []
    (second,) = advance(state, at_s(205 + 4 * 60), [], GROUPING, commit=False)
    assert [a.symbol for a in second.alerts] == ["BAC"] and second.group is not None
    assert state.market is not None and state.market.updates == 2
    # ... up to market_update_max_minutes: a joiner's row in `alerts` waits for its message
    later = replace(state.market, updates=10)
    assert later.next_update(GROUPING) == later.last_notified + timedelta(minutes=GROUPING.market_update_max_minutes)
    # the event ends 15 minutes after its last ticker joined: a lone spike then is its own message
    assert market_wide(state, at_s(280 + 15 * 60), GROUPING) and not market_wide(state, at_s(280 + 15 * 60 + 1), GROUPING)
    advance(state, at_s(280 + 15 * 60 + 1), [], GROUPING, commit=False)
    assert state.market is None
    lone = advance(state, at_s(2200), [alert("AMD", 1)], GROUPING, commit=False) + advance(state, at_s(2230), [], GROUPING, commit=False)
    assert [(n.group, [a.symbol for a in n.alerts]) for n in lone] == [(None, ["AMD"])]
    # all of it survives a restart
    assert AlertState.from_json(state.to_json()) == state


def test_a_last_run_releases_what_is_held() -> None:
    state = AlertState()
    advance(state, at_s(0), [alert("ACME", 1)], GROUPING, commit=False)
    (note,) = release_held(state, at_s(1), GROUPING)
    assert [a.symbol for a in note.alerts] == ["ACME"] and pending(state, "webhook") == [note]


def test_a_complete_minute_after_an_evaluation_of_the_minutes_so_far_is_not_applied_twice() -> None:
    state = AlertState()
    # the minutes so far at 14:05:30 open the episode; the complete minute 14:05 (ending 14:06)
    # and an earlier one ending 14:05:00 still count as new complete minutes, silently
    (note,) = advance(state, minute(5) + timedelta(seconds=30), [alert("ACME", 5)], SETTINGS, commit=False)
    assert state.last_minute is None  # the minutes so far are never a complete minute
    assert advance(state, minute(5), [alert("ACME", 5)], SETTINGS) == []
    # time never runs back: the episode was seen at 14:05:30 already
    assert state.clock == minute(5) + timedelta(seconds=30)
    assert state.episodes["ACME|negative-spike"].last_seen == minute(5) + timedelta(seconds=30)
    assert state.last_minute == minute(5)
    assert advance(state, minute(6), [alert("ACME", 6)], SETTINGS) == []
    assert state.last_minute == minute(6) and state.clock == minute(6)
    assert state.episodes["ACME|negative-spike"].last_seen == minute(6)
    assert note.created_at == minute(5) + timedelta(seconds=30)


def _hold_run(state: AlertState, shares: dict[int, tuple[int, int]], alerts_at: list[int], last: int) -> list[Notification]:
    """Alerts at `alerts_at`; after every minute, the ticker's last-30-minute (stories,
    negatives) from `shares` (default: back to the opening baseline) decide the hold."""
    gates = SymbolSettings()  # min_ratio 1.6, min_share_increase 0.10

    notes: list[Notification] = []
    for i in range(last + 1):
        stories, negative = shares.get(i, (100, 20))
        elevated = [
            f"{e.symbol}|{e.kind}" for e in held_open(state) if still_elevated(e, minute(i), stories, negative, gates, SETTINGS)
        ]
        fired = [alert("ACME", i)] if i in alerts_at else []
        notes += advance(state, minute(i), fired, SETTINGS, elevated=elevated)
    return notes


def test_an_episode_is_held_open_while_its_share_stays_elevated() -> None:
    # a sell-off: alerts for 10 minutes, the share stays at twice the opening baseline (0.2)
    # for 5 hours, the detector's baseline catches up and it fires again 4 hours in: one episode
    state = AlertState()
    elevated = {i: (100, 40) for i in range(300)}
    notes = _hold_run(state, elevated, [*range(5, 15), 240, 241], 340)
    assert len([n for n in notes if n.status == "firing"]) == 1
    episode = state.episodes["ACME|negative-spike"]
    assert episode.alerts_seen == 12
    assert episode.status == "resolved" and episode.resolved_at == minute(299 + 15)


def test_an_episode_resolves_once_the_share_is_back_near_its_opening_baseline() -> None:
    state = AlertState()
    # 0.3 against an opening baseline of 0.2: below the detector's 1.6x, so not held
    notes = _hold_run(state, {i: (100, 30) for i in range(300)}, [*range(5, 15), 240], 300)
    assert len([n for n in notes if n.status == "firing"]) == 2
    first = [n for n in notes if n.status == "firing"][0]
    assert first.created_at == minute(5)


def test_a_hold_ends_hold_max_minutes_after_the_last_alert_and_needs_negatives() -> None:
    state = AlertState()
    notes = _hold_run(state, {i: (100, 40) for i in range(2000)}, [5], 5 + SETTINGS.hold_max_minutes + 40)
    episode = state.episodes["ACME|negative-spike"]
    assert len(notes) == 1
    assert episode.status == "resolved"
    assert episode.resolved_at == minute(5 + SETTINGS.hold_max_minutes + 15)
    # a thin ticker's 2 of 3 stories is no evidence of a lasting spike
    thin = AlertState()
    _hold_run(thin, {i: (3, 2) for i in range(100)}, [5], 40)
    assert thin.episodes["ACME|negative-spike"].resolved_at == minute(5 + 15)


def test_a_held_episode_survives_a_restart() -> None:
    state = AlertState()
    _hold_run(state, {i: (100, 40) for i in range(60)}, [5], 40)
    restored = AlertState.from_json(state.to_json())
    assert restored.episodes["ACME|negative-spike"].last_elevated == minute(40)
    assert restored.to_json() == state.to_json()
