"""Enhancing photos with a trained model: ``mirnet.load_model(...).enhance(image)``.

Large photos are processed in overlapping tiles whose seams are blended with linear ramps,
so memory stays bounded whatever the photo size (see :func:`enhance_tiled`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from mirnet.archs import MIRNet
from mirnet.archs.mirnet_arch import GlobalAveragePool
from mirnet.io import to_uint
from mirnet.weights import WeightsError, load_weights

DEFAULT_MODEL = "tiny"
# Photos above this many pixels are tiled automatically (the default model's peak memory
# grows ~linearly with pixels; see benchmarks/speed.py).
AUTO_TILE_PIXELS = 4_000_000
# Measured on a 2-core AVX-512 CPU with the tiny model: 0.27 MP/s on 512x512, 0.16 on 768x768 and
# 0.11 on 1024x1024 (activations outgrow the caches), so small tiles win despite their overlap.
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray, torch.Tensor)


def bundled_models() -> dict[str, Path]:
    """Names and paths of the weights shipped inside the package."""
    folder = resources.files("mirnet") / "weights"
    if not folder.is_dir():
        return {}
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".safetensors")}


def resolve_weights(name_or_path: str | os.PathLike | None) -> Path:
    """The weights file for a bundled model name, or a path as given."""
    bundled = bundled_models()
    key = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if key in bundled:
        return bundled[key]
    path = Path(key)
    if path.suffix or path.exists():
        return path
    known = ", ".join(sorted(bundled)) or "none"
    raise WeightsError(f"no bundled model named {key!r} (bundled: {known}); or give a weights file path")


class OptionError(ValueError):
    """An option that cannot work as given (device, precision, backend, tile size); the
    command line reports it in one line, before any photo is read."""


def check_tile(tile: int, overlap: int) -> None:
    """Raise :class:`OptionError` unless tiles of ``tile`` pixels can overlap by ``overlap``."""
    if not tile > 2 * overlap:
        raise OptionError(
            f"tile size {tile}: use 0 (no tiling) or more than twice the {overlap}-pixel "
            f"overlap between tiles, i.e. at least {2 * overlap + 1}"
        )


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when present, else the CPU.

    Raises :class:`OptionError`, in one line a user can act on, for a name torch does not know or a
    CUDA device this machine does not have (checked before any model is moved there).
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise OptionError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {device!r}: CUDA is not available here; use cpu or auto")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise OptionError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return resolved


def _ramp(length: int, overlap: int) -> torch.Tensor:
    """Blending weights along one tile side: rising over ``overlap`` pixels at both ends."""
    weights = torch.ones(length)
    if overlap > 0:
        rise = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        n = min(overlap, length)
        weights[:n] = torch.minimum(weights[:n], rise[:n])
        weights[-n:] = torch.minimum(weights[-n:], rise[:n].flip(0))
    return weights


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


class GlobalContext:
    """Gives every tile of a photo the photo's global statistics.

    MIRNet's attention units pool each feature map over the whole image, so a tile processed
    alone sees its own statistics and comes out differently from the same region of the whole
    photo. A first pass over the tiles (``record``) accumulates the pixel-weighted mean of
    every pooling call; a second pass (``replay``) feeds those photo-wide means to every tile.
    Pooling calls are told apart by module and call order (a unit shared across columns pools
    twice per forward).
    """

    def __init__(self, model: MIRNet):
        self.pools = [m for m in model.modules() if isinstance(m, GlobalAveragePool)]
        self.sums: dict[tuple[int, int], torch.Tensor] = {}
        self.counts: dict[tuple[int, int], int] = {}
        self.calls: dict[int, int] = {}
        self.replaying = False

    def __enter__(self) -> GlobalContext:
        for pool in self.pools:
            pool.tap = self._tap
        return self

    def __exit__(self, *exc) -> None:
        for pool in self.pools:
            pool.tap = None

    def start_tile(self) -> None:
        self.calls = {}

    def replay(self) -> None:
        self.replaying = True

    def _tap(self, pool: GlobalAveragePool, x: torch.Tensor) -> torch.Tensor:
        call = self.calls.get(id(pool), 0)
        self.calls[id(pool)] = call + 1
        key = (id(pool), call)
        if self.replaying:
            return (self.sums[key] / self.counts[key]).to(x.dtype)
        self.sums[key] = self.sums.get(key, 0) + x.float().sum(dim=(2, 3), keepdim=True)
        self.counts[key] = self.counts.get(key, 0) + x.shape[2] * x.shape[3]
        return x.mean(dim=(2, 3), keepdim=True)


def enhance_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int, int], None] | None = None,
    context: GlobalContext | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile`` x ``tile`` crops of a (1, C, H, W) image and blend.

    Each output pixel is the weighted mean of the tiles covering it, with weights that fall
    linearly to the tile edges, so no seam shows. Memory is bounded by one tile's activations
    plus the output. With a :class:`GlobalContext` (active around ``fn``'s model), the tiles
    are first run once to gather the photo's global statistics, then again with them.
    ``progress(done, total)`` is called after each tile.
    """
    check_tile(tile, overlap)
    _, channels, height, width = image.shape
    out = torch.zeros((1, channels, height, width), dtype=torch.float32)
    weight_sum = torch.zeros((1, 1, height, width), dtype=torch.float32)
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    total, done = len(rows) * len(cols) * (2 if context else 1), 0
    if context is not None:
        for top in rows:
            for left in cols:
                context.start_tile()
                fn(image[..., top : top + tile, left : left + tile])
                done += 1
                if progress:
                    progress(done, total)
        context.replay()
    for top in rows:
        for left in cols:
            if context is not None:
                context.start_tile()
            crop = image[..., top : top + tile, left : left + tile]
            result = fn(crop).float().cpu()
            h, w = result.shape[-2:]
            weight = (
                _ramp(h, overlap if height > tile else 0)[:, None]
                * _ramp(w, overlap if width > tile else 0)[None, :]
            )
            out[..., top : top + h, left : left + w] += result * weight
            weight_sum[..., top : top + h, left : left + w] += weight
            done += 1
            if progress:
                progress(done, total)
    return out / weight_sum


