"""Where in a text each requested ticker is mentioned: the spans the stance head reads.

The runtime is asked about symbols (a producer tagged them, or the ticker linker found them);
the model needs the characters that refer to each one. For each requested symbol, in order:

1. the ticker linker's spans for that symbol (cashtags, names and aliases, exchange prefixes,
   bare tickers: ingest.tickers decides what counts);
2. literal occurrences: `$SYM` in any case, `SYM` as written (two characters or more), and the
   same for the listing's base and punctuation variants (`IAG.L` -> `IAG`, `BRK.B` -> `BRK-B`);
3. the table's own names and aliases for that symbol, case as written, without the linker's
   context rule (the symbol was asked for, so "Delta" next to DAL needs no market words), and
   their short form: the first distinctive word ("Abbott" for Abbott Laboratories, "Santander"
   for Banco Santander, "Freeport" for Freeport McMoRan) when it is that one company's, which is
   how posts name a company;
4. only when 1-3 found nothing: the looser ways a post names that one company, each used only
   when no other symbol asked about could be meant by it: a name or alias with any spacing or
   dots, and in any case when it has six letters or more ("Dexcom" for DexCom, "MercadoLibre"
   for Mercado Libre, "D.R. Horton"),
   a short form that several companies share ("Constellation" is Constellation Energy's and
   Constellation Brands'), a first word the table calls generic ("United" for United Airlines,
   "Southern" for Southern Company) and the first part of a hyphenated name ("Colgate"); the
   symbol was asked for, so the post names one of its companies;
5. only when 1-4 found nothing: the symbol in lower case as a word ("nvda", "btc"; three
   characters or more), which is how chat and StockTwits posts often write tickers.

A symbol with no span gets none (the runtime then gives it the post's polarity, basis "post").

This is the one module on the runtime path that imports ingest.tickers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from ingest.tickers import SymbolLinker, SymbolTable

Span = tuple[int, int]

# Word edges for a literal ticker: not glued to letters, digits or the joiners of a longer symbol.
_BEFORE = r"(?<![\w$&\-/.])"
_AFTER = r"(?![\w&\-/]|\.[A-Za-z0-9])"
_MIN_BARE = 2
_MIN_LOWER = 3
# First words of company names that do not name a company on their own.
_GENERIC_WORDS = frozenset(
    "The First American General United National International Global Bank Banco Banque New Southern Northern "
    "Western Eastern Royal China Japan Deutsche Central Pacific Atlantic Capital Digital Energy Health Home Life "
    "Real Universal World Advanced Applied Standard Union Public Great Credit Crédit Federal Mid "
    "Old Community Citizens Banc Investors Smith West East North South Texas Simon Iron Air Sun Blue Green "
    "Taiwan Korea India Hong Canadian British European Swiss German French Dutch Italian Spanish Australian "
    "Scottish Irish Dollar Hotel Hotels Power Gold Silver Oil Gas Steel Water Food Foods Second Third Fourth "
    "Fifth Martin".split()
)
_PREFIX_WORDS = frozenset({"The", "Banco", "Banque", "Grupo", "Groupe", "Compagnie"})
_NAME_WORD = re.compile(r"[^\s/,]+")


def _first_word(name: str) -> str:
    """The first word of a company name of two words or more, past a prefix ("Banco Santander" is
    Santander), as written; "" for a one-word name."""
    words = _NAME_WORD.findall(name)
    if len(words) < 2:
        return ""
    if words[0] in _PREFIX_WORDS:
        words = words[1:]
    return words[0] if words else ""


def short_names(name: str) -> list[str]:
    """The first distinctive word of a company name: "Abbott Laboratories" -> Abbott, "The Travelers
    Companies" -> Travelers, "Banco Santander" -> Santander, "KLA Corporation" -> KLA; [] for a
    one-word name (it is its own short form) or a generic first word ("General Motors",
    "American Airlines": only the full name is specific)."""
    word = _first_word(name)
    if not word or word in _GENERIC_WORDS:
        return []
    first = word.rstrip(".'")
    distinctive = (len(first) >= 4 and first[0].isupper()) or (len(first) >= 2 and first.isupper())
    return [first] if distinctive else []


# Generic first words that never name a company on their own, even when it was asked about.
_NEVER_ALONE = frozenset(
    "The First General New National International Global Universal Standard Capital Digital Advanced Applied "
    "Public Great Real World Life Home Health Energy Power Water Food Foods Gold Silver Oil Gas Steel Second "
    "Third Fourth Fifth Mid Old Community Citizens Investors Credit Federal Central Union Iron Air Sun Blue "
    "Green Hotel Hotels Dollar".split()
)
_NAME_PART = re.compile(r"[^\W_]+", re.UNICODE)
_MIN_LOOSE = 4
_MIN_ANY_CASE = 6
_ANY_CASE = "(?i:"


def _key(name: str) -> str:
    return "".join(_NAME_PART.findall(name)).lower()


def _loose_forms(name: str, any_case: bool = True) -> list[tuple[str, str]]:
    """(key, regex) for the looser ways a post writes a company name (see the module doc)."""
    out: list[tuple[str, str]] = []
    parts = _NAME_PART.findall(name)
    letters = sum(len(p) for p in parts)
    if letters >= _MIN_LOOSE:
        # Any run of spaces, dots or hyphens between the name's parts (or none); any case too
        # unless the name is short enough to be a word in lower case ("target", "visa").
        flexible = r"[\s.\-]*".join(re.escape(p) for p in parts)
        if any_case and letters >= _MIN_ANY_CASE:
            flexible = _ANY_CASE + flexible + ")"
        out.append((_key(name), r"(?<!\w)" + flexible + r"(?!\w)"))
    first = _first_word(name).rstrip(".'")  # the name's words never hold a comma
    if first:
        word = len(first) >= _MIN_LOOSE and first[0].isupper() and first.isalpha()
        acronym = len(first) >= 3 and bool(re.fullmatch(r"[A-Z][A-Z&]*[A-Z]", first))  # "S&P", "AT&T"
        if (word or acronym) and first not in _NEVER_ALONE:
            out.append((_key(first), r"(?<!\w)" + re.escape(first) + r"(?!\w)"))
    head = name.split("-", 1)[0].strip()
    if "-" in name and len(head) >= 5 and head.isalpha() and head[0].isupper():
        out.append((_key(head), r"(?<!\w)" + re.escape(head) + r"(?!\w)"))
    return out


def _variants(symbol: str) -> list[str]:
    """How a listing is written in text: BRK.B, BRK-B, BRK/B, BRK; IAG.L, IAG; BT-A.L, BT-A, BT."""
    out = [symbol]
    if "." in symbol:
        out += [symbol.replace(".", "-"), symbol.replace(".", "/")]
    base = re.split(r"[.\-]", symbol, maxsplit=1)[0]
    head = symbol.rsplit(".", 1)[0]
    out += [head, base]
    return [v for v in dict.fromkeys(out) if v]


class MentionFinder:
    """Character spans per requested symbol (see the module doc). Build one and reuse it."""

    def __init__(self, linker: SymbolLinker) -> None:
        self.linker = linker
        table = linker.table
        names: dict[str, set[str]] = {}
        for alias, symbol in [*table.aliases.items(), *table.context_aliases.items()]:
            names.setdefault(symbol, set()).add(alias)
        for symbol, info in table.symbols.items():
            if info.name:
                names.setdefault(symbol, set()).add(info.name)
        # A short form counts only where it is one company's: "GE" (GE Vernova) is GE's ticker,
        # "Siemens" (Siemens Energy) is Siemens AG's name, "Dollar" is two retailers'.
        owners: dict[str, set[str]] = {}
        for symbol, full in names.items():
            for name in full:
                for short in short_names(name):
                    owners.setdefault(short, set()).add(symbol)
        taken = {*table.aliases, *table.context_aliases, *table.symbols}
        for short, symbols in owners.items():
            if len(symbols) == 1 and short not in taken:
                names[next(iter(symbols))].add(short)
        self._names = names
        # Loose forms, keyed by their letters in lower case so that two symbols' identical forms
        # (and a form that is another symbol's own name) share a key and an owner set.
        # A context alias is an ordinary word ("Target", "Delta"): never matched in any case. Where
        # two of a symbol's names give the same key, the case-sensitive form wins.
        common = set(table.context_aliases)
        loose: dict[str, dict[str, str]] = {}
        for symbol, full in names.items():
            forms = loose.setdefault(symbol, {})
            for name in sorted(full):
                for key, pattern in _loose_forms(name, any_case=name not in common):
                    if key not in forms or _ANY_CASE in forms[key]:
                        forms[key] = pattern
        loose_owners: dict[str, set[str]] = {}
        for symbol, forms in loose.items():
            for key in forms:
                loose_owners.setdefault(key, set()).add(symbol)
        self._loose_owners = loose_owners
        self._loose = loose
        self._loose_regexes = lru_cache(maxsize=4096)(self._compile_loose)
        self._literal_regex = lru_cache(maxsize=4096)(self._compile_literal)
        self._lower_regex = lru_cache(maxsize=4096)(self._compile_lower)

    @classmethod
    def load(cls) -> MentionFinder:
        """The finder over the symbol table shipped with ingest."""
        return cls(SymbolLinker(SymbolTable.load()))

    def find(self, text: str, symbols: Sequence[str]) -> list[list[Span]]:
        """For each symbol (in the order given), its spans in text order; [] where none."""
        if not symbols:
            return []
        by_symbol: dict[str, list[Span]] = {}
        for hit in self.linker.spans(text):
            by_symbol.setdefault(hit.symbol, []).append((hit.start, hit.end))
        out: list[list[Span]] = []
        for symbol in symbols:
            spans = set(by_symbol.get(symbol, ()))
            spans.update(m.span() for m in self._literal_regex(symbol).finditer(text))
            if not spans:
                spans.update(self._loose_spans(text, symbol, symbols))
            if not spans:
                lower = self._lower_regex(symbol)
                if lower is not None:
                    spans.update(m.span() for m in lower.finditer(text))
            out.append(sorted(spans))
        return out

    def _loose_spans(self, text: str, symbol: str, asked: Sequence[str]) -> list[Span]:
        others = set(asked) - {symbol}
        out: list[Span] = []
        for key, regex in self._loose_regexes(symbol):
            if self._loose_owners[key] & others:
                continue  # another company asked about is named the same way: it names neither
            out += [m.span() for m in regex.finditer(text)]
        return out

    def _compile_loose(self, symbol: str) -> list[tuple[str, re.Pattern[str]]]:
        return [(key, re.compile(pattern)) for key, pattern in self._loose.get(symbol, {}).items()]

    def _compile_literal(self, symbol: str) -> re.Pattern[str]:
        variants = _variants(symbol)
        cashtags = "|".join(re.escape(v) for v in variants)
        parts = [r"(?<![\w$])\$(?i:" + cashtags + r")" + _AFTER]
        bare = [re.escape(v) for v in variants if len(v) >= _MIN_BARE]
        if bare:
            parts.append(_BEFORE + "(?:" + "|".join(bare) + ")" + _AFTER)
        names = sorted(self._names.get(symbol, ()), key=len, reverse=True)
        if names:
            parts.append(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)")
        return re.compile("|".join(parts))

    def _compile_lower(self, symbol: str) -> re.Pattern[str] | None:
        words = [v.lower() for v in _variants(symbol) if len(v) >= _MIN_LOWER and v.isalpha()]
        if not words:
            return None
        return re.compile(_BEFORE + "(?:" + "|".join(re.escape(w) for w in dict.fromkeys(words)) + ")" + _AFTER)


def token_positions(
    offsets: Sequence[tuple[int, int]], spans: Sequence[Span], special: Sequence[int] | None = None
) -> list[int]:
    """Indexes of the tokens that overlap any span. Special tokens ([CLS], [SEP]: offsets (0, 0)
    or flagged in `special`) never count; a span cut off by truncation yields fewer or none."""
    out: list[int] = []
    for index, (start, end) in enumerate(offsets):
        if end <= start or (special is not None and special[index]):
            continue
        if any(start < span_end and end > span_start for span_start, span_end in spans):
            out.append(index)
    return out
