"""Everything that decides a training run, in one dataclass (saved into the run report)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from scorer.training.data import BUILD_DIR, TRAIN_FILE, VALIDATION_FILE
from scorer.training.modeling import DEFAULT_BASE


@dataclass
class TrainingArguments:
    output_dir: Path = BUILD_DIR / "runs" / "latest"
    base_model: str = DEFAULT_BASE
    model_version: str = "minilm-l6-moodwire-3"
    train_file: Path = BUILD_DIR / TRAIN_FILE
    validation_file: Path = BUILD_DIR / VALIDATION_FILE

    seed: int = 13
    epochs: float = 3.0
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3  # fresh heads learn faster than the pretrained encoder should move
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_size: int = 32
    max_length: int = 64
    dropout: float = 0.1

    # Loss: polarity + emotion_loss_weight * emotion + stance_loss_weight * stance, each masked to
    # the rows (targets) that carry that label.
    emotion_loss_weight: float = 1.0
    stance_loss_weight: float = 1.0

    # Per-ticker stance head: "local", "span_attention" or "span" (see modeling.StanceHead); None = no head.
    stance_pooling: str | None = "local"
    # Where training reads each target's tokens: "finder" (the run-time span finder) or "labels"
    # (the labelled mentions). Validation always uses the finder.
    stance_spans: str = "finder"
    # Chance that a stance row's tickers are swapped for other companies, drawn anew each epoch.
    symbol_swap_prob: float = 0.5
    # Two-ticker posts stitched from pairs of single-ticker rows, per epoch (stance loss only).
    composed_per_epoch: int = 0
    # Inverse-frequency class weights, softened by this power (0 = off, 1 = full inverse frequency).
    class_weight_power: float = 0.5
    # The hand-labelled financial rows are few and are what the product is about: each epoch
    # sees them this many times.
    # The stance set likewise.
    origin_repeats: dict[str, int] = field(default_factory=lambda: {"handlabelled": 3, "stance": 3})

    # Checkpoint selection looks hardest at these validation rows (see train.evaluate_encoded).
    selection_origin: str | None = "handlabelled"
    eval_every_steps: int = 200
    early_stopping_patience: int = 4  # evaluations without improvement before stopping
    max_train_minutes: float | None = None  # wall-clock budget; training stops cleanly when it is spent
    threads: int | None = None  # torch intra-op threads (default: the cores this process may use)

    # Smoke runs (CI): cap the data and the steps.
    max_train_examples: int | None = None
    max_validation_examples: int | None = None
    max_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingArguments:
        paths = {"output_dir", "train_file", "validation_file"}
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training arguments: {sorted(unknown)}")
        return cls(**{k: Path(v) if k in paths else v for k, v in raw.items()})

    @classmethod
    def smoke(cls, output_dir: Path, train_file: Path, validation_file: Path) -> TrainingArguments:
        """A few steps on a tiny subset: proves the training path works, not that it learns."""
        return cls(
            output_dir=output_dir,
            train_file=train_file,
            validation_file=validation_file,
            model_version="smoke",
            batch_size=8,
            max_train_examples=64,
            max_validation_examples=32,
            max_steps=4,
            eval_every_steps=2,
            epochs=1.0,
        )
