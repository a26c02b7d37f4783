"""The scorer runtime: a model dir in, polarity and emotion for a batch of texts out, and with a
stance head, a stance per requested ticker read from the same forward pass.

Runtime path: numpy, tokenizers, onnxruntime and the standard library only (no torch, no
transformers), so the scorer service stays small and starts fast.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from scorer import model_files
from scorer.model_files import ModelMeta, default_model_dir

if TYPE_CHECKING:
    from scorer.mentions import MentionFinder

__all__ = ["OnnxScorer", "Prediction", "TargetPrediction", "Logits", "default_model_dir", "available_cores"]

log = logging.getLogger(__name__)

Provider = Literal["auto", "cpu", "cuda"]
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# Padded tokens per ONNX call on the CPU; measured best on 2 cores with MiniLM-L6 int8.
CPU_MAX_BATCH_TOKENS = 512
# Rows per ONNX call when the caller does not say: on the CPU the token cap above decides anyway;
# on an H200 (fp16, warm) batch 64 -> 256 -> 1024 gave 36.8k -> 47.3k -> 49.1k posts/s, and 1024
# costs ~9x the latency of 256 per call (bench/runtime_bench.py, CUDA variants).
CPU_MAX_BATCH = 64
GPU_MAX_BATCH = 256


@dataclass(frozen=True)
class TargetPrediction:
    """The stance toward one ticker, read at its mentions ("mention") or taken from the post ("post")."""

    symbol: str
    polarity: str
    polarity_score: float
    polarity_probs: dict[str, float]
    basis: str


@dataclass(frozen=True)
class Prediction:
    polarity: str
    polarity_score: float  # P(positive) - P(negative), in [-1, 1]
    emotion: str
    polarity_probs: dict[str, float]
    emotion_probs: dict[str, float]
    targets: tuple[TargetPrediction, ...] = ()


@dataclass(frozen=True)
class Logits:
    """Raw (uncalibrated) logits of one call, in input order."""

    polarity: np.ndarray  # [n, 3]
    emotion: np.ndarray  # [n, 7]
    stance: list[np.ndarray]  # per row [its targets, 3]; [0, 3] where none were asked for


def available_cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo ("Intel(R) Xeon(R) ..."), or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (rows of logits, or [rows, targets, labels])."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def batch_bounds(sorted_lengths: np.ndarray, max_batch: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """[start, end) of each micro-batch over ascending lengths: at most max_batch rows, and at most
    max_tokens padded tokens (rows x the batch's longest row), but never fewer than one row."""
    n = len(sorted_lengths)
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(n, start + max_batch)
        if max_tokens is not None:
            # Rows are ascending, so the last row of [start, end) sets the width: shrink until it fits.
            while end - start > 1 and (end - start) * int(sorted_lengths[end - 1]) > max_tokens:
                end -= 1
        bounds.append((start, end))
        start = end
    return bounds


class OnnxScorer:
    """Scores texts with an exported moodwire model.

    Texts are tokenized in one batch call, sorted by token length and cut into micro-batches of
    at most max_batch, each padded only to its own longest text; results come back in input order.
    Sorting matters: one long post in a batch of short ones would make every row pay for its length.

    On the CPU a micro-batch is also cut at max_batch_tokens padded tokens (rows x longest row):
    past a few hundred tokens per call the activations fall out of the caches and every row pays
    for the longest one, so many small calls beat one big one (measured in bench/runtime_bench.py).
    """

    def __init__(
        self,
        model_dir: Path | str | None = None,
        provider: Provider = "auto",
        threads: int | None = None,
        max_batch: int | None = None,
        model_file: str | None = None,
        max_batch_tokens: int | None = None,
        io_binding: bool = False,
        mention_finder: MentionFinder | None = None,
    ) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be >= 1")
        if provider not in ("auto", "cpu", "cuda"):
            raise ValueError(f"provider must be auto, cpu or cuda, not {provider!r}")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.meta: ModelMeta = model_files.read_meta(self.model_dir)

        use_cuda = provider == "cuda" or (provider == "auto" and _CUDA in ort.get_available_providers())
        if provider == "cuda" and _CUDA not in ort.get_available_providers():
            raise RuntimeError("provider='cuda' asked for, but this onnxruntime has no CUDA EP (install the gpu extra)")
        chosen_file = model_file is None
        if model_file is None:
            # int8 dynamic quantization runs on CPU kernels only; on a GPU the fp16 graph is the fast one.
            fp16 = self.model_dir / model_files.FP16_MODEL_FILE
            model_file = model_files.FP16_MODEL_FILE if use_cuda and fp16.is_file() else model_files.MODEL_FILE
        self.model_path = model_files.graph_path(self.model_dir, model_file)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads if threads is not None else available_cores()
        # One graph, run one batch at a time: parallelism inside operators is where the cores go.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = [_CUDA, _CPU] if use_cuda else [_CPU]
        self._session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        # ORT quietly drops CUDA when no GPU is visible; report what it actually uses.
        self.provider: str = self._session.get_providers()[0]
        if provider == "cuda" and self.provider != _CUDA:
            raise RuntimeError(f"provider='cuda' asked for, but onnxruntime runs on {self.provider} (no usable GPU?)")
        if chosen_file and self.provider != _CUDA and model_file != model_files.MODEL_FILE:
            # onnxruntime-gpu without a usable GPU: the fp16 graph on the CPU runs at under half
            # the int8 graph's speed, so fall back to int8 like a CPU-only install would.
            log.warning("CUDA EP unusable (no GPU or driver?); running %s on the CPU", model_files.MODEL_FILE)
            self.model_path = model_files.graph_path(self.model_dir, model_files.MODEL_FILE)
            self._session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=[_CPU])
            self.provider = _CPU
        # A GPU wants big calls; a CPU wants calls that stay in its caches.
        if max_batch_tokens is None and self.provider == _CPU:
            max_batch_tokens = CPU_MAX_BATCH_TOKENS
        self.max_batch_tokens = max_batch_tokens
        if max_batch is None:
            max_batch = GPU_MAX_BATCH if self.provider == _CUDA else CPU_MAX_BATCH
        self.max_batch = max_batch
        # IO binding (outputs allocated on the device, copied back in one step) is off by default:
        # the inputs start on the host and the outputs are a few floats per post, and on an H200
        # it measured no faster than session.run (47.3k against 47.6k posts/s at batch 256).
        self.io_binding = io_binding
        self._output_device = "cuda" if self.provider == _CUDA else "cpu"

        graph_inputs = {i.name for i in self._session.get_inputs()}
        self._feeds_token_types = "token_type_ids" in graph_inputs
        missing = {"input_ids", "attention_mask"} - graph_inputs
        if missing:
            raise ValueError(f"{self.model_path}: graph lacks inputs {sorted(missing)}")
        # A model from before per-ticker stance has no target_mask input: it still loads, and
        # predict() then returns no targets (callers give every ticker the post's polarity).
        self.has_stance_head = model_files.TARGET_MASK_INPUT in graph_inputs
        self._output_names = ["polarity_logits", "emotion_logits"]
        if self.has_stance_head:
            self._output_names.append(model_files.STANCE_OUTPUT)
        self._temperature = {head: self.meta.temperature(head) for head in model_files.HEADS}
        self._mention_finder = mention_finder

        self._tokenizer = Tokenizer.from_file(str(model_files.tokenizer_path(self.model_dir)))
        self._tokenizer.enable_truncation(max_length=self.meta.max_length)
        self._tokenizer.no_padding()
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

        log.info(
            "scorer: model %s (%s) on %s, %d intra-op threads, max_batch %d, max_batch_tokens %s, io_binding %s, "
            "stance head %s",
            self.model_version, self.model_path.name, self.provider, options.intra_op_num_threads, max_batch,
            max_batch_tokens, self.io_binding, self.has_stance_head,
        )

    @property
    def model_version(self) -> str:
        return self.meta.model_version

    @property
    def polarity_labels(self) -> tuple[str, ...]:
        return self.meta.polarity_labels

    @property
    def emotion_labels(self) -> tuple[str, ...]:
        return self.meta.emotion_labels

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated, unpadded."""
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]

    def encodings(self, texts: Sequence[str]) -> list[Encoding]:
        """Full tokenizer output (ids, word ids, character offsets), for explanations."""
        return list(self._tokenizer.encode_batch(list(texts)))

    @property
    def mention_finder(self) -> MentionFinder:
        """The span finder over the shipped symbol table, built on first use (~0.2 s)."""
        if self._mention_finder is None:
            from scorer.mentions import MentionFinder

            self._mention_finder = MentionFinder.load()
        return self._mention_finder

    def logits_for_ids(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits for already-tokenized rows, in the given order (batched, length-sorted)."""
        logits = self.logits_with_targets(ids)
        return logits.polarity, logits.emotion

    def logits_with_targets(
        self, ids: Sequence[Sequence[int]], targets: Sequence[Sequence[Sequence[int]]] | None = None
    ) -> Logits:
        """Raw logits for tokenized rows; targets[i] lists, per ticker of row i, the token
        positions of its mentions (an empty list gives meaningless logits: callers skip it).
        Without a stance head, or without targets, every row's stance array is empty."""
        n = len(ids)
        pol = np.empty((n, len(self.polarity_labels)), dtype=np.float32)
        emo = np.empty((n, len(self.emotion_labels)), dtype=np.float32)
        no_targets = np.zeros((0, len(self.polarity_labels)), dtype=np.float32)
        stance: list[np.ndarray] = [no_targets] * n
        if n == 0:
            return Logits(pol, emo, stance)
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        for start, end in batch_bounds(lengths[order], self.max_batch, self.max_batch_tokens):
            idx = order[start:end]
            width = max(1, int(lengths[idx].max()))
            input_ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
            for row, i in enumerate(idx):
                input_ids[row, : lengths[i]] = ids[i]
            attention_mask = (np.arange(width)[None, :] < lengths[idx][:, None]).astype(np.int64)
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self._feeds_token_types:
                feeds["token_type_ids"] = np.zeros_like(input_ids)
            if self.has_stance_head:
                # The graph needs the input even when no ticker is asked about: it then gets zero
                # targets, and the stance head does no work.
                n_targets = max((len(targets[i]) for i in idx), default=0) if targets is not None else 0
                target_mask = np.zeros((len(idx), n_targets, width), dtype=np.float32)
                if targets is not None:
                    for row, i in enumerate(idx):
                        for k, positions in enumerate(targets[i]):
                            target_mask[row, k, [p for p in positions if p < width]] = 1.0
                feeds[model_files.TARGET_MASK_INPUT] = target_mask
            outputs = self._run(feeds)
            pol[idx] = outputs[0]
            emo[idx] = outputs[1]
            if self.has_stance_head and targets is not None:
                for row, i in enumerate(idx):
                    if targets[i]:
                        stance[i] = outputs[2][row, : len(targets[i])]
        return Logits(pol, emo, stance)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not self.io_binding:
            return self._session.run(self._output_names, feeds)
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self._output_names:
            binding.bind_output(name, self._output_device)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def probabilities(self, logits: np.ndarray, head: str) -> np.ndarray:
        """Calibrated probabilities: softmax of logits / the head's fitted temperature."""
        return _softmax(logits / self._temperature[head])

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(polarity probs [n, 3], emotion probs [n, 7]) in input order and label order."""
        pol, emo = self.logits_for_ids(self.tokenize(texts))
        return self.probabilities(pol, "polarity"), self.probabilities(emo, "emotion")

    def target_positions(
        self, texts: Sequence[str], symbols: Sequence[Sequence[str]]
    ) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Token ids per text and, per requested symbol, the positions of its mention tokens
        (empty when the symbol is not found in the text, or only past max_length)."""
        from scorer.mentions import token_positions

        if len(symbols) != len(texts):
            raise ValueError(f"symbols has {len(symbols)} entries for {len(texts)} texts")
        encodings = self._tokenizer.encode_batch(list(texts))
        finder = self.mention_finder
        ids: list[list[int]] = []
        positions: list[list[list[int]]] = []
        for text, wanted, enc in zip(texts, symbols, encodings):
            ids.append(enc.ids)
            if not wanted:
                positions.append([])
                continue
            spans = finder.find(text, wanted)
            positions.append([token_positions(enc.offsets, s, enc.special_tokens_mask) for s in spans])
        return ids, positions

    def predict(self, texts: Sequence[str], symbols: Sequence[Sequence[str]] | None = None) -> list[Prediction]:
        """Post-level labels for each text (and, with a stance head, a stance per symbol)."""
        return self.predict_with_logits(texts, symbols)[0]

    def predict_with_logits(
        self, texts: Sequence[str], symbols: Sequence[Sequence[str]] | None = None
    ) -> tuple[list[Prediction], Logits]:
        """predict(), and the raw logits behind it (for evaluation: calibration before and after)."""
        targets: list[list[list[int]]] | None = None
        if symbols is not None and self.has_stance_head:
            ids, targets = self.target_positions(texts, symbols)
        else:
            ids = self.tokenize(texts)
        logits = self.logits_with_targets(ids, targets)
        return self._predictions(logits, symbols, targets), logits

    def _predictions(
        self, logits: Logits, symbols: Sequence[Sequence[str]] | None, targets: list[list[list[int]]] | None
    ) -> list[Prediction]:
        pol = self.probabilities(logits.polarity, "polarity")
        emo = self.probabilities(logits.emotion, "emotion")
        pol_labels, emo_labels = self.polarity_labels, self.emotion_labels
        neg, pos = pol_labels.index("negative"), pol_labels.index("positive")
        scores = pol[:, pos] - pol[:, neg]
        pol_best = pol.argmax(axis=1)
        emo_best = emo.argmax(axis=1)
        # Plain Python floats: these go to JSON and to the store.
        pol_rows = pol.tolist()
        emo_rows = emo.tolist()
        out = []
        for i in range(len(pol_rows)):
            post_probs = dict(zip(pol_labels, pol_rows[i]))
            found: tuple[TargetPrediction, ...] = ()
            if targets is not None and symbols is not None:
                found = self._targets(symbols[i], targets[i], logits.stance[i], post_probs, float(scores[i]))
            out.append(
                Prediction(
                    polarity=pol_labels[pol_best[i]],
                    polarity_score=float(scores[i]),
                    emotion=emo_labels[emo_best[i]],
                    polarity_probs=post_probs,
                    emotion_probs=dict(zip(emo_labels, emo_rows[i])),
                    targets=found,
                )
            )
        return out

    def _targets(
        self,
        symbols: Sequence[str],
        positions: Sequence[Sequence[int]],
        stance_logits: np.ndarray,
        post_probs: dict[str, float],
        post_score: float,
    ) -> tuple[TargetPrediction, ...]:
        labels = self.polarity_labels
        probs = self.probabilities(stance_logits, "stance").tolist() if len(stance_logits) else []
        post_label = max(post_probs, key=post_probs.__getitem__)
        out = []
        for k, symbol in enumerate(symbols):
            if positions[k]:
                p = dict(zip(labels, probs[k]))
                out.append(TargetPrediction(
                    symbol=symbol,
                    polarity=max(p, key=p.__getitem__),
                    polarity_score=p["positive"] - p["negative"],
                    polarity_probs=p,
                    basis="mention",
                ))
            else:
                # Named by the producer but not found in the text: the post's polarity stands in.
                out.append(TargetPrediction(symbol, post_label, post_score, dict(post_probs), "post"))
        return tuple(out)
