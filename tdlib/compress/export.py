"""A compressed model as an ONNX file that takes any batch size, for ONNX Runtime and other runtimes."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from torch import Tensor

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
    # The exporter warns, once a process, of each torchvision operator it cannot register: none is used here
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["logits"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    finally:
        model.train(was_training)
        registration.setLevel(level)
    return path


class OnnxRuntime:
    """A model run by ONNX Runtime on the CPU: called like the model, on a (batch, in_features) float32
    tensor, it returns the (batch, n_classes) logits as a tensor; ``session`` is ONNX Runtime's own, for
    callers that feed it numpy arrays. Needs ``pip install tdlib[onnx]``."""

    def __init__(self, model: CompressedMLP | str | Path, threads: int = 1) -> None:
        """``model`` exported (:func:`export_onnx`, to a temporary file), or the ONNX file at the path
        ``model``, in a session of ``threads`` intra-op threads.

        The session's threads do not spin between runs: by default they busy-wait for the next one, and
        timed in turns with another runtime on as many threads as cores, that spinning takes the cores the
        other runtime's turns run on (the rounds' ratios scattered up to 8x, and both runtimes slowed)."""
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("OnnxRuntime needs onnxruntime: pip install 'tdlib[onnx]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with tempfile.TemporaryDirectory() as directory:
            path = model if isinstance(model, str | Path) else export_onnx(model, Path(directory) / "model.onnx")
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.threads = threads

    def __call__(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.numpy()})[0])
