"""The model directory: what a shipped model is made of, and the one place that reads and writes it.

A model dir holds:

    model.onnx            the default graph (dynamic int8 for CPU)
    model.fp16.onnx       optional, for the CUDA execution provider
    model.fp32.onnx       optional, never shipped (used to measure what int8 costs)
    tokenizer.json        a `tokenizers` tokenizer, truncation set to max_length, padding off
    moodwire_model.json   ModelMeta below
    MODEL_CARD.md         how the model was made and how well it does

Graph contract: inputs input_ids / attention_mask (and token_type_ids if the graph lists it),
int64 [batch, seq]; outputs polarity_logits [batch, 3] and emotion_logits [batch, 7], in the
label order written in the meta file. A graph with a stance head also takes target_mask, float
[batch, targets, seq] (1.0 on the tokens of that ticker's mentions), and returns stance_logits
[batch, targets, 3] in the polarity label order (negative = bearish for holders). The meta
file's `temperatures` (per head, default 1.0) divide the logits before the softmax: they were
fitted on the validation split so that probabilities match how often the labels are right.

This module is on the runtime path, so it uses the standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS

MODEL_FILE = "model.onnx"
FP16_MODEL_FILE = "model.fp16.onnx"
FP32_MODEL_FILE = "model.fp32.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "moodwire_model.json"
CARD_FILE = "MODEL_CARD.md"

INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES: tuple[str, ...] = ("polarity_logits", "emotion_logits")
TARGET_MASK_INPUT = "target_mask"
STANCE_OUTPUT = "stance_logits"
HEADS: tuple[str, ...] = ("polarity", "emotion", "stance")

MODEL_DIR_ENV = "MOODWIRE_MODEL_DIR"


@dataclass(frozen=True)
class ModelMeta:
    model_version: str
    base_model: str
    max_length: int
    polarity_labels: tuple[str, ...] = POLARITY_LABELS
    emotion_labels: tuple[str, ...] = EMOTION_LABELS
    input_names: tuple[str, ...] = INPUT_NAMES
    output_names: tuple[str, ...] = OUTPUT_NAMES
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # Which precision each graph file holds, e.g. {"model.onnx": "int8", "model.fp16.onnx": "fp16"}.
    files: dict[str, str] = field(default_factory=dict)
    # Anything else worth keeping next to the model (training run summary, export agreement, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    # Softmax temperature per head (polarity, emotion, stance); a head not listed uses 1.0.
    temperatures: dict[str, float] = field(default_factory=dict)

    def temperature(self, head: str) -> float:
        return float(self.temperatures.get(head, 1.0))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelMeta:
        known = {
            "model_version", "base_model", "max_length", "polarity_labels", "emotion_labels",
            "input_names", "output_names", "created_at", "files", "extra", "temperatures",
        }
        missing = {"model_version", "base_model", "max_length"} - raw.keys()
        if missing:
            raise ValueError(f"{META_FILE} lacks {sorted(missing)}")
        temperatures = {str(k): float(v) for k, v in (raw.get("temperatures") or {}).items()}
        if any(not t > 0 for t in temperatures.values()):
            raise ValueError(f"{META_FILE}: temperatures must be positive, got {temperatures}")
        # Unknown keys are kept under extra so that a newer writer does not break an older reader.
        extra = dict(raw.get("extra", {}))
        extra.update({k: v for k, v in raw.items() if k not in known})
        return cls(
            model_version=str(raw["model_version"]),
            base_model=str(raw["base_model"]),
            max_length=int(raw["max_length"]),
            polarity_labels=tuple(raw.get("polarity_labels", POLARITY_LABELS)),
            emotion_labels=tuple(raw.get("emotion_labels", EMOTION_LABELS)),
            input_names=tuple(raw.get("input_names", INPUT_NAMES)),
            output_names=tuple(raw.get("output_names", OUTPUT_NAMES)),
            created_at=str(raw.get("created_at", "")),
            files=dict(raw.get("files", {})),
            extra=extra,
            temperatures=temperatures,
        )


def default_model_dir() -> Path:
    """The model the product ships with: MOODWIRE_MODEL_DIR if set, else <repo>/models/default."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override).expanduser()
    # scorer/ sits next to models/ in the repository (and in an editable install).
    return Path(__file__).resolve().parent.parent / "models" / "default"


def read_meta(model_dir: Path | str) -> ModelMeta:
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a moodwire model dir (no {META_FILE}): {Path(model_dir)}")
    meta = ModelMeta.from_dict(json.loads(path.read_text(encoding="utf-8")))
    # The label order is part of the product contract; a model that disagrees must not load silently.
    if meta.polarity_labels != POLARITY_LABELS or meta.emotion_labels != EMOTION_LABELS:
        raise ValueError(
            f"{path}: label order {meta.polarity_labels}/{meta.emotion_labels} differs from moodwire.labels"
        )
    return meta


def graph_path(model_dir: Path | str, file_name: str = MODEL_FILE) -> Path:
    path = Path(model_dir) / file_name
    if not path.is_file():
        raise FileNotFoundError(f"model graph not found: {path}")
    return path


def tokenizer_path(model_dir: Path | str) -> Path:
    path = Path(model_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path}")
    return path


def prepare_tokenizer_json(source: Path, max_length: int) -> str:
    """The base model's tokenizer.json with truncation at max_length and padding off.

    The runtime pads each micro-batch to its own longest post; a tokenizer that pads to a fixed
    width (as the base model's does, to 128) would throw that away.
    """
    raw = json.loads(Path(source).read_text(encoding="utf-8"))
    raw["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0}
    raw["padding"] = None
    return json.dumps(raw, ensure_ascii=False)


def write_model_dir(
    dest: Path | str,
    meta: ModelMeta,
    tokenizer_source: Path,
    graphs: dict[str, Path],
    card: str | None = None,
) -> Path:
    """Write a complete model dir and swap it into place, so a reader never sees half a model.

    graphs maps a file name in the dir (MODEL_FILE, FP16_MODEL_FILE, ...) to a file to copy there.
    """
    dest = Path(dest)
    if MODEL_FILE not in graphs:
        raise ValueError(f"a model dir needs {MODEL_FILE}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model dir is meant to be read by services
    try:
        for name, src in graphs.items():
            shutil.copyfile(src, staging / name)
        (staging / TOKENIZER_FILE).write_text(
            prepare_tokenizer_json(tokenizer_source, meta.max_length), encoding="utf-8"
        )
        (staging / META_FILE).write_text(meta.to_json(), encoding="utf-8")
        if card is not None:
            (staging / CARD_FILE).write_text(card, encoding="utf-8")
        elif (dest / CARD_FILE).is_file():
            shutil.copyfile(dest / CARD_FILE, staging / CARD_FILE)
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return dest


def write_card(model_dir: Path | str, card: str) -> Path:
    path = Path(model_dir) / CARD_FILE
    path.write_text(card, encoding="utf-8")
    return path
