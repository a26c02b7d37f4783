"""Per-ticker stance as the product reports it: one target per symbol of a post, in its order.

Where the model read a stance at the ticker's mentions it is used; otherwise (the ticker is not
in the text, or the model has no stance head) the post's own polarity stands in, with basis
"post", so every ticker of every post has a stance and every count reads the same field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from moodwire.schema import TargetScore


class TargetPredictionLike(Protocol):
    symbol: str
    polarity: str
    polarity_score: float
    polarity_probs: dict[str, float]
    basis: str


class PredictionLike(Protocol):
    polarity: str
    polarity_score: float
    emotion: str
    polarity_probs: dict[str, float]
    emotion_probs: dict[str, float]
    targets: Sequence[TargetPredictionLike]


def target_scores(symbols: Sequence[str], prediction: PredictionLike) -> tuple[TargetScore, ...]:
    read = {t.symbol: t for t in getattr(prediction, "targets", ()) or ()}
    out: list[TargetScore] = []
    for symbol in symbols:
        target = read.get(symbol)
        source = target if target is not None else prediction
        out.append(
            TargetScore(
                symbol=symbol,
                polarity=source.polarity,  # type: ignore[arg-type]
                polarity_score=max(-1.0, min(1.0, source.polarity_score)),
                polarity_probs=dict(source.polarity_probs),
                basis=target.basis if target is not None else "post",  # type: ignore[arg-type]
            )
        )
    return tuple(out)
