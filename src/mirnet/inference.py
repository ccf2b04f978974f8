"""Enhancing photos with a trained model: ``mirnet.load_model(...).enhance(image)``.

:class:`Enhancer` runs a model on the torch (eager or compiled) or ONNX Runtime backend;
large photos go through :mod:`mirnet.tiling`. Weights come from :mod:`mirnet.weights`, the
device from :mod:`mirnet.device`, array conversions from :mod:`mirnet.io`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from PIL import Image

from mirnet.archs import MIRNet
from mirnet.device import OptionError, available_memory, pick_device, supports_bf16
from mirnet.export import AotiModel, cached_aoti
from mirnet.io import array_to_tensor, tensor_to_array
from mirnet.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    GlobalContext,
    automatic_tile,
    check_tile,
    enhance_tiled,
)
from mirnet.weights import SELF_ENSEMBLE_COPIES, WeightsError, load_weights, resolve_weights

PRECISIONS = ("auto", "fp32", "bf16")

if TYPE_CHECKING:
    from mirnet.video import VideoSummary

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray, torch.Tensor)


# How allocation failures read when they are not a torch.OutOfMemoryError: the CPU allocator's,
# CUDA's own, and cuBLAS's or cuDNN's.
_OUT_OF_MEMORY_MESSAGES = ("can't allocate memory", "out of memory", "ALLOC_FAILED")


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure rather than a bug."""
    message = str(err)
    return isinstance(err, torch.OutOfMemoryError) or any(m in message for m in _OUT_OF_MEMORY_MESSAGES)


def _flip_transpose(image: torch.Tensor, copy: int, inverse: bool = False) -> torch.Tensor:
    """The ``copy``-th of the 8 flips and transposes of ``image`` (bit 0: left-right, bit 1:
    up-down, bit 2: transposed), or with ``inverse`` the map back from it."""
    flips = [dim for bit, dim in ((1, -1), (2, -2)) if copy & bit]
    if not inverse and flips:
        image = image.flip(flips)
    if copy & 4:
        image = image.transpose(-1, -2)
    if inverse and flips:
        image = image.flip(flips)
    return image


def average_over_flips(
    run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, copies: int
) -> torch.Tensor:
    """The mean of ``run`` over the first ``copies`` of the 8 flips and transposes of
    ``images`` (..., H, W), each output mapped back first: the geometric self-ensemble of
    Timofte et al. (CVPR 2016) and EDSR (Lim et al., CVPRW 2017). The order is the identity,
    the left-right flip, the up-down flip, both, then the same four transposed, so 2 copies
    are the identity and its mirror image.

    The network is not flip- or transpose-invariant, so its errors differ between copies and
    partly cancel in the mean; the cost is ``copies`` runs.
    """
    if copies not in SELF_ENSEMBLE_COPIES:
        raise OptionError(f"a self-ensemble takes 1, 2, 4 or 8 copies, not {copies}")
    total = None
    for copy in range(copies):
        out = _flip_transpose(run(_flip_transpose(images, copy)).float(), copy, inverse=True)
        total = out if total is None else total + out
    return total if copies == 1 else total / copies


