"""Runtime benchmark: the same model on the same real posts, run every usual way, in ONE run.

    python -m bench.runtime_bench [--quick] [--size N] [--variants a,b,...] [--out FILE]
    moodwire bench [--quick] [--variants a,b,...] [--out FILE]

Variants (each in its own subprocess, so that its peak RSS is its own and no variant inherits
another's warm caches, threads or allocator state):

  pipeline_default   transformers text-classification pipeline, default settings (batch_size 1)
  pipeline_b32       the same pipeline with batch_size=32 (pads each batch to its longest post)
  torch_eager        moodwire's PyTorch network, sorted by length, batches of 64, dynamic padding
  moodwire_fp32      OnnxScorer on the fused fp32 graph exported from the same weights
  moodwire_int8      OnnxScorer on the shipped graph (models/default/model.onnx: fused + dynamic int8)
  moodwire_cuda_fp16_b64, _b256   OnnxScorer on the CUDA execution provider with the fp16 graph
  moodwire_cuda_fp16_b256_iob     the same at batch 256 with IO binding, to compare
  moodwire_cuda_fp16_b256_x2      the same, two chunks in flight, so tokenization and result
                                  handling on the CPU overlap the GPU's work on the other chunk
  moodwire_int8_x2   (not in the default list) the x2 scheme on the CPU, for comparison
  moodwire_cuda_fp16_b1024        (not in the default list) batch 1024 on CUDA, for batch-size tuning

All variants score the same texts (bench.corpus) with the same encoder and heads (bench.reference),
truncated at the model's max_length (64 tokens; 8 of the 4,819 corpus posts are longer). The
pipelines are the library's own architecture over those weights (see bench/reference.py).

What is measured, per variant:
* throughput: the whole corpus handed over in one call, tokenization and softmax included, each
  variant batching its own way -> posts/s (CUDA variants repeat the corpus to >= 50,000 posts
  and score it once untimed first, so the timed pass runs warm, as a service does);
* batch latency: the corpus cut into requests of 64 posts in arrival order, as the scorer service
  hands micro-batches to the runtime (or of the variant's batch size when larger), each timed ->
  p50/p99 ms, and the posts/s at that batching;
* tokenization alone on the corpus, and its share of the throughput time (tokenizers variants);
* graph only (onnx variants): the same posts pre-tokenized through batching, padding and the
  session calls alone, so what the rest (tokenization, softmax, result objects) costs is visible;
* peak RSS (the child's ru_maxrss from wait4) and RSS after loading the model;
* CPU time other processes took while it ran (a sign of contention: `others_cores`).
Plus, in the same run: an arithmetic-limit probe (ONNX Runtime MatMulInteger and fp32 MatMul at
the model's four linear shapes, 64 posts x mean tokens rows, same thread count) -> int8 and fp32
posts/s limits at 0.73 GFLOP/post (and at this corpus' own FLOPs per post), and the ratio of
moodwire to them; argmax agreement between torch, fp32 and int8 on the corpus; the machine.

Writes bench/results/runtime.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import corpus  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "runtime.json"

REQUEST_BATCH = 64  # a scorer micro-batch at moderate load (batch_max_wait_ms closes it before batch_max_size)
TORCH_BATCH = 64
CUDA_MIN_POSTS = 50_000  # a GPU scores the corpus in well under a second: repeat it
CPU_WARMUP_POSTS = 64
WORKER_TIMEOUT_S = 3600.0

# Linear layers of MiniLM-L6 (hidden 384, FFN 1536, 6 layers): (name, in, out) per layer.
LINEAR_SHAPES: tuple[tuple[str, int, int], ...] = (
    ("qkv", 384, 1152),
    ("attn_out", 384, 384),
    ("ffn_in", 384, 1536),
    ("ffn_out", 1536, 384),
)
LAYERS = 6
HIDDEN = 384
# The issue's figure (MiniLM-L6 at 34 tokens). This corpus' own figure is reported next to it.
GFLOP_PER_POST = 0.73


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # pipeline | torch | onnx | onnx_x2
    description: str
    batch: int = REQUEST_BATCH
    graph: str = "int8"  # int8 | fp32 | fp16 (onnx kinds)
    cuda: bool = False
    split_threads: bool = False  # x2 on the CPU: each of the two runs in flight gets half the cores
    chunk: int = 2048  # x2: posts per chunk (each chunk is length-sorted and batched inside)
    io_binding: bool = False  # outputs bound on the device (OnnxScorer io_binding)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("pipeline_default", "pipeline", "transformers pipeline, defaults (batch_size 1)", batch=1),
        Variant("pipeline_b32", "pipeline", "transformers pipeline, batch_size=32", batch=32),
        Variant("torch_eager", "torch", "PyTorch eager, length-sorted, dynamic padding, batch 64"),
        Variant("moodwire_fp32", "onnx", "OnnxScorer, fused fp32 graph, CPU", graph="fp32"),
        Variant("moodwire_int8", "onnx", "OnnxScorer, fused dynamic int8 graph, CPU (shipped)"),
        Variant(
            "moodwire_int8_x2", "onnx_x2", "OnnxScorer int8, CPU, 2 chunks of 512 in flight, half the cores each",
            split_threads=True, chunk=512,
        ),
        Variant("moodwire_cuda_fp16_b64", "onnx", "OnnxScorer, fp16 graph, CUDA EP, batch 64", graph="fp16", cuda=True),
        Variant("moodwire_cuda_fp16_b256", "onnx", "OnnxScorer, fp16 graph, CUDA EP, batch 256", batch=256, graph="fp16", cuda=True),
        Variant("moodwire_cuda_fp16_b1024", "onnx", "OnnxScorer, fp16 graph, CUDA EP, batch 1024", batch=1024, graph="fp16", cuda=True),
        Variant(
            "moodwire_cuda_fp16_b256_iob", "onnx", "the same as _b256 with IO binding (outputs bound on the device), to compare",
            batch=256, graph="fp16", cuda=True, io_binding=True,
        ),
        Variant(
            "moodwire_cuda_fp16_b256_x2", "onnx_x2",
            "OnnxScorer, fp16, CUDA EP, batch 256, 2 chunks in flight (tokenization overlapped)",
            batch=256, graph="fp16", cuda=True,
        ),
    )
}
DEFAULT_VARIANTS: tuple[str, ...] = (
    "pipeline_default",
    "pipeline_b32",
    "torch_eager",
    "moodwire_fp32",
    "moodwire_int8",
    "moodwire_cuda_fp16_b64",
    "moodwire_cuda_fp16_b256",
    "moodwire_cuda_fp16_b256_iob",
    "moodwire_cuda_fp16_b256_x2",
)


# ============================================================================================
# Machine


def cuda_status() -> tuple[bool, str]:
    """(usable, why): the CUDA EP must be in this onnxruntime build AND a session must get it."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return False, (
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(providers)}); "
            "install the gpu extra (onnxruntime-gpu) on a machine with an NVIDIA GPU"
        )
    # ORT silently falls back to the CPU when the build has CUDA but no GPU (or driver) is usable:
    # ask a one-node session what it actually got.
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "cuda_check",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - the reason is the answer
        return False, f"a CUDA session could not be created: {exc}"
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return False, f"onnxruntime {ort.__version__} has the CUDA EP but fell back to the CPU (no usable GPU or driver)"
    return True, f"CUDAExecutionProvider in use ({_nvidia_smi() or 'GPU'})"


