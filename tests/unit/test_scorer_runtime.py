"""The runtime loads the shipped model dir and scores texts, without any training dependency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from scorer import model_files
from scorer.runtime import OnnxScorer, Prediction, default_model_dir

MODEL_DIR = default_model_dir()

TEXTS = [
    "$NVDA calls printing again, up 40% since friday",
    "guidance cut. again.",
    "what time does $AAPL report thursday? after close right? " * 8,  # longer than max_length
    "",
    "Fed holds rates steady",
]


@pytest.fixture(scope="module")
def scorer() -> OnnxScorer:
    return OnnxScorer(MODEL_DIR, provider="cpu", max_batch=2)


def test_predict_shapes_and_labels(scorer: OnnxScorer) -> None:
    preds = scorer.predict(TEXTS)
    assert len(preds) == len(TEXTS)
    for p in preds:
        assert isinstance(p, Prediction)
        assert p.polarity in POLARITY_LABELS
        assert p.emotion in EMOTION_LABELS
        assert list(p.polarity_probs) == list(POLARITY_LABELS)
        assert list(p.emotion_probs) == list(EMOTION_LABELS)
        assert abs(sum(p.polarity_probs.values()) - 1) < 1e-4
        assert abs(sum(p.emotion_probs.values()) - 1) < 1e-4
        assert p.polarity_score == pytest.approx(p.polarity_probs["positive"] - p.polarity_probs["negative"], abs=1e-6)
        assert max(p.polarity_probs, key=p.polarity_probs.__getitem__) == p.polarity


def test_order_restored_and_batching_invariant(scorer: OnnxScorer) -> None:
    pol, emo = scorer.predict_proba(TEXTS)
    assert pol.shape == (len(TEXTS), 3) and emo.shape == (len(TEXTS), 7)
    one_by_one = [scorer.predict_proba([t]) for t in TEXTS]
    # Batching a text with others must not change its labels, and its scores only by int8 noise:
    # dynamic int8 picks activation scales per batch, so neighbours move probabilities (up to
    # ~0.11 for an emotion of minilm-l6-moodwire-3 on these texts; ~0.02 for moodwire-2).
    alone_pol, alone_emo = np.vstack([p for p, _ in one_by_one]), np.vstack([e for _, e in one_by_one])
    assert (pol.argmax(axis=1) == alone_pol.argmax(axis=1)).all()
    assert (emo.argmax(axis=1) == alone_emo.argmax(axis=1)).all()
    np.testing.assert_allclose(pol, alone_pol, atol=0.15)
    np.testing.assert_allclose(emo, alone_emo, atol=0.15)
    reversed_pol, _ = scorer.predict_proba(TEXTS[::-1])
    np.testing.assert_allclose(reversed_pol[::-1], pol, atol=1e-6)


def test_empty_input(scorer: OnnxScorer) -> None:
    assert scorer.predict([]) == []
    pol, emo = scorer.predict_proba([])
    assert pol.shape == (0, 3) and emo.shape == (0, 7)


def test_metadata_and_provider(scorer: OnnxScorer) -> None:
    assert scorer.model_version == model_files.read_meta(MODEL_DIR).model_version
    assert scorer.provider == "CPUExecutionProvider"


def test_io_binding_gives_the_same_scores(scorer: OnnxScorer) -> None:
    # The binding path is what the CUDA EP uses by default; on the CPU it must agree exactly.
    assert scorer.io_binding is False
    bound = OnnxScorer(MODEL_DIR, provider="cpu", max_batch=2, io_binding=True)
    assert bound.io_binding is True
    pol, emo = scorer.predict_proba(TEXTS)
    bound_pol, bound_emo = bound.predict_proba(TEXTS)
    np.testing.assert_array_equal(bound_pol, pol)
    np.testing.assert_array_equal(bound_emo, emo)


def test_auto_without_a_usable_gpu_runs_int8_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime-gpu on a machine whose GPU can't be used: ORT lists the CUDA EP, the session
    # falls back to the CPU, and the fp16 graph (made for GPUs) must not be what runs there.
    import onnxruntime as ort

    assert (MODEL_DIR / model_files.FP16_MODEL_FILE).is_file()
    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()])
    scorer = OnnxScorer(MODEL_DIR, provider="auto")
    assert scorer.provider == "CPUExecutionProvider"
    assert scorer.model_path.name == model_files.MODEL_FILE
    assert scorer.max_batch == 64


def test_truncation_at_max_length(scorer: OnnxScorer) -> None:
    ids = scorer.tokenize(["word " * 500])
    assert len(ids[0]) == scorer.meta.max_length


def test_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(model_files.MODEL_DIR_ENV, str(tmp_path))
    assert default_model_dir() == tmp_path


def test_rejects_bad_label_order(tmp_path: Path) -> None:
    meta = json.loads((MODEL_DIR / model_files.META_FILE).read_text())
    meta["polarity_labels"] = ["positive", "neutral", "negative"]
    (tmp_path / model_files.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="label order"):
        model_files.read_meta(tmp_path)


def test_runtime_path_imports_no_training_deps() -> None:
    code = (
        "import sys; from scorer.runtime import OnnxScorer; "
        "bad = [m for m in ('torch', 'transformers', 'onnx', 'nrclex', 'nade', 'vaderSentiment', 'textblob') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_batch_bounds_cap_rows_and_padded_tokens() -> None:
    import numpy as np

    from scorer.runtime import batch_bounds

    lengths = np.array([5, 5, 10, 10, 10, 40, 64, 64])
    assert batch_bounds(lengths, max_batch=64, max_tokens=None) == [(0, 8)]
    assert batch_bounds(lengths, max_batch=3, max_tokens=None) == [(0, 3), (3, 6), (6, 8)]
    # 5 rows of width 10 = 50 tokens fit; the 40-token row alone would make 6 x 40 = 240.
    assert batch_bounds(lengths, max_batch=64, max_tokens=64) == [(0, 5), (5, 6), (6, 7), (7, 8)]
    # A single row longer than the budget still goes through, alone.
    assert batch_bounds(np.array([100]), max_batch=8, max_tokens=10) == [(0, 1)]
