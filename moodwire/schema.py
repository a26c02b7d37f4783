"""The Post and ScoredPost contracts, with the cleanup every post goes through before scoring.

Validation never raises anything but `InvalidPost`, whose `reason` goes to the dead-letter topic.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moodwire.limits import MAX_MESSAGE_BYTES
from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS

DEFAULT_TEXT_MAX_CHARS = 4_000
# A post names at most this many tickers: the first ones are kept, the rest dropped.
MAX_SYMBOLS = 20
# Posts dated before this are almost surely broken clocks or epoch-zero defaults.
EARLIEST_PUBLISHED_AT = datetime(2000, 1, 1, tzinfo=UTC)
# Allow for skewed source clocks, but a post from next week is a bug upstream.
MAX_FUTURE_SKEW = timedelta(days=1)

# A ticker as moodwire writes it: upper case, e.g. AAPL, BRK.B, BTC.
SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,11}$")
# A link in post text, with or without a scheme.
URL_RE = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,31}$")
_WHITESPACE_RE = re.compile(r"\s+")
# Zero-width and bidi-control characters let two different-looking texts hash the same (or not);
# they carry no sentiment, so they go.
_INVISIBLE = dict.fromkeys(
    [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
    + [0x200E, 0x200F, 0x061C]
)


class InvalidPost(ValueError):
    """A post that can't be accepted; `reason` says why, for the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in {"br", "p", "div", "li"}:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def strip_html(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    if "<" not in text:
        return html.unescape(text)
    extractor = _TextExtractor()
    try:
        extractor.feed(text)
        extractor.close()
    except AssertionError:
        # html.parser gives up on some malformed markup (e.g. "<![foo"); keep the text it had
        # extracted so far and drop the unparseable rest, rather than crash the service.
        pass
    return "".join(extractor.parts)


# Exactly the code points of Unicode categories Cc (controls), Cs (surrogates) and Co (private
# use), as one regex: a per-character unicodedata.category() loop cost ~50 us per post.
_CONTROL_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]"
)


