"""Score a labelled file with an exported model and the lexicon baselines; one table per head.

Rows with per-ticker `targets` (the stance sets) are also scored for stance, the way the product
does it: the run-time span finder locates each ticker in the text (not the labelled mentions),
and a ticker it cannot find takes the post's polarity. Next to the model stands the baseline
"post polarity copied to every ticker" (the model's own post polarity), on all targets and on the
rows whose tickers disagree. Rows of kind "post" (social posts, not headlines) get their own
polarity table. Calibration: the expected calibration error of each head before (temperature 1)
and after the model's fitted temperatures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from scorer.training import baselines as bl
from scorer.training.calibration import expected_calibration_error
from scorer.training.data import Example, load_labelled
from scorer.training.metrics import classification_report

MODEL_SYSTEM = "moodwire"
COPIED_SYSTEM = "post polarity copied"
SOCIAL_KIND = "post"


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def stance_block(rows: Sequence[Example], predictions: Sequence[Any]) -> dict[str, Any] | None:
    """Per-ticker stance: the model against the copied post polarity, on every labelled target and
    on the targets of rows whose gold stances disagree. predictions[i].targets must follow
    rows[i].targets in order (predict(texts, symbols) with the rows' symbols)."""
    gold: list[str] = []
    model: list[str] = []
    copied: list[str] = []
    differ: list[bool] = []
    basis: list[str] = []
    for row, pred in zip(rows, predictions):
        if not row.targets:
            continue
        read = {t.symbol: t for t in pred.targets}
        for target in row.targets:
            got = read.get(target.symbol)
            gold.append(target.stance)
            # A model without a stance head returns no targets: its stance is the post's polarity.
            model.append(got.polarity if got is not None else pred.polarity)
            basis.append(got.basis if got is not None else "post")
            copied.append(pred.polarity)
            differ.append(row.disagrees)
    if not gold:
        return None

    def systems(sel: list[int]) -> dict[str, Any]:
        g = [gold[j] for j in sel]
        return {
            MODEL_SYSTEM: classification_report(g, [model[j] for j in sel], POLARITY_LABELS),
            COPIED_SYSTEM: classification_report(g, [copied[j] for j in sel], POLARITY_LABELS),
        }

    everything = list(range(len(gold)))
    split = [j for j in everything if differ[j]]
    return {
        "n_rows": sum(1 for r in rows if r.targets),
        "n": len(gold),
        "gold_distribution": {label: gold.count(label) for label in POLARITY_LABELS},
        "share_read_at_mentions": round(basis.count("mention") / len(gold), 4),
        "systems": systems(everything),
        "disagreeing": {
            "n_rows": sum(1 for r in rows if r.targets and r.disagrees),
            "n": len(split),
            "systems": systems(split) if split else {},
        },
    }


def calibration_block(
    rows: Sequence[Example], logits: Any, temperatures: dict[str, float], predictions: Sequence[Any]
) -> dict[str, Any]:
    """ECE per head before (T = 1) and after the model's temperatures, on the rows (targets read
    at mentions, for stance) that carry the gold label."""
    out: dict[str, Any] = {}
    for head, labels, matrix in (("polarity", POLARITY_LABELS, logits.polarity),
                                 ("emotion", EMOTION_LABELS, logits.emotion)):
        keep = [i for i, r in enumerate(rows) if getattr(r, head) is not None]
        if keep:
            gold = np.array([labels.index(getattr(rows[i], head)) for i in keep])
            out[head] = _ece(matrix[keep], gold, temperatures.get(head, 1.0))
    stance_logits, stance_gold = [], []
    for i, (row, pred) in enumerate(zip(rows, predictions)):
        for k, (target, read) in enumerate(zip(row.targets or (), pred.targets)):
            if read.basis == "mention" and len(logits.stance[i]) > k:
                stance_logits.append(logits.stance[i][k])
                stance_gold.append(POLARITY_LABELS.index(target.stance))
    if stance_gold:
        out["stance"] = _ece(np.vstack(stance_logits), np.array(stance_gold), temperatures.get("stance", 1.0))
    return out


def _ece(logits: np.ndarray, gold: np.ndarray, temperature: float) -> dict[str, Any]:
    return {
        "n": int(len(gold)),
        "temperature": float(temperature),
        "ece_before": round(expected_calibration_error(_softmax(logits), gold), 4),
        "ece_after": round(expected_calibration_error(_softmax(logits / temperature), gold), 4),
    }


def evaluate(
    model_dir: Path | str,
    data_file: Path | str,
    with_baselines: bool = True,
    model_file: str | None = None,
    out_json: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1 and confusion matrices for both heads, on the rows
    that carry each gold label, for the model and (optionally) every baseline; per-ticker stance
    where rows carry targets; social-post polarity; calibration."""
    from scorer.runtime import OnnxScorer

    rows = load_labelled(Path(data_file))
    scorer = OnnxScorer(model_dir, provider="cpu", model_file=model_file)
    has_targets = any(r.targets for r in rows)
    symbols = [[t.symbol for t in r.targets or ()] for r in rows] if has_targets else None
    texts = [r.text for r in rows]
    started = time.monotonic()
    preds, logits = scorer.predict_with_logits(texts, symbols)
    seconds = time.monotonic() - started

    result: dict[str, Any] = {
        "data": str(data_file),
        "rows": len(rows),
        "model_dir": str(model_dir),
        "model_file": scorer.model_path.name,
        "model_version": scorer.model_version,
        "model_posts_per_second": round(len(rows) / seconds, 1) if seconds > 0 else None,
    }
    heads = (
        ("polarity", POLARITY_LABELS, bl.POLARITY_BASELINES, [p.polarity for p in preds], None),
        ("emotion", EMOTION_LABELS, bl.EMOTION_BASELINES, [p.emotion for p in preds], None),
        ("polarity_social_posts", POLARITY_LABELS, bl.POLARITY_BASELINES, [p.polarity for p in preds], SOCIAL_KIND),
    )
    for block_name, labels, baselines, model_pred, kind in heads:
        head = "emotion" if block_name == "emotion" else "polarity"
        keep = [i for i, r in enumerate(rows) if getattr(r, head) is not None and (kind is None or r.kind == kind)]
        if not keep:
            continue
        gold = [getattr(rows[i], head) for i in keep]
        keep_texts = [rows[i].text for i in keep]
        systems = {MODEL_SYSTEM: classification_report(gold, [model_pred[i] for i in keep], labels)}
        if with_baselines:
            for name, fn in baselines.items():
                systems[name] = classification_report(gold, fn(keep_texts), labels)
        gold_counts = {label: gold.count(label) for label in labels}
        result[block_name] = {"n": len(keep), "gold_distribution": gold_counts, "systems": systems}

    stance = stance_block(rows, preds)
    if stance is not None:
        result["stance"] = stance
    result["calibration"] = calibration_block(rows, logits, dict(scorer.meta.temperatures), preds)

    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_result(result, console or Console())
    return result


def _systems_table(title: str, systems: dict[str, Any], labels: Sequence[str]) -> Table:
    table = Table(title=title)
    table.add_column("system")
    table.add_column("macro-F1", justify="right")
    table.add_column("accuracy", justify="right")
    for label in labels:
        table.add_column(f"F1 {label}", justify="right")
    for name, rep in systems.items():
        style = "bold" if name == MODEL_SYSTEM else None
        table.add_row(
            name,
            f"{rep['macro_f1']:.3f}",
            f"{rep['accuracy']:.3f}",
            *[f"{rep['per_class'][label]['f1']:.3f}" for label in labels],
            style=style,
        )
    return table


def print_result(result: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]{result['data']}[/]: {result['rows']} rows; model {result['model_version']} "
        f"({result['model_file']}), {result['model_posts_per_second']} posts/s"
    )
    for head in ("polarity", "emotion", "polarity_social_posts"):
        if head not in result:
            continue
        block = result[head]
        labels = next(iter(block["systems"].values()))["labels"]
        title = "polarity, social posts only (kind post)" if head == "polarity_social_posts" else head
        console.print(_systems_table(f"{title} (n={block['n']})", block["systems"], labels))
        if head == "polarity_social_posts":
            continue
        cm = block["systems"][MODEL_SYSTEM]["confusion_matrix"]
        matrix = Table(title=f"{head}: {MODEL_SYSTEM} confusion (rows gold, columns predicted)")
        matrix.add_column("gold \\ pred")
        for label in labels:
            matrix.add_column(label[:8], justify="right")
        for label, row in zip(labels, cm):
            matrix.add_row(label, *[str(v) for v in row])
        console.print(matrix)
    stance = result.get("stance")
    if stance:
        console.print(_systems_table(
            f"per-ticker stance ({stance['n']} targets in {stance['n_rows']} rows; "
            f"{stance['share_read_at_mentions']:.1%} read at their mentions, the rest take the post's polarity)",
            stance["systems"], POLARITY_LABELS,
        ))
        split = stance["disagreeing"]
        if split["systems"]:
            console.print(_systems_table(
                f"per-ticker stance, rows whose tickers disagree ({split['n']} targets in {split['n_rows']} rows)",
                split["systems"], POLARITY_LABELS,
            ))
    calibration = result.get("calibration")
    if calibration:
        table = Table(title="calibration: expected calibration error (15 bins), before and after temperature scaling")
        for column in ("head", "n", "temperature", "ECE before", "ECE after"):
            table.add_column(column, justify="right" if column != "head" else "left")
        for head, c in calibration.items():
            table.add_row(head, str(c["n"]), f"{c['temperature']:.3f}", f"{c['ece_before']:.4f}", f"{c['ece_after']:.4f}")
        console.print(table)
