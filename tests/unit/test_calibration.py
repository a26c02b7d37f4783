"""Temperature scaling and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from scorer.training.calibration import expected_calibration_error, fit_temperature, negative_log_likelihood


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(true_t: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / true_t): the right temperature is true_t."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 3))
    probs = _softmax(logits / true_t)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_that_made_the_labels(true_t: float) -> None:
    logits, labels = _overconfident(true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.06)


def test_fitted_temperature_lowers_nll_and_ece_and_keeps_every_label() -> None:
    logits, labels = _overconfident(2.5)
    t = fit_temperature(logits, labels)
    assert negative_log_likelihood(logits, labels, t) < negative_log_likelihood(logits, labels)
    before = expected_calibration_error(_softmax(logits), labels)
    after = expected_calibration_error(_softmax(logits / t), labels)
    assert before > 0.1 and after < 0.02
    assert (_softmax(logits / t).argmax(1) == logits.argmax(1)).all()


def test_no_rows_fit_nothing() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
    assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 0.0


def test_ece_by_hand() -> None:
    # Bin (0.8667, 0.9333]: two rows at 0.9, one right -> |0.5 - 0.9| = 0.4, weight 2/4.
    # Bin (0.5333, 0.6]: two rows at 0.6, both right -> |1.0 - 0.6| = 0.4, weight 2/4.
    probs = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # Perfectly calibrated: every row at 0.5 confidence, half of them right.
    probs = np.array([[0.5, 0.25, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 1, 0, 2])) == pytest.approx(0.0)
