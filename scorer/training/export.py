"""Checkpoint -> ONNX fp32 -> BERT fusions -> dynamic int8 (and optionally fp16) -> model dir.

Each step is measured, not assumed: fp32 ONNX against torch, int8 against fp32 (argmax agreement
on real texts), and the numbers are written into the model's meta file.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorer import model_files
from scorer.model_files import ModelMeta
from scorer.runtime import Logits
from scorer.training.modeling import SentimentModel, load_checkpoint

log = logging.getLogger(__name__)

OPSET = 17

# Used when no sample texts are given: varied enough that argmax agreement means something.
FALLBACK_SAMPLES: tuple[str, ...] = (
    "$NVDA crushing estimates again, calls printing",
    "guidance cut and the CFO is leaving. great, just great",
    "Fed holds rates steady, as expected",
    "what time does $AAPL report?",
    "this dead cat bounce won't last, bagholders everywhere",
    "Shares of Acme fall 12% after accounting probe",
    "short squeeze incoming for $GME longs",
    "I can't believe they approved the merger",
    "terrified of margin calls tomorrow",
    "Company reports quarterly dividend of $0.24",
)


class _OnnxWrapper(torch.nn.Module):
    """Fixes the graph's argument order and output names; token_type_ids stays a real input
    because ORT's embedding fusion looks for it."""

    def __init__(self, model: SentimentModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(input_ids, attention_mask, token_type_ids)


class _OnnxStanceWrapper(torch.nn.Module):
    """The same, with target_mask in and stance_logits out."""

    def __init__(self, model: SentimentModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.forward_targets(input_ids, attention_mask, token_type_ids, target_mask)


def graph_names(model: SentimentModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the graph this model exports to."""
    if model.stance_head is None:
        return model_files.INPUT_NAMES, model_files.OUTPUT_NAMES
    return (
        (*model_files.INPUT_NAMES, model_files.TARGET_MASK_INPUT),
        (*model_files.OUTPUT_NAMES, model_files.STANCE_OUTPUT),
    )


def export_fp32(model: SentimentModel, path: Path) -> Path:
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    dynamic = {0: "batch", 1: "seq"}
    axes: dict[str, dict[int, str]] = {
        "input_ids": dynamic,
        "attention_mask": dynamic,
        "token_type_ids": dynamic,
        "polarity_logits": {0: "batch"},
        "emotion_logits": {0: "batch"},
    }
    inputs: tuple[torch.Tensor, ...] = (ids, mask, types)
    wrapper: torch.nn.Module
    if model.stance_head is None:
        wrapper = _OnnxWrapper(model)
    else:
        wrapper = _OnnxStanceWrapper(model)
        # Two targets in the trace, so that the targets axis cannot be specialised to a constant.
        targets = torch.zeros((2, 2, 4), dtype=torch.float32)
        targets[0, 0, 1] = targets[0, 1, 2] = targets[1, 0, 1] = 1.0
        inputs = (*inputs, targets)
        axes[model_files.TARGET_MASK_INPUT] = {0: "batch", 1: "targets", 2: "seq"}
        axes[model_files.STANCE_OUTPUT] = {0: "batch", 1: "targets"}
    wrapper.eval()  # a fresh wrapper is in training mode: dropout would be traced in
    input_names, output_names = graph_names(model)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def fuse(src: Path, dest: Path, num_heads: int, hidden_size: int, use_gpu: bool = False) -> dict[str, int]:
    """ORT's BERT fusions (attention, layernorm, gelu, embedding); returns the fused op counts."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, use_gpu=use_gpu
    )
    opt.save_model_to_file(str(dest))
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def quantize_int8(src: Path, dest: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dest),
        weight_type=QuantType.QInt8,
        # Per-tensor int8 flipped ~1 decision in 15 on this CPU (no VNNI); per-channel with a
        # reduced range keeps ~98% agreement at the same speed.
        per_channel=True,
        reduce_range=True,
        # The fused graph has ops whose output types the quantizer cannot infer without this.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return dest


def to_fp16(src_fp32: Path, dest: Path, num_heads: int, hidden_size: int) -> Path:
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(src_fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, use_gpu=True
    )
    # Inputs and outputs stay int64/float32 so the runtime feeds every graph the same way.
    opt.convert_float_to_float16(keep_io_types=True)
    opt.save_model_to_file(str(dest))
    return dest


def _torch_logits(
    model: SentimentModel,
    ids: Sequence[Sequence[int]],
    targets: Sequence[Sequence[Sequence[int]]] | None = None,
    batch: int = 64,
) -> Logits:
    model.eval()
    pols, emos = [], []
    stance: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            rows = ids[start : start + batch]
            width = max(len(r) for r in rows)
            input_ids = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
            types = torch.zeros_like(input_ids)
            if model.stance_head is not None and targets is not None:
                wanted = targets[start : start + batch]
                target_mask = torch.zeros((len(rows), max(1, max(len(t) for t in wanted)), width))
                for i, row_targets in enumerate(wanted):
                    for k, positions in enumerate(row_targets):
                        target_mask[i, k, list(positions)] = 1.0
                pol, emo, st = model.forward_targets(input_ids, mask, types, target_mask)
                stance += [st[i, : len(t)].numpy() for i, t in enumerate(wanted)]
            else:
                pol, emo = model(input_ids, mask, types)
                stance += [np.zeros((0, 3), dtype=np.float32) for _ in rows]
            pols.append(pol.numpy())
            emos.append(emo.numpy())
    return Logits(np.concatenate(pols), np.concatenate(emos), stance)


def _agreement(a: Logits, b: Logits, targets: Sequence[Sequence[Sequence[int]]] | None = None) -> dict[str, float]:
    out = {
        "polarity": float((a.polarity.argmax(1) == b.polarity.argmax(1)).mean()),
        "emotion": float((a.emotion.argmax(1) == b.emotion.argmax(1)).mean()),
        "max_abs_logit_diff": float(max(np.abs(a.polarity - b.polarity).max(), np.abs(a.emotion - b.emotion).max())),
    }
    if targets is not None:
        # Targets with mention tokens only: the others' logits are never used.
        pairs = [
            (a.stance[i][k], b.stance[i][k])
            for i, row in enumerate(targets) for k, positions in enumerate(row)
            if positions and len(a.stance[i]) > k and len(b.stance[i]) > k
        ]
        if pairs:
            out["stance"] = float(np.mean([x.argmax() == y.argmax() for x, y in pairs]))
            out["n_stance_targets"] = len(pairs)
            out["max_abs_logit_diff"] = max(out["max_abs_logit_diff"], float(max(np.abs(x - y).max() for x, y in pairs)))
    return out


@dataclass
class ExportReport:
    model_dir: str
    model_version: str
    n_samples: int
    fused_ops: dict[str, int]
    fp32_vs_torch: dict[str, float]
    int8_vs_fp32: dict[str, float]
    fp16_written: bool
    seconds: float
    files_mb: dict[str, float] = field(default_factory=dict)
    fp16_vs_fp32: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_model(
    model: SentimentModel,
    tokenizer_source: Path,
    dest: Path,
    model_version: str,
    base_model: str,
    max_length: int,
    samples: Sequence[str] = FALLBACK_SAMPLES,
    fp16: bool = False,
    keep_fp32: bool = False,
    extra: dict[str, Any] | None = None,
    card: str | None = None,
) -> ExportReport:
    """Export a torch model into a complete model dir at dest (int8 as model.onnx)."""
    from scorer.runtime import OnnxScorer

    started = time.monotonic()
    cfg = model.encoder.config
    num_heads, hidden = int(cfg.num_attention_heads), int(cfg.hidden_size)
    with tempfile.TemporaryDirectory(prefix="moodwire-export-") as tmp:
        work = Path(tmp)
        raw = export_fp32(model, work / "raw.onnx")
        fused_ops = fuse(raw, work / model_files.FP32_MODEL_FILE, num_heads, hidden)
        log.info("fusions: %s", fused_ops)
        if "Attention" not in fused_ops and "MultiHeadAttention" not in fused_ops:
            log.warning("no attention fusion happened: was the model exported with eager attention?")
        quantize_int8(work / model_files.FP32_MODEL_FILE, work / model_files.MODEL_FILE)
        if fp16:
            to_fp16(raw, work / model_files.FP16_MODEL_FILE, num_heads, hidden)
        (work / "raw.onnx").unlink()

        files = {model_files.MODEL_FILE: "int8", model_files.FP32_MODEL_FILE: "fp32"}
        if fp16:
            files[model_files.FP16_MODEL_FILE] = "fp16"
        input_names, output_names = graph_names(model)
        meta = ModelMeta(
            model_version=model_version, base_model=base_model, max_length=max_length, files=files, extra=extra or {},
            input_names=input_names, output_names=output_names,
        )
        # The work dir is a model dir too, so agreement is measured through the real runtime.
        (work / model_files.META_FILE).write_text(meta.to_json(), encoding="utf-8")
        (work / model_files.TOKENIZER_FILE).write_text(
            model_files.prepare_tokenizer_json(tokenizer_source, max_length), encoding="utf-8"
        )
        fp32_scorer = OnnxScorer(work, provider="cpu", model_file=model_files.FP32_MODEL_FILE)
        int8_scorer = OnnxScorer(work, provider="cpu", model_file=model_files.MODEL_FILE)
        targets: list[list[list[int]]] | None = None
        if fp32_scorer.has_stance_head:
            # The tickers the linker finds in each sample, at the spans the runtime would use.
            linker = fp32_scorer.mention_finder.linker
            ids, targets = fp32_scorer.target_positions(samples, [linker.link(t) for t in samples])
        else:
            ids = fp32_scorer.tokenize(samples)
        torch_out = _torch_logits(model, ids, targets)
        fp32_out = fp32_scorer.logits_with_targets(ids, targets)
        int8_out = int8_scorer.logits_with_targets(ids, targets)
        fp32_vs_torch = _agreement(torch_out, fp32_out, targets)
        int8_vs_fp32 = _agreement(fp32_out, int8_out, targets)
        log.info("fp32 vs torch %s; int8 vs fp32 %s", fp32_vs_torch, int8_vs_fp32)
        fp16_vs_fp32 = None
        if fp16:
            # Run here on the CPU EP (slow, but the same graph a GPU runs): a broken fp16 conversion
            # shows up as disagreement before the graph ships.
            fp16_scorer = OnnxScorer(work, provider="cpu", model_file=model_files.FP16_MODEL_FILE)
            fp16_vs_fp32 = _agreement(fp32_out, fp16_scorer.logits_with_targets(ids, targets), targets)
            log.info("fp16 vs fp32 %s", fp16_vs_fp32)

        shipped = {model_files.MODEL_FILE: work / model_files.MODEL_FILE}
        if fp16:
            shipped[model_files.FP16_MODEL_FILE] = work / model_files.FP16_MODEL_FILE
        if keep_fp32:
            shipped[model_files.FP32_MODEL_FILE] = work / model_files.FP32_MODEL_FILE
        export_info = {
            "fused_ops": fused_ops,
            "n_agreement_samples": len(samples),
            "fp32_vs_torch": fp32_vs_torch,
            "int8_vs_fp32": int8_vs_fp32,
        }
        if fp16_vs_fp32 is not None:
            export_info["fp16_vs_fp32"] = fp16_vs_fp32
        meta = ModelMeta(
            model_version=model_version,
            base_model=base_model,
            max_length=max_length,
            files={name: files[name] for name in shipped},
            extra={**(extra or {}), "export": export_info},
            input_names=input_names,
            output_names=output_names,
        )
        model_files.write_model_dir(dest, meta, tokenizer_source, shipped, card=card)
    sizes = {p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(Path(dest).iterdir()) if p.is_file()}
    return ExportReport(
        model_dir=str(dest),
        model_version=model_version,
        n_samples=len(samples),
        fused_ops=fused_ops,
        fp32_vs_torch=fp32_vs_torch,
        int8_vs_fp32=int8_vs_fp32,
        fp16_written=fp16,
        fp16_vs_fp32=fp16_vs_fp32,
        seconds=round(time.monotonic() - started, 1),
        files_mb=sizes,
    )


def export_checkpoint(
    checkpoint: Path,
    dest: Path,
    samples: Sequence[str] = FALLBACK_SAMPLES,
    fp16: bool = False,
    keep_fp32: bool = False,
    extra: dict[str, Any] | None = None,
    card: str | None = None,
) -> ExportReport:
    model, info = load_checkpoint(checkpoint, attn_implementation="eager")
    return export_model(
        model,
        tokenizer_source=checkpoint / "tokenizer.json",
        dest=dest,
        model_version=info.model_version,
        base_model=info.base_model,
        max_length=info.max_length,
        samples=samples,
        fp16=fp16,
        keep_fp32=keep_fp32,
        extra=extra,
        card=card,
    )

