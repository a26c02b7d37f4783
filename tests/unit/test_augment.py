"""Symbol swaps: the same stance row about other companies, every mention rewritten in its form."""

from __future__ import annotations

import random

from ingest.tickers import SymbolTable
from scorer.training.augment import Company, swap_candidates, swap_symbols, unswappable
from scorer.training.data import Example
from scorer.training.stance_data import Target

COMPANIES = [Company("ADBE", "Adobe"), Company("ORCL", "Oracle"), Company("INTU", "Intuit")]


def _row(text: str, *targets: Target) -> Example:
    return Example("st-a-0001", text, "stance", "neutral", "neutral", kind="post", targets=targets)


def test_every_form_of_mention_is_rewritten_and_labels_stay() -> None:
    row = _row(
        "Loaded up on $CRM calls, crm is cheap; Salesforce > Workday. bought $wday puts, WDAY done",
        Target("CRM", "positive", ("$CRM", "crm", "Salesforce")),
        Target("WDAY", "negative", ("Workday", "$wday", "WDAY")),
    )
    swapped = swap_symbols(row, COMPANIES, random.Random(3))
    first, second = swapped.targets
    new = {first.symbol: first, second.symbol: second}
    assert len(new) == 2 and set(new) <= {c.symbol for c in COMPANIES}
    assert [t.stance for t in swapped.targets] == ["positive", "negative"]
    name = {c.symbol: c.name for c in COMPANIES}
    a, b = first.symbol, second.symbol
    assert swapped.text == (
        f"Loaded up on ${a} calls, {a.lower()} is cheap; {name[a]} > {name[b]}. bought ${b.lower()} puts, {b} done"
    )
    for target in swapped.targets:
        assert all(m in swapped.text for m in target.mentions)
    assert (swapped.polarity, swapped.emotion, swapped.kind) == (row.polarity, row.emotion, row.kind)


def test_etfs_and_indices_stay_and_rows_without_targets_pass_through() -> None:
    table = SymbolTable.load()
    keep = unswappable(table)
    assert {"SPY", "QQQ", "BTC"} <= keep and "AAPL" not in keep
    row = _row("rotating out of QQQ into $AAPL", Target("QQQ", "negative", ("QQQ",)),
               Target("AAPL", "positive", ("$AAPL",)))
    swapped = swap_symbols(row, COMPANIES, random.Random(0), keep)
    assert swapped.targets[0] == row.targets[0] and "QQQ" in swapped.text
    assert swapped.targets[1].symbol != "AAPL" and "$AAPL" not in swapped.text
    plain = Example("x", "no tickers", "handlabelled", "neutral")
    assert swap_symbols(plain, COMPANIES, random.Random(0)) is plain


def test_candidates_are_plain_listed_companies_with_a_name() -> None:
    companies = swap_candidates(SymbolTable.load())
    assert len(companies) > 500
    symbols = {c.symbol for c in companies}
    assert "AAPL" in symbols and "CAT" not in symbols  # CAT is an ambiguous word ticker
    assert all(c.symbol.isalpha() and c.symbol.isupper() and len(c.name) >= 3 for c in companies)


def test_two_single_ticker_rows_compose_into_one_post_with_both_stances() -> None:
    from scorer.training.augment import compose, composable

    a = Example("hl-a-0001", "NVDA calls printing", "handlabelled", "positive", "joy",
                targets=(Target("NVDA", "positive", ("NVDA",)),))
    b = Example("st-b-0002", "$KSS guide cut again, puts it is", "stance", "negative", "neutral",
                targets=(Target("KSS", "negative", ("$KSS",)),))
    pair = compose(a, b, random.Random(0))
    assert pair is not None
    assert pair.text.startswith(a.text) and pair.text.endswith(b.text)
    assert pair.targets == (a.targets[0], b.targets[0])
    assert (pair.polarity, pair.emotion, pair.origin) == (None, None, "composed")  # stance loss only
    # Not with itself or with a row that names the other's ticker; only single-ticker, short rows.
    assert compose(a, a, random.Random(0)) is None
    c = Example("x", "$KSS and NVDA both", "stance", "neutral", targets=(Target("KSS", "neutral", ("$KSS",)),))
    assert compose(a, c, random.Random(0)) is None
    two = Example("y", "$A up $B down", "stance", "neutral",
                  targets=(Target("A", "positive", ("$A",)), Target("B", "negative", ("$B",))))
    assert composable([a, b, two, Example("z", "x" * 400, "stance", targets=a.targets)]) == [a, b]
