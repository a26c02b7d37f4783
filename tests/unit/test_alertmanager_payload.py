"""What the Alertmanager notifier posts (the real Alertmanager is in
tests/integration/test_alertmanager.py): labels, evidence, and the times that make Alertmanager
hold an alert for the whole episode and end it on the resolution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerting import alertmanager
from alerting.detector import Alert, ExamplePost
from alerting.lifecycle import Notification

T0 = datetime(2026, 11, 2, 18, 20, tzinfo=UTC)


def alert(symbol: str = "BA", kind: str = "negative-spike", severity: str = "critical") -> Alert:
    return Alert(
        symbol=symbol,
        kind=kind,  # type: ignore[arg-type]
        fired_at=T0,
        severity=severity,  # type: ignore[arg-type]
        statistic=7.25,
        p_value=5.6e-8,
        window_minutes=10,
        window_posts=40,
        window_negative=29,
        window_share=29 / 40,
        baseline_share=0.2,
        expected_total=12.0,
        episode_id="BA:negative-spike:20261102T1810Z",
        examples=tuple(ExamplePost(f"rss:{i}", f"Boeing halts deliveries {i}", -0.9, T0) for i in range(5)),
    )


def settings(**overrides: object) -> alertmanager.AlertmanagerSettings:
    return alertmanager.AlertmanagerSettings(url="http://alertmanager:9093", **overrides)  # type: ignore[arg-type]


def test_labels_are_what_routing_and_silences_match_on() -> None:
    (posted,) = alertmanager.payload(Notification("n1", "firing", T0, (alert(),)), settings())
    assert posted["labels"] == {
        "alertname": "MoodwireNegativeSpike", "symbol": "BA", "kind": "negative-spike", "severity": "critical",
    }
    assert alertmanager.alertname("volume-spike") == "MoodwireVolumeSpike"


def test_the_evidence_travels_as_annotations() -> None:
    (posted,) = alertmanager.payload(Notification("n1", "firing", T0, (alert(),)), settings())
    notes = posted["annotations"]
    assert notes["window_negative"] == "29" and notes["window_posts"] == "40"
    assert notes["baseline_share"] == "0.2000" and notes["statistic"] == "7.25"
    assert notes["window_start"] == "2026-11-02T18:10:00Z" and notes["window_end"] == "2026-11-02T18:20:00Z"
    assert notes["examples"].count("\n") == alertmanager.EXAMPLES - 1  # the most negative three
    assert all(isinstance(v, str) and v for v in notes.values())  # Alertmanager takes strings only
    assert "grafana_url" not in notes and "generatorURL" not in posted  # no Grafana configured


def test_a_firing_alert_lasts_past_alertmanagers_resolve_timeout() -> None:
    # moodwire sends an episode once: without an end far enough ahead, Alertmanager would call
    # it resolved after resolve_timeout (5 minutes by default) while the spike goes on.
    (posted,) = alertmanager.payload(Notification("n1", "firing", T0, (alert(),)), settings())
    assert posted["startsAt"] == "2026-11-02T18:20:00Z"
    assert posted["endsAt"] == "2026-11-03T18:20:00Z"


def test_a_resolution_ends_the_same_alert_at_the_minute_it_resolved() -> None:
    resolved_at = T0 + timedelta(minutes=15)
    (firing,) = alertmanager.payload(Notification("n1", "firing", T0, (alert(),)), settings())
    (resolved,) = alertmanager.payload(Notification("n2", "resolved", resolved_at, (alert(),)), settings())
    assert resolved["labels"] == firing["labels"]  # the same alert to Alertmanager
    assert resolved["startsAt"] == firing["startsAt"]
    assert resolved["endsAt"] == "2026-11-02T18:35:00Z"


def test_a_grafana_link_points_at_the_symbol_around_the_window() -> None:
    (posted,) = alertmanager.payload(
        Notification("n1", "firing", T0, (alert(),)), settings(grafana_url="https://grafana.example/")
    )
    link = posted["annotations"]["grafana_url"]
    assert link.startswith("https://grafana.example/d/moodwire-market-sentiment/?var-symbol=BA&")
    assert posted["generatorURL"] == link


def test_settings_refuse_what_is_not_http() -> None:
    with pytest.raises(ValueError):
        alertmanager.AlertmanagerSettings(url="alertmanager:9093")
