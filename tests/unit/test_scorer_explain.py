"""Occlusion explanations on the shipped ONNX model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scorer import model_files
from scorer.runtime import OnnxScorer, default_model_dir



def test_explain_shape_and_words() -> None:
    from scorer.explain import explain

    scorer = OnnxScorer(provider="cpu")
    texts = ["Guidance cut; $XYZ shares tank 12% 📉", "", "ok"]
    out = explain(scorer, texts)
    assert len(out) == 3
    assert set(out[0]) == {"polarity", "emotion"}
    assert [w["token"] for w in out[0]["polarity"]] == ["Guidance", "cut", ";", "$", "XYZ", "shares", "tank", "12", "%", "📉"]
    assert all(isinstance(w["weight"], float) for w in out[0]["emotion"])
    assert out[1] == {"polarity": [], "emotion": []}
    assert len(out[2]["polarity"]) == 1


def test_explain_weights_are_log_odds_drops() -> None:
    import math

    from scorer.explain import explain

    scorer = OnnxScorer(provider="cpu")
    text = "terrible quarter"
    (expl,) = explain(scorer, [text], digits=8)
    full = scorer.predict([text])[0]
    without_first = scorer.predict(["quarter"])[0]
    label = full.polarity

    def odds(p: float) -> float:
        return math.log(p / (1 - p))

    expected = odds(full.polarity_probs[label]) - odds(without_first.polarity_probs[label])
    # int8 picks activation scales per batch, and far out in the tails log-odds feel that
    assert expl["polarity"][0]["weight"] == pytest.approx(expected, rel=0.1)


def test_explain_stays_informative_when_the_softmax_saturates() -> None:
    # A post the model is sure about: probability drops of single words are tiny, log-odds drops
    # of the decisive word are not.
    from scorer.explain import explain

    scorer = OnnxScorer(provider="cpu")
    text = "Guidance slashed again, shares crater 30% after a disastrous quarter"
    (pred,) = scorer.predict([text])
    assert pred.polarity == "negative" and pred.polarity_probs["negative"] > 0.9
    (expl,) = explain(scorer, [text])
    assert max(w["weight"] for w in expl["polarity"]) > 0.5


def test_explain_needs_no_training_deps() -> None:
    code = (
        "import sys; import scorer.explain; "
        "bad = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
