"""Ticker linking: cashtags, names, bare tickers, and the traps that must not link."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ingest.tickers import SymbolLinker, SymbolTable, load_stoplist

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table() -> SymbolTable:
    return SymbolTable.load()


@pytest.fixture(scope="module")
def linker(table: SymbolTable) -> SymbolLinker:
    return SymbolLinker(table)


# --- cashtags ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$AAPL and $brk.b are up", ["AAPL", "BRK.B"]),
        ("$BRK-B and $JPM carrying my account", ["BRK.B", "JPM"]),
        ("$BTC.X holding support", ["BTC"]),
        ("$tsla to the moon", ["TSLA"]),
        ("$ALL reports cat losses next week", ["ALL"]),
        ("$IT got smoked", ["IT"]),
        ("$ZZZZ pump incoming", ["ZZZZ"]),  # unknown but deliberate: capitals, 1-5 letters
        ("$AAPL's chart looks heavy", ["AAPL"]),
    ],
)
def test_cashtags(linker: SymbolLinker, text: str, expected: list[str]) -> None:
    assert linker.link(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "made $100 today on a scalp",
        "Just got a $5k bonus",
        "$10B buyback announced",
        "$1.5 trillion in stimulus",
        "$lol this market is a casino",   # unknown and lower case: not a ticker
        "$TOOLONG is not a ticker",
    ],
)
def test_dollar_amounts_and_junk_are_not_cashtags(linker: SymbolLinker, text: str) -> None:
    assert linker.link(text) == []


def test_btc_usd_pair_keeps_only_the_coin(linker: SymbolLinker) -> None:
    assert linker.link("$BTC/$USD chart") == ["BTC"]  # currencies are not instruments


# --- the same ticker three ways (issue 8) ----------------------------------------------------

@pytest.mark.parametrize(
    "text",
    ["$CAT at all time highs", "Caterpillar raises outlook", "CAT stock jumps", "shares of CAT fell",
     "Caterpillar (NYSE: CAT) reported results"],
)
def test_caterpillar_three_ways(linker: SymbolLinker, text: str) -> None:
    assert linker.link(text) == ["CAT"]


@pytest.mark.parametrize(
    "text",
    ["The CAT scan came back clear", "saw a CAT 320 excavator on site", "my CAT knocked over a plant"],
)
def test_cat_the_word(linker: SymbolLinker, text: str) -> None:
    assert linker.link(text) == []


# --- names and aliases -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Google and Facebook face antitrust suit", ["GOOGL", "META"]),
        ("Alphabet and Meta lead the rally", ["GOOGL", "META"]),
        ("JPMorgan Chase profit jumps", ["JPM"]),
        ("Bank of America sets aside more for bad loans", ["BAC"]),
        ("Berkshire trims Apple stake", ["BRK.B", "AAPL"]),
        ("Johnson & Johnson wins talc ruling", ["JNJ"]),
        ("AT&T adds subscribers", ["T"]),
        ("Bitcoin tops $120,000; Ethereum lags", ["BTC", "ETH"]),
        ("S&P 500 closes at a record", ["SPX"]),
        ("the Dow fell 300 points", ["DJI"]),
        ("Dow Inc to cut 1,500 jobs", ["DOW"]),
        ("iShares Bitcoin Trust sees record inflow", ["IBIT"]),  # the longer name wins
        ("Nestlé cuts sales forecast", ["NESN.SW"]),
        ("Siemens to cut 6,000 jobs", ["SIE.DE"]),
        ("#Tesla owners, how is FSD treating you?", ["TSLA"]),
        ("Apple's services revenue hits record", ["AAPL"]),
    ],
)
def test_names_and_aliases(linker: SymbolLinker, text: str, expected: list[str]) -> None:
    assert linker.link(text) == expected


def test_order_of_first_mention_across_kinds_without_repeats(linker: SymbolLinker) -> None:
    text = "Microsoft beat; $AAPL lagged and Google was flat. MSFT calls, $AAPL puts, Apple again"
    assert linker.link(text) == ["MSFT", "AAPL", "GOOGL"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Target cuts annual sales forecast", ["TGT"]),
        ("Ford recalls 700,000 SUVs", ["F"]),
        ("Delta cancels thousands of flights", ["DAL"]),
        ("Visa quarterly revenue beats", ["V"]),
        ("Marriott and Hilton lower forecasts", ["MAR", "HLT"]),  # listed next to a company
        ("Hit my savings target for the year", []),
        ("The Delta variant is spreading fast", []),
        ("Need a visa to travel to Brazil?", []),
        ("Our Zoom call got cut off twice", []),
        ("Harrison Ford to star in new film", []),
        ("Paris Hilton launches a fragrance", []),
        ("Amazon rainforest deforestation falls", []),
        ("The Oracle of Omaha speaks", []),
    ],
)
def test_context_aliases_and_blocked_phrases(linker: SymbolLinker, text: str, expected: list[str]) -> None:
    assert linker.link(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I just baked an apple pie",
        "Apple pie and coffee for breakfast",
        "An apple a day keeps the doctor away",
        "picked apples in the orchard this weekend",
        "shell casings found at the scene",
        "the meta here is to buy every dip",
    ],
)
def test_lowercase_words_and_apple_pie(linker: SymbolLinker, text: str) -> None:
    assert linker.link(text) == []


def test_lowercase_brand_needs_market_context(linker: SymbolLinker) -> None:
    assert linker.link("sold all my nvidia shares today") == ["NVDA"]
    assert linker.link("nvidia driver update broke my game") == []


@pytest.mark.parametrize(
    "text",
    ["Tim Cook meets officials in Beijing", "Jensen Huang signs a fan's laptop",
     "Elon Musk says he will step back", "Warren Buffett's annual letter", "Jamie Dimon warns"],
)
def test_people_are_not_companies(linker: SymbolLinker, text: str) -> None:
    assert linker.link(text) == []


# --- bare tickers ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NVDA up 4% premarket on export news", ["NVDA"]),
        ("Bought 50 shares of PLTR at 142", ["PLTR"]),
        ("sold AMD and rotated into AVGO after earnings", ["AMD", "AVGO"]),
        ("Apple Inc. (NASDAQ:AAPL) shares rose", ["AAPL"]),
        ("Gartner, Inc. (NYSE: IT) cut its outlook", ["IT"]),
        ("Allstate (NYSE:ALL) posts losses", ["ALL"]),
        ("GM shares pop on buyback news", ["GM"]),
        ("Should I buy NOW stock before earnings?", ["NOW"]),
        ("my top 3 for 2026: HOOD, SOFI, AFRM", ["HOOD", "SOFI", "AFRM"]),  # a watchlist
        ("QQQ broke its 50 day moving average", ["QQQ"]),  # ETFs are not words
        ("bought some BTC and ETH on the dip", ["BTC", "ETH"]),
        ("$TSLA and RIVN both weak", ["TSLA", "RIVN"]),  # a cashtag is context for the rest
    ],
)
def test_bare_tickers_with_evidence(linker: SymbolLinker, text: str, expected: list[str]) -> None:
    assert linker.link(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "MSFT",                                           # no evidence at all
        "ALL of my friends are panic selling",
        "IT department says the outage will be fixed",
        "The CEO announced a 10% layoff",
        "ALL of IT was the CEO's fault",
        "Turn ON notifications",
        "A new record for US retail sales",
        "ARE we in a bubble?",
        "did my DD on this one, EPS growth looks solid",
        "YOLO'd my savings into calls",
        "USA manufacturing PMI comes in hot",
        "AI is eating software and the market knows it",
        "BIG news coming tomorrow",
        "NOW is the time to buy, before earnings",
        "WHY ARE WE STILL TALKING ABOUT THIS",
        "BUY THE DIP NOW OR REGRET IT FOREVER",
        "DOGE says it cut $50 billion in federal contracts",
        "GM crops remain controversial",
        "GE appliances are built in Louisville",
        "COVID-19 cases rise",
        "Q2 GDP revision shows stronger spending",
        "Ford F-150 production paused",  # "F" is never a bare ticker
    ],
)
def test_stopwords_shouting_and_codes_do_not_link(linker: SymbolLinker, text: str) -> None:
    assert linker.link(text) == []


def test_bare_ticker_inside_a_name_is_not_read_as_ticker(linker: SymbolLinker) -> None:
    # BYD is Boyd Gaming's NYSE ticker, but here it names the carmaker.
    assert linker.link("BYD overtakes Tesla in global EV sales") == ["1211.HK", "TSLA"]


# --- limits ----------------------------------------------------------------------------------

def test_cap_on_symbols_per_text(table: SymbolTable) -> None:
    tickers = [s for s in table.symbols if s.isalpha() and len(s) >= 3][:2000]
    spam = " ".join("$" + s for s in tickers)
    linked = SymbolLinker(table).link(spam)
    assert linked == tickers[:20]
    assert SymbolLinker(table, max_symbols=3).link(spam) == tickers[:3]


def test_max_symbols_must_be_positive(table: SymbolTable) -> None:
    with pytest.raises(ValueError):
        SymbolLinker(table, max_symbols=0)


def test_empty_and_plain_texts(linker: SymbolLinker) -> None:
    assert linker.link("") == []
    assert linker.link("Just finished my first marathon!! legs are dead") == []


# --- the shipped table and stop-list ---------------------------------------------------------

def test_shipped_table_is_consistent(table: SymbolTable) -> None:
    assert len(table) > 5000
    assert {"AAPL", "CAT", "GOOGL", "META", "BRK.B", "BTC", "ETH", "SPX", "SPY"} <= set(table.symbols)
    assert table.aliases["Caterpillar"] == "CAT"
    assert table.aliases["Google"] == table.aliases["Alphabet"] == "GOOGL"
    assert table.aliases["Facebook"] == table.aliases["Meta"] == "META"
    assert table.symbols["BTC"].kind == "crypto" and table.symbols["SPY"].kind == "etf"
    for info in table.symbols.values():
        assert info.kind in {"equity", "crypto", "etf", "index"}
        assert info.source, f"{info.symbol} has no source"
    for alias, symbol in {**table.aliases, **table.context_aliases}.items():
        assert symbol in table.symbols, alias


def test_shipped_stoplist_sections(table: SymbolTable) -> None:
    stop = table.stoplist
    assert {"ALL", "IT", "CEO", "A", "ARE", "DD", "YOLO", "EPS", "USA", "AI"} <= stop.cashtag_only
    assert {"CAT", "NOW", "ON"} <= stop.stock_word
    assert "Harrison Ford" in stop.not_a_company
    assert not stop.cashtag_only & stop.stock_word


def test_load_from_explicit_paths(tmp_path: Path) -> None:
    symbols = tmp_path / "symbols.csv"
    with symbols.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["symbol", "name", "aliases", "context_aliases", "exchange", "kind", "source"])
        writer.writerow(["ACME", "Acme Corp", "Acme Corp|Acme", "", "NYSE", "equity", "test"])
        writer.writerow(["ROAD", "Roadrunner", "", "Roadrunner", "NYSE", "equity", "test"])
    stoplist = tmp_path / "stop.txt"
    stoplist.write_text("# test\n[cashtag-only]\nROAD\n[stock-word]\n[not-a-company]\nAcme Corp anvils\n")
    linker = SymbolLinker(SymbolTable.load(symbols, stoplist))
    assert linker.link("Acme beats estimates; ROAD shares flat") == ["ACME"]
    assert linker.link("Roadrunner shares jump 5%") == ["ROAD"]
    assert linker.link("Roadrunner cartoons are back") == []
    assert linker.link("Acme Corp anvils fall on coyote") == []
    assert linker.link("$ROAD") == ["ROAD"]


def test_stoplist_entry_outside_a_section_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "stop.txt"
    path.write_text("ALL\n[cashtag-only]\nIT\n")
    with pytest.raises(ValueError):
        load_stoplist(path)


# --- regression floor on the labelled sample (bench/tickers_eval.py reports the numbers) -----

def test_labelled_sample_floor(linker: SymbolLinker) -> None:
    examples = [json.loads(line) for line in (ROOT / "data" / "tickers_eval.jsonl").read_text().splitlines()]
    assert len(examples) >= 300
    tp = fp = fn = 0
    for example in examples:
        gold, predicted = set(example["symbols"]), set(linker.link(example["text"]))
        tp, fp, fn = tp + len(gold & predicted), fp + len(predicted - gold), fn + len(gold - predicted)
    assert tp / (tp + fp) >= 0.97
    assert tp / (tp + fn) >= 0.93


# --- spans: where each hit is (the stance head reads these) -----------------------------------

def _hits(linker: SymbolLinker, text: str) -> list[tuple[str, str, str]]:
    return [(h.symbol, text[h.start:h.end], h.evidence) for h in linker.spans(text)]


def test_spans_cover_every_kind_of_evidence_in_text_order(linker: SymbolLinker) -> None:
    text = "Caterpillar (NYSE: CAT) beat; $AAPL lagged, NVDA up 4% and Caterpillar again"
    assert _hits(linker, text) == [
        ("CAT", "Caterpillar", "name"),
        ("CAT", "CAT", "exchange"),
        ("AAPL", "$AAPL", "cashtag"),
        ("NVDA", "NVDA", "bare"),
        ("CAT", "Caterpillar", "name"),
    ]


def test_spans_drop_a_name_nested_in_a_cashtag(linker: SymbolLinker) -> None:
    # "AMD" is also a name in the table; inside "$AMD" it is the same mention, not a second one.
    assert _hits(linker, "$AMD green while $INTC bleeds") == [("AMD", "$AMD", "cashtag"), ("INTC", "$INTC", "cashtag")]


@pytest.mark.parametrize(
    "text",
    [
        "Microsoft beat; $AAPL lagged and Google was flat. MSFT calls, $AAPL puts, Apple again",
        "Marriott and Hilton lower forecasts",
        "The CAT scan came back clear",
        "Berkshire trims Apple stake; $BRK.B flat",
    ],
)
def test_link_is_the_first_mention_of_each_span(linker: SymbolLinker, text: str) -> None:
    assert linker.link(text) == list(dict.fromkeys(h.symbol for h in linker.spans(text)))
