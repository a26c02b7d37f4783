"""Symbol swaps: the same stance row with its tickers replaced by others, so that the stance head
learns from what is said about a ticker, not which ticker it is.

Each target gets another listed company (a US equity from the shipped symbol table with a plain
ticker and a name, not one of the ambiguous tickers). Every mention is rewritten in its own form:
a cashtag stays a cashtag (`$CRM` -> `$ADBE`, `$crm` -> `$adbe`), a bare ticker stays bare, a
name or nickname becomes the new company's shortest name ("Salesforce" -> "Adobe"). Labels do
not change: the stance was about what the text says, and the text says the same thing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ingest.tickers import SymbolTable
from scorer.training.data import Example
from scorer.training.stance_data import Target

_PLAIN_TICKER = re.compile(r"[A-Z]{2,5}")


@dataclass(frozen=True)
class Company:
    symbol: str
    name: str


def swap_candidates(table: SymbolTable) -> list[Company]:
    names: dict[str, list[str]] = {}
    for alias, symbol in table.aliases.items():
        names.setdefault(symbol, []).append(alias)
    ambiguous = table.stoplist.stock_word | table.stoplist.cashtag_only
    out = []
    for symbol, info in sorted(table.symbols.items()):
        if info.kind != "equity" or not _PLAIN_TICKER.fullmatch(symbol) or symbol in ambiguous:
            continue
        usable = [n for n in names.get(symbol, ()) if len(n) >= 3 and not n.isupper()]
        if usable:
            out.append(Company(symbol, min(usable, key=len)))
    return out


def unswappable(table: SymbolTable) -> frozenset[str]:
    """ETFs, indices and coins: a swap to a company would change what the text says ("added to
    the S&P" is not "added to the Adobe")."""
    return frozenset(symbol for symbol, info in table.symbols.items() if info.kind != "equity")


def _rewrite(mention: str, old: str, new: Company) -> str:
    def cased(symbol: str, like: str) -> str:
        return symbol.lower() if like.islower() else symbol

    if mention.startswith("$"):
        return "$" + cased(new.symbol, mention[1:])
    base = re.split(r"[.\-]", old, maxsplit=1)[0]
    if mention.upper() in (old, base, old.replace(".", "-")):
        return cased(new.symbol, mention)
    return new.name


def _occurrences(text: str, mention: str) -> list[tuple[int, int]]:
    found = [m.span() for m in re.finditer(r"(?<!\w)" + re.escape(mention) + r"(?!\w)", text)]
    return found or [m.span() for m in re.finditer(re.escape(mention), text)]


def swap_symbols(
    example: Example, companies: Sequence[Company], rng: random.Random, keep: frozenset[str] = frozenset()
) -> Example:
    """The example with every target's mentions rewritten for another company (see the module doc);
    targets whose symbol is in `keep` stay as they are."""
    if not example.targets or not companies:
        return example
    taken = {t.symbol for t in example.targets}
    picks: list[Company | None] = []
    for target in example.targets:
        if target.symbol in keep:
            picks.append(None)
            continue
        for _attempt in range(50):
            pick = companies[rng.randrange(len(companies))]
            if pick.symbol not in taken and pick.name not in example.text:
                break
        else:
            return example  # too few companies to choose from (a tiny test table)
        taken.add(pick.symbol)
        picks.append(pick)
    # (start, end, target index, replacement), longest mention first so "$AMD" wins over "AMD".
    edits: list[tuple[int, int, int, str]] = []
    for index, (target, pick) in enumerate(zip(example.targets, picks)):
        if pick is None:
            continue
        for mention in sorted(target.mentions, key=len, reverse=True):
            for start, end in _occurrences(example.text, mention):
                edits.append((start, end, index, _rewrite(mention, target.symbol, pick)))
    edits.sort(key=lambda e: (e[0], -(e[1] - e[0])))
    pieces: list[str] = []
    mentions: list[list[str]] = [[] for _ in example.targets]
    cursor = 0
    for start, end, index, new in edits:
        if start < cursor:
            continue  # inside an edit already made
        pieces += [example.text[cursor:start], new]
        mentions[index].append(new)
        cursor = end
    pieces.append(example.text[cursor:])
    targets = tuple(
        target if pick is None else Target(pick.symbol, target.stance, tuple(dict.fromkeys(found)) or target.mentions)
        for target, pick, found in zip(example.targets, picks, mentions)
    )
    return replace(example, text="".join(pieces), targets=targets)


# How two posts are joined into one: as people chain thoughts in one post or chat message.
_JOINS = (" ", ". ", "; ", " // ", " | ", "\n", " also ", " meanwhile ")


def composable(rows: Sequence[Example], max_chars: int = 160) -> list[Example]:
    """Rows that can be half of a composed post: one ticker, short enough that two fit in the
    model's window."""
    return [r for r in rows if r.targets and len(r.targets) == 1 and len(r.text) <= max_chars]


def compose(first: Example, second: Example, rng: random.Random) -> Example | None:
    """Two single-ticker rows as one post about two tickers, each keeping its own stance (its
    words did not change, only what stands next to them). The pair has no post-level label (the
    tone of two stitched posts is nobody's call), so it trains the stance head only. None when
    the two are about the same ticker or one names the other's."""
    (a,), (b,) = first.targets or (), second.targets or ()
    if a.symbol == b.symbol or any(m in first.text for m in b.mentions) or any(m in second.text for m in a.mentions):
        return None
    return Example(
        id=f"{first.id}+{second.id}",
        text=first.text + rng.choice(_JOINS) + second.text,
        origin="composed",
        kind="post",
        targets=(a, b),
    )
