"""`moodwire classify | moodwire backtest -` works as both commands' help says, on the real model:
classify passes the input's fields through, backtest reads every line and finds the spike; a
command whose input is all invalid fails."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
QUIET = ("$ACME shares little changed in quiet trading", "$ACME holds steady ahead of the conference",
         "$ACME volume about average today", "$ACME launches a new product line, shares up 2%")
SPIKE = ("$ACME plunges after fraud probe, this is a disaster", "$ACME guidance slashed, dumping all my shares",
         "$ACME CFO resigns amid accounting scandal, stock crushed")


def posts() -> list[dict[str, object]]:
    out = []
    minutes = 26 * 60
    for m in range(minutes):
        at = T0 + timedelta(minutes=m)
        in_spike = m >= minutes - 25
        texts = SPIKE if in_spike else QUIET
        for j in range(6 if in_spike else 2):
            out.append({
                "id": f"cb:{m}:{j}",
                "source": "file",
                "text": f"{texts[(m + j) % len(texts)]} #{m}.{j}",
                "published_at": (at + timedelta(seconds=7 * j)).isoformat().replace("+00:00", "Z"),
                "symbols": ["ACME"],
            })
    return out


def moodwire(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "moodwire.cli", *args], input=stdin, capture_output=True, text=True, timeout=600)


def test_classify_output_feeds_backtest(tmp_path: Path) -> None:
    source = posts()
    classified = moodwire("classify", "-", stdin="\n".join(json.dumps(p) for p in source) + "\n")
    assert classified.returncode == 0, classified.stderr[-2000:]
    rows = [json.loads(line) for line in classified.stdout.splitlines()]
    assert len(rows) == len(source)
    for post, row in zip(source, rows):
        assert {k: row[k] for k in post} == post  # the input's fields, passed through
        assert row["targets"][0]["symbol"] == "ACME" and row["polarity"] in ("negative", "neutral", "positive")

    backtest = moodwire("backtest", "-", stdin=classified.stdout)
    assert backtest.returncode == 0, backtest.stderr
    assert f"{len(source)} posts read (0 duplicate ids, 0 invalid" in backtest.stderr, backtest.stderr
    alerts = [json.loads(line) for line in backtest.stdout.splitlines()]
    assert [(a["symbol"], a["kind"]) for a in alerts] == [("ACME", "negative-spike")], backtest.stderr
    fired = datetime.fromisoformat(alerts[0]["fired_at"].replace("Z", "+00:00"))
    assert fired >= T0 + timedelta(minutes=26 * 60 - 25)


def test_commands_whose_input_is_all_invalid_fail() -> None:
    classify = moodwire("classify", "-", stdin="not json\n{\"id\": 1}\n")
    assert classify.returncode == 1 and "nothing could be scored" in classify.stderr
    # classify output of posts without published_at: backtest can place none of them in time
    unplaced = moodwire("classify", "-", stdin=json.dumps({"text": "$ACME up"}) + "\n")
    assert unplaced.returncode == 0
    backtest = moodwire("backtest", "-", stdin=unplaced.stdout)
    assert backtest.returncode == 1 and "no line was a scored post" in backtest.stderr, backtest.stderr
