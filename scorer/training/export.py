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


def export_fp32(model: SentimentModel, path: Path) -> Path:
    wrapper = _OnnxWrapper(model).eval()  # a fresh wrapper is in training mode: dropout would be traced in
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    dynamic = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (ids, mask, types),
            str(path),
            input_names=list(model_files.INPUT_NAMES),
            output_names=list(model_files.OUTPUT_NAMES),
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                "token_type_ids": dynamic,
                "polarity_logits": {0: "batch"},
                "emotion_logits": {0: "batch"},
            },
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


def _torch_logits(model: SentimentModel, ids: Sequence[Sequence[int]], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    pols, emos = [], []
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            rows = ids[start : start + batch]
            width = max(len(r) for r in rows)
            input_ids = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
            pol, emo = model(input_ids, mask, torch.zeros_like(input_ids))
            pols.append(pol.numpy())
            emos.append(emo.numpy())
    return np.concatenate(pols), np.concatenate(emos)


def _agreement(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    return {
        "polarity": float((a[0].argmax(1) == b[0].argmax(1)).mean()),
        "emotion": float((a[1].argmax(1) == b[1].argmax(1)).mean()),
        "max_abs_logit_diff": float(max(np.abs(a[0] - b[0]).max(), np.abs(a[1] - b[1]).max())),
    }


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
        meta = ModelMeta(
            model_version=model_version, base_model=base_model, max_length=max_length, files=files, extra=extra or {}
        )
        # The work dir is a model dir too, so agreement is measured through the real runtime.
        (work / model_files.META_FILE).write_text(meta.to_json(), encoding="utf-8")
        (work / model_files.TOKENIZER_FILE).write_text(
            model_files.prepare_tokenizer_json(tokenizer_source, max_length), encoding="utf-8"
        )
        fp32_scorer = OnnxScorer(work, provider="cpu", model_file=model_files.FP32_MODEL_FILE)
        int8_scorer = OnnxScorer(work, provider="cpu", model_file=model_files.MODEL_FILE)
        ids = fp32_scorer.tokenize(samples)
        torch_out = _torch_logits(model, ids)
        fp32_out = fp32_scorer.logits_for_ids(ids)
        int8_out = int8_scorer.logits_for_ids(ids)
        fp32_vs_torch = _agreement(torch_out, fp32_out)
        int8_vs_fp32 = _agreement(fp32_out, int8_out)
        log.info("fp32 vs torch %s; int8 vs fp32 %s", fp32_vs_torch, int8_vs_fp32)
        fp16_vs_fp32 = None
        if fp16:
            # Run here on the CPU EP (slow, but the same graph a GPU runs): a broken fp16 conversion
            # shows up as disagreement before the graph ships.
            fp16_scorer = OnnxScorer(work, provider="cpu", model_file=model_files.FP16_MODEL_FILE)
            fp16_vs_fp32 = _agreement(fp32_out, fp16_scorer.logits_for_ids(ids))
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

