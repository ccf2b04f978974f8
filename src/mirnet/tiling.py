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

# Photos above this many pixels are tiled automatically (the default model's peak memory
# grows ~linearly with pixels; see benchmarks/speed.py).
AUTO_TILE_PIXELS = 4_000_000
# Measured on a 2-core AVX-512 CPU with the tiny model: 0.27 MP/s on 512x512, 0.16 on 768x768 and
# 0.11 on 1024x1024 (activations outgrow the caches), so small tiles win despite their overlap.
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64


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
