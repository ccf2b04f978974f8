"""Enhancing large photos in overlapping tiles, with bounded memory.

Tiles are blended with linear ramps, so no seam shows (:func:`enhance_tiled`), and every tile
can be given the photo-wide attention statistics that it would see in the whole photo
(:class:`GlobalContext`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mirnet.archs.mirnet_arch import GlobalAveragePool
from mirnet.device import OptionError

# Where the available memory cannot be told, photos above this many pixels are tiled.
AUTO_TILE_PIXELS = 4_000_000
# A whole-photo forward pass's peak memory, in bytes per pixel per feature channel of the
# model's first layer, and per pixel for the photo itself (decoded, as float input and output).
# Above every peak measured by benchmarks/memory.py (tiny, small and paper, fp32 and bf16, 0.25
# and 1 MP: 1.07-1.43x the measured peak), so that a photo enhanced whole fits; checked by
# tests/test_inference.py on a 0.75 MP photo.
BYTES_PER_PIXEL_AND_FEATURE = {"fp32": 80, "bf16": 48}
PHOTO_BYTES_PER_PIXEL = 64
# The share of the available memory a whole photo's estimate may take before the photo is tiled
# instead; with the estimate's own margin (above), a whole photo uses at most about 70% of it.
MEMORY_SHARE = 0.75
# Tiles are for photos that do not fit whole; 512-pixel tiles keep the peak low (827 MiB for a
# 12 MP photo with tiny in bf16, against 7211 whole: benchmarks/speed.py --large 12).
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64


def whole_photo_bytes(features: int, height: int, width: int, precision: str, images: int = 1) -> int:
    """An upper estimate of the memory that enhancing ``images`` photos of ``height`` x ``width``
    at once takes, for a model whose first layer has ``features`` channels (fp32 or bf16)."""
    per_pixel = features * BYTES_PER_PIXEL_AND_FEATURE.get(precision, BYTES_PER_PIXEL_AND_FEATURE["fp32"])
    return images * height * width * (per_pixel + PHOTO_BYTES_PER_PIXEL)


def automatic_tile(
    features: int, height: int, width: int, precision: str, available: int | None, images: int = 1
) -> int:
    """The tile size for a photo when none is asked for: 0 (the whole photo at once) when the
    estimate of :func:`whole_photo_bytes` fits in :data:`MEMORY_SHARE` of the ``available``
    bytes, else :data:`DEFAULT_TILE`. Where ``available`` is unknown (None), photos above
    :data:`AUTO_TILE_PIXELS` are tiled.

    A whole photo is both faster and exact: tiles are run twice (see :class:`GlobalContext`)
    and overlap. A 12 MP photo with tiny in bf16 on the 2-core CPU took 24 s whole (7.0 GiB)
    against 59 s in 512-pixel tiles (``benchmarks/speed.py --large 12``).
    """
    if available is None:
        return DEFAULT_TILE if height * width > AUTO_TILE_PIXELS else 0
    fits = whole_photo_bytes(features, height, width, precision, images) <= MEMORY_SHARE * available
    return 0 if fits else DEFAULT_TILE


def check_tile(tile: int, overlap: int) -> None:
    """Raise :class:`OptionError` unless tiles of ``tile`` pixels can overlap by ``overlap``."""
    if not tile > 2 * overlap:
        raise OptionError(
            f"tile size {tile}: use 0 (no tiling) or more than twice the {overlap}-pixel "
            f"overlap between tiles, i.e. at least {2 * overlap + 1}"
        )


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


class PoolingHooks:
    """A forward hook on each of a model's :class:`GlobalAveragePool` modules, present only
    inside the ``with`` block: the network itself knows nothing of tiles or frames.
    Subclasses say what the hook does with a pooled mean (``_hook``)."""

    def __init__(self, model: nn.Module):
        self.pools = [m for m in model.modules() if isinstance(m, GlobalAveragePool)]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> PoolingHooks:
        self._handles = [pool.register_forward_hook(self._hook) for pool in self.pools]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, pool: nn.Module, inputs: tuple[torch.Tensor, ...], pooled: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GlobalContext(PoolingHooks):
    """Gives every tile of a photo the photo's global statistics.

    MIRNet's attention units pool each feature map over the whole image, so a tile processed
    alone sees its own statistics and comes out differently from the same region of the whole
    photo. A first pass over the tiles (``record``) accumulates the pixel-weighted mean of
    every pooling call; a second pass (``replay``) feeds those photo-wide means to every tile.
    Pooling calls are told apart by module and call order (a unit shared across columns pools
    twice per forward).

    Works through forward hooks (:class:`PoolingHooks`).
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.sums: dict[tuple[int, int], torch.Tensor] = {}
        self.counts: dict[tuple[int, int], int] = {}
        self.calls: dict[int, int] = {}
        self.replaying = False

    def start_tile(self) -> None:
        self.calls = {}

    def replay(self) -> None:
        self.replaying = True

    def _hook(self, pool: nn.Module, inputs: tuple[torch.Tensor, ...], pooled: torch.Tensor) -> torch.Tensor:
        """Record the tile's sums, or replace the tile's own mean by the photo's."""
        (x,) = inputs
        call = self.calls.get(id(pool), 0)
        self.calls[id(pool)] = call + 1
        key = (id(pool), call)
        if self.replaying:
            return (self.sums[key] / self.counts[key]).to(x.dtype)
        self.sums[key] = self.sums.get(key, 0) + x.float().sum(dim=(2, 3), keepdim=True)
        self.counts[key] = self.counts.get(key, 0) + x.shape[2] * x.shape[3]
        return pooled


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
