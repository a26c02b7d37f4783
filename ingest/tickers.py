"""Ticker linking: which symbols a post or headline talks about.

Four kinds of evidence, from strongest to weakest:
1. Cashtags: "$AAPL", "$brk.b" (-> BRK.B), "$BTC.X" (StockTwits' crypto suffix -> BTC). A cashtag
   that is not in the table still counts when it is written in capitals and looks like a ticker
   (1-5 letters, optionally ".X"); "$100", "$5k" and lower-case "$lol" do not.
2. Exchange prefixes: "NYSE: CAT", "(NASDAQ:AAPL)". Like cashtags, unknown symbols still count.
3. Names and aliases from the symbol table ("Caterpillar", "Google", "JPMorgan Chase"), matched
   case-sensitively on word boundaries, longest first ("Bank of America" before "America"; and a
   name inside a longer one counts only as the longer one: "iShares Bitcoin Trust" is IBIT).
   A context alias (Target, Delta, Ford: also ordinary words or surnames) counts only with market
   or company words near it, or listed next to a company that counts ("Marriott and Hilton").
   Phrases listed as not-a-company ("Amazon rainforest", "Harrison Ford") are consumed whole so
   the name inside them does not count.
4. Bare upper-case tickers ("NVDA"): only symbols in the table, never inside a matched name, never
   in shouted all-caps text, and only with evidence that depends on how ambiguous the symbol is:
   - [cashtag-only] in the stop-list: never bare (ALL, IT, CEO, DD, AI).
   - [stock-word] in the stop-list, and every one- or two-letter symbol: only touching "stock" or
     "shares" ("CAT stock", "shares of GM") or in parentheses ("(GM)"). One-letter symbols need a
     cashtag or an exchange prefix. A [stock-word] symbol in a list of three or more tickers
     ("HOOD, SOFI, AFRM") also counts.
   - ETFs, indices and coins (hand-picked rows whose symbols are not words): always.
   - the rest: market words, a percentage or a dollar price near it, a cashtag in the same text,
     or a list of three or more tickers.

Symbols come back upper-case, in order of first mention, without repeats, at most max_symbols.
spans() returns the evidence behind that list: every hit with its character span (a symbol named
three times has three spans), which is where the stance model reads what is said about it.
Everything is compiled once per SymbolTable; link() only runs regular expressions and dict lookups.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from moodwire.schema import MAX_SYMBOLS

# Currency codes look like tickers in "$BTC/$USD" but are not instruments we track.
_CURRENCY_CODES = frozenset({"USD", "EUR", "GBP", "JPY", "CNY", "CAD", "AUD", "CHF", "HKD", "INR"})

_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.\-/][A-Za-z]{1,2})?)(?![\w$])")
_EXCHANGE_PREFIX = re.compile(
    r"\b(?:NYSE(?: ?Arca| American)?|NASDAQ(?: ?GS| ?GM| ?CM)?|Nasdaq|NYSEARCA|AMEX|TSXV?|LSE|LON"
    r"|OTC(?:MKTS|QX|QB)?|ASX|HKEX|XETRA|ETR|FRA|EPA|AMS|BME|SIX|TYO|NSE|BSE)"
    r"\s?:\s?\$?([A-Z]{1,5}(?:\.[A-Z]{1,2})?)(?![\w])"
)
# A bare ticker: an all-capitals token, not glued to "$", "&", "-", "/" or a letter (AT&T, F-150).
_BARE = re.compile(r"(?<![\w$&\-/.])([A-Z]{1,5}(?:\.[A-Z])?)(?![\w&\-/]|\.[A-Za-z])")
_ALL_CAPS_WORD = re.compile(r"\b[A-Z]{2,}\b")
_WORD = re.compile(r"\b[A-Za-z]{2,}\b")
_STOCK_WORD_AFTER = re.compile(r"\A'?s?\s+(?:stock|shares|share)\b", re.IGNORECASE)
_STOCK_WORD_BEFORE = re.compile(r"\b(?:shares|stock|stake)\s+(?:of|in)\s+\Z", re.IGNORECASE)
_PAREN_AROUND = re.compile(r"\(\s*\Z")
_PAREN_CLOSE = re.compile(r"\A\s*\)")
_NUMBERS = r"[+\-]?\d+(?:[.,]\d+)?\s?%|\$\s?\d|\d+(?:\.\d+)?\s?(?:bps|pts)\b"
# Words that put a name or a bare ticker in a market or company setting. Lower-case, whole words.
_MARKET_WORDS = (
    "stock", "stocks", "share", "shares", "shareholder", "shareholders", "investor", "investors",
    "earnings", "revenue", "revenues", "profit", "profits", "sales", "guidance", "outlook",
    "forecast", "quarter", "quarterly", "q1", "q2", "q3", "q4", "results", "beat", "beats", "miss",
    "misses", "missed", "eps", "ceo", "cfo", "chief executive", "layoffs", "lays off", "job cuts",
    "recall", "recalls", "recalled", "deal", "merger", "acquisition", "acquire", "acquires",
    "acquired", "buyout", "takeover", "ipo", "dividend", "dividends", "buyback", "analyst",
    "analysts", "upgrade", "upgraded", "upgrades", "downgrade", "downgraded", "downgrades",
    "price target", "valuation", "market cap", "bonds", "debt", "stake", "ticker", "nyse",
    "nasdaq", "rally", "rallies", "rallied", "falls", "fell", "drops", "dropped", "plunges",
    "plunged", "slumps", "slumped", "tumbles", "tumbled", "sinks", "sank", "soars", "soared",
    "jumps", "jumped", "surges", "surged", "rises", "rose", "climbs", "climbed", "gains", "gained",
    "slides", "slid", "sell-off", "selloff", "trading", "traded", "traders", "market", "markets",
    "points", "futures", "options", "calls", "puts", "bullish", "bearish", "bought", "buying",
    "sold", "selling", "position", "positions", "portfolio", "bagholder", "bagholders", "dip",
    "moon", "mooning", "squeeze", "ripping", "tanking", "dumping", "pumping", "printing",
    "all-time high", "52-week", "premarket", "pre-market", "after-hours", "after hours", "fiscal",
    "billion", "lawsuit", "antitrust", "regulators", "customers", "subscribers", "stores",
    "airline", "airlines", "flights", "automaker", "carmaker", "vehicles", "trucks", "hotels",
    "cruise", "chipmaker", "factory", "workers", "employees", "partnership", "unveils", "unveiled",
    "launches", "launched", "announces", "announced", "reports", "reported", "posts", "raises",
    "cuts", "hikes", "shorts", "shorting", "long", "bull", "bear", "holders", "undervalued",
    "overvalued", "chart", "breakout", "target price", "yolo", "bagholding", "tendies",
    "short squeeze", "gap up", "gap down", "crash", "crashed", "crashing", "trimmed", "trimming",
    "shorted", "covering", "added", "adding", "holding", "watchlist", "averaged down",
)
_CONTEXT_CHARS = 48  # about eight words either side
# What separates the items of a list: "NVDA, AMD and AVGO", "Marriott and Hilton", "KO/PEP".
_LIST_SEPARATOR = re.compile(r"\s*(?:,|/|&|\band\b|\bor\b|\bvs\.?|\bversus\b)\s*(?:and\s+)?\Z")
_MIN_LIST = 3
# Kinds whose rows are picked by hand and whose symbols are not words (QQQ, IWM, BTC).
_DISTINCTIVE_KINDS = frozenset({"etf", "index", "crypto"})


@dataclass(frozen=True)
class SymbolInfo:
    symbol: str
    name: str
    exchange: str
    kind: str  # equity | crypto | etf | index
    source: str


@dataclass(frozen=True)
class SymbolSpan:
    """One place a symbol is mentioned: text[start:end], and which rule found it."""

    symbol: str
    start: int
    end: int
    evidence: str  # cashtag | exchange | name | bare


@dataclass(frozen=True)
class StopList:
    cashtag_only: frozenset[str]
    stock_word: frozenset[str]
    not_a_company: tuple[str, ...]


def _read(path: Path | str | None, shipped: str) -> str:
    """The file at path, or the one shipped in the ingest package's data/ folder."""
    if path is not None:
        return Path(path).read_text(encoding="utf-8")
    return resources.files("ingest").joinpath("data", shipped).read_text(encoding="utf-8")


