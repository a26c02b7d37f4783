"""The model dir format: one place writes it, one place reads it, and a swap is all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from scorer import model_files
from scorer.model_files import ModelMeta


def _tokenizer(tmp_path: Path) -> Path:
    src = tmp_path / "src_tokenizer.json"
    src.write_text(json.dumps({"truncation": {"max_length": 128}, "padding": {"strategy": {"Fixed": 128}}, "model": {}}))
    return src


def _graph(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_write_then_read(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "m"
    meta = ModelMeta(model_version="v1", base_model="b", max_length=64, files={"model.onnx": "int8"}, extra={"k": 1})
    model_files.write_model_dir(dest, meta, _tokenizer(tmp_path), {"model.onnx": _graph(tmp_path, "g1", b"one")}, card="# card\n")
    got = model_files.read_meta(dest)
    assert got.model_version == "v1" and got.max_length == 64 and got.extra == {"k": 1}
    assert got.polarity_labels == POLARITY_LABELS and got.emotion_labels == EMOTION_LABELS
    assert (dest / model_files.CARD_FILE).read_text() == "# card\n"
    tok = json.loads((dest / model_files.TOKENIZER_FILE).read_text())
    assert tok["padding"] is None  # the runtime pads per micro-batch
    assert tok["truncation"]["max_length"] == 64
    assert oct((dest).stat().st_mode & 0o777) == oct(0o755)


def test_rewrite_replaces_everything(tmp_path: Path) -> None:
    dest = tmp_path / "m"
    tok = _tokenizer(tmp_path)
    fp16 = _graph(tmp_path, "g16", b"half")
    model_files.write_model_dir(dest, ModelMeta("v1", "b", 64), tok, {"model.onnx": _graph(tmp_path, "g1", b"one"), "model.fp16.onnx": fp16})
    model_files.write_model_dir(dest, ModelMeta("v2", "b", 64), tok, {"model.onnx": _graph(tmp_path, "g2", b"two")})
    assert (dest / "model.onnx").read_bytes() == b"two"
    assert not (dest / "model.fp16.onnx").exists()  # a stale graph must not outlive its model
    assert model_files.read_meta(dest).model_version == "v2"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_needs_model_onnx(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        model_files.write_model_dir(tmp_path / "m", ModelMeta("v", "b", 64), _tokenizer(tmp_path), {})


def test_unknown_meta_keys_are_kept(tmp_path: Path) -> None:
    raw = json.loads(ModelMeta("v", "b", 64).to_json())
    raw["future_field"] = 3
    (tmp_path / model_files.META_FILE).write_text(json.dumps(raw))
    assert model_files.read_meta(tmp_path).extra["future_field"] == 3


def test_missing_meta(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        model_files.read_meta(tmp_path)
