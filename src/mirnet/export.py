"""Exporting a model for deployment: ONNX, and AOTInductor packages, both with dynamic batch,
height and width.

ONNX Runtime then runs it without PyTorch (``mirnet enhance --backend onnxruntime``). The
TorchScript-based exporter is the default because it exports MIRNet in seconds; PyTorch's
newer dynamo exporter (``dynamo=True``) gives the same graph numerically but takes minutes.

An AOTInductor package (``.pt2``, :func:`export_aoti`) is the model compiled ahead of time
for this machine's processor: compiling takes minutes once, and any later process loads it in
seconds and runs every photo size with it, where ``torch.compile`` pays its compilation again
in every process and for every new size.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from mirnet.archs import MIRNet
from mirnet.io import atomic_path, file_sha256
from mirnet.weights import WeightsError

# Largest height and width an AOTInductor package accepts (larger photos are tiled anyway).
AOTI_MAX_SIDE = 8192

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


def cache_entry(weights: str | os.PathLike, suffix: str, *tags: str, folder: str = "") -> Path:
    """A file in mirnet's cache (``$MIRNET_CACHE``, default ``~/.cache/mirnet``), named after a
    weights file, its hash and ``tags``, so that other weights never find it; it may not exist."""
    cache = Path(os.environ.get("MIRNET_CACHE", Path.home() / ".cache" / "mirnet")) / folder
    cache.mkdir(parents=True, exist_ok=True)
    key = "-".join([Path(weights).stem, file_sha256(weights)[:16], *tags])
    return cache / ("".join(c if c.isalnum() or c in "-._" else "_" for c in key) + suffix)


def cached_onnx(model: MIRNet, weights: str | os.PathLike) -> Path:
    """An ONNX export of ``model`` cached by the weights file's hash, exported on first use."""
    path = cache_entry(weights, ".onnx")
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
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime's own exception types (InvalidProtobuf, Fail...)
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise WeightsError(f"{path}: not a usable ONNX model ({reason})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


class _Autocast(torch.nn.Module):
    """The model under bf16 autocast (or none), so that the precision is baked into the export."""

    def __init__(self, model: MIRNet, precision: str):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x).float()


def export_aoti(model: MIRNet, path: str | os.PathLike, precision: str = "fp32") -> Path:
    """Compile ``model`` ahead of time (AOTInductor) into a ``.pt2`` package, atomically.

    The package takes (N, 3, H, W) images in [0, 1] with any N, and H and W multiples of the
    model's coarsest stride up to :data:`AOTI_MAX_SIDE` (:class:`AotiModel` pads other sizes),
    on the device the model is on, in ``precision`` (``"fp32"`` or ``"bf16"`` autocast). It
    is compiled for this machine's processor: about 2-5 minutes for ``tiny`` on 2 CPU cores.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise WeightsError(f"{path}: an AOTInductor package is named .pt2")
    model = model.eval()
    device = next(model.parameters()).device
    multiple = model.multiple
    example = torch.rand(2, 3, 16 * multiple, 24 * multiple, device=device)
    dims = {
        0: torch.export.Dim("batch", min=1, max=256),
        2: multiple * torch.export.Dim("rows", min=1, max=AOTI_MAX_SIDE // multiple),
        3: multiple * torch.export.Dim("columns", min=1, max=AOTI_MAX_SIDE // multiple),
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(_Autocast(model, precision), (example,), dynamic_shapes={"x": dims})
        # The package must be named .pt2 while written: build it in a private folder beside
        # the target, then rename it into place (readers never see half a package).
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
            built = Path(folder) / path.name
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(built), inductor_configs={"freezing": True}
            )
            os.replace(built, path)
    return path


def cached_aoti(model: MIRNet, weights: str | os.PathLike, precision: str) -> Path:
    """Where the AOTInductor package of these weights, precision, device and processor is
    cached (``$MIRNET_CACHE/aoti/``, default ``~/.cache/mirnet/aoti/``); it may not exist yet."""
    device = next(model.parameters()).device
    target = (
        torch.backends.cpu.get_cpu_capability()
        if device.type == "cpu"
        else torch.cuda.get_device_name(device)
    )
    tags = (precision, device.type, target, f"torch{torch.__version__}")
    return cache_entry(weights, ".pt2", *tags, folder="aoti")


class AotiModel:
    """Callable like the PyTorch model, backed by an AOTInductor package (:func:`export_aoti`)."""

    def __init__(self, path: str | os.PathLike, multiple: int):
        self.path, self.multiple = Path(path), multiple
        try:
            self.runner = torch._inductor.aoti_load_package(str(path))
        except Exception as err:  # noqa: BLE001 - a foreign, truncated or incompatible package
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise WeightsError(f"{path}: not a usable AOTInductor package ({reason})") from None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        # The same replicate padding the network does itself, to the sizes the package takes.
        padded = torch.nn.functional.pad(
            batch, (0, (-w) % self.multiple, 0, (-h) % self.multiple), mode="replicate"
        )
        return self.runner(padded.contiguous())[..., :h, :w]
