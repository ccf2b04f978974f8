"""Exporting a model for deployment: ONNX with dynamic batch, height and width.

ONNX Runtime then runs it without PyTorch (``mirnet enhance --backend onnxruntime``). The
TorchScript-based exporter is the default because it exports MIRNet in seconds; PyTorch's
newer dynamo exporter (``dynamo=True``) gives the same graph numerically but takes minutes.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from mirnet.archs import MIRNet
from mirnet.io import atomic_path

OPSET = 18


def export_onnx(model: MIRNet, path: str | os.PathLike, dynamo: bool = False, opset: int = OPSET) -> Path:
    """Write ``model`` as an ONNX file taking ``image`` (N, 3, H, W) in [0, 1], any N, H, W,
    and returning ``enhanced`` of the same shape (not clamped, as the PyTorch model)."""
    import onnx  # noqa: F401  torch.onnx needs it; importing it here names it if it is missing

    path = Path(path)
    model = model.eval().cpu()
    example = torch.rand(1, 3, 64, 96)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters are chatty about deprecations
        if dynamo:
            dynamic = torch.export.Dim.DYNAMIC
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["image"],
                output_names=["enhanced"],
                dynamic_shapes={"x": {0: dynamic, 2: dynamic, 3: dynamic}},
                opset_version=opset,
            )
            program.save(str(tmp))
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=["image"],
                output_names=["enhanced"],
                dynamic_axes={"image": axes, "enhanced": axes},
                opset_version=min(opset, 17),
            )
    return path


def cached_onnx(model: MIRNet, weights: str | os.PathLike) -> Path:
    """An ONNX export of ``model`` cached by the weights file's hash, exported on first use."""
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("MIRNET_CACHE", Path.home() / ".cache" / "mirnet"))
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{Path(weights).stem}-{digest}.onnx"
    if not path.exists():
        export_onnx(model, path)
    return path


class OnnxModel:
    """Callable like the PyTorch model, on CPU tensors, backed by an ONNX Runtime session."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort  # optional dependency: pip install 'mirnet[onnx]'

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
