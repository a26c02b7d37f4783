"""`moodwire backtest`: posts -> minute counts -> detector + lifecycle -> JSONL alerts."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from alerting import backtest
from alerting.alert import Alert
from alerting.commands import register
from bench.alert_scenarios import FAMILIES, generate

T0 = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)


def post(i: int, at: datetime, symbols: list[str], polarity: str, score: float = 0.0) -> str:
    return json.dumps(
        {
            "id": f"t:{i}",
            "published_at": at.isoformat().replace("+00:00", "Z"),
            "symbols": symbols,
            "polarity": polarity,
            "polarity_score": score,
            "emotion": "neutral",
            "text": f"post {i}",
        }
    )


def test_a_post_is_counted_once_per_id_and_once_per_symbol() -> None:
    lines = [
        post(1, T0, ["ACME"], "negative", -0.9),
        post(1, T0, ["ACME"], "negative", -0.9),  # the same post again (a replayed file)
        post(2, T0 + timedelta(seconds=30), ["ACME", "XYZ", "ACME"], "positive", 0.8),
        post(3, T0 + timedelta(seconds=61), ["ACME"], "neutral"),
    ]
    table = backtest.read_posts(lines)
    minute = int(T0.timestamp()) // 60
    counts = {(c.symbol, m): (c.total, c.negative, c.neutral, c.positive) for m, rows in backtest.minute_counts(table).items() for c in rows}
    assert counts[("ACME", minute)] == (2, 1, 0, 1)
    assert counts[("XYZ", minute)] == (1, 0, 0, 1)
    assert counts[("ACME", minute + 1)] == (1, 0, 1, 0)
    assert table.duplicates == 1 and table.read == 4


def test_counts_follow_the_one_definition_stance_per_ticker_stories_once_flags_and_status_out() -> None:
    def scored(i: int, targets: list[tuple[str, str]], **extra: object) -> str:
        record = json.loads(post(i, T0, [s for s, _ in targets], "neutral"))
        record["targets"] = [
            {"symbol": s, "polarity": p, "polarity_score": 0.0, "polarity_probs": {"negative": 0.9 if p == "negative" else 0.05}}
            for s, p in targets
        ]
        record.update(extra)
        return json.dumps(record)

    lines = [
        scored(1, [("CRM", "positive"), ("WDAY", "negative")]),  # one post, opposite stances
        scored(2, [("WDAY", "neutral")], story_id="t:1"),  # a second outlet's copy of story t:1
        scored(3, [("WDAY", "negative")], flags=["link_only"]),  # spam: stored, never counted
        scored(4, [("WDAY", "negative")], status="unsupported_language"),
    ]
    table = backtest.read_posts(lines)
    counts = {c.symbol: c for rows in backtest.minute_counts(table).values() for c in rows}
    assert (counts["CRM"].total, counts["CRM"].positive) == (1, 1)
    # story t:1 counts once for WDAY, with the stance of its smallest id (t:1: negative)
    assert (counts["WDAY"].total, counts["WDAY"].negative, counts["WDAY"].neutral) == (1, 1, 0)
    assert counts["WDAY"].expected_negative == pytest.approx(0.9)
    assert table.not_counted == 2


def test_bad_lines_are_counted_and_reported_not_fatal() -> None:
    lines = [
        "{not json",
        json.dumps({"id": "x", "published_at": "2024-03-04T12:00:00", "polarity": "negative"}),
        json.dumps({"id": "y", "published_at": "2024-03-04T12:00:00Z", "polarity": "meh"}),
        json.dumps({"id": "z", "published_at": "2024-03-04T12:00:00Z", "polarity": "neutral"}),
        "",
        post(5, T0, ["ACME"], "neutral"),
    ]
    table = backtest.read_posts(lines)
    assert table.invalid == 3 and table.without_symbols == 1 and table.read == 5
    assert len(table.problems) == 3 and table.problems[0].startswith("line 1:")


def spike_file(path: Path) -> None:
    """Two quiet days for ACME, then 20 minutes of mostly negative posts."""
    lines, i = [], 0
    for m in range(2 * 1440 + 14 * 60 + 40):
        at = T0 - timedelta(hours=12) + timedelta(minutes=m)
        in_spike = m >= 2 * 1440 + 14 * 60
        for j in range(20 if in_spike else 3):
            negative = (j % 10 < 7) if in_spike else (j == 0 and m % 2 == 0)
            polarity = "negative" if negative else ("positive" if j % 3 == 1 else "neutral")
            score = -0.5 - (j % 5) / 10 if negative else 0.4
            lines.append(post(i, at + timedelta(seconds=j), ["ACME"], polarity, score))
            i += 1
    path.write_text("\n".join(lines) + "\n")


def test_a_spike_comes_out_as_one_alert_line_with_its_evidence(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    spike_file(path)
    with path.open() as lines:
        result = backtest.run(lines, examples=2)
    negatives = [a for a in result.alerts if a.kind == "negative-spike"]
    assert len(negatives) == 1
    (record,) = [json.loads(line) for line in backtest.alert_lines(negatives)]
    onset = T0 - timedelta(hours=12) + timedelta(minutes=2 * 1440 + 14 * 60)
    fired = datetime.fromisoformat(record["fired_at"])
    assert record["fired_at"].endswith("Z")
    assert timedelta(0) < fired - onset <= timedelta(minutes=3)
    assert record["symbol"] == "ACME" and "negative" in record["kind"]
    assert record["severity"] in ("warning", "critical") and record["statistic"] > 5
    evidence = record["evidence"]
    assert evidence["window_negative"] <= evidence["window_posts"]
    assert evidence["baseline_share"] < evidence["window_share"]
    scores = [e["polarity_score"] for e in evidence["examples"]]
    assert len(scores) == 2 and scores == sorted(scores) and scores[0] == -0.9
    window_start = datetime.fromisoformat(evidence["window_start"])
    assert all(
        window_start <= datetime.fromisoformat(e["published_at"]) < fired
        for e in evidence["examples"]
    )


def test_cli_backtest_writes_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    spike_file(path)
    app = typer.Typer()
    register(app)

    @app.command()
    def version() -> None:  # a second command, so `backtest` stays a subcommand
        pass

    result = CliRunner().invoke(app, ["backtest", str(path), "--no-volume-spikes"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["kind"] for r in records] == ["negative-spike"]
    missing = CliRunner().invoke(app, ["backtest", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code != 0
    assert "backtest" in CliRunner().invoke(app, ["backtest", "--help"]).output


def test_a_scenario_stream_replays_to_its_spikes() -> None:
    """Scored posts from a scenario family (late posts, duplicates, copies of a story) come out
    as alerts on the spikes that must be found, and on few others."""
    social = FAMILIES["social"]
    family = replace(social, days=3, volume=replace(social.volume, busy=12, thin=3), decoys=replace(social.decoys, viral=0.0))
    stream = generate(family, 7)
    result = backtest.run(stream.jsonl(), examples=0)
    assert result.duplicates > 0 and result.late_stories >= 0
    start = family.start.timestamp()
    alerts = [(a.symbol, (a.fired_at.timestamp() - start) / 60) for a in result.alerts if a.kind == "negative-spike"]
    spikes = [e for e in stream.events if e.kind == "negative-spike" and e.qualifies]
    assert spikes
    found = [e for e in spikes if any(s == e.symbol and e.onset < m <= e.onset + e.minutes + 10 for s, m in alerts)]
    assert len(found) >= 0.8 * len(spikes)
    unexplained = [
        (s, m) for s, m in alerts
        if m > stream.evaluation_start
        and not any(e.symbol == s and e.onset < m <= e.onset + e.minutes + 40 for e in stream.events)
    ]
    assert len(unexplained) <= 1


def test_the_evidence_is_one_post_per_story_the_most_negative_first() -> None:
    lines = []
    for i in range(4):  # a brigade: four copies of one story, the most negative posts of all
        record = json.loads(post(i + 1, T0 + timedelta(minutes=i), ["ACME"], "negative", -0.95 + i / 100))
        record["story_id"] = "t:1"
        lines.append(json.dumps(record))
    lines += [
        post(10, T0 + timedelta(minutes=1), ["ACME"], "negative", -0.8),
        post(11, T0 + timedelta(minutes=2), ["ACME"], "negative", -0.7),
        post(12, T0 + timedelta(minutes=12), ["ACME"], "negative", -0.99),  # after fired_at
    ]
    alert = Alert(
        symbol="ACME", kind="negative-spike", fired_at=T0 + timedelta(minutes=10), severity="warning", statistic=5.0,
        p_value=1e-6, window_minutes=10, window_posts=6, window_negative=6, window_share=1.0, baseline_share=0.2,
        expected_total=6.0, episode_id="e",
    )
    examples = backtest.with_examples(alert, backtest.read_posts(lines), 3).examples
    assert [e.id for e in examples] == ["t:1", "t:10", "t:11"]