def describe_machine() -> dict[str, Any]:
    import onnxruntime as ort

    from scorer.runtime import available_cores, cpu_model

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cores_available": available_cores(),
        "cpu_features": sorted(flags & {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16", "avx512_fp16"}),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "numpy": np.__version__,
    }
    for package in ("torch", "transformers", "tokenizers"):
        try:
            from importlib.metadata import version

            info[package] = version(package)
        except Exception:  # noqa: BLE001
            info[package] = None
    gpu = _nvidia_smi()
    if gpu:
        info["gpu"] = gpu
    return info


def _nvidia_smi() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# ============================================================================================
# Workers (each runs in its own process)


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """Peak RSS of this process since its exec (VmHWM). Not ru_maxrss: Linux carries that over
    from the parent across fork+exec, so a child of a big parent would report the parent's size."""
    peak = _status_mb("VmHWM")
    return peak if peak else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _percentile(values: Sequence[float], pct: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), pct)) if values else 0.0


def _time_requests(
    score: Callable[[list[str]], Any], texts: list[str], size: int
) -> tuple[dict[str, Any], list[Any]]:
    """Score `texts` in requests of `size`, timing each; -> (stats, the requests' outputs)."""
    latencies: list[float] = []
    outputs: list[Any] = []
    for start in range(0, len(texts), size):
        request = texts[start : start + size]
        began = time.perf_counter()
        outputs.append(score(request))
        latencies.append(time.perf_counter() - began)
    total = sum(latencies)
    stats = {
        "request_posts": size,
        "requests": len(latencies),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else 0.0,
        "posts_per_s": round(len(texts) / total, 1) if total else 0.0,
    }
    return stats, outputs


