"""Why did the model say that? Occlusion on the ONNX model, word by word.

For each word, the text is scored again without it (all of its word pieces dropped); the weight
is how much the predicted label's probability falls: positive = the word pushed toward the
label, negative = it pushed away. Only the runtime is used (numpy + onnxruntime), so
`moodwire classify --explain` works wherever the scorer does. It costs one extra forward pass
per word, batched with everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scorer.runtime import OnnxScorer, _softmax

Attribution = dict[str, list[dict[str, Any]]]


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


def explain(
    scorer: OnnxScorer, texts: Sequence[str], symbols: Sequence[Sequence[str]] | None = None, digits: int = 4
) -> list[Attribution]:
    """Per text: {"polarity": [{"token", "weight"}...], "emotion": [...]}, words in text order,
    weights for the label the model predicts for the whole text."""
    encodings = scorer.encodings(texts)
    rows: list[list[int]] = []
    plan: list[tuple[int, list[tuple[str, list[int]]]]] = []  # (row of the full text, words)
    for text, enc in zip(texts, encodings):
        ids = list(enc.ids)
        words = _words(text, enc.word_ids, enc.offsets)
        plan.append((len(rows), words))
        rows.append(ids)
        for _, positions in words:
            drop = set(positions)
            rows.append([t for i, t in enumerate(ids) if i not in drop])
    pol_logits, emo_logits = scorer.logits_for_ids(rows)
    pol, emo = _softmax(pol_logits), _softmax(emo_logits)

    out: list[Attribution] = []
    for full_row, words in plan:
        occluded = slice(full_row + 1, full_row + 1 + len(words))
        result: Attribution = {}
        for head, probs in (("polarity", pol), ("emotion", emo)):
            label = int(np.argmax(probs[full_row]))
            drops = probs[full_row, label] - probs[occluded, label]
            result[head] = [
                {"token": word, "weight": round(float(w), digits)} for (word, _), w in zip(words, drops)
            ]
        out.append(result)
    return out
