"""bench.outside_bench scores the outside streams as bench.alert_bench scores its own."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bench.alert_bench import Fired, score
from bench.outside_bench import main, scored_events
from bench.outside_streams import OutsideEvent, OutsideStream

START = datetime(2024, 1, 8, tzinfo=UTC)


def _stream(events: list[OutsideEvent]) -> OutsideStream:
    return OutsideStream("t", 1, START, [], events, ["AAA", "BBB"], [], 0, 2.0)


def _alert(symbol: str, minute: float) -> Fired:
    return Fired(symbol, minute, minute, f"n{minute}", grouped=False)


def test_an_alert_on_an_unplanned_flurry_counts_neither_way() -> None:
    stream = scored_events(_stream([
        OutsideEvent("AAA", "organic-flurry", onset=100, minutes=20, qualifies=False),
        OutsideEvent("BBB", "negative-spike", onset=300, minutes=30, qualifies=True),
        OutsideEvent("BBB", "volume-burst", onset=600, minutes=30, qualifies=False),
    ]))
    result = score(stream, [_alert("AAA", 105.0), _alert("BBB", 304.0), _alert("BBB", 610.0)])
    assert result.counts["false_alerts"] == 1  # the volume burst's, not the flurry's
    assert dict(result.false_by_cause) == {"volume-burst": 1}
    assert result.counts["detected"] == 1 and result.counts["qualifying"] == 1
    assert result.counts["sub_target_detected"] == 1  # the flurry, found but not required
    assert result.delays == [4.0]


def test_a_short_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "outside.json"
    assert main(["--families", "tokens", "--seeds", "8", "--days", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    shipped = report["pooled"]["variants"]["shipped"]
    assert shipped["qualifying_spikes"] > 0
    assert 0.0 <= shipped["recall"] <= 1.0
    assert shipped["symbol_days"] == report["per_family"]["tokens"]["variants"]["shipped"]["symbol_days"] > 0
