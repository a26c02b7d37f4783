"""Metrics against values worked out by hand."""

from __future__ import annotations

import pytest

from scorer.training.metrics import classification_report, confusion_matrix, macro_f1

LABELS = ("negative", "neutral", "positive")


def test_perfect() -> None:
    gold = ["negative", "neutral", "positive", "positive"]
    rep = classification_report(gold, gold, LABELS)
    assert rep["accuracy"] == 1.0
    assert rep["macro_f1"] == 1.0
    assert rep["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_hand_computed() -> None:
    gold = ["negative", "negative", "neutral", "positive", "positive", "positive"]
    pred = ["negative", "neutral", "neutral", "positive", "negative", "positive"]
    rep = classification_report(gold, pred, LABELS)
    # negative: P 1/2, R 1/2 -> F1 .5; neutral: P 1/2, R 1 -> 2/3; positive: P 1, R 2/3 -> .8
    assert rep["per_class"]["negative"]["f1"] == pytest.approx(0.5)
    assert rep["per_class"]["neutral"]["f1"] == pytest.approx(2 / 3)
    assert rep["per_class"]["positive"]["f1"] == pytest.approx(0.8)
    assert rep["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["per_class"]["positive"]["support"] == 3
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_class_absent_from_gold_and_pred_is_not_averaged() -> None:
    gold = ["negative", "positive"]
    assert macro_f1(gold, gold, LABELS) == 1.0


def test_class_predicted_but_never_gold_counts_as_zero() -> None:
    rep = classification_report(["negative", "negative"], ["negative", "neutral"], LABELS)
    # negative F1 = 2/3 (P 1, R .5); neutral F1 = 0 (predicted, never gold); positive absent.
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_confusion_matrix_orientation() -> None:
    assert confusion_matrix([0, 0, 1], [1, 1, 1], 2).tolist() == [[0, 2], [0, 1]]


def test_length_mismatch() -> None:
    with pytest.raises(ValueError):
        classification_report(["negative"], [], LABELS)
