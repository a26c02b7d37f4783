"""Model lifecycle: build training data, fine-tune, export to ONNX, evaluate, explain.

Everything under this package may use the `train` extra (torch, transformers, onnx, lexicons);
nothing on the runtime path may import it.
"""
