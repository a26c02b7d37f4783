"""The same model in every form the benchmarks compare, built from the checkpoint behind a model dir.

* `torch_model`: moodwire's own network (encoder + mean pooling + polarity and emotion heads) in
  PyTorch, with exactly the weights that were exported to the model dir's int8 graph.
* `pipeline_model`: what a user of the default transformers stack would run: a
  `BertForSequenceClassification` (AutoModelForSequenceClassification) built from the same base,
  with the same encoder weights and the two heads stacked into its classifier (3 + 7 = 10
  logits). Its architecture is the library's (CLS token -> pooler -> classifier, not moodwire's
  mean pooling), so its labels differ; its arithmetic is the same to within the pooler's one
  384x384 matrix per post (< 0.1% of the encoder's).
* `fp32_model_dir`: a model dir holding `model.fp32.onnx` (the fused fp32 graph that int8 is
  quantized from) and/or `model.fp16.onnx`, as asked; exported from the same weights with
  `scorer.training.export` and cached under data/build/bench/.

Which weights made the model dir: the untrained stand-in records `trained: false` and its
`head_seed` in moodwire_model.json, and is rebuilt from the base with that seed; a trained model
is loaded from its checkpoint (`--checkpoint`, else data/build/runs/latest/checkpoint when its
model_version matches). Anything else is an error rather than a silent comparison against a
different model; `agreement` in the results checks the match on the corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scorer import model_files

if TYPE_CHECKING:
    from scorer.training.modeling import SentimentModel

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO / "data" / "build" / "runs" / "latest" / "checkpoint"
CACHE_DIR = REPO / "data" / "build" / "bench"


@dataclass(frozen=True)
class Reference:
    """How to rebuild the torch weights behind a model dir (JSON-able: it travels to workers)."""

    model_dir: str
    model_version: str
    base_model: str
    max_length: int
    head_seed: int | None  # the untrained stand-in: base + heads initialised with this seed
    checkpoint: str | None  # a trained model: the `moodwire train` checkpoint dir

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Reference:
        return cls(**raw)


def find_reference(model_dir: Path | str | None = None, checkpoint: Path | str | None = None) -> Reference:
    model_dir = Path(model_dir) if model_dir is not None else model_files.default_model_dir()
    meta = model_files.read_meta(model_dir)
    common = dict(
        model_dir=str(model_dir),
        model_version=meta.model_version,
        base_model=meta.base_model,
        max_length=meta.max_length,
    )
    if checkpoint is not None:
        return Reference(**common, head_seed=None, checkpoint=str(checkpoint))
    if meta.extra.get("trained") is False and "head_seed" in meta.extra:
        return Reference(**common, head_seed=int(meta.extra["head_seed"]), checkpoint=None)
    info_file = DEFAULT_CHECKPOINT / "checkpoint.json"
    if info_file.is_file():
        version = json.loads(info_file.read_text(encoding="utf-8")).get("model_version")
        if version == meta.model_version:
            return Reference(**common, head_seed=None, checkpoint=str(DEFAULT_CHECKPOINT))
    raise FileNotFoundError(
        f"can't tell which weights made {model_dir} (model_version {meta.model_version!r}): "
        f"pass the checkpoint it was exported from (--checkpoint)"
    )


def torch_model(ref: Reference, attn_implementation: str = "sdpa") -> SentimentModel:
    """moodwire's network with the weights behind the model dir, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from scorer.training.modeling import build_model, load_checkpoint

    if ref.checkpoint is not None:
        model, _info = load_checkpoint(Path(ref.checkpoint), attn_implementation=attn_implementation)
    else:
        model = build_model(ref.base_model, seed=int(ref.head_seed or 0), attn_implementation=attn_implementation)
    return model.eval()


def pipeline_model(ref: Reference) -> tuple[Any, Any]:
    """(AutoModelForSequenceClassification, AutoTokenizer) with the reference's encoder and heads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
    from scorer.training.modeling import resolve_base

    hf_logging.set_verbosity_error()
    source = torch_model(ref)
    base_dir = resolve_base(ref.base_model)
    labels = [f"polarity:{x}" for x in POLARITY_LABELS] + [f"emotion:{x}" for x in EMOTION_LABELS]
    config = AutoConfig.from_pretrained(
        str(base_dir),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = AutoModelForSequenceClassification.from_pretrained(str(base_dir), config=config)
    missing = model.base_model.load_state_dict(source.encoder.state_dict(), strict=False)
    unexpected_encoder = [k for k in missing.missing_keys if not k.startswith("pooler.")]
    if unexpected_encoder or missing.unexpected_keys:
        raise RuntimeError(f"encoder weights don't fit the pipeline model: {missing}")
    with torch.no_grad():
        model.classifier.weight.copy_(torch.cat([source.polarity_head.weight, source.emotion_head.weight]))
        model.classifier.bias.copy_(torch.cat([source.polarity_head.bias, source.emotion_head.bias]))
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    return model.eval(), tokenizer


def graph_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def fp32_model_dir(ref: Reference, fp16: bool = False, fp32: bool = True) -> Path:
    """A model dir with model.fp32.onnx and/or model.fp16.onnx (as asked) from the reference weights.

    Uses the model dir's own files when it has them; otherwise exports once and caches the
    result under data/build/bench/<model_version>-<digest of model.onnx>/. Only the graphs asked
    for are required, so a GPU-only run needs no fp32 graph on disk.
    """
    source = Path(ref.model_dir)
    want = ([model_files.FP32_MODEL_FILE] if fp32 else []) + ([model_files.FP16_MODEL_FILE] if fp16 else [])
    if all((source / name).is_file() for name in want):
        return source
    cache = CACHE_DIR / f"{ref.model_version}-{graph_digest(source / model_files.MODEL_FILE)}"
    if all((cache / name).is_file() for name in want):
        return cache
    from scorer.training.export import export_fp32, fuse, to_fp16

    cache.mkdir(parents=True, exist_ok=True)
    model = torch_model(ref, attn_implementation="eager")  # SDPA leaves ORT nothing to fuse
    cfg = model.encoder.config
    raw = cache / "raw.onnx"
    log.info("exporting %s from the reference weights into %s", " and ".join(want), cache)
    export_fp32(model, raw)
    for name in want:
        if (source / name).is_file():
            shutil.copyfile(source / name, cache / name)
        elif name == model_files.FP32_MODEL_FILE:
            fuse(raw, cache / name, int(cfg.num_attention_heads), int(cfg.hidden_size))
        else:
            to_fp16(raw, cache / name, int(cfg.num_attention_heads), int(cfg.hidden_size))
    raw.unlink()
    for name in (model_files.META_FILE, model_files.TOKENIZER_FILE):
        shutil.copyfile(source / name, cache / name)
    return cache
