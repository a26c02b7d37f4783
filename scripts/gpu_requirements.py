"""Print moodwire's dependencies (pyproject.toml) with onnxruntime replaced by the given
onnxruntime-gpu requirement, one per line, for `pip install -r` in Dockerfile.gpu.

    python scripts/gpu_requirements.py "onnxruntime-gpu==1.31.1" > requirements.txt

Standard library only: it runs in the image's bare virtualenv before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def distribution_name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement (`Foo_Bar>=1` -> `foo-bar`)."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def gpu_requirements(pyproject: Path, onnxruntime_gpu: str) -> list[str]:
    if distribution_name(onnxruntime_gpu) != "onnxruntime-gpu":
        raise ValueError(f"expected an onnxruntime-gpu requirement, got {onnxruntime_gpu!r}")
    dependencies: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    kept = [d for d in dependencies if distribution_name(d) not in ("onnxruntime", "onnxruntime-gpu")]
    if len(kept) == len(dependencies):
        raise ValueError("pyproject.toml does not depend on onnxruntime: nothing to swap")
    return [*kept, onnxruntime_gpu]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(gpu_requirements(PYPROJECT, argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
