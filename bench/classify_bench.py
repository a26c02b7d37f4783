"""`moodwire classify` from the outside, against a script running the default transformers pipeline.

    python -m bench.classify_bench [--quick] [--size N] [--out FILE]

Both are run as a user would run them, as fresh processes on the same JSONL file of corpus
posts (bench.corpus), output written to a file, wall time measured from spawn to exit (so
interpreter start, imports and model load are included):

* `moodwire classify posts.jsonl > out.jsonl` (the installed console script);
* `python pipeline_classify.py posts.jsonl out.jsonl DIR 64` (PIPELINE_SCRIPT below): reads the same
  file, `pipeline("text-classification", model=DIR)` with its defaults (batch_size 1), the
  same truncation (the model's 64 tokens), one JSON line out per post. DIR is the same encoder
  and heads saved with `save_pretrained` (bench/reference.py), cached under data/build/bench/.

Each is also run on a one-post file, which gives its start-up cost (start, imports, load).
Result: posts/s each, and the ratio pipeline wall time / classify wall time (the speed-up).
Writes bench/results/classify.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import corpus  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "classify.json"
TIMEOUT_S = 3600.0


def moodwire_executable() -> list[str]:
    """The installed `moodwire` console script next to this interpreter (else `python -m moodwire.cli`)."""
    script = Path(sys.executable).parent / "moodwire"
    if script.is_file():
        return [str(script)]
    found = shutil.which("moodwire")
    return [found] if found else [sys.executable, "-c", "from moodwire.cli import app; app()"]


def pipeline_dir(model_dir: Path | None, checkpoint: Path | None) -> Path:
    """The pipeline model (same encoder and heads) saved as a transformers model dir, cached."""
    from bench.reference import CACHE_DIR, find_reference, graph_digest, pipeline_model
    from scorer import model_files

    ref = find_reference(model_dir, checkpoint)
    # Keyed like the fp32 cache: by the shipped graph, which changes with every export.
    dest = CACHE_DIR / f"pipeline-{ref.model_version}-{graph_digest(Path(ref.model_dir) / model_files.MODEL_FILE)}"
    if (dest / "config.json").is_file():
        return dest
    model, tokenizer = pipeline_model(ref)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no data/build/bench yet
    staging = Path(tempfile.mkdtemp(prefix=".pipeline-", dir=CACHE_DIR))
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


# What a user of the default transformers stack would write; run as its own file, so that it
# imports nothing of moodwire's.
PIPELINE_SCRIPT = """\
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import pipeline

posts_file, out_file, model_path, max_length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(posts_file, encoding="utf-8") as handle:
    posts = [json.loads(line) for line in handle if line.strip()]
classifier = pipeline("text-classification", model=model_path, device=-1)
results = classifier([post["text"] for post in posts], truncation=True, max_length=max_length)
with open(out_file, "w", encoding="utf-8") as out:
    for post, result in zip(posts, results):
        out.write(json.dumps({"id": post["id"], "label": result["label"], "score": result["score"]}) + "\\n")
