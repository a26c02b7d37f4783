"""Language detection: ISO 639-1 codes, and "und" rather than a guess on too little text."""

from __future__ import annotations

import re

import pytest

from ingest.language import UNDETERMINED, detect_language, has_enough_text


@pytest.mark.parametrize(
    "text",
    [
        "buy the dip",
        "to the moon",
        "Apple shares slip after iPhone sales disappoint in China",
        "$TSLA robotaxi event was all hype no substance imo",
        "Fed holds rates steady, signals two cuts this year",
        # Proper nouns pull these toward German or Dutch; the English prior keeps them English.
        "BMW and Mercedes-Benz warn on margins as China sales drop",
        "Unilever's Dove maker cuts 7,500 jobs",
        "Uber and Lyft to test Baidu robotaxis in Europe",
    ],
)
def test_english(text: str) -> None:
    assert detect_language(text) == "en"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Siemens-Aktie steigt nach starken Zahlen", "de"),
        ("Volkswagen und BMW senken die Prognose für das laufende Jahr", "de"),
        ("Les actions LVMH reculent après un trimestre décevant", "fr"),
        ("Las acciones de Inditex suben tras resultados", "es"),
        ("Il titolo Stellantis crolla in borsa", "it"),
        ("As ações da Petrobras caíram 3% hoje", "pt"),
        ("Акции Сбербанка выросли на бирже", "ru"),
        ("茅台股价大跌", "zh"),
        ("トヨタの株価が上昇", "ja"),
        ("삼성전자 주가 상승", "ko"),
        ("Saham BBRI naik tajam hari ini karena laporan keuangan bagus", "id"),
    ],
)
def test_other_languages(text: str, code: str) -> None:
    assert detect_language(text) == code


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "$TSLA 🚀🚀",
        "$AAPL $MSFT $NVDA",
        "$GME",
        "lol",
        "🚀🚀🚀",
        "https://t.co/abc123",
        "12345 67890 +3.5%",
        "@elonmusk #doge $DOGE",
        "great earnings",          # two words: too few to tell
        "$NVDA calls $AMD puts",   # the words left are two
    ],
)
def test_too_little_text_is_undetermined(text: str) -> None:
    assert detect_language(text) == UNDETERMINED
    assert not has_enough_text(text)


def test_codes_are_two_lower_case_letters_or_und() -> None:
    samples = ["buy the dip", "茅台股价大跌", "$GME", "Les actions LVMH reculent après un trimestre décevant"]
    for text in samples:
        code = detect_language(text)
        assert code == UNDETERMINED or re.fullmatch(r"[a-z]{2}", code)


def test_cashtags_and_links_do_not_count_as_words() -> None:
    assert has_enough_text("buy the dip $SPY https://t.co/x")
    assert not has_enough_text("$SPY $QQQ $IWM https://t.co/x #stocks")


def test_long_text_is_judged_by_its_opening() -> None:
    text = "Les actions LVMH reculent après un trimestre décevant. " * 200 + "buy the dip " * 500
    assert detect_language(text) == "fr"