def _split(field: str) -> list[str]:
    return [part for part in field.split("|") if part]


def load_stoplist(path: Path | str | None = None) -> StopList:
    """Read the hand-written stop-list (see the header of ambiguous_tickers.txt)."""
    text = _read(path, "ambiguous_tickers.txt")
    sections: dict[str, list[str]] = {"cashtag-only": [], "stock-word": [], "not-a-company": []}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            if line[1:-1] not in sections:
                raise ValueError(f"{path}: unknown section {line}")
            current = sections[line[1:-1]]
        elif current is None:
            raise ValueError(f"{path}: entry {line!r} before any [section]")
        else:
            current.append(line)
    return StopList(
        cashtag_only=frozenset(s.upper() for s in sections["cashtag-only"]),
        stock_word=frozenset(s.upper() for s in sections["stock-word"]),
        not_a_company=tuple(sections["not-a-company"]),
    )


class SymbolTable:
    """The shipped symbol table plus the stop-list: every lookup the linker needs."""

    def __init__(
        self,
        symbols: dict[str, SymbolInfo],
        aliases: dict[str, str],
        context_aliases: dict[str, str],
        stoplist: StopList,
    ) -> None:
        self.symbols = symbols
        self.aliases = aliases
        self.context_aliases = context_aliases
        self.stoplist = stoplist

    @classmethod
    def load(cls, path: Path | str | None = None, stoplist_path: Path | str | None = None) -> SymbolTable:
        """Read symbols.csv and the stop-list; None means the copies shipped in ingest/data/."""
        symbols: dict[str, SymbolInfo] = {}
        aliases: dict[str, str] = {}
        context_aliases: dict[str, str] = {}
        for row in csv.DictReader(io.StringIO(_read(path, "symbols.csv"))):
            symbol = row["symbol"].strip().upper()
            symbols[symbol] = SymbolInfo(
                symbol, row["name"], row["exchange"], row["kind"], row.get("source") or ""
            )
            for alias in _split(row["aliases"]):
                aliases.setdefault(alias, symbol)
            for alias in _split(row.get("context_aliases") or ""):
                context_aliases.setdefault(alias, symbol)
        return cls(symbols, aliases, context_aliases, load_stoplist(stoplist_path))

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.symbols

    def __len__(self) -> int:
        return len(self.symbols)


