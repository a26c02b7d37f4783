"""Hostile input, property-based: every input to the schema and the ingest normalizer either
becomes a clean Post or is refused with a reason (InvalidPost / Rejected); nothing else escapes.

Covered: huge texts, invalid UTF-8, NUL/control/zero-width/right-to-left characters, HTML and
script, malformed JSON, wrong types, ancient and far-future timestamps, thousands of cashtags,
SQL-looking text. The store side of "user data is never SQL" is checked where it lives:
inserts pass rows separately (moodwire.store) and the integration tests store such texts.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moodwire.schema import (
    DEFAULT_TEXT_MAX_CHARS,
    EARLIEST_PUBLISHED_AT,
    MAX_FUTURE_SKEW,
    MAX_MESSAGE_BYTES,
    MAX_SYMBOLS,
    InvalidPost,
    Post,
    parse_post,
)

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
CONTROL = "".join(chr(c) for c in range(0x00, 0x20)) + "\x7f" + "".join(chr(c) for c in range(0x80, 0xA0))
INVISIBLE = set(ZERO_WIDTH + BIDI)
SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,11}$")
SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,31}$")
SQL = [
    "'; DROP TABLE posts; --",
    '" OR 1=1 --',
    "1); DELETE FROM moodwire.posts WHERE (1=1",
    "%(id)s {id:String} ? $1 \\' \\\\",
    "SELECT * FROM system.users FORMAT JSON",
    "INSERT INTO posts VALUES ('x')",
]
HTML = [
    "<script>alert(1)</script>",
    "<b>bold</b> <i>move</i>",
    "<img src=x onerror=alert(1)>",
    "&lt;script&gt;",
    "<![CDATA[x]]>",
    "<![foo bar",
    "<!-- unclosed comment",
    "</p><p>",
    "<style>body{}</style>",
    "&amp;&#0;&#x110000;&#55296;&bogus;",
    "<a href='javascript:alert(1)'>click</a>",
]
RTL = ["\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u202eevil\u202c"]

hostile_chars = st.sampled_from(list(CONTROL + ZERO_WIDTH + BIDI) + ["\ud800", "\udfff", "\ue000", "\U0010ffff"])
hostile_fragment = st.one_of(
    st.text(max_size=40),
    st.sampled_from(SQL + HTML + RTL),
    hostile_chars,
    st.text(alphabet=st.sampled_from(list(CONTROL + ZERO_WIDTH + BIDI + " \t\n<>&;#$")), max_size=30),
    st.from_regex(r"\$[A-Z]{1,5}", fullmatch=True),
)
hostile_text = st.lists(hostile_fragment, max_size=12).map("".join)
huge_text = st.builds(lambda piece, times: piece * times, hostile_fragment.filter(bool), st.integers(1_000, 60_000))
cashtag_flood = st.builds(
    lambda tickers, times: " ".join(f"${t}" for t in tickers) * times,
    st.lists(st.from_regex(r"[A-Z]{1,5}", fullmatch=True), min_size=1, max_size=50),
    st.integers(1, 200),
)
any_text = st.one_of(hostile_text, huge_text, cashtag_flood)

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    offset = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    style = draw(st.sampled_from(["iso", "z", "naive", "junk", "number", "recent"]))
    if style == "iso":
        return aware.isoformat()
    if style == "z":
        return moment.isoformat() + "Z"
    if style == "naive":
        return moment.isoformat()
    if style == "junk":
        return draw(st.text(max_size=30))
    if style == "number":
        return draw(st.one_of(st.integers(), st.floats(allow_nan=False)))
    recent = datetime.now(UTC) - timedelta(seconds=draw(st.integers(-3 * 86_400, 86_400 * 400)))
    return recent.astimezone(timezone(timedelta(minutes=offset))).isoformat()


@st.composite
def hostile_posts(draw: st.DrawFn) -> dict[str, Any]:
    """A post-shaped dict where any field may be hostile, of the wrong type, or missing."""
    post: dict[str, Any] = {
        "id": draw(st.one_of(st.text(min_size=1, max_size=30), hostile_text, json_value)),
        "source": draw(
            st.one_of(st.sampled_from(["file", "rss", "reddit", "RSS ", ""]), st.text(max_size=40), json_value)
        ),
        "text": draw(st.one_of(any_text, json_value)),
        "published_at": draw(timestamps()),
        "author": draw(st.one_of(st.none(), hostile_text, json_value)),
        "url": draw(st.one_of(st.none(), st.just("https://example.com/a?b=1&c=<x>"), hostile_text)),
        "lang": draw(st.one_of(st.none(), st.sampled_from(["en", "zh", "x" * 40]), json_value)),
        "symbols": draw(
            st.one_of(
                st.lists(st.from_regex(r"\$?[A-Za-z]{1,6}", fullmatch=True), max_size=3_000),
                st.lists(json_value, max_size=5),
                json_value,
            )
        ),
        "kind": draw(st.one_of(st.sampled_from(["post", "headline", "tweet"]), json_value)),
        "story_id": draw(st.one_of(st.none(), hostile_text)),
    }
    for name in draw(st.sets(st.sampled_from(sorted(post)), max_size=3)):
        del post[name]
    return post


def encode(post: Any, draw_mode: str, cut: int) -> bytes:
    """JSON bytes of `post`, sometimes truncated or with invalid UTF-8 spliced in."""
    try:
        raw = json.dumps(post, ensure_ascii=draw_mode == "ascii").encode("utf-8", "surrogatepass")
    except ValueError:  # an integer json can't write
        raw = repr(post).encode("utf-8", "surrogatepass")
    if draw_mode == "truncate":
        return raw[: cut % (len(raw) + 1)]
    if draw_mode == "bad-utf8":
        position = cut % (len(raw) + 1)
        return raw[:position] + b"\xff\xc3(\xed\xa0\x80" + raw[position:]
    return raw


def assert_clean(post: Post) -> None:
    """What every accepted post guarantees to the scorer, the store and the dashboards."""
    assert isinstance(post, Post)
    assert post.text and post.text == post.text.strip()
    assert len(post.text) <= DEFAULT_TEXT_MAX_CHARS
    assert not re.search(r"\s\s", post.text), "whitespace is collapsed to single spaces"
    for ch in post.text:
        assert unicodedata.category(ch) not in {"Cc", "Cs", "Co"}, f"control/surrogate {ch!r} kept"
        assert ch not in INVISIBLE, f"invisible {ch!r} kept"
    assert post.id and post.id == post.id.strip()
    assert all(unicodedata.category(ch) not in {"Cc", "Cs"} for ch in post.id)
    assert SOURCE_RE.match(post.source)
    assert post.published_at.tzinfo is not None and post.published_at.utcoffset() == timedelta(0)
    assert EARLIEST_PUBLISHED_AT <= post.published_at <= datetime.now(UTC) + MAX_FUTURE_SKEW
    assert len(post.symbols) <= MAX_SYMBOLS
    assert len(set(post.symbols)) == len(post.symbols)
    assert all(SYMBOL_RE.match(s) for s in post.symbols)
    for value in (post.author, post.url, post.lang, post.story_id):
        assert value is None or all(unicodedata.category(ch) not in {"Cc", "Cs"} for ch in value)
    # It can go on the bus and into ClickHouse (valid UTF-8), and the scorer reads it back.
    wire = post.to_json()
    wire.decode("utf-8")
    again = parse_or_reason(wire)
    if isinstance(again, Post):
        assert (again.id, again.source, again.symbols, again.kind) == (post.id, post.source, post.symbols, post.kind)
        assert abs(again.published_at - post.published_at) < timedelta(milliseconds=1)
        if "<" not in post.text and "&" not in post.text:
            assert again.text == post.text, "cleaning clean text changes nothing"


def parse_or_reason(raw: bytes | str) -> Post | str:
    """parse_post, with the one exception it may raise turned into its reason."""
    try:
        post = parse_post(raw)
    except InvalidPost as exc:
        assert isinstance(exc.reason, str) and exc.reason.strip(), "a dead letter needs a reason"
        return exc.reason
    assert isinstance(post, Post)
    return post


# --------------------------------------------------------------------------------------------
# moodwire.schema.parse_post


@PROPERTY_SETTINGS
@given(st.binary(max_size=2_000))
@example(b"\xff\xfe\x00\x00")
@example(b'{"id": "a", "source": "file", "text": "\xed\xa0\x80", "published_at": "2026-01-01T00:00:00Z"}')
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'{"id": "a", "n": ' + b"9" * 5_000 + b"}")
@example(b"\x00" * 10)
@example(b'{"id": "a", "source": "file", "text": "<![foo bar", "published_at": "2026-01-01T00:00:00Z"}')
@example(b'{"id": "a", "source": "file", "text": "x", "published_at": "0001-01-01T00:00:00+01:00"}')
def test_arbitrary_bytes_are_a_post_or_a_reason(raw: bytes) -> None:
    result = parse_or_reason(raw)
    if isinstance(result, Post):
        assert_clean(result)


@PROPERTY_SETTINGS
@given(hostile_posts(), st.sampled_from(["plain", "ascii", "truncate", "bad-utf8"]), st.integers(0, 10**6))
def test_hostile_posts_are_a_clean_post_or_a_reason(post: dict[str, Any], mode: str, cut: int) -> None:
    raw = encode(post, mode, cut)
    result = parse_or_reason(raw)
    if isinstance(result, Post):
        assert_clean(result)
    # The same document handed over as text (a file line) behaves the same way.
    text_result = parse_or_reason(raw.decode("utf-8", "surrogateescape"))
    if isinstance(text_result, Post):
        assert_clean(text_result)


def base_post(**changes: Any) -> dict[str, Any]:
    post: dict[str, Any] = {
        "id": "t:1",
        "source": "file",
        "text": "$AAPL beats estimates",
        "published_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    }
    post.update(changes)
    return post


@PROPERTY_SETTINGS
@given(timestamps())
@example("0001-01-01T00:00:00+01:00")
@example("9999-12-31T23:59:59-01:00")
@example("1999-12-31T23:59:59Z")
@example("2000-01-01T00:00:00Z")
@example("1970-01-01T00:00:00Z")
def test_timestamps_outside_2000_to_tomorrow_are_refused(value: Any) -> None:
    before = datetime.now(UTC)
    result = parse_or_reason(json.dumps(base_post(published_at=value)))
    after = datetime.now(UTC)
    if isinstance(result, Post):
        assert EARLIEST_PUBLISHED_AT <= result.published_at <= after + MAX_FUTURE_SKEW
    else:
        assert result.startswith("published_at"), result
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
            except (ValueError, OverflowError):
                return
            if value.endswith("Z") or datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo:
                assert moment < EARLIEST_PUBLISHED_AT or moment > before + MAX_FUTURE_SKEW, value


@PROPERTY_SETTINGS
@given(huge_text)
def test_huge_texts_are_capped(text: str) -> None:
    result = parse_or_reason(json.dumps(base_post(text=text), ensure_ascii=False))
    if isinstance(result, Post):
        assert_clean(result)
    raw = json.dumps(base_post(text=text), ensure_ascii=False).encode("utf-8", "surrogatepass")
    bytes_result = parse_or_reason(raw)
    if len(raw) > MAX_MESSAGE_BYTES:
        assert isinstance(bytes_result, str) and "limit" in bytes_result


@PROPERTY_SETTINGS
@given(st.lists(st.from_regex(r"\$?[A-Za-z][A-Za-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=5_000))
def test_thousands_of_symbols_keep_the_first_twenty(symbols: list[str]) -> None:
    result = parse_or_reason(json.dumps(base_post(symbols=symbols)))
    assert isinstance(result, Post), result
    expected = list(dict.fromkeys(s.lstrip("$").upper() for s in symbols))[:MAX_SYMBOLS]
    assert list(result.symbols) == expected


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.one_of(st.sampled_from(SQL), st.text(alphabet="abc xyz'\";-%()=*", max_size=20)), min_size=1, max_size=6
    )
)
def test_sql_looking_text_is_kept_as_data(parts: list[str]) -> None:
    text = " ".join(parts)
    result = parse_or_reason(json.dumps(base_post(text=text)))
    expected = " ".join(text.split())
    if not expected:
        assert isinstance(result, str) and result.startswith("text")
        return
    assert isinstance(result, Post), result
    assert result.text == expected  # verbatim: quotes, semicolons and comments are data


@PROPERTY_SETTINGS
@given(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<>&"), max_size=40),
    st.text(max_size=20, alphabet="abcdefghij"),
)
def test_script_and_style_contents_never_reach_the_text(words: str, payload: str) -> None:
    marker = f"PAYLOAD{payload}Q"
    text = f"{words} <script>{marker}</script><style>{marker}</style> <b>$AAPL</b> up"
    result = parse_or_reason(json.dumps(base_post(text=text)))
    assert isinstance(result, Post), result
    assert marker not in result.text
    assert "<" not in result.text.replace(words.strip(), "") and "AAPL" in result.text
    assert_clean(result)


@PROPERTY_SETTINGS
@given(
    st.lists(st.sampled_from(list(CONTROL + ZERO_WIDTH + BIDI)), max_size=20), st.sampled_from(RTL + ["plain words"])
)
def test_invisible_and_control_characters_go_and_rtl_text_stays(noise: list[str], words: str) -> None:
    text = "".join(noise[: len(noise) // 2]) + words + "".join(noise[len(noise) // 2 :])
    result = parse_or_reason(json.dumps(base_post(text=text)))
    visible = "".join(ch for ch in words if ch not in INVISIBLE)
    assert isinstance(result, Post), result
    assert result.text == visible.strip()
    # An id may not carry control characters at all: they would break logs and the dashboards.
    if any(unicodedata.category(ch) == "Cc" and not ch.isspace() for ch in noise):
        bad_id = parse_or_reason(json.dumps(base_post(id="a" + "".join(noise) + "b")))
        assert isinstance(bad_id, str) and bad_id.startswith("id")


# --------------------------------------------------------------------------------------------
# The ingest side: a file line -> FileSource -> Normalizer


@cache
def _linker() -> Any:
    from ingest.tickers import SymbolLinker, SymbolTable

    return SymbolLinker(SymbolTable.load())


def normalizer() -> Any:
    from ingest.normalize import Normalizer

    return Normalizer(linker=_linker())


def check_outcome(outcome: Any) -> None:
    from ingest.normalize import Accepted, Duplicate, Rejected
    from moodwire.dead_letters import OversizedOriginal

    assert isinstance(outcome, (Accepted, Duplicate, Rejected))
    if isinstance(outcome, Rejected):
        # an item over the size limit is kept as its head, size and hash, never whole
        assert isinstance(outcome.raw, (bytes, OversizedOriginal))
        assert isinstance(outcome.reason, str) and outcome.reason.strip()
    if isinstance(outcome, Accepted):
        assert_clean(outcome.post)
        assert outcome.post.story_id
        # What ingest accepted, the scorer accepts too: nothing is dead-lettered twice over.
        if "<" not in outcome.post.text and "&" not in outcome.post.text:
            assert isinstance(parse_or_reason(outcome.post.to_json()), Post)


@PROPERTY_SETTINGS
@given(hostile_posts())
def test_normalizer_accepts_cleanly_or_rejects_with_a_reason(post: dict[str, Any]) -> None:
    from ingest.sources import RawItem

    data = post if isinstance(post, dict) else {}
    item = RawItem(str(data.get("source", "file")), data, raw=encode(post, "plain", 0))
    check_outcome(normalizer().normalize(item, datetime.now(UTC)))


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.one_of(
            st.builds(
                encode,
                hostile_posts(),
                st.sampled_from(["plain", "ascii", "truncate", "bad-utf8"]),
                st.integers(0, 10**6),
            ),
            st.binary(max_size=200),
            st.sampled_from([b"[" * 50_000, b'{"n": ' + b"9" * 5_000 + b"}", b"null", b"[]", b'"text"', b"{}"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_hostile_file_never_stops_ingest(lines: list[bytes]) -> None:
    from ingest.file_source import FileSource

    # One line per item: a raw newline inside a hostile line would just make two lines.
    flat = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hostile.jsonl"
        path.write_bytes(b"\n".join(flat) + b"\n")
        source = FileSource(path)
        seen = 0
        worker = normalizer()
        while True:
            batch = source.next_batch()
            if batch.exhausted:
                break
            for item in batch.items:
                seen += 1
                check_outcome(worker.normalize(item, datetime.now(UTC)))
        source.close()
    assert seen == sum(1 for line in flat if line.strip())


def test_control_pattern_is_exactly_the_cc_cs_co_categories() -> None:
    from moodwire.schema import _CONTROL_RE

    pattern = re.compile(_CONTROL_RE.pattern)
    for code in range(0x110000):
        ch = chr(code)
        expected = unicodedata.category(ch) in {"Cc", "Cs", "Co"}
        assert bool(pattern.fullmatch(ch)) == expected, hex(code)
