"""The run-time span finder: where each requested ticker is mentioned, and which tokens that is."""

from __future__ import annotations

import pytest

from ingest.tickers import SymbolLinker, SymbolTable
from scorer.mentions import MentionFinder, short_names, token_positions


@pytest.fixture(scope="module")
def finder() -> MentionFinder:
    return MentionFinder(SymbolLinker(SymbolTable.load()))


def _found(finder: MentionFinder, text: str, symbols: list[str]) -> list[list[str]]:
    return [[text[a:b] for a, b in spans] for spans in finder.find(text, symbols)]


def test_linker_spans_per_symbol_in_the_order_asked(finder: MentionFinder) -> None:
    text = "Costco comps strong again while $KR keeps losing grocery share to Costco"
    assert _found(finder, text, ["KR", "COST"]) == [["$KR"], ["Costco", "Costco"]]


def test_literal_cashtags_in_any_case_and_bare_tickers_as_written(finder: MentionFinder) -> None:
    # The linker needs market words for a bare ticker; a requested one counts as written.
    text = "ZZZZ looks heavy, $zzzz too"
    assert _found(finder, text, ["ZZZZ"]) == [["ZZZZ", "$zzzz"]]


def test_listing_variants(finder: MentionFinder) -> None:
    assert _found(finder, "IAG flying after the traffic update", ["IAG.L"]) == [["IAG"]]
    assert _found(finder, "$BRK-B and BRK/B are the same thing", ["BRK.B"]) == [["$BRK-B", "BRK/B"]]


def test_names_of_the_requested_symbol_need_no_market_context(finder: MentionFinder) -> None:
    # "Delta" alone is a context alias the linker will not take; asked for DAL, it counts.
    text = "Delta is my favourite way to fly"
    assert SymbolLinker(SymbolTable.load()).link(text) == []
    assert _found(finder, text, ["DAL"]) == [["Delta"]]


def test_short_names_of_the_requested_company(finder: MentionFinder) -> None:
    text = "Abbott beat, Santander and Eaton lagged"
    assert _found(finder, text, ["ABT", "SAN", "ETN"]) == [["Abbott"], ["Santander"], ["Eaton"]]


def test_a_short_name_counts_only_where_it_is_one_companys() -> None:
    from ingest.tickers import StopList, SymbolInfo

    def info(symbol: str, name: str) -> SymbolInfo:
        return SymbolInfo(symbol, name, "NYSE", "equity", "test")

    table = SymbolTable(
        {"ZLB": info("ZLB", "Zephyr Labs"), "ZMT": info("ZMT", "Zephyr Motors"),
         "QRS": info("QRS", "Quorra Systems"), "NMB": info("NMB", "Nimbus"), "NCL": info("NCL", "Nimbus Cloud")},
        {"Nimbus": "NMB"}, {}, StopList(frozenset(), frozenset(), ()),
    )
    mini = MentionFinder(SymbolLinker(table))
    text = "Zephyr, Quorra and Nimbus all up"
    # Zephyr is two companies' short form and both are asked about; Nimbus is another company's
    # name, and that company is asked about too: neither word is taken.
    assert _found(mini, text, ["ZLB", "ZMT", "QRS", "NCL", "NMB"]) == [[], [], ["Quorra"], [], ["Nimbus"]]
    # Asked about one of them alone, a word that could be either names the one asked about.
    assert _found(mini, text, ["ZLB", "NCL"]) == [["Zephyr"], ["Nimbus"]]


def test_looser_names_of_the_one_company_asked_about(finder: MentionFinder) -> None:
    text = "Dexcom slides while MercadoLibre jumps; D.R. Horton flat, Colgate up, United and American down"
    assert _found(finder, text, ["DXCM", "MELI", "DHI", "CL", "UAL", "AAL"]) == [
        ["Dexcom"], ["MercadoLibre"], ["D.R. Horton"], ["Colgate"], ["United"], ["American"]]
    # Only when nothing better names the company: with its cashtag there, "United" is not added.
    assert _found(finder, "$UAL up while United States yields rise", ["UAL"]) == [["$UAL"]]
    # A generic word that never names a company alone is not taken ("General" for General Motors).
    assert _found(finder, "General weakness today", ["GM"]) == [[]]
    # A short name stays case-sensitive: "target" in lower case is a price target, not Target.
    assert _found(finder, "raised my price target again", ["TGT"]) == [[]]



