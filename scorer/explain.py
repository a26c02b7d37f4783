"""Why did the model say that? Occlusion on the ONNX model, word by word.

For each word, the text is scored again without it (all of its word pieces dropped); the weight
is how much the predicted label's log-odds, log p / (1 - p), fall: positive = the word pushed
toward the label, negative = it pushed away. Log-odds rather than probabilities because a
probability difference fades when the softmax saturates: at p = 0.99 removing even the decisive
word moves p by ~0.01, while its log-odds still move by several units.

With symbols, each ticker also gets the words that drove its stance (from the stance head, in
the same extra passes: every occluded text carries every ticker's mention mask, shifted to the
tokens that remain). A ticker's own mention words are not occluded for it (the stance is read at
them); they are listed with weight 0 and "mention": true. A ticker the span finder cannot find
in the text takes the post's polarity (basis "post"), and so does its explanation.

Only the runtime is used (numpy + onnxruntime), so `moodwire classify --explain` works wherever
the scorer does. It costs one extra forward pass per word, batched with everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scorer.runtime import OnnxScorer

Attribution = dict[str, Any]


def _words(text: str, word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]]) -> list[tuple[str, list[int]]]:
    """(surface word, its token positions) in text order; special tokens have no word id."""
    groups: dict[int, list[int]] = {}
    for pos, wid in enumerate(word_ids):
        if wid is not None:
            groups.setdefault(wid, []).append(pos)
    words = []
    for wid in sorted(groups):
        positions = groups[wid]
        start, end = offsets[positions[0]][0], offsets[positions[-1]][1]
        words.append((text[start:end], positions))
    return words


def log_odds(logits: np.ndarray, label: int) -> np.ndarray:
    """log p / (1 - p) of `label` under softmax(logits), over the last axis, computed from the
    logits (z_label - logsumexp of the others) so that it stays finite when p rounds to 1."""
    others = np.delete(logits, label, axis=-1)
    top = others.max(axis=-1, keepdims=True)
    rest = top[..., 0] + np.log(np.exp(others - top).sum(axis=-1))
    return logits[..., label] - rest


def _shift(positions: Sequence[int], dropped: set[int]) -> list[int]:
    """Token positions after the dropped ones are removed from the row."""
    kept = sorted(p for p in positions if p not in dropped)
    order = sorted(dropped)
    return [p - sum(1 for d in order if d < p) for p in kept]


def explain(
    scorer: OnnxScorer, texts: Sequence[str], symbols: Sequence[Sequence[str]] | None = None, digits: int = 4
) -> list[Attribution]:
    """Per text: {"polarity": [{"token", "weight"}...], "emotion": [...]}, words in text order,
    weights (log-odds drops) for the label the model predicts for the whole text; with symbols
    and a stance head, also "targets": one {"symbol", "polarity", "basis", "tokens": [...]} per
    symbol, in the order given."""
    if symbols is not None and len(symbols) != len(texts):
        raise ValueError(f"symbols has {len(symbols)} entries for {len(texts)} texts")
    encodings = scorer.encodings(texts)
    with_targets = symbols is not None and scorer.has_stance_head
    positions_per_text: list[list[list[int]]] = [[] for _ in texts]
    if with_targets and symbols is not None:
        positions_per_text = scorer.target_positions(texts, symbols)[1]

    rows: list[list[int]] = []
    row_targets: list[list[list[int]]] = []
    plan: list[tuple[int, list[tuple[str, list[int]]]]] = []  # (row of the full text, words)
    for text, enc, targets in zip(texts, encodings, positions_per_text):
        ids = list(enc.ids)
        words = _words(text, enc.word_ids, enc.offsets)
        plan.append((len(rows), words))
        rows.append(ids)
        row_targets.append(targets)
        for _, positions in words:
            drop = set(positions)
            rows.append([t for i, t in enumerate(ids) if i not in drop])
            row_targets.append([_shift(p, drop) for p in targets])
    logits = scorer.logits_with_targets(rows, row_targets if with_targets else None)
    pol = logits.polarity / scorer.meta.temperature("polarity")
    emo = logits.emotion / scorer.meta.temperature("emotion")
    t_stance = scorer.meta.temperature("stance")

    out: list[Attribution] = []
    for index, (full_row, words) in enumerate(plan):
        occluded = slice(full_row + 1, full_row + 1 + len(words))
        result: Attribution = {}
        post_labels: dict[str, int] = {}
        for head, matrix in (("polarity", pol), ("emotion", emo)):
            label = int(np.argmax(matrix[full_row]))
            post_labels[head] = label
            drops = log_odds(matrix[full_row], label) - log_odds(matrix[occluded], label)
            result[head] = [
                {"token": word, "weight": round(float(w), digits)} for (word, _), w in zip(words, drops)
            ]
        if with_targets and symbols is not None:
            result["targets"] = [
                _target(symbol, k, positions, full_row, words, logits.stance, t_stance, result, post_labels, scorer,
                        digits)
                for k, (symbol, positions) in enumerate(zip(symbols[index], positions_per_text[index]))
            ]
        out.append(result)
    return out


def _target(
    symbol: str,
    k: int,
    positions: list[int],
    full_row: int,
    words: list[tuple[str, list[int]]],
    stance: list[np.ndarray],
    temperature: float,
    post: Attribution,
    post_labels: dict[str, int],
    scorer: OnnxScorer,
    digits: int,
) -> dict[str, Any]:
    labels = scorer.polarity_labels
    if not positions:
        return {"symbol": symbol, "polarity": labels[post_labels["polarity"]], "basis": "post",
                "tokens": post["polarity"]}
    full = stance[full_row][k] / temperature
    label = int(np.argmax(full))
    before = float(log_odds(full, label))
    mention = set(positions)
    tokens = []
    for j, (word, word_positions) in enumerate(words):
        if mention & set(word_positions):
            tokens.append({"token": word, "weight": 0.0, "mention": True})
            continue
        after = float(log_odds(stance[full_row + 1 + j][k] / temperature, label))
        tokens.append({"token": word, "weight": round(before - after, digits)})
    return {"symbol": symbol, "polarity": labels[label], "basis": "mention", "tokens": tokens}
