"""Normalization outcomes and the spam/bot signals that keep a post out of sentiment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingest.normalize import Accepted, Duplicate, Normalizer, Rejected
from ingest.sources import RawItem
from ingest.spam import LINK_ONLY, RATE, REPEATED_TEXT, SpamDetector, SpamSettings, is_link_only

T0 = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)


def item(post_id: str, text: str, author: str | None = "ann", minutes: float = 0, source: str = "reddit") -> RawItem:
    data = {"id": post_id, "source": source, "text": text, "published_at": (T0 + timedelta(minutes=minutes)).isoformat()}
    if author:
        data["author"] = author
    return RawItem(source, data)


def test_link_only_posts_are_recognised() -> None:
    assert is_link_only("https://t.example/abc $TSLA")
    assert is_link_only("www.example.com")
    assert not is_link_only("$TSLA guidance cut https://t.example/abc")


def test_same_author_repeating_a_text_is_flagged_other_outlets_are_one_story() -> None:
    normalizer = Normalizer(detect_language=False)
    first = normalizer.normalize(item("r1", "Boeing halts 737 MAX deliveries after FAA order", author="wire1"))
    repeat = normalizer.normalize(item("r2", "Boeing halts 737 MAX deliveries after FAA order", author="wire1", minutes=1))
    other = normalizer.normalize(item("r3", "Boeing halts 737 MAX deliveries after FAA order", author="wire2", source="rss"))
    assert isinstance(first, Accepted) and first.post.flags == ()
    assert isinstance(repeat, Accepted) and repeat.post.flags == (REPEATED_TEXT,)
    assert isinstance(other, Accepted) and other.post.flags == ()
    assert other.post.story_id == first.post.story_id == "r1"
    assert first.post.symbols == ("BA",)


def test_the_same_id_is_a_duplicate_and_bad_items_are_rejected_with_a_reason() -> None:
    normalizer = Normalizer(detect_language=False)
    assert isinstance(normalizer.normalize(item("d1", "Apple beats estimates")), Accepted)
    assert normalizer.normalize(item("d1", "Apple beats estimates")) == Duplicate("d1", "same_id")
    # Another text under a known id is dropped too, but the dropped copy is kept for a dead letter.
    edited = RawItem("reddit", item("d1", "Apple beats estimates, again").data, raw=b'{"id": "d1", "edited": 1}')
    assert normalizer.normalize(edited) == Duplicate("d1", "same_id_different_text", dropped=edited.raw)
    rejected = normalizer.normalize(item("d2", "<p>   </p>"))
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("text: empty")
    zero_time = RawItem("file", {"id": "d3", "source": "file", "text": "hi there", "published_at": 0})
    assert isinstance(normalizer.normalize(zero_time), Rejected)


def test_an_author_posting_faster_than_a_person_is_flagged() -> None:
    detector = SpamDetector(SpamSettings(max_posts_per_author=5, rate_window=timedelta(minutes=1)))
    flags = [detector.flags("bot", f"post number {i} about stocks", T0 + timedelta(seconds=i)) for i in range(7)]
    assert [RATE in f for f in flags] == [False] * 5 + [True] * 2
    later = detector.flags("bot", "a calm post much later", T0 + timedelta(minutes=10))
    assert RATE not in later
    assert detector.flags(None, "https://x.example", T0) == (LINK_ONLY,)


def test_an_item_over_the_message_limit_is_refused_before_it_is_parsed() -> None:
    from moodwire.dead_letters import MAX_MESSAGE_BYTES

    raw = b'{"id": "huge", "text": "' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    data = {"id": "huge", "source": "reddit", "text": "x" * MAX_MESSAGE_BYTES, "published_at": T0.isoformat()}
    outcome = Normalizer(detect_language=False).normalize(RawItem("reddit", data, raw=raw))
    assert outcome == Rejected(raw, f"item is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