class Enhancer:
    """A trained model ready to enhance photos.

    Args:
        model: the network.
        info: what was loaded (``name``, ``arch``, ``weights``).
        device: where to run (``"cpu"``, ``"cuda"``, ``None`` for the best available).
        precision: ``"auto"`` (bf16 where the CPU or GPU has it natively, else fp32),
            ``"fp32"`` (the reference) or ``"bf16"`` (autocast; faster on CPUs with
            AVX-512 bf16 and on GPUs).
        tile: tile size for large photos; ``None`` tiles automatically (:meth:`tile_for`):
            photos whose whole-photo estimate does not fit in the
            available memory, or that run out of memory whole; ``0`` never tiles.
        overlap: overlap between tiles, in pixels.
        backend: ``"torch"``, or ``"onnxruntime"`` to run an ONNX export of the model
            (CPU, fp32; the export is cached, see :func:`mirnet.export.cached_onnx`).
        compile: ``None`` (the default) runs this model's AOTInductor package if ``mirnet
            export --format aoti`` built one for this precision on this machine (it loads in
            seconds; about 1.1x faster than the eager bf16 model on CPU), else the eager model: it never
            compiles. ``True`` also compiles when there is no package: ``torch.compile`` (with
            weight freezing), whose first photo of each new size pays a compilation of about a
            minute, in every process. ``False`` always runs the eager model.
        channels_last: run the torch backend in channels-last memory layout (the default;
            about 1.4x faster on CPU). ``False`` is plain PyTorch, the benchmarks' baseline.
        self_ensemble: average each photo's result over this many of its flips and transposes
            (1, 2, 4 or 8; :func:`average_over_flips`): that many times the work, for a cleaner
            result; the bundled ``quality`` model uses 8. Applies to photos on every backend
            and path; videos run one copy (:class:`mirnet.video.FrameEnhancer`).

    Tiled photos run through the eager model whatever the backend, because only it can be
    given the photo-wide attention statistics (see :class:`mirnet.tiling.GlobalContext`).
    """

    def __init__(
        self,
        model: MIRNet | None,
        info: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        backend: str = "torch",
        compile: bool | None = None,
        channels_last: bool = True,
        self_ensemble: int = 1,
    ):
        if self_ensemble not in SELF_ENSEMBLE_COPIES:
            raise OptionError(f"self_ensemble takes 1, 2, 4 or 8 copies, not {self_ensemble!r}")
        if precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if backend not in ("torch", "onnxruntime"):
            raise OptionError(f"backend must be torch or onnxruntime, not {backend!r}")
        if tile:  # checked here too, so that a bad size fails once, before any photo
            check_tile(tile, overlap)
        self.device = pick_device(device) if backend == "torch" else torch.device("cpu")
        if precision == "auto":
            # bf16 where the hardware has it: 1.7-1.9x faster on an AVX-512 bf16 CPU, with outputs
            # at least 54 dB from fp32 on the 91 LoL-v1 and real_pairs test photos
            # (benchmarks/bf16_fidelity.py).
            precision = "bf16" if backend == "torch" and supports_bf16(self.device) else "fp32"
        if model is None and backend != "onnxruntime":
            raise ValueError("an ONNX file runs only with backend='onnxruntime'")
        self.model = model.eval().to(self.device) if model is not None else None
        self.info = info or {}
        self.precision = precision
        self.tile = tile
        self.overlap = overlap
        self.backend = backend
        self.self_ensemble = self_ensemble
        self.compiled = bool(compile) and backend == "torch"
        # The tile size the last photo ran with (0 = whole), for benchmarks and reports.
        self.last_tile: int | None = None
        self._run: Callable[[torch.Tensor], torch.Tensor] = self.model
        self.package: Path | None = None
        if backend == "onnxruntime":
            from mirnet.export import OnnxModel, cached_onnx

            if precision != "fp32":
                raise OptionError("the onnxruntime backend runs in fp32 only")
            weights = self.info.get("weights")
            onnx_path = weights if weights and str(weights).endswith(".onnx") else cached_onnx(model, weights)
            self._run = OnnxModel(onnx_path)
        else:
            if channels_last:
                # 1.4x faster than NCHW on CPU for this network (oneDNN convolutions and
                # bilinear upsampling prefer it), same results to ~1e-6.
                self.model = self.model.to(memory_format=torch.channels_last)
            self.package = self._cached_package() if compile is not False else None
            if self.package is not None:
                # Compiled once on this machine (mirnet export --format aoti): loads in seconds.
                try:
                    self._run = AotiModel(self.package, self.model.multiple)
                except WeightsError as err:
                    if compile:
                        raise
                    # Unasked for: a broken package must not stop the default path.
                    warnings.warn(f"{err}; running the eager model", stacklevel=2)
                    self.package = None
            if self.package is None and compile:
                self._run = _compiled(self.model)
        use_channels_last = channels_last and backend == "torch"
        self.memory_format = torch.channels_last if use_channels_last else torch.contiguous_format

    def _cached_package(self) -> Path | None:
        """This model's AOTInductor package for this precision and machine, if one was built."""
        weights = self.info.get("weights")
        if not weights or not Path(weights).is_file():
            return None
        package = cached_aoti(self.model, weights, self.precision)
        return package if package.is_file() else None

    def _forward(
        self, batch: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        batch = batch.to(self.device).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = (run or self._run)(batch)
        return out.float().clamp(0.0, 1.0).contiguous()

    def tile_for(self, height: int, width: int, images: int = 1) -> int:
        """The tile size used for ``images`` photos of this size at once (0 = whole photos).

        Without a ``tile`` option, a photo is tiled only when its whole-photo estimate does not
        fit in the memory available now (:func:`mirnet.tiling.automatic_tile`); on the CPU the
        processes of a ``torchrun`` job on this machine each count on their share of it.
        """
        if self.tile is not None:
            return self.tile if self.tile and max(height, width) > self.tile else 0
        processes = os.environ.get("LOCAL_WORLD_SIZE", "1")  # torchrun's processes on this machine
        sharing = int(processes) if processes.isdigit() and self.device.type == "cpu" else 1
        available = available_memory(self.device, processes=sharing)
        return automatic_tile(self._features(), height, width, self.precision, available, images)

    def _features(self) -> int:
        """The model's first-layer channels, which its activations' memory scales with."""
        if self.model is not None:
            return self.model.conv_in.out_channels
        # A bare ONNX file: the paper's width, the largest configuration.
        return int(self.info.get("arch", {}).get("features", 64))

    @torch.inference_mode()
    def enhance_tensor(
        self,
        image: torch.Tensor,
        progress: Callable[[int, int], None] | None = None,
        self_ensemble: int | None = None,
    ) -> torch.Tensor:
        """Enhance a (3, H, W) or (N, 3, H, W) float tensor in [0, 1]; same shape back, on CPU.

        ``progress(done, total)`` is called after each tile, or after each copy of a
        self-ensemble of whole photos (its copies are counted in the total); ``self_ensemble``
        overrides this enhancer's number of copies.
        """
        single = image.dim() == 3
        batch = image.unsqueeze(0) if single else image
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (3, H, W) or (N, 3, H, W) tensor, got {tuple(image.shape)}")
        batch = batch.float()
        copies = self.self_ensemble if self_ensemble is None else self_ensemble
        if copies == 1:
            out = self._enhance_batch(batch, progress)
        else:
            done_copies, tiled = 0, 0

            def tile_progress(done: int, total: int) -> None:
                progress(done_copies * total + done, copies * total)

            def run_copy(flipped: torch.Tensor) -> torch.Tensor:
                nonlocal done_copies, tiled
                # Once a copy has needed tiles (estimated, or after running out of memory),
                # the others take them at once rather than fail whole again.
                result = self._enhance_batch(flipped, tile_progress if progress else None, tiled or None)
                tiled = tiled or self.last_tile
                done_copies += 1
                if progress is not None and not self.last_tile:
                    progress(done_copies, copies)
                return result

            out = average_over_flips(run_copy, batch, copies)
            self.last_tile = tiled
        return out[0] if single else out

    def _enhance_batch(
        self, batch: torch.Tensor, progress: Callable[[int, int], None] | None, tile: int | None = None
    ) -> torch.Tensor:
        """One pass over an (N, 3, H, W) batch: whole, or tiled (``tile``, or when it does not
        fit)."""
        if tile is None:
            tile = self.tile_for(*batch.shape[-2:], images=len(batch))
        if not tile:
            try:
                out = self._forward(batch).cpu()
                self.last_tile = 0
                return out
            except RuntimeError as err:  # torch.OutOfMemoryError is one
                # The estimate was wrong for this device, or memory went to something else:
                # tiles need a fraction of it. Only when mirnet chose; --tile 0 means whole.
                if self.tile is not None or not _out_of_memory(err):
                    raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # here, once the failed pass's tensors are released
            tile = DEFAULT_TILE
        out = torch.cat([self._enhance_tiled(b[None], tile, progress) for b in batch])
        self.last_tile = tile
        return out

    def _enhance_tiled(self, image: torch.Tensor, tile: int, progress) -> torch.Tensor:
        if self.model is None:
            # A bare ONNX file cannot be tapped: tiles use their own statistics (about 33 dB
            # from the whole-photo result instead of 47, benchmarks/tiling.py).
            return enhance_tiled(self._forward, image, tile, self.overlap, progress)
        # Compiled and exported graphs cannot be tapped either, so tiles run through the eager
        # model, which can: slower, but as faithful to the whole photo as the reference path.
        with GlobalContext(self.model) as context:
            return enhance_tiled(
                lambda crop: self._forward(crop, self.model), image, tile, self.overlap, progress, context
            )

    def enhance(self, image: ImageLike) -> ImageLike:
        """Enhance a PIL image, a NumPy array or a tensor, returning the same kind.

        * PIL: any mode in, RGB out.
        * NumPy: (H, W, 3) or (H, W) arrays of uint8, uint16 or floats in [0, 1]; returns
          (H, W, 3) of the same dtype.
        * torch: (3, H, W) or (N, 3, H, W) floats in [0, 1]; returns the same shape.
        """
        if isinstance(image, torch.Tensor):
            return self.enhance_tensor(image)
        if isinstance(image, Image.Image):
            out = self.enhance_tensor(array_to_tensor(np.asarray(image.convert("RGB"))))
            return Image.fromarray(tensor_to_array(out, np.uint8))
        if isinstance(image, np.ndarray):
            return tensor_to_array(self.enhance_tensor(array_to_tensor(image)), image.dtype)
        raise TypeError(f"enhance takes a PIL image, a NumPy array or a tensor, not {type(image).__name__}")

    __call__ = enhance

    def enhance_video(self, src: str | os.PathLike, dst: str | os.PathLike, **options: Any) -> VideoSummary:
        """Enhance a video file into ``dst`` (.mp4, .mov or .mkv), audio copied, without flicker.

        Needs the ``video`` extra (PyAV). ``options``: ``quality`` (H.264 CRF), ``smoothing``
        (seconds; 0 for frame by frame), ``scene_cut``, ``batch_frames``, ``progress``; see
        :func:`mirnet.video.enhance_video`, which returns a :class:`mirnet.video.VideoSummary`.
        """
        from mirnet.video import enhance_video

        return enhance_video(self, src, dst, **options)


def _compiled(model: MIRNet) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile with frozen weights: constants folded into the graph for inference."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model, dynamic=False)


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    backend: str = "torch",
    compile: bool | None = None,
    fast: bool = False,
    self_ensemble: int | None = None,
) -> Enhancer:
    """Load a bundled model by name (``None``: the default) or a weights file by path.

    ``precision="auto"`` (the default) runs in bf16 where the hardware has it natively, else
    fp32; ``"fp32"`` opts out. ``fast`` picks the fastest path measured on CPU
    (benchmarks/speed.py) for the torch backend: compiled, in bf16 where the hardware has it
    (output at least 40 dB from the fp32 reference, tested); the onnxruntime backend ignores
    it. With neither, the model runs as this machine's AOTInductor package if ``mirnet export
    --format aoti`` built one, else eagerly (``compile=None``; ``False`` for always eager).
    ``self_ensemble`` (copies averaged per photo) defaults to what the weights file asks for
    (8 for the bundled ``quality`` model), else 1. See :class:`Enhancer` for the other arguments.

    >>> enhancer = mirnet.load_model()
    >>> bright = enhancer.enhance(PIL.Image.open("dark.jpg"))
    """
    path = resolve_weights(name_or_path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise WeightsError(f"{path}: no such ONNX file")
        model, info, backend = None, {"name": path.stem, "arch": None}, "onnxruntime"
    else:
        model, info = load_weights(path)
    info["weights"] = str(path)
    if fast and backend == "torch":
        precision = "bf16" if supports_bf16(device) else "fp32"
        compile = True
    return Enhancer(
        model,
        info,
        device=device,
        precision=precision,
        tile=tile,
        overlap=overlap,
        backend=backend,
        compile=compile,
        self_ensemble=info.get("self_ensemble", 1) if self_ensemble is None else self_ensemble,
    )
