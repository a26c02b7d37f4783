"""Which index a group of tickers belongs to, from the symbol table's `source` column
(ingest/data/symbols.csv: "pytickersymbols:S&P 500; stocktickers:nyse" says the ticker is an
S&P 500 member), so a market-wide notification can say "S&P 500" rather than only list names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from ingest.tickers import SymbolTable

INDEX_SOURCE = "pytickersymbols:"


@dataclass(frozen=True)
class IndexShare:
    name: str
    members: int  # how many of the group's tickers are in it


@cache
def _indices_by_symbol() -> dict[str, tuple[str, ...]]:
    table = SymbolTable.load()
    out: dict[str, tuple[str, ...]] = {}
    for symbol, info in table.symbols.items():
        names = tuple(
            part.strip()[len(INDEX_SOURCE):].strip()
            for part in info.source.split(";")
            if part.strip().startswith(INDEX_SOURCE)
        )
        if names:
            out[symbol] = names
    return out


def indices_of(symbols: Iterable[str]) -> list[IndexShare]:
    """The indices that hold at least half of the tickers (and two of them), most members first."""
    tickers = sorted(set(symbols))
    known = _indices_by_symbol()
    counts = Counter(name for symbol in tickers for name in known.get(symbol, ()))
    return [
        IndexShare(name, members)
        for name, members in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if members >= 2 and 2 * members >= len(tickers)
    ]


def describe(symbols: Iterable[str], most: int = 2) -> str:
    """"12 tickers (S&P 500: 10, NASDAQ 100: 6)", or "12 tickers" when no index holds half."""
    tickers = sorted(set(symbols))
    shares = indices_of(tickers)[:most]
    where = f" ({', '.join(f'{s.name}: {s.members}' for s in shares)})" if shares else ""
    return f"{len(tickers)} tickers{where}"
