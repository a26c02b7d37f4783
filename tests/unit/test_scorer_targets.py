"""The runtime's per-ticker targets, temperatures and stance explanations, on a hand-built graph
whose logits are known functions of what the runtime feeds it (tests/unit/fake_onnx.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moodwire.labels import POLARITY_LABELS
from scorer.runtime import OnnxScorer, TargetPrediction
from tests.unit.fake_onnx import EMOTION_SLOPE, POLARITY_SLOPE, STANCE_SLOPE, make_model_dir

TEXTS = [
    "Loaded up on $CRM calls and bought $WDAY puts into earnings",
    "nothing about any ticker here",
    "Costco comps strong again while $KR keeps losing grocery share",
]
SYMBOLS = [["CRM", "WDAY"], ["AAPL"], ["KR", "COST", "WMT"]]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def stance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("fake-stance"), stance=True)


@pytest.fixture(scope="module")
def scorer(stance_dir: Path) -> OnnxScorer:
    return OnnxScorer(stance_dir, provider="cpu", max_batch=2)


def _mention_id_sum(scorer: OnnxScorer, text: str, mention: str) -> int:
    """Sum of the token ids that tokenize the characters of `mention` in text (all occurrences)."""
    enc = scorer.encodings([text])[0]
    start = text.index(mention)
    spans = []
    while start >= 0:
        spans.append((start, start + len(mention)))
        start = text.find(mention, start + 1)
    return sum(i for i, (a, b), special in zip(enc.ids, enc.offsets, enc.special_tokens_mask)
               if not special and any(a < e and b > s for s, e in spans))


def test_one_target_per_symbol_in_order_with_its_basis(scorer: OnnxScorer) -> None:
    preds = scorer.predict(TEXTS, SYMBOLS)
    assert [[t.symbol for t in p.targets] for p in preds] == SYMBOLS
    assert [[t.basis for t in p.targets] for p in preds] == [
        ["mention", "mention"], ["post"], ["mention", "mention", "post"]
    ]
    for p in preds:
        for t in p.targets:
            assert isinstance(t, TargetPrediction)
            assert list(t.polarity_probs) == list(POLARITY_LABELS)
            assert sum(t.polarity_probs.values()) == pytest.approx(1.0, abs=1e-5)
            assert t.polarity_score == pytest.approx(t.polarity_probs["positive"] - t.polarity_probs["negative"])
            assert t.polarity == max(t.polarity_probs, key=t.polarity_probs.__getitem__)


def test_stance_is_read_at_the_mention_tokens(scorer: OnnxScorer) -> None:
    # The fake stance logit is the sum of the token ids under the ticker's mask: it tells exactly
    # which tokens the runtime marked, through batching and length sorting.
    preds, logits = scorer.predict_with_logits(TEXTS, SYMBOLS)
    expected = {
        (0, 0): _mention_id_sum(scorer, TEXTS[0], "$CRM"),
        (0, 1): _mention_id_sum(scorer, TEXTS[0], "$WDAY"),
        (2, 0): _mention_id_sum(scorer, TEXTS[2], "$KR"),
        (2, 1): _mention_id_sum(scorer, TEXTS[2], "Costco"),
    }
    for (i, k), ids in expected.items():
        np.testing.assert_allclose(logits.stance[i][k], ids * STANCE_SLOPE, rtol=1e-5)
        probs = _softmax(ids * STANCE_SLOPE)
        assert preds[i].targets[k].polarity_probs["positive"] == pytest.approx(float(probs[2]), abs=1e-6)


def test_a_symbol_not_in_the_text_takes_the_post_polarity(scorer: OnnxScorer) -> None:
    (pred,) = scorer.predict([TEXTS[1]], [["AAPL"]])
    (target,) = pred.targets
    assert (target.polarity, target.polarity_score, target.polarity_probs) == (
        pred.polarity, pred.polarity_score, pred.polarity_probs
    )
    # A mention cut off by truncation (past max_length tokens) is not read either.
    long = "word " * 80 + "$CRM calls"
    assert scorer.predict([long], [["CRM"]])[0].targets[0].basis == "post"


def test_batched_the_same_as_one_by_one(scorer: OnnxScorer) -> None:
    together = scorer.predict(TEXTS, SYMBOLS)
    alone = [scorer.predict([t], [s])[0] for t, s in zip(TEXTS, SYMBOLS)]
    for a, b in zip(together, alone):
        assert [(t.symbol, t.basis) for t in a.targets] == [(t.symbol, t.basis) for t in b.targets]
        np.testing.assert_allclose([t.polarity_score for t in a.targets], [t.polarity_score for t in b.targets],
                                   atol=1e-6)


def test_without_symbols_no_targets_and_the_post_labels_unchanged(scorer: OnnxScorer) -> None:
    plain = scorer.predict(TEXTS)
    with_targets = scorer.predict(TEXTS, SYMBOLS)
    assert all(p.targets == () for p in plain)
    np.testing.assert_allclose([list(p.polarity_probs.values()) for p in plain],
                               [list(p.polarity_probs.values()) for p in with_targets], atol=1e-6)
    assert scorer.predict(TEXTS, [[], [], []])[0].targets == ()
    with pytest.raises(ValueError, match="symbols"):
        scorer.predict(TEXTS, [["CRM"]])


def test_a_model_without_a_stance_head_loads_and_returns_no_targets(tmp_path: Path) -> None:
    old = OnnxScorer(make_model_dir(tmp_path / "old", stance=False), provider="cpu")
    assert old.has_stance_head is False
    preds = old.predict(TEXTS, SYMBOLS)
    assert all(p.targets == () for p in preds)
    assert [p.polarity for p in preds] == [p.polarity for p in old.predict(TEXTS)]


def test_temperatures_divide_the_logits_of_each_head(tmp_path: Path) -> None:
    temps = {"polarity": 0.5, "emotion": 2.0, "stance": 4.0}
    hot = OnnxScorer(make_model_dir(tmp_path / "t", stance=True, temperatures=temps), provider="cpu")
    preds, logits = hot.predict_with_logits(TEXTS, SYMBOLS)
    n_tokens = np.array([len(e.ids) for e in hot.encodings(TEXTS)], dtype=np.float32)
    np.testing.assert_allclose(logits.polarity, n_tokens[:, None] * POLARITY_SLOPE, rtol=1e-5)
    for i, p in enumerate(preds):
        np.testing.assert_allclose(list(p.polarity_probs.values()), _softmax(logits.polarity[i] / 0.5), rtol=1e-5)
        np.testing.assert_allclose(list(p.emotion_probs.values()),
                                   _softmax(n_tokens[i] * EMOTION_SLOPE / 2.0), rtol=1e-5)
        for k, t in enumerate(p.targets):
            if t.basis == "mention":
                np.testing.assert_allclose(list(t.polarity_probs.values()), _softmax(logits.stance[i][k] / 4.0),
                                           rtol=1e-5)
    # Labels do not move: a positive temperature keeps the argmax.
    plain = OnnxScorer(make_model_dir(tmp_path / "plain", stance=True), provider="cpu").predict(TEXTS, SYMBOLS)
    assert [p.polarity for p in plain] == [p.polarity for p in preds]
    assert [[t.polarity for t in p.targets] for p in plain] == [[t.polarity for t in p.targets] for p in preds]


def test_explain_targets_uses_log_odds_and_keeps_masks_on_their_tokens(scorer: OnnxScorer) -> None:
    from scorer.explain import explain, log_odds

    text, symbols = TEXTS[0], SYMBOLS[0]
    (out,) = explain(scorer, [text], [symbols], digits=8)
    assert [t["symbol"] for t in out["targets"]] == symbols
    crm = out["targets"][0]
    assert crm["basis"] == "mention"
    assert [w["token"] for w in crm["tokens"] if w.get("mention")] == ["$", "CRM"]
    # The fake stance reads only the token ids under the mask: dropping any other word (before or
    # after the mention) must leave it unchanged, so every weight is 0 unless a mask slipped.
    assert all(w["weight"] == 0.0 for w in crm["tokens"])
    # Post polarity: logits grow with the token count, so dropping a word of k tokens lowers the
    # positive log-odds by exactly what k fewer tokens give.
    enc = scorer.encodings([text])[0]
    n = len(enc.ids)
    label = int(np.argmax(n * POLARITY_SLOPE))
    word_tokens = {}
    for pos, wid in enumerate(enc.word_ids):
        if wid is not None:
            word_tokens[wid] = word_tokens.get(wid, 0) + 1
    expected = [log_odds(n * POLARITY_SLOPE, label) - log_odds((n - k) * POLARITY_SLOPE, label)
                for _, k in sorted(word_tokens.items())]
    np.testing.assert_allclose([w["weight"] for w in out["polarity"]], expected, atol=1e-5)


def test_explain_a_symbol_not_in_the_text_explains_the_post(scorer: OnnxScorer) -> None:
    from scorer.explain import explain

    (out,) = explain(scorer, [TEXTS[1]], [["AAPL"]])
    (target,) = out["targets"]
    assert target["basis"] == "post" and target["tokens"] == out["polarity"]
    (plain,) = explain(scorer, [TEXTS[1]])
    assert "targets" not in plain


def test_log_odds_stay_finite_when_the_softmax_saturates() -> None:
    from scorer.explain import log_odds

    z = np.array([0.0, 0.0, 60.0])  # p(positive) rounds to 1.0 in float32
    assert log_odds(z, 2) == pytest.approx(60.0 - np.log(2.0))
    assert log_odds(z, 0) == pytest.approx(-np.log(1.0 + np.exp(60.0)), rel=1e-6)