class Enhancer:
    """A trained model ready to enhance photos.

    Args:
        model: the network.
        info: what was loaded (``name``, ``arch``, ``weights``).
        device: where to run (``"cpu"``, ``"cuda"``, ``None`` for the best available).
        precision: ``"fp32"`` (the reference) or ``"bf16"`` (autocast; faster on CPUs with
            AVX-512 bf16 and on GPUs).
        tile: tile size for large photos; ``None`` tiles automatically above
            :data:`AUTO_TILE_PIXELS`, ``0`` never tiles.
        overlap: overlap between tiles, in pixels.
        backend: ``"torch"``, or ``"onnxruntime"`` to run an ONNX export of the model
            (CPU, fp32; the export is cached, see :func:`mirnet.export.cached_onnx`).
        compile: ``torch.compile`` the model (with weight freezing): faster per photo, but the
            first photo of each new size pays a compilation of about a minute.
        channels_last: run the torch backend in channels-last memory layout (the default;
            about 1.4x faster on CPU). ``False`` is plain PyTorch, the benchmarks' baseline.

    Tiled photos run through the eager model whatever the backend, because only it can be
    given the photo-wide attention statistics (see :class:`GlobalContext`).
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
        compile: bool = False,
        channels_last: bool = True,
    ):
        if precision not in ("fp32", "bf16"):
            raise OptionError(f"precision must be fp32 or bf16, not {precision!r}")
        if backend not in ("torch", "onnxruntime"):
            raise OptionError(f"backend must be torch or onnxruntime, not {backend!r}")
        if tile:  # checked here too, so that a bad size fails once, before any photo
            check_tile(tile, overlap)
        self.device = pick_device(device) if backend == "torch" else torch.device("cpu")
        if model is None and backend != "onnxruntime":
            raise ValueError("an ONNX file runs only with backend='onnxruntime'")
        self.model = model.eval().to(self.device) if model is not None else None
        self.info = info or {}
        self.precision = precision
        self.tile = tile
        self.overlap = overlap
        self.backend = backend
        self._run: Callable[[torch.Tensor], torch.Tensor] = self.model
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
            self._run = _compiled(self.model) if compile else self.model
        use_channels_last = channels_last and backend == "torch"
        self.memory_format = torch.channels_last if use_channels_last else torch.contiguous_format

    def _forward(
        self, batch: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        batch = batch.to(self.device).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = (run or self._run)(batch)
        return out.float().clamp(0.0, 1.0).contiguous()

    def tile_for(self, height: int, width: int) -> int:
        """The tile size used for a photo of this size (0 = whole photo at once)."""
        if self.tile is not None:
            return self.tile if self.tile and max(height, width) > self.tile else 0
        return DEFAULT_TILE if height * width > AUTO_TILE_PIXELS else 0

    @torch.inference_mode()
    def enhance_tensor(
        self, image: torch.Tensor, progress: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """Enhance a (3, H, W) or (N, 3, H, W) float tensor in [0, 1]; same shape back, on CPU."""
        single = image.dim() == 3
        batch = image.unsqueeze(0) if single else image
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (3, H, W) or (N, 3, H, W) tensor, got {tuple(image.shape)}")
        batch = batch.float()
        tile = self.tile_for(*batch.shape[-2:])
        if tile:
            out = torch.cat([self._enhance_tiled(b[None], tile, progress) for b in batch])
        else:
            out = self._forward(batch).cpu()
        return out[0] if single else out

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
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            out = self.enhance_tensor(torch.from_numpy(rgb.transpose(2, 0, 1).copy()))
            return Image.fromarray(_to_dtype(out, np.uint8))
        if isinstance(image, np.ndarray):
            return _to_dtype(self.enhance_tensor(_array_to_tensor(image)), image.dtype)
        raise TypeError(f"enhance takes a PIL image, a NumPy array or a tensor, not {type(image).__name__}")

    __call__ = enhance


def supports_bf16(device: str | torch.device | None = None) -> bool:
    """Whether bf16 is fast on this device: a GPU with bf16, or a CPU with AVX-512 bf16/AMX."""
    device = pick_device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # Without native bf16 instructions, oneDNN emulates it and bf16 is slower than fp32.
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _compiled(model: MIRNet) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile with frozen weights: constants folded into the graph for inference."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model, dynamic=False)


def _array_to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) or (H, W) array, got shape {array.shape}")
    array = array[..., :3]
    if array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        data = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        data = array.astype(np.float32)
        if data.min() < 0 or data.max() > 1:
            raise ValueError("float arrays must hold values in [0, 1]")
    else:
        raise ValueError(f"unsupported array dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))


def _to_dtype(tensor: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    if dtype in (np.uint8, np.uint16):
        return to_uint(tensor, 8 if dtype == np.uint8 else 16)
    return np.ascontiguousarray(tensor.numpy().transpose(1, 2, 0).astype(dtype))


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    backend: str = "torch",
    compile: bool = False,
    fast: bool = False,
) -> Enhancer:
    """Load a bundled model by name (``None``: the default) or a weights file by path.

    ``fast`` picks the fastest path measured on CPU (benchmarks/speed.py) for the torch
    backend: compiled, in bf16 where the hardware has it (output at least 40 dB from the fp32
    reference, tested); the onnxruntime backend ignores it. See :class:`Enhancer` for the
    other arguments.

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
    )
