"""A compressed model as an ONNX file that takes any batch size, for ONNX Runtime and other runtimes."""

from __future__ import annotations

from pathlib import Path

import torch

from tdlib.compress.module import CompressedMLP


def export_onnx(model: CompressedMLP, path: str | Path) -> Path:
    """Write ``model`` to ``path`` as an ONNX graph of its linear layers and ReLUs: input ``"x"``, (batch,
    in_features) float32, output ``"logits"``, (batch, n_classes), the batch dimension left free. Needs
    ``pip install tdlib[onnx]``. Returns the path written."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; say so before tracing anything)
    except ImportError:
        raise ImportError("export_onnx needs onnx and onnxscript: pip install 'tdlib[onnx]'") from None
    in_features = model.shapes[0][1]
    # A batch of 2 to trace with: an example batch of 1 would let the exporter fix the batch at 1.
    example = torch.zeros(2, in_features, dtype=model.linears[0].weight.dtype)
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["logits"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    finally:
        model.train(was_training)
    return path