def _probs_from_predictions(predictions: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    pol = np.array([list(p.polarity_probs.values()) for p in predictions], dtype=np.float32)
    emo = np.array([list(p.emotion_probs.values()) for p in predictions], dtype=np.float32)
    return pol, emo


class OverlappedScorer:
    """scorer.predict over chunks with two in flight: one chunk's tokenization and Python result
    handling run while the other's graph runs (ORT and tokenizers release the GIL). On a GPU this
    overlaps the CPU's share of the work with the GPU's; on a CPU, with half the cores per run,
    it trades the intra-op synchronisation of small operators for parallel requests.

    The two threads live as long as the scorer: the CUDA EP sets up per-thread state (library
    handles, streams) on a thread's first run, which a pool per call would pay on every call."""

    def __init__(self, scorer: Any, chunk: int) -> None:
        self._scorer = scorer
        self._chunk = chunk
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="score")

    def __call__(self, texts: list[str]) -> list[Any]:
        chunks = [texts[i : i + self._chunk] for i in range(0, len(texts), self._chunk)]
        results = list(self._pool.map(self._scorer.predict, chunks))
        return [p for part in results for p in part]


def run_worker(variant: Variant, spec: dict[str, Any]) -> dict[str, Any]:
    """Load the variant, warm it up, time it; returns the measurements (and saves probabilities)."""
    texts: list[str] = json.loads(Path(spec["texts_file"]).read_text(encoding="utf-8"))
    from bench.reference import Reference

    ref = Reference.from_dict(spec["reference"])
    result: dict[str, Any] = {"variant": variant.name, "description": variant.description}
    probs: tuple[np.ndarray, np.ndarray] | None = None
    started = time.perf_counter()

    if variant.kind == "pipeline":
        import torch
        from transformers import pipeline

        from bench.reference import pipeline_model

        model, tokenizer = pipeline_model(ref)
        pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
        call_kwargs: dict[str, Any] = {"truncation": True, "max_length": ref.max_length}
        if variant.batch > 1:
            call_kwargs["batch_size"] = variant.batch
        result["device"] = "cpu"
        result["torch_threads"] = torch.get_num_threads()

        def score(batch: list[str]) -> object:
            return pipe(batch, **call_kwargs)

        result["load_s"] = round(time.perf_counter() - started, 2)
        result["rss_after_load_mb"] = _rss_mb()
        score(texts[:CPU_WARMUP_POSTS])
        began = time.perf_counter()
        score(texts)
        seconds = time.perf_counter() - began
        throughput_posts = len(texts)

    elif variant.kind == "torch":
        import torch
        from tokenizers import Tokenizer

        from bench.reference import torch_model
        from scorer import model_files

        model = torch_model(ref)
        tokenizer = Tokenizer.from_file(str(model_files.tokenizer_path(ref.model_dir)))
        tokenizer.enable_truncation(max_length=ref.max_length)
        tokenizer.no_padding()
        result["device"] = "cpu"
        result["torch_threads"] = torch.get_num_threads()

        def torch_probs(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
            ids = [enc.ids for enc in tokenizer.encode_batch(batch)]
            lengths = np.array([len(r) for r in ids])
            order = np.argsort(lengths, kind="stable")
            pol = np.empty((len(ids), 3), dtype=np.float32)
            emo = np.empty((len(ids), 7), dtype=np.float32)
            with torch.inference_mode():
                for start in range(0, len(ids), TORCH_BATCH):
                    idx = order[start : start + TORCH_BATCH]
                    width = int(lengths[idx].max())
                    input_ids = torch.zeros((len(idx), width), dtype=torch.long)
                    for row, i in enumerate(idx):
                        input_ids[row, : lengths[i]] = torch.tensor(ids[i])
                    mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths[idx])[:, None]).long()
                    p, e = model(input_ids, mask, torch.zeros_like(input_ids))
                    pol[idx] = torch.softmax(p, dim=1).numpy()
                    emo[idx] = torch.softmax(e, dim=1).numpy()
            return pol, emo

        result["load_s"] = round(time.perf_counter() - started, 2)
        result["rss_after_load_mb"] = _rss_mb()
        score = torch_probs  # type: ignore[assignment]
        score(texts[:CPU_WARMUP_POSTS])
        began = time.perf_counter()
        probs = torch_probs(texts)
        seconds = time.perf_counter() - began
        throughput_posts = len(texts)
        result["tokenize"] = _time_tokenize(lambda b: tokenizer.encode_batch(b), texts, seconds)

    else:  # onnx, onnx_x2
        from scorer import model_files
        from scorer.runtime import OnnxScorer, available_cores

        model_dir = ref.model_dir if variant.graph == "int8" else spec["fp32_dir"]
        model_file = {
            "int8": model_files.MODEL_FILE,
            "fp32": model_files.FP32_MODEL_FILE,
            "fp16": model_files.FP16_MODEL_FILE,
        }[variant.graph]
        threads = max(1, available_cores() // 2) if variant.split_threads else None
        scorer = OnnxScorer(
            model_dir, provider="cuda" if variant.cuda else "cpu", max_batch=variant.batch, model_file=model_file,
            threads=threads, io_binding=variant.io_binding,
        )
        result["device"] = scorer.provider
        result["graph"] = model_file
        result["max_batch"] = variant.batch
        result["io_binding"] = scorer.io_binding
        result["intra_op_threads"] = threads or available_cores()

        if variant.kind == "onnx_x2":
            result["chunk"] = variant.chunk
            score = OverlappedScorer(scorer, variant.chunk)
        else:
            score = scorer.predict  # type: ignore[assignment]
        result["load_s"] = round(time.perf_counter() - started, 2)
        result["rss_after_load_mb"] = _rss_mb()
        run_texts = texts
        if variant.cuda:
            repeats = max(1, -(-CUDA_MIN_POSTS // len(texts)))
            run_texts = texts * repeats
            result["corpus_repeats"] = repeats
            # One untimed pass over the same posts: every batch shape the timed pass will see gets
            # its kernels chosen and its memory arena grown first (a service runs warm).
            score(run_texts)
        else:
            score(texts[:CPU_WARMUP_POSTS])
        began = time.perf_counter()
        predictions = score(run_texts)
        seconds = time.perf_counter() - began
        throughput_posts = len(run_texts)
        probs = _probs_from_predictions(predictions[: len(texts)])  # type: ignore[index]
        result["tokenize"] = _time_tokenize(scorer.tokenize, run_texts, seconds)
        result["graph_only"] = _time_graph_only(scorer, run_texts, seconds)

    result["throughput"] = {
        "posts": throughput_posts,
        "seconds": round(seconds, 3),
        "posts_per_s": round(throughput_posts / seconds, 1),
    }
    result["latency"], outputs = _time_requests(score, texts, max(REQUEST_BATCH, variant.batch))
    result["peak_rss_mb"] = _peak_rss_mb()
    if probs is not None and spec.get("probs_dir"):
        np.savez(Path(spec["probs_dir"]) / f"{variant.name}.npz", polarity=probs[0], emotion=probs[1])
        if variant.kind.startswith("onnx"):
            # The same posts batched differently (arrival-order requests instead of the whole
            # corpus sorted): dynamic int8 quantizes activations per batch, so labels can move.
            in_requests = _probs_from_predictions([p for part in outputs for p in part])
            np.savez(
                Path(spec["probs_dir"]) / f"{variant.name}@requests.npz", polarity=in_requests[0], emotion=in_requests[1]
            )
    return result


def _time_graph_only(scorer: Any, texts: list[str], total_s: float) -> dict[str, Any]:
    """The same posts through the graph alone (pre-tokenized; batching, padding and the session
    calls, no softmax or result objects): the ceiling for everything around the model."""
    ids = scorer.tokenize(texts)
    began = time.perf_counter()
    scorer.logits_for_ids(ids)
    seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 3),
        "posts_per_s": round(len(texts) / seconds, 1) if seconds else 0.0,
        "share_of_throughput_time": round(seconds / total_s, 4) if total_s else 0.0,
    }


def _time_tokenize(tokenize: Callable[[list[str]], object], texts: list[str], total_s: float) -> dict[str, Any]:
    began = time.perf_counter()
    tokenize(texts)
    seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 3),
        "posts_per_s": round(len(texts) / seconds, 1) if seconds else 0.0,
        "share_of_throughput_time": round(seconds / total_s, 4) if total_s else 0.0,
    }


