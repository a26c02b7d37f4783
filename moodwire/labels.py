"""The label spaces of the two heads, in the order the model emits them."""

from typing import Final

POLARITY_LABELS: Final[tuple[str, ...]] = ("negative", "neutral", "positive")
EMOTION_LABELS: Final[tuple[str, ...]] = (
    "anger",
    "disgust",
    "fear",
    "joy",
    "sadness",
    "surprise",
    "neutral",
)
