"""Score a labelled file with an exported model and the lexicon baselines; one table per head."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from scorer.training import baselines as bl
from scorer.training.data import load_labelled
from scorer.training.metrics import classification_report

MODEL_SYSTEM = "moodwire"


def evaluate(
    model_dir: Path | str,
    data_file: Path | str,
    with_baselines: bool = True,
    model_file: str | None = None,
    out_json: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1 and confusion matrices for both heads, on the rows
    that carry each gold label, for the model and (optionally) every baseline."""
    from scorer.runtime import OnnxScorer

    rows = load_labelled(Path(data_file))
    scorer = OnnxScorer(model_dir, provider="cpu", model_file=model_file)
    started = time.monotonic()
    preds = scorer.predict([r.text for r in rows])
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
        ("polarity", POLARITY_LABELS, bl.POLARITY_BASELINES, [p.polarity for p in preds]),
        ("emotion", EMOTION_LABELS, bl.EMOTION_BASELINES, [p.emotion for p in preds]),
    )
    for head, labels, baselines, model_pred in heads:
        keep = [i for i, r in enumerate(rows) if getattr(r, head) is not None]
        if not keep:
            continue
        gold = [getattr(rows[i], head) for i in keep]
        texts = [rows[i].text for i in keep]
        systems = {MODEL_SYSTEM: classification_report(gold, [model_pred[i] for i in keep], labels)}
        if with_baselines:
            for name, fn in baselines.items():
                systems[name] = classification_report(gold, fn(texts), labels)
        gold_counts = {label: gold.count(label) for label in labels}
        result[head] = {"n": len(keep), "gold_distribution": gold_counts, "systems": systems}

    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_result(result, console or Console())
    return result


def print_result(result: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]{result['data']}[/]: {result['rows']} rows; model {result['model_version']} "
        f"({result['model_file']}), {result['model_posts_per_second']} posts/s"
    )
    for head in ("polarity", "emotion"):
        if head not in result:
            continue
        block = result[head]
        labels = next(iter(block["systems"].values()))["labels"]
        table = Table(title=f"{head} (n={block['n']})")
        table.add_column("system")
        table.add_column("macro-F1", justify="right")
        table.add_column("accuracy", justify="right")
        for label in labels:
            table.add_column(f"F1 {label}", justify="right")
        for name, rep in block["systems"].items():
            style = "bold" if name == MODEL_SYSTEM else None
            table.add_row(
                name,
                f"{rep['macro_f1']:.3f}",
                f"{rep['accuracy']:.3f}",
                *[f"{rep['per_class'][label]['f1']:.3f}" for label in labels],
                style=style,
            )
        console.print(table)
        cm = block["systems"][MODEL_SYSTEM]["confusion_matrix"]
        matrix = Table(title=f"{head}: {MODEL_SYSTEM} confusion (rows gold, columns predicted)")
        matrix.add_column("gold \\ pred")
        for label in labels:
            matrix.add_column(label[:8], justify="right")
        for label, row in zip(labels, cm):
            matrix.add_row(label, *[str(v) for v in row])
        console.print(matrix)
