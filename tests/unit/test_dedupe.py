"""Exact and near-duplicate detection."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.dedupe import DuplicateKind, ExactDeduper, NearDuplicateIndex, normalize_text, shingles

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- normalisation ---------------------------------------------------------------------------

def test_normalize_drops_case_punctuation_spacing_and_links() -> None:
    a = normalize_text("Fed HOLDS rates steady!!  https://example.com/a?utm=x")
    b = normalize_text("fed holds rates — steady. https://other.example/b")
    assert a == b == "fed holds rates steady"


def test_normalize_keeps_links_when_there_is_nothing_else() -> None:
    assert normalize_text("https://example.com/a") == "https://example.com/a"
    assert normalize_text("https://example.com/a") != normalize_text("https://example.com/b")


def test_normalize_folds_full_width_characters() -> None:
    assert normalize_text("ＡＰＰＬＥ beats") == "apple beats"


def test_shingles() -> None:
    assert shingles("Fed holds rates steady", 2) == {b"fed holds", b"holds rates", b"rates steady"}
    assert shingles("Fed holds", 3) == {b"fed holds"}
    assert shingles("!!!", 2) == set()


# --- ExactDeduper ----------------------------------------------------------------------------

def test_exact_new_same_id_same_text() -> None:
    dedupe = ExactDeduper()
    assert dedupe.check("rss:1", "Apple beats estimates") is DuplicateKind.NEW
    assert dedupe.check("rss:1", "Apple beats estimates") is DuplicateKind.SAME_ID
    assert dedupe.check("reddit:9", "APPLE beats estimates!  https://t.co/x") is DuplicateKind.SAME_TEXT
    assert dedupe.check("reddit:9", "APPLE beats estimates!  https://t.co/x") is DuplicateKind.SAME_ID  # now known
    assert dedupe.check("rss:2", "Apple misses estimates") is DuplicateKind.NEW


def test_exact_same_id_with_another_text_is_told_apart_and_the_id_keeps_its_first_text() -> None:
    dedupe = ExactDeduper()
    assert dedupe.check("rss:1", "Apple beats estimates") is DuplicateKind.NEW
    assert dedupe.check("rss:1", "a different text, same id") is DuplicateKind.SAME_ID_DIFFERENT_TEXT
    assert dedupe.check("rss:1", "Apple beats estimates") is DuplicateKind.SAME_ID
    assert dedupe.check("rss:1", "a different text, same id") is DuplicateKind.SAME_ID_DIFFERENT_TEXT
    # The same words are not the same text: the copy that was dropped differs, so it is reported.
    assert dedupe.check("rss:1", "Apple beats estimates!") is DuplicateKind.SAME_ID_DIFFERENT_TEXT


def test_exact_texts_without_words_are_not_all_the_same() -> None:
    dedupe = ExactDeduper()
    assert dedupe.check("a", "🚀🚀🚀") is DuplicateKind.NEW
    assert dedupe.check("b", "🚀🚀🚀") is DuplicateKind.NEW
    assert dedupe.check("c", "https://example.com/x") is DuplicateKind.NEW
    assert dedupe.check("d", "https://example.com/x") is DuplicateKind.SAME_TEXT


def test_exact_memory_is_bounded_lru() -> None:
    dedupe = ExactDeduper(max_items=2)
    assert dedupe.check("1", "one") is DuplicateKind.NEW
    assert dedupe.check("2", "two") is DuplicateKind.NEW
    assert dedupe.check("1", "one") is DuplicateKind.SAME_ID      # 1 is now the most recent
    assert dedupe.check("3", "three") is DuplicateKind.NEW        # evicts 2, the least recent
    assert len(dedupe) == 2
    assert dedupe.check("1", "one") is DuplicateKind.SAME_ID
    assert dedupe.check("2", "two") is DuplicateKind.NEW          # forgotten: id and text


def test_exact_rejects_empty_memory() -> None:
    with pytest.raises(ValueError):
        ExactDeduper(max_items=0)


# --- NearDuplicateIndex ----------------------------------------------------------------------

STORY = "Amazon to cut 14,000 corporate jobs in latest restructuring as AI reshapes its workforce"
REWORDED = "Amazon to cut 14,000 corporate jobs in its latest restructuring as AI reshapes its workforce - Reuters"
OTHER = "Fed holds rates steady and signals two cuts this year as inflation cools"


def test_reworded_story_joins_first_posts_cluster() -> None:
    index = NearDuplicateIndex()
    assert index.add("rss:a", STORY, at(0)) == "rss:a"
    assert index.add("mastodon:b", REWORDED, at(5)) == "rss:a"
    assert index.add("rss:c", OTHER, at(6)) == "rss:c"
    assert index.add("reddit:d", STORY.upper(), at(7)) == "rss:a"
    assert len(index) == 4


def test_cluster_id_is_the_first_post_even_via_a_later_member() -> None:
    index = NearDuplicateIndex()
    words = [f"w{i}" for i in range(30)]
    first = " ".join(words)
    second = " ".join(words[:24] + ["x1", "x2", "x3", "x4", "x5", "x6"])     # close to first
    third = " ".join(words[:24] + ["x1", "x2", "x3", "x4", "x5", "y6"])      # closest to second
    assert index.add("1", first, at(0)) == "1"
    assert index.add("2", second, at(1)) == "1"
    assert index.add("3", third, at(2)) == "1"


def test_replaying_a_post_changes_nothing() -> None:
    index = NearDuplicateIndex()
    index.add("rss:a", STORY, at(0))
    index.add("rss:b", REWORDED, at(1))
    assert index.add("rss:b", REWORDED, at(1)) == "rss:a"
    assert index.add("rss:b", "whatever text", at(500)) == "rss:a"
    assert len(index) == 2
    assert index.cluster_of("rss:b") == "rss:a"
    assert index.cluster_of("never-seen") is None


def test_time_window_evicts_old_posts() -> None:
    index = NearDuplicateIndex(window=timedelta(hours=24))
    index.add("day1", STORY, at(0))
    assert index.add("day2", REWORDED, at(25 * 60)) == "day2"  # the first post is out of window
    assert index.cluster_of("day1") is None
    assert len(index) == 1


def test_post_older_than_the_window_is_not_indexed() -> None:
    index = NearDuplicateIndex(window=timedelta(hours=1))
    index.add("now", OTHER, at(600))
    assert index.add("late", STORY, at(0)) == "late"
    assert index.cluster_of("late") is None
    # ...and does not capture later copies of its story.
    assert index.add("copy", REWORDED, at(601)) == "copy"


def test_threshold_is_configurable() -> None:
    strict = NearDuplicateIndex(threshold=0.95)
    strict.add("a", STORY, at(0))
    assert strict.add("b", REWORDED, at(1)) == "b"
    assert strict.add("c", STORY + "!", at(2)) == "a"  # identical words still join


def test_max_items_caps_memory_oldest_first() -> None:
    index = NearDuplicateIndex(max_items=2)
    index.add("1", "alpha beta gamma delta", at(0))
    index.add("2", "epsilon zeta eta theta", at(1))
    index.add("3", "iota kappa lambda mu", at(2))
    assert len(index) == 2
    assert index.cluster_of("1") is None
    assert index.add("4", "alpha beta gamma delta", at(3)) == "4"


def test_empty_text_is_its_own_cluster() -> None:
    index = NearDuplicateIndex()
    assert index.add("a", "🚀🚀", at(0)) == "a"
    assert index.add("b", "🚀🚀", at(1)) == "b"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        NearDuplicateIndex().add("a", STORY, datetime(2026, 3, 2, 14, 30))


@pytest.mark.parametrize(
    "kwargs", [{"threshold": 0.0}, {"threshold": 1.5}, {"window": timedelta(0)}, {"max_items": 0}]
)
def test_invalid_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NearDuplicateIndex(**kwargs)


# Several outlets' versions of the same stories, interleaved with unrelated ones on the same
# subjects. Every version must land in its story's cluster and no two stories may merge.
STORIES: dict[str, list[str]] = {
    "fed": [
        "Fed holds rates steady, signals two cuts this year",
        "Fed holds rates steady and signals two cuts this year - CNBC",
        "BREAKING: Fed holds rates steady, signals two cuts this year",
    ],
    "nvda": [
        "Nvidia becomes first company to close above $4 trillion market value",
        "Nvidia becomes the first company to close above $4 trillion in market value",
    ],
    "boeing": [
        "Boeing CEO to step down at end of year amid 737 MAX crisis",
        "BREAKING: Boeing CEO to step down at end of year amid 737 MAX crisis",
        "Boeing CEO to step down at end of year amid 737 MAX crisis, company says",
    ],
    "amzn": [
        "Amazon to cut 14,000 corporate jobs in latest restructuring",
        "Amazon to cut 14,000 corporate jobs in latest restructuring push, sources say",
    ],
    "fed-cut": ["Fed cuts rates by half a point in surprise move, first cut since 2020"],
    "tsla": ["Tesla recalls 125,000 vehicles over seat belt warning issue"],
    "ford": ["Ford recalls 700,000 SUVs over fuel injector cracks"],
    "apple": ["Apple shares slip after iPhone sales disappoint in China"],
    "apple-india": ["Apple shares rise after iPhone sales beat in India"],
}


def test_clusters_on_a_small_sample_match_the_stories() -> None:
    index = NearDuplicateIndex()
    posts = [(story, n, text) for story, texts in STORIES.items() for n, text in enumerate(texts)]
    # Interleave: the versions of one story arrive apart, as they do from different feeds.
    posts.sort(key=lambda post: (post[1], post[0]))
    cluster_by_story: dict[str, set[str]] = {}
    for minute, (story, n, text) in enumerate(posts):
        cluster = index.add(f"{story}-{n}", text, at(minute))
        cluster_by_story.setdefault(story, set()).add(cluster)
    for story, clusters in cluster_by_story.items():
        assert clusters == {f"{story}-0"}, story