def test_an_ordinary_word_among_the_names_keeps_its_case() -> None:
    from ingest.tickers import StopList, SymbolInfo

    table = SymbolTable(
        {"ANCR": SymbolInfo("ANCR", "Qorvex Anchorage Holdings", "NYSE", "equity", "test"),
         "DXC": SymbolInfo("DXC", "Dexovia", "NYSE", "equity", "test")},
        {"Dexovia": "DXC"}, {"Anchor": "ANCR"}, StopList(frozenset(), frozenset(), ()),
    )
    mini = MentionFinder(SymbolLinker(table))
    # "Anchor" is a context alias (an ordinary word): capitalised it names the company, in lower
    # case it is the word; a name that is no word matches in any case.
    assert _found(mini, "Anchor up 5%", ["ANCR"]) == [["Anchor"]]
    assert _found(mini, "we anchor on the guide", ["ANCR"]) == [[]]
    assert _found(mini, "dexovia up 5%", ["DXC"]) == [["dexovia"]]


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("Abbott Laboratories", ["Abbott"]),
        ("The Travelers Companies", ["Travelers"]),
        ("Banco Santander", ["Santander"]),
        ("KLA Corporation", ["KLA"]),
        ("Take-Two Interactive", ["Take-Two"]),
        ("General Motors", []),  # a generic first word: only the full name is specific
        ("American Airlines Group", []),
        ("Philips", []),  # one word: the name is its own short form
        ("iShares Bitcoin Trust", []),  # not capitalised
    ],
)
def test_short_names(name: str, short: list[str]) -> None:
    assert short_names(name) == short


def test_lower_case_only_when_nothing_else_is_found(finder: MentionFinder) -> None:
    assert _found(finder, "nvda ripping, amd lagging", ["NVDA", "AMD"]) == [["nvda"], ["amd"]]
    # With a real mention present, the lower-case word is not added.
    assert _found(finder, "$NVDA ripping; nvda gang", ["NVDA"]) == [["$NVDA"]]


def test_not_found_and_not_glued(finder: MentionFinder) -> None:
    assert finder.find("nothing about it here", ["AAPL"]) == [[]]
    assert finder.find("anything", []) == []
    # A symbol inside a longer token is not a mention: GM in GME, F in F-150, one-letter bare words.
    assert _found(finder, "GME squeeze and an F-150 recall", ["GM", "F"]) == [[], []]


def test_token_positions_from_character_spans() -> None:
    # [CLS] loaded up on $ crm calls [SEP]: offsets as the tokenizer gives them.
    offsets = [(0, 0), (0, 6), (7, 9), (10, 12), (13, 14), (14, 17), (18, 23), (0, 0)]
    special = [1, 0, 0, 0, 0, 0, 0, 1]
    assert token_positions(offsets, [(13, 17)], special) == [4, 5]
    assert token_positions(offsets, [(15, 16)], special) == [5]  # a span inside a token
    assert token_positions(offsets, [(0, 6), (18, 23)], special) == [1, 6]
    assert token_positions(offsets, [], special) == []
    assert token_positions(offsets, [(40, 44)], special) == []  # cut off by truncation


def test_positions_on_the_real_tokenizer() -> None:
    from tokenizers import Tokenizer

    from scorer import model_files
    from scorer.model_files import default_model_dir

    tokenizer = Tokenizer.from_file(str(model_files.tokenizer_path(default_model_dir())))
    text = "Loaded up on $CRM calls and bought $WDAY puts"
    enc = tokenizer.encode(text)
    finder = MentionFinder.load()
    crm, wday = finder.find(text, ["CRM", "WDAY"])
    words = {p: enc.tokens[p] for p in token_positions(enc.offsets, crm, enc.special_tokens_mask)}
    assert "".join(words.values()).replace("#", "") == "$crm"
    assert all(p > max(words) for p in token_positions(enc.offsets, wday, enc.special_tokens_mask))
