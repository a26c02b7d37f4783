"""Temperature scaling per head, and the expected calibration error that shows what it buys.

A fine-tuned classifier is usually over-confident: its top probability is higher than how often
that label is right. One temperature per head (logits / T before the softmax) fitted on the
validation split by minimising the negative log-likelihood fixes most of it without changing any
label (argmax is unchanged by a positive scale). numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scorer.training.data import Example

ECE_BINS = 15
# Bounds of the search, in log space: T from ~0.05 to ~20 covers any sane classifier.
_LOG_T_RANGE = (-3.0, 3.0)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the gold labels under softmax(logits / temperature)."""
    logp = _log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int] | np.ndarray, tolerance: float = 1e-4) -> float:
    """The T > 0 that minimises the NLL of labels under softmax(logits / T).

    The NLL is unimodal in log T for a fixed set of logits, so a golden-section search on log T
    finds it without gradients. No rows: 1.0 (nothing to fit).
    """
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    if len(labels) == 0:
        return 1.0
    ratio = (math.sqrt(5) - 1) / 2
    lo, hi = _LOG_T_RANGE
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa = negative_log_likelihood(logits, labels, math.exp(a))
    fb = negative_log_likelihood(logits, labels, math.exp(b))
    while hi - lo > tolerance:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = negative_log_likelihood(logits, labels, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int] | np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: rows binned by their top probability (equal-width bins over [0, 1]); the
    mean over bins of |accuracy - mean confidence|, weighted by the share of rows in the bin."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins the first.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = index == b
        if sel.any():
            total += sel.sum() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(total / len(labels))


# Validation rows the temperatures are fitted on: the financial rows the product is about (the
# general-domain rows in the validation split would pull the temperature toward their own domain).
CALIBRATION_ORIGINS: tuple[str, ...] = ("handlabelled", "stance")


def fit_model_temperatures(
    model_dir: Path | str, rows: Sequence[Example], origins: Sequence[str] = CALIBRATION_ORIGINS,
    model_file: str | None = None,
) -> dict[str, Any]:
    """One temperature per head for the graph in model_dir, fitted on the rows of `origins` (the
    stance head on their targets that the run-time span finder locates). Returns
    {"temperatures": {...}, "fitted_on": {head: rows or targets}, "nll_before"/"nll_after": {...}}."""
    from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
    from scorer.runtime import OnnxScorer

    chosen = [r for r in rows if r.origin in origins]
    scorer = OnnxScorer(model_dir, provider="cpu", model_file=model_file)
    symbols = [[t.symbol for t in r.targets or ()] for r in chosen]
    preds, logits = scorer.predict_with_logits([r.text for r in chosen], symbols)
    fitted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for head, labels, matrix in (("polarity", POLARITY_LABELS, logits.polarity),
                                 ("emotion", EMOTION_LABELS, logits.emotion)):
        keep = [i for i, r in enumerate(chosen) if getattr(r, head) is not None]
        fitted[head] = (matrix[keep], np.array([labels.index(getattr(chosen[i], head)) for i in keep]))
    if scorer.has_stance_head:
        found = [
            (logits.stance[i][k], POLARITY_LABELS.index(target.stance))
            for i, (row, pred) in enumerate(zip(chosen, preds))
            for k, (target, read) in enumerate(zip(row.targets or (), pred.targets))
            if read.basis == "mention"
        ]
        if found:
            fitted["stance"] = (np.vstack([f[0] for f in found]), np.array([f[1] for f in found]))
    out: dict[str, Any] = {"temperatures": {}, "fitted_on": {}, "nll_before": {}, "nll_after": {},
                           "origins": list(origins)}
    for head, (matrix, gold) in fitted.items():
        t = fit_temperature(matrix, gold)
        out["temperatures"][head] = round(t, 4)
        out["fitted_on"][head] = int(len(gold))
        out["nll_before"][head] = round(negative_log_likelihood(matrix, gold), 4)
        out["nll_after"][head] = round(negative_log_likelihood(matrix, gold, t), 4)
    return out
