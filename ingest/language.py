"""Language of a post: an ISO 639-1 code, or "und" when the text gives too little to go on.

lingua-language-detector, restricted to the languages financial posts and news here come in;
fewer candidates means fewer wild guesses on short texts. The detector is built once, on first
use; building it loads the models (about 3 s).

High-accuracy mode, not low: measured here, low-accuracy mode was 3x faster (about 21k vs 7k
short texts/s, far above the scorer's rate either way) but called "buy the dip" Spanish, "to the
moon" Dutch and "this is fine" French; short posts are most of the stream.

Two rules around the model:
- Cashtags, links, @mentions, #hashtags, numbers and emoji are removed first; what is left must be
  at least three words (or three CJK characters), else "und". "$TSLA 🚀🚀" is not English, and a
  guess would send it to the scorer as if it were.
- English is favoured when the model is unsure: on short English headlines, proper nouns
  ("Novo Nordisk", "Mercedes-Benz") pull it toward Swedish or German with low confidence, while
  real foreign text scores high. If the winner's confidence is under 0.5 and English has at least
  half of it, the answer is English.
"""

from __future__ import annotations

import re
import threading

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

from moodwire.schema import URL_RE

UNDETERMINED = "und"

LANGUAGES: tuple[Language, ...] = (
    Language.ENGLISH, Language.GERMAN, Language.FRENCH, Language.SPANISH, Language.ITALIAN,
    Language.PORTUGUESE, Language.DUTCH, Language.SWEDISH, Language.POLISH, Language.RUSSIAN,
    Language.TURKISH, Language.ARABIC, Language.HINDI, Language.INDONESIAN, Language.VIETNAMESE,
    Language.CHINESE, Language.JAPANESE, Language.KOREAN,
)

MIN_WORDS = 3
MAX_CHARS = 1000  # the opening of a long article decides its language, at a bounded cost
_UNSURE_BELOW = 0.5
_ENGLISH_SHARE = 0.5

_NOISE = re.compile(
    URL_RE.pattern                       # links
    + r"|[$#@][\w.\-]+"                 # cashtags, hashtags, mentions
    + r"|\d+(?:[.,:/]\d+)*[%kKmMbB]?",  # numbers, prices, times
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]{2,}")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")

_detector: LanguageDetector | None = None
_lock = threading.Lock()


def _get_detector() -> LanguageDetector:
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                _detector = (
                    LanguageDetectorBuilder.from_languages(*LANGUAGES)
                    .with_preloaded_language_models()
                    .build()
                )
    return _detector


def _content(text: str) -> str:
    return _NOISE.sub(" ", text[:MAX_CHARS])


def has_enough_text(text: str) -> bool:
    """Whether, without tickers, links, tags and numbers, there are words enough to judge."""
    content = _content(text)
    return len(_WORD.findall(content)) >= MIN_WORDS or len(_CJK.findall(content)) >= MIN_WORDS


def detect_language(text: str) -> str:
    """ISO 639-1 code (lower case) of the text's language, or "und"."""
    if not has_enough_text(text):
        return UNDETERMINED
    detector = _get_detector()
    content = _content(text)
    # Most posts are English: one pass settles them; only a foreign winner pays for the
    # confidence values the English-prior rule needs.
    language = detector.detect_language_of(content)
    if language is None:
        return UNDETERMINED
    if language == Language.ENGLISH:
        return "en"
    confidences = detector.compute_language_confidence_values(content)
    best = confidences[0]
    if best.value < _UNSURE_BELOW:
        english = next((c.value for c in confidences if c.language == Language.ENGLISH), 0.0)
        if english >= _ENGLISH_SHARE * best.value:
            return "en"
    return best.language.iso_code_639_1.name.lower()