# --------------------------------------------------------------------------------------------
# The arithmetic-limit probe


def _matmul_graph(rows: int, k: int, n: int, int8: bool) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        weight = numpy_helper.from_array(rng.integers(-63, 64, size=(k, n), dtype=np.int8), "B")
        a_zp = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zp")
        b_zp = numpy_helper.from_array(np.zeros(n, dtype=np.int8), "b_zp")  # per-channel, as the model
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zp", "b_zp"], ["Y"])
        inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [rows, k])]
        output = helper.make_tensor_value_info("Y", TensorProto.INT32, [rows, n])
        initializers = [weight, a_zp, b_zp]
    else:
        weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, [rows, k])]
        output = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [rows, n])
        initializers = [weight]
    graph = helper.make_graph([node], "probe", inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _time_session(session: Any, feed: dict[str, np.ndarray], min_s: float) -> float:
    for _ in range(3):
        session.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + min_s
    while len(times) < 5 or time.perf_counter() < deadline:
        began = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run_probe(rows: int, min_s: float = 1.0) -> dict[str, Any]:
    """Median time of ORT MatMulInteger (uint8 x int8 -> int32, prepacked int8 weights, as the
    int8 graph's linears) and of fp32 MatMul, at the model's shapes, with the runtime's threads."""
    import onnxruntime as ort

    from scorer.runtime import available_cores

    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    rng = np.random.default_rng(1)
    shapes: list[dict[str, Any]] = []
    totals = {"int8": [0.0, 0.0], "fp32": [0.0, 0.0]}  # [ops, seconds] for one layer's four linears
    for name, k, n in LINEAR_SHAPES:
        entry: dict[str, Any] = {"name": name, "m": rows, "k": k, "n": n}
        ops = 2.0 * rows * k * n
        for kind in ("int8", "fp32"):
            session = ort.InferenceSession(_matmul_graph(rows, k, n, kind == "int8"), options, providers=["CPUExecutionProvider"])
            if kind == "int8":
                feed = {"A": rng.integers(0, 256, size=(rows, k), dtype=np.uint8)}
            else:
                feed = {"A": rng.standard_normal((rows, k)).astype(np.float32)}
            seconds = _time_session(session, feed, min_s)
            entry[f"{kind}_gops"] = round(ops / seconds / 1e9, 1)
            totals[kind][0] += ops
            totals[kind][1] += seconds
        shapes.append(entry)
    return {
        "threads": options.intra_op_num_threads,
        "rows": rows,
        "shapes": shapes,
        "int8_gops_model_mix": round(totals["int8"][0] / totals["int8"][1] / 1e9, 1),
        "fp32_gflops_model_mix": round(totals["fp32"][0] / totals["fp32"][1] / 1e9, 1),
    }


def corpus_gflop_per_post(token_lengths: Sequence[int]) -> float:
    """Mean GFLOP per post for these lengths: the six layers' linears plus the attention products."""
    linear = 2 * LAYERS * sum(k * n for _, k, n in LINEAR_SHAPES)  # per token
    lengths = np.asarray(token_lengths, dtype=np.float64)
    attention = LAYERS * 4 * HIDDEN * lengths**2  # QK^T and AV, per post
    return float(np.mean(linear * lengths + attention) / 1e9)


# ============================================================================================
# Parent: orchestrate, compare, print, write


def spawn(
    args: list[str], timeout_s: float, stdout: IO[bytes] | int = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> tuple[int, resource.struct_rusage, str]:
    """Run a child to its end (killed after timeout_s); -> (exit code, its rusage from wait4, stderr tail)."""
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, stdout=stdout, stderr=err, cwd=REPO, env=env)
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-3000:].decode("utf-8", "replace")
    return process.returncode, usage, tail


