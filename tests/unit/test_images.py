"""The images as their Dockerfiles build them (no Docker here): the CPU image runs as uid 10001
with only its data_dir writable; the GPU image carries onnxruntime-gpu and not the CPU
onnxruntime; the build context holds what the Dockerfiles copy and nothing secret."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compose import ROOT, read_dockerfile

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_services_run_as_10001_owning_only_their_data_dir(name: str) -> None:
    image = read_dockerfile(ROOT / name)
    assert image.user == "10001:10001"
    assert image.entrypoint == ["moodwire"]
    data_dir = image.env["MOODWIRE_DATA_DIR"]
    assert data_dir.startswith("/") and not data_dir.startswith(image.workdir.rstrip("/") + "/")
    assert image.user_dirs == {data_dir: (10001, 10001)}
    assert image.env["HOME"] == data_dir
    assert image.env["MOODWIRE_MODEL_DIR"].startswith(image.workdir)


def test_the_gpu_image_is_cuda_runtime_with_onnxruntime_gpu_only() -> None:
    image = read_dockerfile(ROOT / "Dockerfile.gpu")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", image.base), image.base
    text = (ROOT / "Dockerfile.gpu").read_text()
    (pin,) = re.findall(r'ARG ONNXRUNTIME_GPU="(onnxruntime-gpu==[\d.]+)"', text)
    installs = " && ".join(image.runs)
    # moodwire itself without its dependencies (they would bring the CPU onnxruntime) ...
    assert "pip install --no-deps ." in installs
    assert not re.search(r"pip install (?!--no-deps)[^&]*\.(\[|\s|$)", installs)
    assert "[gpu]" not in text and "EXTRAS" not in text
    # ... and the dependencies from the list with onnxruntime swapped
    assert 'scripts/gpu_requirements.py "$ONNXRUNTIME_GPU"' in installs
    output = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_requirements.py"), pin],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    names = [re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower() for line in output]
    assert "onnxruntime" not in names and names.count("onnxruntime-gpu") == 1 and pin in output
    import tomllib

    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(output) == {d for d in wanted if not d.lower().startswith("onnxruntime")} | {pin}


def test_the_cpu_and_gpu_images_have_their_own_tags() -> None:
    import yaml

    cpu = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-moodwire"]["image"]
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["scorer"]["image"]
    assert cpu != gpu and gpu.split(":")[0] == cpu.split(":")[0]


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go's filepath.Match, plus `**`)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [l for l in lines if l and not l.startswith("#")]
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for raw in patterns:
        negated = raw.startswith("!")
        regex = _pattern(raw.lstrip("!").rstrip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            included = negated
    return included


def _tracked(directory: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--", directory], cwd=ROOT, capture_output=True, text=True, check=True)
    files = listed.stdout.split()
    assert files, f"git tracks nothing under {directory}"
    return files


def test_the_build_context_holds_what_the_images_copy_and_no_secrets() -> None:
    for name in DOCKERFILES:
        for copy in read_dockerfile(ROOT / name).copies:
            for source in copy[:-1]:
                path = ROOT / source
                assert path.exists(), f"{name} copies {source}, which does not exist"
                # What the repository holds there: local results and caches (git-ignored) are no
                # part of an image built from a checkout.
                files = _tracked(source) if path.is_dir() else [source]
                for relative in files:
                    assert in_build_context(relative), f"{name} copies {relative}, left out by .dockerignore"
    for secret_or_state in (".env", ".git/config", ".venv/bin/python", "moodwire-data/chdb/x", "tests/conftest.py",
                            "moodwire/__pycache__/config.cpython-311.pyc", "data/handlabelled/batch_a.jsonl"):
        assert not in_build_context(secret_or_state), secret_or_state