_Trie = dict[str, "_Trie"]


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex alternation shaped as a trie: the regex engine does not have to try thousands of
    names one by one, and the greedy optional tails make the longest name win."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def render(node: _Trie) -> str:
        ends = "" in node
        branches = [re.escape(ch) + render(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not ends else "(?:" + "|".join(branches) + ")"
        if ends:
            body = (body if body.startswith("(?:") else "(?:" + body + ")") + "?"
        return body

    return render(trie)


# Searched in lower-cased text: a trie without IGNORECASE is several times faster than either.
_MARKET_CONTEXT = re.compile(r"\b(?:" + _trie_pattern(_MARKET_WORDS) + r")\b|" + _NUMBERS)

_BLOCKED = ""  # marks a not-a-company phrase in the name index


class SymbolLinker:
    """Finds the symbols a text mentions (see the module doc for the rules). Build one per table
    and reuse it: building compiles the name index; linking is pure and thread-safe."""

    def __init__(self, table: SymbolTable, max_symbols: int = MAX_SYMBOLS) -> None:
        if max_symbols < 1:
            raise ValueError("max_symbols must be at least 1")
        self.table = table
        self.max_symbols = max_symbols
        # name -> (symbol or _BLOCKED, needs_context)
        self._names: dict[str, tuple[str, bool]] = {}
        for alias, symbol in table.context_aliases.items():
            self._names[alias] = (symbol, True)
        for alias, symbol in table.aliases.items():
            self._names[alias] = (symbol, False)
        for phrase in table.stoplist.not_a_company:
            for variant in (phrase, phrase.title(), phrase[:1].upper() + phrase[1:]):
                self._names.setdefault(variant, (_BLOCKED, False))
        names = _trie_pattern(self._names) or "(?!)"  # a table without names matches nothing
        self._name_regex = re.compile(r"(?<!\w)" + names + r"(?!\w)")

    def link(self, text: str) -> list[str]:
        """Upper-case symbols in order of first mention, without repeats, at most max_symbols."""
        out: list[str] = []
        seen: set[str] = set()
        for hit in self.spans(text):
            if hit.symbol not in seen:
                seen.add(hit.symbol)
                out.append(hit.symbol)
                if len(out) == self.max_symbols:
                    break
        return out

    def spans(self, text: str) -> list[SymbolSpan]:
        """Every hit with its character span, in text order: the evidence link() summarises.

        A symbol mentioned three times has three spans. The span of a cashtag includes the "$",
        that of an exchange-prefixed symbol is the symbol alone ("CAT" in "NYSE: CAT"), that of a
        name is the name as written. The same rules as link() decide what counts.
        """
        cashtags = self._cashtags(text)
        names, name_spans = self._names_in(text)
        found = cashtags + names
        found += [hit for hit in self._exchange_prefixed(text) if not _inside(hit.start, name_spans)]
        found += self._bare_tickers(text, has_cashtag=bool(cashtags), name_spans=name_spans)
        # Outer hits first, so that a name inside a cashtag ("AMD" in "$AMD") is dropped as nested.
        found.sort(key=lambda hit: (hit.start, -hit.end))
        out: list[SymbolSpan] = []
        reach = -1
        for hit in found:
            if hit.end <= reach and out and out[-1].symbol == hit.symbol:
                continue
            out.append(hit)
            reach = max(reach, hit.end)
        return out

    # Each finder stops after max_symbols distinct symbols: the first max_symbols of the merged,
    # position-sorted list are always among them, and a post of thousands of cashtags stays cheap.
    # Names and bare tickers also stop after 10 * max_symbols raw matches, so that one name
    # repeated ten thousand times cannot make the later passes quadratic.

    def _cashtags(self, text: str) -> list[SymbolSpan]:
        hits: list[SymbolSpan] = []
        distinct: set[str] = set()
        for match in _CASHTAG.finditer(text):
            symbol = self._cashtag_symbol(match.group(1))
            if symbol is None:
                continue
            hits.append(SymbolSpan(symbol, match.start(), match.end(), "cashtag"))
            distinct.add(symbol)
            if len(distinct) >= self.max_symbols:
                break
        return hits

    def _cashtag_symbol(self, raw: str) -> str | None:
        symbol = raw.upper().replace("-", ".").replace("/", ".")
        if symbol in self.table.symbols:
            return symbol
        base = symbol.split(".", 1)[0]
        if "." in symbol and base in self.table.symbols:
            return base  # $BTC.X, $AAPL.US
        # Unknown symbols must look deliberate: written in capitals, 1-5 letters.
        if not raw.isupper() or not 1 <= len(base) <= 5 or base in _CURRENCY_CODES:
            return None
        return symbol if "." in symbol and len(symbol.split(".", 1)[1]) == 1 else base

    def _exchange_prefixed(self, text: str) -> list[SymbolSpan]:
        hits: list[SymbolSpan] = []
        if ":" not in text:  # most texts; the prefix regex is the costlier scan
            return hits
        for match in _EXCHANGE_PREFIX.finditer(text):
            hits.append(SymbolSpan(match.group(1), match.start(1), match.end(1), "exchange"))
            if len(hits) >= self.max_symbols:
                break
        return hits

    def _names_in(self, text: str) -> tuple[list[SymbolSpan], list[tuple[int, int]]]:
        """Name hits, and the spans of every matched name (blocked phrases included) so that the
        bare-ticker pass does not read "BYD" in a name as Boyd Gaming's ticker."""
        spans: list[tuple[int, int]] = []
        candidates: list[tuple[int, int, str, bool]] = []  # start, end, symbol, accepted
        distinct: set[str] = set()
        for match in self._name_regex.finditer(text):
            spans.append(match.span())
            symbol, needs_context = self._names[match.group(0)]
            if symbol == _BLOCKED:
                continue
            accepted = not needs_context or self._has_market_context(text, *match.span())
            candidates.append((match.start(), match.end(), symbol, accepted))
            distinct.add(symbol)
            if len(distinct) >= self.max_symbols or len(spans) >= 10 * self.max_symbols:
                break
        hits: list[SymbolSpan] = []
        for i, (start, end, symbol, accepted) in enumerate(candidates):
            # A context alias listed next to an accepted company: "Marriott and Hilton".
            if not accepted:
                accepted = any(
                    other[3] and _listed_together(text, candidates[i], other)
                    for other in candidates[max(0, i - 1):i] + candidates[i + 1:i + 2]
                )
            if accepted:
                hits.append(SymbolSpan(symbol, start, end, "name"))
        return hits, spans

    def _bare_tickers(
        self, text: str, has_cashtag: bool, name_spans: list[tuple[int, int]]
    ) -> list[SymbolSpan]:
        stop = self.table.stoplist
        candidates: list[tuple[int, int, str]] = []
        for match in _BARE.finditer(text):
            symbol = match.group(1)
            if symbol not in self.table.symbols or symbol in stop.cashtag_only or len(symbol) == 1:
                continue
            if _inside(match.start(1), name_spans):
                continue
            candidates.append((match.start(1), match.end(1), symbol))
            if len(candidates) >= 10 * self.max_symbols:
                break
        if not candidates or _is_shouting(text, {c[2] for c in candidates}):
            return []
        in_list = _long_list_members(text, candidates)
        hits: list[SymbolSpan] = []
        distinct: set[str] = set()
        for index, (start, end, symbol) in enumerate(candidates):
            if len(symbol) <= 2:
                accepted = _touches_stock_word(text, start, end)
            elif symbol in stop.stock_word:
                accepted = index in in_list or _touches_stock_word(text, start, end)
            elif self.table.symbols[symbol].kind in _DISTINCTIVE_KINDS:
                accepted = True
            else:
                accepted = (
                    has_cashtag
                    or index in in_list
                    or _touches_stock_word(text, start, end)
                    or self._has_market_context(text, start, end)
                )
            if accepted:
                hits.append(SymbolSpan(symbol, start, end, "bare"))
                distinct.add(symbol)
                if len(distinct) >= self.max_symbols:
                    break
        return hits

    @staticmethod
    def _has_market_context(text: str, start: int, end: int) -> bool:
        before = text[max(0, start - _CONTEXT_CHARS):start].lower()
        after = text[end:end + _CONTEXT_CHARS].lower()
        return bool(_MARKET_CONTEXT.search(before) or _MARKET_CONTEXT.search(after))


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _listed_together(text: str, a: tuple[int, int, str, bool], b: tuple[int, int, str, bool]) -> bool:
    first, second = (a, b) if a[0] < b[0] else (b, a)
    return bool(_LIST_SEPARATOR.match(text[first[1]:second[0]]))


def _long_list_members(text: str, candidates: list[tuple[int, int, str]]) -> set[int]:
    """Indexes of bare candidates (three letters or more) in a run of at least _MIN_LIST joined by
    list separators: a watchlist, "HOOD, SOFI, AFRM", is evidence for each of its items."""
    members: set[int] = set()
    run: list[int] = []
    for index, (start, _, symbol) in enumerate(candidates):
        if len(symbol) < 3:
            continue
        if run and _LIST_SEPARATOR.match(text[candidates[run[-1]][1]:start]):
            run.append(index)
            continue
        if len(run) >= _MIN_LIST:
            members.update(run)
        run = [index]
    if len(run) >= _MIN_LIST:
        members.update(run)
    return members


def _touches_stock_word(text: str, start: int, end: int) -> bool:
    """"CAT stock", "GM shares", "shares of GM", "(GM)"."""
    after = text[end:end + 12]
    before = text[max(0, start - 16):start]
    if _STOCK_WORD_AFTER.match(after) or _STOCK_WORD_BEFORE.search(before):
        return True
    return bool(_PAREN_AROUND.search(before) and _PAREN_CLOSE.match(after))


def _is_shouting(text: str, tickers: set[str]) -> bool:
    """Mostly capitals that are not tickers ("BUY THE DIP NOW"): capitals then say nothing."""
    words = _WORD.findall(text)
    if len(words) < 3:
        return False
    shouted = [w for w in _ALL_CAPS_WORD.findall(text) if w not in tickers]
    return len(shouted) / len(words) >= 0.5
