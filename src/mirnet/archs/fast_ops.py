"""When MIRNet's layers take their faster CPU inference forms, and one of those forms.

Eager PyTorch runs every operation as its own pass over memory. On CPU, with the
convolutions already near the machine's matrix-multiply rate, the passes in between took
about 45% of ``tiny``'s time on a 600x400 photo in bf16. Some of them have faster forms in the
channels-last layout the CPU path uses, computing the same function:

* :func:`upsample2x`: bilinear 2x up-sampling (``align_corners=False``) as weighted sums of
  neighbours (weights 1/4 and 3/4), written straight into the strided phases of a
  channels-last output; PyTorch's general kernel was 1.5-2.4x slower there.
* :func:`spatial_mean`: global average pooling in bf16 as a matrix product with a vector of
  ones (oneDNN accumulates it in fp32); PyTorch's bf16 reduction over height and width was
  2.4x slower at full resolution.
* ``DualAttentionUnit`` fuses its two branches without concatenating them
  (:mod:`mirnet.archs.mirnet_arch`).

They apply only without autograd (``torch.no_grad`` or ``inference_mode``: the lerps write
into views), in channels-last layout, and not while ``torch.compile``, ``torch.export`` or
ONNX export trace the model (those fuse on their own); everywhere else the layers compute
the plain formulas, so training and exports are unchanged. :func:`plain_ops` switches the
faster forms off, for tests and benchmarks that compare both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_enabled = True


@contextlib.contextmanager
def plain_ops() -> Iterator[None]:
    """Within this block, the layers compute their plain formulas."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def _tracing() -> bool:
    return (
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    )


def applies(x: torch.Tensor) -> bool:
    """Whether the faster forms run for ``x`` (see the module docstring)."""
    # Tracing first: a compiler sees a constant False and folds the rest away.
    return (
        not _tracing()
        and _enabled
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x up-sampling with ``align_corners=False`` (edges replicated)."""
    if not applies(x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    n, c, h, w = x.shape
    # Rows first: output row 2i mixes rows i-1 and i (1/4, 3/4), row 2i+1 rows i and i+1;
    # at the edges the missing neighbour is the row itself.
    above, below = torch.empty_like(x), torch.empty_like(x)
    torch.lerp(x[:, :, 1:], x[:, :, :-1], 0.25, out=above[:, :, 1:])
    above[:, :, :1] = x[:, :, :1]
    torch.lerp(x[:, :, :-1], x[:, :, 1:], 0.25, out=below[:, :, :-1])
    below[:, :, -1:] = x[:, :, -1:]
    # Then columns, written into the output's four phases: in channels-last memory an
    # (N, C, 2H, 2W) tensor is (N, C, H, 2, W, 2) with the phases as plain strides.
    shape, layout = (n, c, 2 * h, 2 * w), torch.channels_last
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
    phases = out.view(n, c, h, 2, w, 2)
    for row, rows in enumerate((above, below)):
        torch.lerp(rows[..., 1:], rows[..., :-1], 0.25, out=phases[:, :, :, row, 1:, 0])
        phases[:, :, :, row, :1, 0] = rows[..., :1]
        torch.lerp(rows[..., :-1], rows[..., 1:], 0.25, out=phases[:, :, :, row, :-1, 1])
        phases[:, :, :, row, -1:, 1] = rows[..., -1:]
    return out


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """``x.mean(dim=(2, 3), keepdim=True)``; in bf16, a matrix product with a vector of ones.

    Both accumulate in fp32. The product rounds the sum to bf16 before dividing, where
    ``mean`` rounds only the quotient: at most one bf16 step apart (tested).
    """
    if not (applies(x) and x.dtype == torch.bfloat16):
        return x.mean(dim=(2, 3), keepdim=True)
    n, c, h, w = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view, in channels-last memory
    with torch.autocast("cpu", enabled=False):  # stay in bf16 whatever the caller's autocast
        total = torch.bmm(x.new_ones(n, 1, h * w), pixels)
    return total.div_(h * w).view(n, c, 1, 1)
