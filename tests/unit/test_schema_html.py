"""validate_post strips HTML before it caps the text: a long post that is all markup is refused,
and words after a long run of markup are kept (cutting first once left half a tag, "</")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from moodwire.schema import DEFAULT_TEXT_MAX_CHARS, InvalidPost, validate_post


def post(text: str) -> dict[str, str]:
    return {"id": "h:1", "source": "rss", "text": text, "published_at": datetime.now(UTC).isoformat()}


@pytest.mark.parametrize("markup", ["<p></p>", "<div><br></div>", "<span class='x'></span>"])
def test_a_long_post_of_nothing_but_markup_is_refused(markup: str) -> None:
    text = markup * (4 * DEFAULT_TEXT_MAX_CHARS // len(markup) + 50)
    assert len(text) > 16_000
    with pytest.raises(InvalidPost, match="^text: empty after removing HTML"):
        validate_post(post(text))


def test_words_after_a_long_run_of_markup_are_kept() -> None:
    text = "<p></p>" * 5_000 + "<p>Boeing halts 737 MAX deliveries</p>"
    assert validate_post(post(text)).text == "Boeing halts 737 MAX deliveries"


def test_the_capped_text_is_still_capped() -> None:
    text = "<b>" + "word " * 5_000 + "</b>"
    cleaned = validate_post(post(text)).text
    assert len(cleaned) <= DEFAULT_TEXT_MAX_CHARS and cleaned.startswith("word word") and "<" not in cleaned
