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


def test_explain_weights_are_probability_drops() -> None:
    from scorer.explain import explain

    scorer = OnnxScorer(provider="cpu")
    text = "terrible quarter"
    (expl,) = explain(scorer, [text], digits=8)
    full = scorer.predict([text])[0]
    without_first = scorer.predict(["quarter"])[0]
    label = full.polarity
    expected = full.polarity_probs[label] - without_first.polarity_probs[label]
    assert expl["polarity"][0]["weight"] == pytest.approx(expected, abs=0.03)  # int8 batch noise


def test_explain_needs_no_training_deps() -> None:
    code = (
        "import sys; import scorer.explain; "
        "bad = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
