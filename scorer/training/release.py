"""From a trained checkpoint to the shipped model: export, evaluate everywhere, write the card.

    python -m scorer.training.release [--checkpoint DIR] [--out models/default] [--notes FILE]

The shipped card was rendered with --notes data/model_card_notes.md.

1. export with the fp32 and fp16 graphs (data/build/release/), agreement measured on validation texts;
2. fit one softmax temperature per head (polarity, emotion, stance) on the financial validation
   rows with the int8 graph, and write them into moodwire_model.json;
3. evaluate int8 (with baselines), fp32 and fp16 on every named evaluation set that is built
   (data/build/eval/*.json), the stance test split and the final stance batch included;
4. write the shipped model dir (int8 for CPUs + fp16 for GPUs + tokenizer + meta + MODEL_CARD.md;
   no fp32: size). The scorer picks the fp16 graph when it runs on CUDA.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from scorer import model_files
from scorer.training import data
from scorer.training.calibration import fit_model_temperatures
from scorer.training.card import render
from scorer.training.evaluate import evaluate
from scorer.training.export import export_checkpoint

RUN_DIR = data.BUILD_DIR / "runs" / "latest"
RELEASE_DIR = data.BUILD_DIR / "release"
EVAL_DIR = data.BUILD_DIR / "eval"


def release(
    checkpoint: Path = RUN_DIR / "checkpoint",
    out: Path | None = None,
    sets: tuple[str, ...] = tuple(data.EVAL_SETS),
    notes: str = "",
    previous: Path | None = None,
) -> dict[str, Any]:
    """previous: the model dir this release replaces (default: what `out` holds now), evaluated
    on the same sets so that the card can show what changed."""
    out = out or model_files.default_model_dir()
    if previous is None and (out / model_files.META_FILE).is_file():
        previous = out
    console = Console(width=140)
    run = json.loads((checkpoint.parent / "run_report.json").read_text())
    manifest = json.loads((data.BUILD_DIR / data.MANIFEST_FILE).read_text())
    validation = data.load_labelled(data.BUILD_DIR / data.VALIDATION_FILE)
    samples = [r.text for r in validation]
    training = {k: run.get(k) for k in ("minutes", "steps", "epochs_completed", "examples_per_second",
                                         "stop_reason", "best_step", "train_rows", "train_rows_by_origin")}
    report = export_checkpoint(
        checkpoint, RELEASE_DIR, samples=samples, fp16=True, keep_fp32=True, extra={"training": training}
    )
    console.print(report.as_dict())
    calibration = calibrate(RELEASE_DIR, validation)
    console.print({"calibration": calibration})

    evals: dict[str, dict[str, Any]] = {}
    fp32: dict[str, dict[str, Any]] = {}
    fp16: dict[str, dict[str, Any]] = {}
    before: dict[str, dict[str, Any]] = {}
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    for name in sets:
        if not (data.BUILD_DIR / data.EVAL_SETS[name]).is_file():
            console.print(f"[yellow]{name} is not built ({data.EVAL_SETS[name]}): not evaluated[/]")
            continue
        path = data.resolve_data(name)
        evals[name] = evaluate(RELEASE_DIR, path, with_baselines=True, out_json=EVAL_DIR / f"{name}.int8.json",
                               console=console)
        fp32[name] = evaluate(RELEASE_DIR, path, with_baselines=False, model_file=model_files.FP32_MODEL_FILE,
                              out_json=EVAL_DIR / f"{name}.fp32.json", console=console)
        fp16[name] = evaluate(RELEASE_DIR, path, with_baselines=False, model_file=model_files.FP16_MODEL_FILE,
                              out_json=EVAL_DIR / f"{name}.fp16.json", console=console)
        if previous is not None:
            before[name] = evaluate(previous, path, with_baselines=False, out_json=EVAL_DIR / f"{name}.previous.json",
                                    console=console)

    meta = model_files.read_meta(RELEASE_DIR)
    shipped = {name: RELEASE_DIR / name for name in (model_files.MODEL_FILE, model_files.FP16_MODEL_FILE)}
    shipped_meta = replace(meta, files={model_files.MODEL_FILE: "int8", model_files.FP16_MODEL_FILE: "fp16"})
    card = render(json.loads(shipped_meta.to_json()), manifest, run, evals, fp32, notes=notes, fp16_evals=fp16,
                  previous_evals=before)
    model_files.write_model_dir(out, shipped_meta, RELEASE_DIR / model_files.TOKENIZER_FILE, shipped, card=card)
    console.print(f"wrote {out}")
    return {"export": report.as_dict(), "calibration": calibration, "evals": evals, "fp32": fp32, "fp16": fp16}


def calibrate(model_dir: Path, validation: list[data.Example]) -> dict[str, Any]:
    """Fit the temperatures on the validation rows with the int8 graph (what a CPU runs) and write
    them, and how they were fitted, into the model dir's meta file."""
    calibration = fit_model_temperatures(model_dir, validation)
    meta = model_files.read_meta(model_dir)
    meta = replace(meta, temperatures=calibration["temperatures"], extra={**meta.extra, "calibration": calibration})
    (model_dir / model_files.META_FILE).write_text(meta.to_json(), encoding="utf-8")
    return calibration


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("scorer").setLevel(logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=RUN_DIR / "checkpoint")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--notes", type=Path, default=None, help="Markdown added to the card under the results.")
    parser.add_argument("--card-only", action="store_true", help="Re-render the card from data/build/ JSON files.")
    parser.add_argument("--previous", type=Path, default=None,
                        help="The model dir this release replaces (default: the one at --out), evaluated for comparison.")
    a = parser.parse_args()
    notes = a.notes.read_text(encoding="utf-8") if a.notes else ""
    if a.card_only:
        rerender_card(a.out or model_files.default_model_dir(), a.checkpoint, notes)
        return 0
    release(a.checkpoint, a.out, notes=notes, previous=a.previous)
    return 0


def rerender_card(out: Path, checkpoint: Path, notes: str) -> Path:
    """Only the card, from the JSON a previous release wrote (no export, no evaluation)."""
    run = json.loads((checkpoint.parent / "run_report.json").read_text())
    manifest = json.loads((data.BUILD_DIR / data.MANIFEST_FILE).read_text())
    found: dict[str, dict[str, dict[str, Any]]] = {"int8": {}, "fp32": {}, "fp16": {}, "previous": {}}
    for name in data.EVAL_SETS:
        for graph, results in found.items():
            path = EVAL_DIR / f"{name}.{graph}.json"
            if path.is_file():
                results[name] = json.loads(path.read_text())
    meta = json.loads((out / model_files.META_FILE).read_text())
    card = render(meta, manifest, run, found["int8"], found["fp32"], notes=notes, fp16_evals=found["fp16"],
                  previous_evals=found["previous"])
    return model_files.write_card(out, card)


if __name__ == "__main__":
    raise SystemExit(main())
