"""A tiny hand-built ONNX graph with moodwire's inputs and outputs, whose logits are simple
functions of the input, so runtime tests can check exactly what the runtime fed it.

    polarity_logits[b] = n_tokens[b] * POLARITY_SLOPE          n_tokens = sum of attention_mask
    emotion_logits[b]  = n_tokens[b] * EMOTION_SLOPE
    stance_logits[b,t] = (sum of the token ids under target_mask[b,t]) * STANCE_SLOPE

A model dir around it (the shipped tokenizer, a meta file) loads in OnnxScorer like a real one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from scorer import model_files

POLARITY_SLOPE = np.array([-0.2, 0.0, 0.2], dtype=np.float32)
EMOTION_SLOPE = np.array([0.1, 0.0, 0.0, 0.3, 0.0, 0.0, 0.05], dtype=np.float32)
STANCE_SLOPE = np.array([-1e-4, 0.0, 1e-4], dtype=np.float32)


def build_graph(path: Path, stance: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper

    dyn = ["batch", "seq"]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, dyn),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dyn),
        helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, dyn),
    ]
    outputs = [
        helper.make_tensor_value_info("polarity_logits", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("emotion_logits", TensorProto.FLOAT, ["batch", 7]),
    ]
    inits = [
        helper.make_tensor("pol_slope", TensorProto.FLOAT, [1, 3], POLARITY_SLOPE.tolist()),
        helper.make_tensor("emo_slope", TensorProto.FLOAT, [1, 7], EMOTION_SLOPE.tolist()),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
        helper.make_tensor("stance_slope", TensorProto.FLOAT, [1, 1, 3], STANCE_SLOPE.tolist()),
    ]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f", "axis1"], ["n_tokens"], keepdims=1),  # [B, 1]
        helper.make_node("Mul", ["n_tokens", "pol_slope"], ["polarity_logits"]),
        helper.make_node("Mul", ["n_tokens", "emo_slope"], ["emotion_logits"]),
        # token_type_ids must be consumed for the input to stay in the graph.
        helper.make_node("Cast", ["token_type_ids"], ["types_f"], to=TensorProto.FLOAT),
    ]
    outputs.append(helper.make_tensor_value_info("types_f", TensorProto.FLOAT, dyn))
    if stance:
        inputs.append(helper.make_tensor_value_info("target_mask", TensorProto.FLOAT, ["batch", "targets", "seq"]))
        outputs.append(helper.make_tensor_value_info("stance_logits", TensorProto.FLOAT, ["batch", "targets", 3]))
        nodes += [
            helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["ids_f", "axis2"], ["ids_col"]),  # [B, S, 1]
            helper.make_node("MatMul", ["target_mask", "ids_col"], ["id_sums"]),  # [B, T, 1]
            helper.make_node("Mul", ["id_sums", "stance_slope"], ["stance_logits"]),
        ]
    graph = helper.make_graph(nodes, "fake_moodwire", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_model_dir(dest: Path, stance: bool, temperatures: dict[str, float] | None = None,
                   version: str = "fake-1") -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    build_graph(dest / model_files.MODEL_FILE, stance)
    shipped = model_files.default_model_dir()
    shutil.copyfile(model_files.tokenizer_path(shipped), dest / model_files.TOKENIZER_FILE)
    meta = {"model_version": version, "base_model": "fake", "max_length": 64,
            "files": {model_files.MODEL_FILE: "fp32"}, "temperatures": temperatures or {}}
    (dest / model_files.META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return dest