"""


def _timed(args: list[str], stdout_file: Path) -> dict[str, Any]:
    from bench.runtime_bench import _busy_cpu_s, spawn

    with stdout_file.open("wb") as out:
        busy_before = _busy_cpu_s()
        began = time.perf_counter()
        code, usage, tail = spawn(args, TIMEOUT_S, stdout=out, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - began
    child_cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, _busy_cpu_s() - busy_before - child_cpu)
    if code != 0:
        raise RuntimeError(f"{' '.join(args[:3])} ... exited {code}: {tail}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(child_cpu, 1),
        # ru_maxrss: the child's peak, but never below this (small) parent's size at fork.
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "others_cores": round(others / wall, 2) if wall else 0.0,
    }


def run(
    size: int | None = None,
    out: Path | None = RESULTS,
    model_dir: Path | None = None,
    checkpoint: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    from bench.reference import find_reference
    from bench.runtime_bench import describe_machine

    started_at = datetime.now(UTC)
    texts = corpus.load(size)
    ref = find_reference(model_dir, checkpoint)
    echo("preparing the pipeline model dir (same encoder and heads; cached under data/build/bench/) ...")
    model_path = pipeline_dir(model_dir, checkpoint)
    classify_cmd = moodwire_executable() + ["classify"]
    if model_dir is not None:
        classify_cmd += ["--model-dir", str(model_dir)]

    with tempfile.TemporaryDirectory(prefix="moodwire-classify-bench-") as tmp:
        work = Path(tmp)
        script = work / "pipeline_classify.py"
        script.write_text(PIPELINE_SCRIPT, encoding="utf-8")
        pipeline_cmd = [sys.executable, str(script)]
        posts_file = corpus.write_jsonl(work / "posts.jsonl", texts)
        one_file = corpus.write_jsonl(work / "one.jsonl", texts[:1])
        runs: dict[str, Any] = {}
        for name, cmd in (("moodwire_classify", classify_cmd), ("pipeline_default_script", pipeline_cmd)):
            echo(f"{name}: start-up (1 post) ...")
            out_file = work / f"{name}.out"
            if name.startswith("pipeline"):
                extra = [str(model_path), str(ref.max_length)]
                startup = _timed(cmd + [str(one_file), str(work / "one.out")] + extra, work / "one.stdout")
                echo(f"{name}: {len(texts)} posts ...")
                full = _timed(cmd + [str(posts_file), str(out_file)] + extra, work / "pipeline.stdout")
            else:
                startup = _timed(cmd + [str(one_file)], work / "one.out")
                echo(f"{name}: {len(texts)} posts ...")
                full = _timed(cmd + [str(posts_file)], out_file)
            lines = sum(1 for _ in out_file.open(encoding="utf-8"))
            if lines != len(texts):
                raise RuntimeError(f"{name} wrote {lines} lines for {len(texts)} posts")
            full["posts_per_s"] = round(len(texts) / full["wall_s"], 1)
            runs[name] = {"command": " ".join(Path(c).name for c in cmd), "startup_1_post": startup, "full": full}
            echo(f"  {full['wall_s']} s, {full['posts_per_s']} posts/s (start-up alone {startup['wall_s']} s)")

    classify_s = runs["moodwire_classify"]["full"]["wall_s"]
    pipeline_s = runs["pipeline_default_script"]["full"]["wall_s"]
    report: dict[str, Any] = {
        "benchmark": "classify",
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "corpus": corpus.describe(texts),
        "model": {"model_dir": ref.model_dir, "model_version": ref.model_version, "pipeline_model": str(model_path)},
        "definitions": {
            "wall_s": "spawn to exit of a fresh process: interpreter start, imports, model load, scoring, writing JSONL",
            "speedup": "pipeline script wall time / moodwire classify wall time, same posts file",
            "others_cores": "CPU used by other processes meanwhile, in cores (contention)",
        },
        "runs": runs,
        "speedup_vs_pipeline_default": round(pipeline_s / classify_s, 2),
        "speedup_excluding_startup": round(
            (pipeline_s - runs["pipeline_default_script"]["startup_1_post"]["wall_s"])
            / max(1e-9, classify_s - runs["moodwire_classify"]["startup_1_post"]["wall_s"]),
            2,
        ),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    echo(
        f"moodwire classify: {classify_s} s ({runs['moodwire_classify']['full']['posts_per_s']} posts/s, process start included); "
        f"default pipeline script: {pipeline_s} s ({runs['pipeline_default_script']['full']['posts_per_s']} posts/s) "
        f"-> {report['speedup_vs_pipeline_default']}x (excluding start-up: {report['speedup_excluding_startup']}x)"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moodwire classify vs the default transformers pipeline (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help=f"the first {corpus.QUICK_SIZE} posts")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args(argv)
    size = corpus.QUICK_SIZE if args.quick and args.size is None else args.size
    run(size, args.out, args.model_dir, args.checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