def _run_child(kind: str, name: str, spec_file: Path, work: Path) -> dict[str, Any]:
    out = work / f"{name}.json"
    args = [sys.executable, "-m", "bench.runtime_bench", f"--{kind}", name, "--spec", str(spec_file), "--result", str(out)]
    busy_before, wall_before = _busy_cpu_s(), time.perf_counter()
    self_before = sum(os.times()[:2])
    code, usage, tail = spawn(args, WORKER_TIMEOUT_S)
    child_cpu = usage.ru_utime + usage.ru_stime
    wall = time.perf_counter() - wall_before
    others = _busy_cpu_s() - busy_before - child_cpu - (sum(os.times()[:2]) - self_before)
    if code != 0 or not out.is_file():
        return {"variant": name, "error": f"exit {code}: {tail.strip()[-1500:]}"}
    result = json.loads(out.read_text())
    result["wall_s"] = round(wall, 1)
    result["child_cpu_s"] = round(child_cpu, 1)
    result["others_cores"] = round(max(0.0, others) / wall, 2) if wall else 0.0
    return result


def _agreement(probs_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    loaded = {path.stem: np.load(path) for path in probs_dir.glob("*.npz")}
    pairs = [("torch_eager", "moodwire_fp32"), ("moodwire_fp32", "moodwire_int8"), ("torch_eager", "moodwire_int8")]
    pairs += [("moodwire_int8", b) for b in loaded if "@" not in b and (b.startswith("moodwire_cuda") or b == "moodwire_int8_x2")]
    pairs += [(name, f"{name}@requests") for name in names]
    out: dict[str, Any] = {}
    for a, b in pairs:
        if a in loaded and b in loaded:
            out[f"{a}~{b}"] = {
                "polarity_argmax": round(float((loaded[a]["polarity"].argmax(1) == loaded[b]["polarity"].argmax(1)).mean()), 4),
                "emotion_argmax": round(float((loaded[a]["emotion"].argmax(1) == loaded[b]["emotion"].argmax(1)).mean()), 4),
                "max_abs_prob_diff": round(float(max(np.abs(loaded[a]["polarity"] - loaded[b]["polarity"]).max(), np.abs(loaded[a]["emotion"] - loaded[b]["emotion"]).max())), 5),
            }
    return out


def run(
    size: int | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    out: Path | None = RESULTS,
    model_dir: Path | None = None,
    checkpoint: Path | None = None,
    probe: bool = True,
    probe_min_s: float = 1.0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; returns the results (also written to `out` unless it is None)."""
    from bench.reference import find_reference, fp32_model_dir
    from scorer import model_files

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    started_at = datetime.now(UTC)
    texts = corpus.load(size)
    ref = find_reference(model_dir, checkpoint)
    machine = describe_machine()
    cuda_ok, cuda_why = cuda_status()
    wanted = [VARIANTS[v] for v in variants]
    skipped: dict[str, str] = {}
    if any(v.cuda for v in wanted) and not cuda_ok:
        names = [v.name for v in wanted if v.cuda]
        echo(f"CUDA unavailable: {cuda_why}. Skipped: {', '.join(names)}")
        skipped.update({n: f"CUDA unavailable: {cuda_why}" for n in names})
        wanted = [v for v in wanted if not v.cuda]

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_files.tokenizer_path(ref.model_dir)))
    tokenizer.enable_truncation(max_length=ref.max_length)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    corpus_info = corpus.describe(texts, lengths)

    with tempfile.TemporaryDirectory(prefix="moodwire-bench-") as tmp:
        work = Path(tmp)
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        probs_dir = work / "probs"
        probs_dir.mkdir()
        spec: dict[str, Any] = {"texts_file": str(texts_file), "reference": ref.as_dict(), "probs_dir": str(probs_dir)}
        if any(v.graph in ("fp32", "fp16") for v in wanted):
            echo("preparing the fp32/fp16 graphs from the same weights (cached under data/build/bench/) ...")
            spec["fp32_dir"] = str(
                fp32_model_dir(ref, fp16=any(v.graph == "fp16" for v in wanted), fp32=any(v.graph == "fp32" for v in wanted))
            )
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec), encoding="utf-8")

        results: dict[str, Any] = {}
        for variant in wanted:
            echo(f"running {variant.name} on {len(texts)} posts ...")
            results[variant.name] = _run_child("worker", variant.name, spec_file, work)
            if "error" in results[variant.name]:
                echo(f"  {variant.name} FAILED: {results[variant.name]['error'][-400:]}")
            else:
                echo(f"  {results[variant.name]['throughput']['posts_per_s']} posts/s")
        probe_result: dict[str, Any] | None = None
        if probe:
            echo("running the int8/fp32 matmul probe ...")
            rows = int(round(REQUEST_BATCH * float(np.mean(lengths))))
            spec["probe_rows"] = rows
            spec["probe_min_s"] = probe_min_s
            spec_file.write_text(json.dumps(spec), encoding="utf-8")
            probe_result = _run_child("probe", "probe", spec_file, work)
        agreement = _agreement(probs_dir, list(results))

    gflop_corpus = corpus_gflop_per_post(lengths)
    summary = _summarise(results, probe_result, gflop_corpus)
    report: dict[str, Any] = {
        "benchmark": "runtime",
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started_at).total_seconds(), 1),
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "cuda": {"available": cuda_ok, "detail": cuda_why},
        "model": {
            "model_dir": ref.model_dir,
            "model_version": ref.model_version,
            "base_model": ref.base_model,
            "max_length": ref.max_length,
            "weights": f"checkpoint {ref.checkpoint}" if ref.checkpoint else f"base + heads seeded {ref.head_seed}",
            "fp32_dir": spec.get("fp32_dir"),
        },
        "corpus": corpus_info,
        "definitions": {
            "throughput": "whole corpus in one call, tokenization and softmax included; each variant batches its own way",
            "latency": f"corpus cut into requests of {REQUEST_BATCH} posts (or the variant's batch if larger) in arrival order, each timed",
            "peak_rss_mb": "VmHWM of the variant's own process at its end (peak resident memory since its exec)",
            "others_cores": "CPU used by other processes while the variant ran, in cores (contention)",
        },
        "variants": results,
        "skipped": skipped,
        "probe": probe_result,
        "arithmetic": {"gflop_per_post_issue": GFLOP_PER_POST, "gflop_per_post_corpus": round(gflop_corpus, 4)},
        "summary": summary,
        "agreement": agreement,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report, echo)
    return report


def _summarise(results: dict[str, Any], probe: dict[str, Any] | None, gflop_corpus: float) -> dict[str, Any]:
    ok = {name: r for name, r in results.items() if "error" not in r}
    summary: dict[str, Any] = {}
    base = ok.get("pipeline_default")
    if base:
        summary["speedup_vs_pipeline_default"] = {
            name: round(r["throughput"]["posts_per_s"] / base["throughput"]["posts_per_s"], 2) for name, r in ok.items()
        }
    if probe and "error" not in probe:
        int8_gops = probe["int8_gops_model_mix"]
        fp32_gflops = probe["fp32_gflops_model_mix"]
        limits = {
            "int8_posts_per_s_at_0.73_gflop": round(int8_gops / GFLOP_PER_POST, 1),
            "int8_posts_per_s_at_corpus_gflop": round(int8_gops / gflop_corpus, 1),
            "fp32_posts_per_s_at_0.73_gflop": round(fp32_gflops / GFLOP_PER_POST, 1),
            "fp32_posts_per_s_at_corpus_gflop": round(fp32_gflops / gflop_corpus, 1),
        }
        summary["limits"] = limits
        if "moodwire_int8" in ok:
            rate = ok["moodwire_int8"]["throughput"]["posts_per_s"]
            summary["moodwire_int8_share_of_int8_limit_at_0.73_gflop"] = round(rate / limits["int8_posts_per_s_at_0.73_gflop"], 3)
            summary["moodwire_int8_share_of_int8_limit_at_corpus_gflop"] = round(rate / limits["int8_posts_per_s_at_corpus_gflop"], 3)
        if "moodwire_fp32" in ok:
            rate = ok["moodwire_fp32"]["throughput"]["posts_per_s"]
            summary["moodwire_fp32_share_of_fp32_limit_at_0.73_gflop"] = round(rate / limits["fp32_posts_per_s_at_0.73_gflop"], 3)
    return summary


def print_table(report: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    from rich.console import Console
    from rich.table import Table

    machine = report["machine"]
    corpus_info = report["corpus"]
    table = Table(
        title=(
            f"moodwire runtime benchmark: {corpus_info['posts']} posts (median {corpus_info.get('tokens_median')} tokens), "
            f"{report['model']['model_version']}\n{machine['cpu_model']}, {machine['cores_available']} cores, "
            f"onnxruntime {machine['onnxruntime']}"
        )
    )
    columns = ("variant", "posts/s", "x default", "p50 ms", "p99 ms", "req/s posts", "tok share", "graph-only posts/s", "peak RSS MB", "others cores")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    speedups = report["summary"].get("speedup_vs_pipeline_default", {})
    for name, r in report["variants"].items():
        if "error" in r:
            table.add_row(name, "FAILED", *[""] * (len(columns) - 2))
            continue
        tok = r.get("tokenize", {}).get("share_of_throughput_time")
        graph_only = r.get("graph_only", {}).get("posts_per_s")
        table.add_row(
            name,
            f"{r['throughput']['posts_per_s']:.1f}",
            f"{speedups[name]:.2f}" if name in speedups else "",
            f"{r['latency']['p50_ms']:.1f}",
            f"{r['latency']['p99_ms']:.1f}",
            f"{r['latency']['posts_per_s']:.1f}",
            f"{tok:.1%}" if tok is not None else "",
            f"{graph_only:.1f}" if graph_only is not None else "",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['others_cores']:.2f}",
        )
    for name, why in report["skipped"].items():
        table.add_row(name, "skipped", *[""] * (len(columns) - 2))
    console = Console(width=160)
    with console.capture() as capture:
        console.print(table)
    echo(capture.get().rstrip())
    summary = report["summary"]
    if "limits" in summary:
        probe = report["probe"]
        echo(
            f"matmul probe ({probe['rows']} rows, {probe['threads']} threads): int8 {probe['int8_gops_model_mix']} GOP/s, "
            f"fp32 {probe['fp32_gflops_model_mix']} GFLOP/s -> limits at {GFLOP_PER_POST} GFLOP/post: "
            f"int8 {summary['limits']['int8_posts_per_s_at_0.73_gflop']} posts/s, fp32 {summary['limits']['fp32_posts_per_s_at_0.73_gflop']} posts/s "
            f"(this corpus: {report['arithmetic']['gflop_per_post_corpus']:.3f} GFLOP/post -> int8 {summary['limits']['int8_posts_per_s_at_corpus_gflop']})"
        )
        if "moodwire_int8_share_of_int8_limit_at_0.73_gflop" in summary:
            echo(
                f"moodwire int8 = {summary['moodwire_int8_share_of_int8_limit_at_0.73_gflop']:.1%} of the int8 limit "
                f"({summary['moodwire_int8_share_of_int8_limit_at_corpus_gflop']:.1%} at this corpus' FLOPs)"
            )
    if report["skipped"]:
        echo("skipped: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items()))
    for pair, values in report["agreement"].items():
        echo(f"agreement {pair}: {values}")


def _parse_variants(raw: str | None) -> list[str]:
    if not raw:
        return list(DEFAULT_VARIANTS)
    return [v.strip() for v in raw.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moodwire runtime benchmark (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help=f"the first {corpus.QUICK_SIZE} posts of the corpus")
    parser.add_argument("--size", type=int, default=None, help="the first N posts of the corpus (default: all)")
    parser.add_argument("--variants", default=None, help=f"comma-separated; default: {','.join(DEFAULT_VARIANTS)}; also: {','.join(sorted(set(VARIANTS) - set(DEFAULT_VARIANTS)))}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None, help="the checkpoint the model dir was exported from")
    parser.add_argument("--no-probe", action="store_true")
    # Internal: one variant (or the probe) in this process.
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker or args.probe:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        if args.worker:
            result = run_worker(VARIANTS[args.worker], spec)
        else:
            result = run_probe(int(spec["probe_rows"]), float(spec.get("probe_min_s", 1.0)))
            result["peak_rss_mb"] = _peak_rss_mb()
        args.result.write_text(json.dumps(result), encoding="utf-8")
        return 0

    size = corpus.QUICK_SIZE if args.quick and args.size is None else args.size
    run(size, _parse_variants(args.variants), args.out, args.model_dir, args.checkpoint, probe=not args.no_probe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
