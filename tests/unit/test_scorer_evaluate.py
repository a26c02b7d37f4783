"""`moodwire evaluate`'s stance, social-post and calibration numbers, checked by hand on tiny sets."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from scorer.training.data import Example
from scorer.training.evaluate import COPIED_SYSTEM, MODEL_SYSTEM, evaluate, stance_block
from scorer.training.stance_data import Target
from tests.unit.fake_onnx import make_model_dir


def _target(symbol: str, polarity: str, basis: str = "mention") -> SimpleNamespace:
    return SimpleNamespace(symbol=symbol, polarity=polarity, basis=basis)


def test_stance_block_model_against_copied_post_polarity() -> None:
    rows = [
        Example("a", "x", "t", "positive", targets=(Target("X", "positive", ("X",)), Target("Y", "negative", ("Y",)))),
        Example("b", "z", "t", "negative", targets=(Target("Z", "neutral", ("Z",)),)),
        Example("c", "no tickers", "t", "neutral"),
    ]
    preds = [
        SimpleNamespace(polarity="positive", targets=(_target("X", "positive"), _target("Y", "negative"))),
        SimpleNamespace(polarity="negative", targets=(_target("Z", "neutral"),)),
        SimpleNamespace(polarity="neutral", targets=()),
    ]
    block = stance_block(rows, preds)
    assert block is not None
    assert (block["n"], block["n_rows"], block["share_read_at_mentions"]) == (3, 2, 1.0)
    assert block["systems"][MODEL_SYSTEM]["macro_f1"] == pytest.approx(1.0)
    # copied: gold [pos, neg, neu], predicted [pos, pos, neg]: F1 pos 2/3, neg 0, neu 0.
    assert block["systems"][COPIED_SYSTEM]["macro_f1"] == pytest.approx(2 / 9)
    split = block["disagreeing"]
    assert (split["n"], split["n_rows"]) == (2, 1)
    assert split["systems"][MODEL_SYSTEM]["macro_f1"] == pytest.approx(1.0)
    assert split["systems"][COPIED_SYSTEM]["macro_f1"] == pytest.approx(1 / 3)  # F1 pos 2/3, neg 0


def test_stance_block_without_a_stance_head_copies_the_post() -> None:
    rows = [Example("a", "x", "t", "positive", targets=(Target("X", "negative", ("X",)),))]
    block = stance_block(rows, [SimpleNamespace(polarity="positive", targets=())])
    assert block is not None
    assert block["share_read_at_mentions"] == 0.0
    assert block["systems"][MODEL_SYSTEM] == block["systems"][COPIED_SYSTEM]
    assert stance_block([Example("b", "y", "t", "neutral")], [SimpleNamespace(polarity="neutral", targets=())]) is None


def test_evaluate_a_tiny_labelled_file(tmp_path: Path) -> None:
    # The fake graph calls every post and every ticker it can read "positive" (see fake_onnx).
    model_dir = make_model_dir(tmp_path / "model", stance=True, temperatures={"polarity": 2.0})
    lines = [
        {"id": "1", "text": "Loaded up on $CRM calls and bought $WDAY puts", "kind": "post", "polarity": "neutral",
         "emotion": "joy", "targets": [{"symbol": "CRM", "stance": "positive", "mentions": ["$CRM"]},
                                       {"symbol": "WDAY", "stance": "negative", "mentions": ["$WDAY"]}]},
        {"id": "2", "text": "$KR keeps losing share to Costco", "kind": "headline", "polarity": "negative",
         "emotion": "neutral", "targets": [{"symbol": "KR", "stance": "negative", "mentions": ["$KR"]},
                                           {"symbol": "COST", "stance": "positive", "mentions": ["Costco"]}]},
        {"id": "3", "text": "nothing to see here", "kind": "post", "polarity": "neutral", "emotion": "neutral",
         "targets": [{"symbol": "AAPL", "stance": "neutral", "mentions": ["Apple"]}]},
        {"id": "4", "text": "$NVDA ripping", "kind": "post", "polarity": "positive", "emotion": "joy",
         "targets": [{"symbol": "NVDA", "stance": "positive", "mentions": ["$NVDA"]}]},
    ]
    data = tmp_path / "tiny.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    result = evaluate(model_dir, data, with_baselines=False, out_json=tmp_path / "out.json")

    stance = result["stance"]
    assert (stance["n"], stance["n_rows"]) == (6, 4)
    assert stance["share_read_at_mentions"] == pytest.approx(5 / 6, abs=1e-4)  # AAPL is not in its text
    # gold [pos, neg, neg, pos, neu, pos], all predicted positive: F1 pos 2/3, neg 0, neu 0.
    assert stance["systems"][MODEL_SYSTEM]["macro_f1"] == pytest.approx(2 / 9)
    split = stance["disagreeing"]
    assert (split["n"], split["n_rows"]) == (4, 2)
    assert split["systems"][MODEL_SYSTEM]["macro_f1"] == pytest.approx(1 / 3)
    # Social posts only: rows 1, 3, 4; gold [neu, neu, pos], all predicted positive.
    social = result["polarity_social_posts"]
    assert social["n"] == 3
    assert social["systems"][MODEL_SYSTEM]["macro_f1"] == pytest.approx((0 + 0.5) / 2)
    # Calibration is reported per head, with the model's temperatures (1.0 where none).
    assert set(result["calibration"]) == {"polarity", "emotion", "stance"}
    assert result["calibration"]["polarity"]["temperature"] == 2.0
    assert result["calibration"]["stance"]["n"] == 5
    assert json.loads((tmp_path / "out.json").read_text())["stance"]["n"] == 6