def clean_text(text: str, max_chars: int = DEFAULT_TEXT_MAX_CHARS, *, html: bool = True) -> str:
    """HTML stripped, invisible and control characters removed, whitespace collapsed, capped.

    Without `html` the result of a first pass is left as it is, so cleaning twice changes
    nothing: "&amp;lt;" becomes "&lt;" once, not "<" on the second pass.
    """
    if html:
        text = strip_html(text)
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = _CONTROL_RE.sub(" ", text)
    text = _WHITESPACE_RE.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        text = text[: cut if cut > max_chars // 2 else max_chars].rstrip()
    return text


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 (or ISO 8601 with offset) or a datetime -> aware UTC datetime."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        candidate = value.strip()
        if candidate.endswith(("Z", "z")):
            candidate = candidate[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {value[:40]!r}") from None
    else:
        raise ValueError(f"expected an RFC 3339 string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no UTC offset; write it as RFC 3339, e.g. 2026-01-02T15:04:05Z")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise ValueError(f"timestamp out of range: {str(value)[:40]!r}") from None


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Post(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_max_length=MAX_MESSAGE_BYTES)

    id: str = Field(min_length=1, max_length=512)
    source: str
    text: str
    published_at: datetime
    author: str | None = Field(default=None, max_length=256)
    url: str | None = Field(default=None, max_length=2048)
    lang: str | None = Field(default=None, max_length=16)
    symbols: tuple[str, ...] = ()
    kind: Literal["post", "headline"] = "post"
    story_id: str | None = Field(default=None, max_length=512)
    # Spam and bot signals set by ingest ("link_only", "repeated_text", "posting_rate"):
    # such posts are stored but left out of the sentiment aggregates.
    flags: tuple[str, ...] = ()

    @field_validator("id")
    @classmethod
    def _id_printable(cls, value: str) -> str:
        value = value.strip()
        if not value or any(unicodedata.category(ch) == "Cc" for ch in value):
            raise ValueError("id must be non-empty printable text")
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _source_slug(cls, value: Any) -> str:
        if not isinstance(value, str) or not _SOURCE_RE.match(value.strip().lower()):
            raise ValueError("source must be a short lower-case name like 'rss' or 'reddit'")
        return value.strip().lower()

    @field_validator("published_at", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> datetime:
        parsed = parse_timestamp(value)
        if parsed < EARLIEST_PUBLISHED_AT:
            raise ValueError(f"published_at {format_timestamp(parsed)} is before 2000-01-01")
        if parsed > datetime.now(UTC) + MAX_FUTURE_SKEW:
            raise ValueError(f"published_at {format_timestamp(parsed)} is more than a day in the future")
        return parsed

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError("symbols must be a list of tickers")
        seen: dict[str, None] = {}
        for item in value:
            if not isinstance(item, str):
                raise ValueError("symbols must be strings")
            symbol = item.strip().lstrip("$").upper()
            if not SYMBOL_RE.match(symbol):
                raise ValueError(f"not a ticker symbol: {item[:20]!r}")
            seen.setdefault(symbol, None)
            # A post naming thousands of tickers is spam; keep the first few instead of failing it.
            if len(seen) >= MAX_SYMBOLS:
                break
        return tuple(seen)

    @field_validator("flags", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and len(v) <= 32 for v in value):
            raise ValueError("flags must be a list of short strings")
        return tuple(value[:8])

    @field_validator("author", "url", "lang", "story_id", mode="before")
    @classmethod
    def _optional_text(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return clean_text(value, 2048) or None

    def to_json(self) -> bytes:
        return json.dumps(post_to_dict(self), ensure_ascii=False).encode("utf-8")


class TargetScore(BaseModel):
    """The stance of one post toward one ticker it names (negative = bearish, bad for holders).

    `basis` says where it was read: "mention" when the model pooled the ticker's mentions in the
    text, "post" when the ticker is not in the text (a producer tagged it) or the model has no
    stance head, so the post's own polarity stands in.
    """

    model_config = ConfigDict(frozen=True)

    symbol: str
    polarity: Literal["negative", "neutral", "positive"]
    polarity_score: float = Field(ge=-1.0, le=1.0)
    polarity_probs: dict[str, float]
    basis: Literal["mention", "post"] = "post"

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "polarity": self.polarity,
            "polarity_score": round(self.polarity_score, 6),
            "polarity_probs": {k: round(self.polarity_probs[k], 6) for k in POLARITY_LABELS},
            "basis": self.basis,
        }


class ScoredPost(BaseModel):
    model_config = ConfigDict(frozen=True)

    post: Post
    polarity: Literal["negative", "neutral", "positive"]
    polarity_score: float = Field(ge=-1.0, le=1.0)
    emotion: Literal["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    polarity_probs: dict[str, float]
    emotion_probs: dict[str, float]
    model_version: str
    scored_at: datetime
    # "unsupported_language": stored and counted as a post, but the model was not run on it
    # (its labels are placeholders and the per-minute sentiment aggregates leave it out).
    status: Literal["scored", "unsupported_language"] = "scored"
    # One per symbol of the post, in the post's order; empty when it names none. A symbol given
    # no target gets the post's own polarity (basis "post"), so every ticker has a stance.
    targets: tuple[TargetScore, ...] = ()

    @model_validator(mode="after")
    def _one_target_per_symbol(self) -> ScoredPost:
        given = {t.symbol: t for t in self.targets}
        unknown = set(given) - set(self.post.symbols)
        if unknown:
            raise ValueError(f"targets name symbols the post does not: {sorted(unknown)}")
        aligned = tuple(
            given.get(symbol)
            or TargetScore(
                symbol=symbol,
                polarity=self.polarity,
                polarity_score=self.polarity_score,
                polarity_probs=dict(self.polarity_probs),
                basis="post",
            )
            for symbol in self.post.symbols
        )
        if aligned != self.targets:
            object.__setattr__(self, "targets", aligned)  # frozen: set once, while validating
        return self

    def to_dict(self) -> dict[str, Any]:
        record = post_to_dict(self.post)
        record.update(
            polarity=self.polarity,
            polarity_score=round(self.polarity_score, 6),
            emotion=self.emotion,
            polarity_probs={k: round(self.polarity_probs[k], 6) for k in POLARITY_LABELS},
            emotion_probs={k: round(self.emotion_probs[k], 6) for k in EMOTION_LABELS},
            model_version=self.model_version,
            scored_at=format_timestamp(self.scored_at),
            status=self.status,
            targets=[t.to_dict() for t in self.targets],
        )
        return record


def post_to_dict(post: Post) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": post.id,
        "source": post.source,
        "text": post.text,
        "published_at": format_timestamp(post.published_at),
        "symbols": list(post.symbols),
        "kind": post.kind,
    }
    for name in ("author", "url", "lang", "story_id"):
        value = getattr(post, name)
        if value is not None:
            record[name] = value
    if post.flags:
        record["flags"] = list(post.flags)
    return record


def validate_post(data: Any, max_chars: int = DEFAULT_TEXT_MAX_CHARS, *, html: bool = True) -> Post:
    """A dict from JSON -> a clean Post, or InvalidPost naming what is wrong."""
    if not isinstance(data, dict):
        raise InvalidPost(f"expected a JSON object, got {type(data).__name__}")
    text = data.get("text")
    if not isinstance(text, str):
        raise InvalidPost("text: required, must be a string")
    # Markup is stripped before the text is capped: cutting first could leave half a tag ("</")
    # as the whole text of a long HTML-only post. No message holds more characters than this.
    cleaned = clean_text(text[:MAX_MESSAGE_BYTES], max_chars, html=html)
    if not cleaned:
        raise InvalidPost("text: empty after removing HTML and whitespace")
    try:
        return Post.model_validate({**data, "text": cleaned})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "post"
        raise InvalidPost(f"{field}: {first.get('msg', 'invalid')}") from None


def parse_post(raw: bytes | str, max_chars: int = DEFAULT_TEXT_MAX_CHARS, *, html: bool = True) -> Post:
    """Raw bytes off the bus or a file line -> Post, or InvalidPost.

    Posts that ingest cleaned carry NORMALIZED_HEADER; for those the scorer passes html=False so a
    second pass cannot turn escaped text ("&lt;script&gt;") into markup and strip it.
    """
    if isinstance(raw, bytes):
        if len(raw) > MAX_MESSAGE_BYTES:
            raise InvalidPost(f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidPost(f"not valid UTF-8 at byte {exc.start}") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer over 4300 digits
        raise InvalidPost(f"malformed JSON: {exc}"[:300]) from None
    return validate_post(data, max_chars, html=html)
