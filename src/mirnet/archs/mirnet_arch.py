"""The MIRNet architecture (Zamir et al., "Learning Enriched Features for Real Image
Restoration and Enhancement", ECCV 2020), written from the paper.

Structure, outermost first::

    MIRNet
      3x3 conv -> N x RecursiveResidualGroup -> 3x3 conv, + input image (global residual)
    RecursiveResidualGroup
      M x MultiScaleResidualBlock -> 3x3 conv, + group input
    MultiScaleResidualBlock
      `height` parallel streams at full, 1/2, 1/4 ... resolution with `chan_factor`-times
      more channels per halving; `width` columns of DualAttentionUnits, with a
      SelectiveKernelFeatureFusion exchange between every two columns; a final fusion
      into the full-resolution stream, a 3x3 conv and a residual connection.

Padding: every convolution zero-pads ("same" size); blur-pool down-sampling reflect-pads
by one pixel; and MIRNet.forward replicate-pads the input on the bottom and right to a
multiple of the coarsest stream's stride (4 with three streams), cropping the output back,
so any image size works (the official code requires multiples of 4).

Where this network departs from the official implementation (github.com/swz30/MIRNet), the
paper configuration (``paper`` in :mod:`mirnet.archs.configs`) has 31,799,730 parameters
against the official network's 31,787,419:

* **Up-sampling as the paper draws it.** ResidualUpsample up-samples its body branch with a
  3x3 convolution followed by bilinear interpolation (the paper's Fig. 4b); the official
  code uses a stride-2 transposed 3x3 convolution there. The two have the same number of
  weights (C x C x 3 x 3), so this changes the function, not the parameter count.
* **The final fusion has its own SelectiveKernelFeatureFusion**, where the official code
  reuses the full-resolution exchange's one: 2,049 parameters per block in the paper
  configuration (64 -> 8 squeeze 512, its PReLU 1, three 8 -> 64 excitations 1,536), 12,294
  over its 6 blocks.
* **One PReLU per activation site**: the official code's DualAttentionUnits all share one
  ``nn.PReLU()`` object (a default argument, evaluated once). Sharing a learnable slope
  between unrelated layers is an accident of the code, not a design in the paper; here each
  of the paper configuration's 18 units (6 blocks x 3 streams) has its own: 17 more.

12,294 + 17 = 12,311, the whole difference. Paper configuration, per component (verified by
instantiating the official ``MIRNet()`` at commit 6934e83; pinned in tests/test_archs.py):

    conv_in + conv_out (3x3, 3 <-> 64)                          3,456
    3 groups x 10,598,758                                  31,796,274
      each: 2 blocks x 5,280,947, + 3x3 conv 36,864
      block: DualAttentionUnits 64/128/256 ch       1,741,977  (82,995 + 331,827 + 1,327,155)
             exchange resamplers (6 chains)         2,375,696  (down 57,346 + 286,724 + 229,378,
                                                                up 180,226 + 720,898 + 901,124)
             exchange fusions 64/128/256 ch            43,011  (2,049 + 8,193 + 32,769)
             final up-samplers (128, 256 ch)        1,081,350  (180,226 + 901,124)
             final fusion                               2,049  (official: none, reuses 2,049 above)
             3x3 conv                                  36,864
    total                                          31,799,730  (official 31,787,419 = total
                                                                - 6 x 2,049 - 18 + 1 PReLU)

Where the official code departs from a literal reading of the paper, we follow the code:
**attention weights are shared across columns** (it builds each row with
``[DAU(...)] * width``), so every stream owns one DualAttentionUnit, applied in each of the
`width` columns. It is what the published network is, and what its published size (31.79M)
counts; with separate units per column the paper configuration would have 42,251,592
parameters. ``share_attention_across_columns=False`` gives every column its own units.

**The official network.** Three flags undo the three departures listed first:
``upsample="transposed"``, ``share_final_fusion=True`` and ``share_attention_prelu=True``.
With them the ``official`` configuration is the official network, 31,787,419 parameters,
computing the same function as its code: tested against outputs of the official module
(tests/test_official.py), which is how the authors' checkpoints run here
(:mod:`mirnet.archs.official` maps their keys). Everything else already agrees with that
code: blur-pool down-sampling ([1, 2, 1] binomial, reflect padding, as its
utils/antialias.py with filt_size=3), bilinear shortcuts with align_corners=False, fusion
and attention bottlenecks (max(C // 8, 4) and C // 8), the spatial attention's 5x5 conv of
channel max and mean, and no biases. Only the input size is freer: the official code needs
sides that are multiples of 4, where this one pads (a no-op on such sizes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirnet.archs import fast_ops


def _conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class GlobalAveragePool(nn.Module):
    """Global average pooling to (N, C, 1, 1).

    The only operation in MIRNet that sees the whole image at once; a module of its own so
    that tiled inference can find it and hook it (:class:`mirnet.tiling.GlobalContext`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_ops.spatial_mean(x)  # x.mean(dim=(2, 3), keepdim=True)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: global average pooling, a bottleneck, a sigmoid."""

    def __init__(self, channels: int, reduction: int = 8, bias: bool = False):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            GlobalAveragePool(),
            nn.Conv2d(channels, hidden, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _channel_max(x: torch.Tensor) -> torch.Tensor:
    """``x.amax(dim=1, keepdim=True)``, as element-wise maxima of channel halves while the
    channel count halves evenly (all of MIRNet's do): the same values, 1.7-3x faster in
    channels-last bf16 on CPU, where reducing along the innermost axis is slow.

    Only without gradients: where channels tie for the maximum (common in bf16), ``amax``
    shares the gradient equally among them and a tree of ``maximum`` does not, so training
    keeps ``amax`` and stays as it was.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return x.amax(dim=1, keepdim=True)
    while x.shape[1] > 1 and x.shape[1] % 2 == 0:
        half = x.shape[1] // 2
        x = torch.maximum(x[:, :half], x[:, half:])
    return x if x.shape[1] == 1 else x.amax(dim=1, keepdim=True)


class SpatialAttention(nn.Module):
    """Gate from the channel-wise max and mean, through a 5x5 conv and a sigmoid.

    Three steps are written for speed in the channels-last layout the CPU path uses, where
    channels are the innermost axis and PyTorch's bf16 kernels for reducing or broadcasting
    along it are slow (benchmarks/eager_blocks.py): the channel mean is a 1x1 convolution with
    weights 1/C, the channel max a tree of element-wise maxima of channel halves, and the
    one-channel gate is expanded to all channels before the product. All compute the same
    values.
    """

    def __init__(self, channels: int, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.register_buffer("averaging", torch.full((1, channels, 1, 1), 1.0 / channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.conv2d(x, self.averaging.to(x.dtype))
        pooled = torch.cat([_channel_max(x), mean], dim=1)
        gate = torch.sigmoid(self.conv(pooled))
        if _is_channels_last(x):
            gate = gate.expand_as(x).contiguous(memory_format=torch.channels_last)
        return x * gate


class Borrowed(nn.Module):
    """Calls a module that another module owns, without registering it here.

    Its parameters are then saved, counted and moved once, under their owner, however many
    modules use it: how the ``official`` configuration shares one PReLU slope between all
    dual attention units without repeating it in every unit's weights.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self._owned_elsewhere = [module]  # in a list, so that nn.Module does not adopt it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._owned_elsewhere[0](x)

    def extra_repr(self) -> str:
        return f"{self._owned_elsewhere[0]!r}, owned elsewhere"


class DualAttentionUnit(nn.Module):
    """conv-PReLU-conv features gated by channel and spatial attention in parallel,
    fused by a 1x1 conv, plus a residual connection (paper Fig. 2).

    ``act``: a PReLU owned elsewhere, shared with other units (see :class:`MIRNet`'s
    ``share_attention_prelu``); by default the unit has a PReLU of its own.
    """

    def __init__(self, channels: int, reduction: int = 8, bias: bool = False, act: nn.Module | None = None):
        super().__init__()
        activation = nn.PReLU() if act is None else Borrowed(act)
        self.body = nn.Sequential(
            _conv(channels, channels, 3, bias), activation, _conv(channels, channels, 3, bias)
        )
        self.spatial_attention = SpatialAttention(channels)
        self.channel_attention = ChannelAttention(channels, reduction, bias)
        self.fuse = nn.Conv2d(2 * channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        if not fast_ops.applies(features) or self._fuse_replaced_or_hooked():
            attended = torch.cat([self.spatial_attention(features), self.channel_attention(features)], dim=1)
            return x + self.fuse(attended)
        # For CPU inference, the same function without the concatenation (slow along
        # channels-last's innermost axis): the 1x1 fusion's weight in halves, one per branch.
        # The channel gate, one number per channel, scales its half's weights rather than the
        # features when the batch is one photo.
        channels = features.shape[1]
        spatial_weight, channel_weight = self.fuse.weight.split(channels, dim=1)
        gate = self.channel_attention.gate(features)
        if features.shape[0] == 1:
            out = F.conv2d(features, channel_weight * gate.view(1, channels, 1, 1), self.fuse.bias)
        else:
            out = F.conv2d(features * gate, channel_weight, self.fuse.bias)
        out = x + out
        out += F.conv2d(self.spatial_attention(features), spatial_weight)
        return out

    def _fuse_replaced_or_hooked(self) -> bool:
        # The faster form calls neither `fuse` nor `channel_attention` as modules: keep the
        # plain one where a user swapped either (quantised, pruned) or hooks either of them.
        # (Hooks registered for every module, torch.nn.modules.module.register_module_*_hook,
        # do not see those two calls; values are the same.)
        replaced = type(self.fuse) is not nn.Conv2d or type(self.channel_attention) is not ChannelAttention
        return replaced or any(
            module._forward_hooks or module._forward_pre_hooks
            for module in (self.fuse, self.channel_attention)
        )


class SelectiveKernelFeatureFusion(nn.Module):
    """Fuses equally shaped streams: their sum is pooled and squeezed into one descriptor,
    one excitation per stream, a softmax across streams, and a weighted sum (paper Fig. 3)."""

    def __init__(self, channels: int, num_streams: int, reduction: int = 8, bias: bool = False):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.squeeze = nn.Sequential(
            GlobalAveragePool(), nn.Conv2d(channels, hidden, 1, bias=bias), nn.PReLU()
        )
        self.excitations = nn.ModuleList(
            nn.Conv2d(hidden, channels, 1, bias=bias) for _ in range(num_streams)
        )

    def forward(self, streams: list[torch.Tensor]) -> torch.Tensor:
        # Plain additions rather than stack-and-sum: no (N, S, C, H, W) copy, and a reduction
        # over a new axis is slow on CPU in channels-last layout.
        descriptor = self.squeeze(sum(streams[1:], streams[0]))
        logits = torch.stack([excite(descriptor) for excite in self.excitations], dim=1)
        weights = torch.softmax(logits, dim=1)  # (N, S, C, 1, 1)
        fused = streams[0] * weights[:, 0]
        for index in range(1, len(streams)):
            fused = fused + streams[index] * weights[:, index]
        return fused


class BlurPool(nn.Module):
    """Anti-aliased down-sampling by 2 (Zhang, ICML 2019): a fixed [1, 2, 1] binomial blur
    applied per channel to the input reflect-padded by one pixel, then stride 2. Avoids the
    aliasing of plain strided sampling.

    Computed without the padded copy of the input where the sides are even, as they always
    are inside MIRNet (it pads images to a multiple of 4): at stride 2 the bottom and right
    padding is never read, and the reflected top row and left column only change the first
    output row and column. So the blur runs with zero padding and those two lines are then
    recomputed from the first two input rows and columns. Same values as the padded version
    (tested); the reflect pad was a fifth of ``tiny``'s time in channels-last bf16 on CPU
    (benchmarks/eager_blocks.py times both versions).
    """

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4
        self.register_buffer("taps", taps.expand(channels, 1, 1, 3).clone(), persistent=False)
        self.register_buffer("kernel", taps[:, None] * taps[None, :], persistent=False)
        self.channels = channels

    def _blur(self, x: torch.Tensor, padding: int = 0) -> torch.Tensor:
        kernel = self.kernel.to(x.dtype).expand(self.channels, 1, 3, 3)
        return F.conv2d(x, kernel, stride=2, padding=padding, groups=self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 2 or width % 2:
            return self._blur(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        out = self._blur(x, padding=1)
        taps = self.taps.to(x.dtype)
        # First output row: rows (1, 0, 1) blurred vertically is the mean of rows 0 and 1,
        # then blurred horizontally with reflection; the first column likewise, transposed.
        top = F.pad((x[..., 0:1, :] + x[..., 1:2, :]) * 0.5, (1, 1, 0, 0), mode="reflect")
        top = F.conv2d(top, taps, stride=(1, 2), groups=self.channels)
        left = F.pad((x[..., :, 0:1] + x[..., :, 1:2]) * 0.5, (0, 0, 1, 1), mode="reflect")
        left = F.conv2d(left, taps.transpose(2, 3), stride=(2, 1), groups=self.channels)
        out[..., 0:1, :] = top.to(out.dtype)
        out[..., :, 0:1] = left.to(out.dtype)
        return out


class _Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_ops.upsample2x(x)  # F.interpolate, bilinear, align_corners=False


# Before their parts were named, both resamplers held two Sequentials: ``main`` (1x1 conv,
# PReLU, 3x3 conv, PReLU, resampling, 1x1 conv) and ``shortcut`` (resampling, 1x1 conv), so
# weights saved then have keys like ``main.5.weight``. Old name -> new name, below a resampler.
_OLD_RESAMPLER_KEYS = {
    "main.0.": "body.0.",
    "main.1.": "body.1.",
    "main.2.": "body.2.",
    "main.3.": "body.3.",
    "main.5.": "body_project.",
    "shortcut.1.": "shortcut_project.",
}


class _ResidualResample(nn.Module):
    """What the two resamplers share: reading weights saved in the older layout.

    Every ``load_state_dict`` (weights files, training checkpoints, tests) goes through
    ``_load_from_state_dict``, which renames the old keys under this module's prefix first;
    weights in the current layout pass unchanged.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            for old, new in _OLD_RESAMPLER_KEYS.items():
                renamed = prefix + new + rest[len(old) :]
                if rest.startswith(old) and renamed not in state_dict:
                    state_dict[renamed] = state_dict.pop(key)
                    break
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ResidualDownsample(_ResidualResample):
    """Halves the resolution and multiplies the channels by `factor` (paper Fig. 4a): a body
    (1x1 conv, PReLU, 3x3 conv, PReLU) then blur-pool and a 1x1 projection, plus a shortcut
    of blur-pool and a 1x1 projection."""

    def __init__(self, channels: int, factor: int = 2, bias: bool = False):
        super().__init__()
        out_channels = channels * factor
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=bias),
            nn.PReLU(),
            _conv(channels, channels, 3, bias),
            nn.PReLU(),
        )
        self.downsample = BlurPool(channels)  # parameter-free, used by both branches
        self.body_project = nn.Conv2d(channels, out_channels, 1, bias=bias)
        self.shortcut_project = nn.Conv2d(channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body_project(self.downsample(self.body(x))) + self.shortcut_project(self.downsample(x))


UPSAMPLE_MODES = ("bilinear", "transposed")


class ResidualUpsample(_ResidualResample):
    """Doubles the resolution and divides the channels by `factor` (paper Fig. 4b): a body
    (1x1 conv, PReLU, 3x3 conv, PReLU) then bilinear up-sampling and a 1x1 projection, plus
    a shortcut of bilinear up-sampling and a 1x1 projection.

    ``mode="bilinear"`` (the default) is the paper's figure. Both branches then end in
    bilinear interpolation and a 1x1 conv. These are linear maps acting on space and on
    channels respectively, so they commute, and the sum of the two branches is interpolated
    once, after the 1x1 convs: the same function as the paper's (up to float rounding), with
    one interpolation of `channels // factor` channels instead of two of `channels`.
    Upsampling was the second-largest cost on CPU after convolutions.

    ``mode="transposed"`` is the official code's: the body up-samples itself, with a
    stride-2 transposed 3x3 convolution (padding 1, output padding 1: exactly 2H x 2W) in
    place of the 3x3 conv, and only the shortcut is interpolated (after its 1x1 conv, the
    same function by the argument above).
    """

    def __init__(self, channels: int, factor: int = 2, bias: bool = False, mode: str = "bilinear"):
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, not {mode!r}")
        out_channels = channels // factor
        self.transposed = mode == "transposed"
        # Layers are created in the order they run: the order decides the weights a seed gives.
        pointwise = nn.Conv2d(channels, channels, 1, bias=bias)
        if self.transposed:
            spatial: nn.Module = nn.ConvTranspose2d(
                channels, channels, 3, stride=2, padding=1, output_padding=1, bias=bias
            )
        else:
            spatial = _conv(channels, channels, 3, bias)
        self.body = nn.Sequential(pointwise, nn.PReLU(), spatial, nn.PReLU())
        self.body_project = nn.Conv2d(channels, out_channels, 1, bias=bias)
        self.shortcut_project = nn.Conv2d(channels, out_channels, 1, bias=bias)
        self.upsample = _Upsample2x()  # bilinear: once, to the sum of the branches (see above)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:  # the body is already at the output's resolution
            return self.body_project(self.body(x)) + self.upsample(self.shortcut_project(x))
        return self.upsample(self.body_project(self.body(x)) + self.shortcut_project(x))


def _resampler(
    channels: int, steps: int, factor: int, up: bool, bias: bool, upsample: str = "bilinear"
) -> nn.Module:
    """A chain of `steps` residual 2x resamplings starting at `channels` channels."""
    layers: list[nn.Module] = []
    for _ in range(steps):
        if up:
            layers.append(ResidualUpsample(channels, factor, bias, upsample))
            channels //= factor
        else:
            layers.append(ResidualDownsample(channels, factor, bias))
            channels *= factor
    return nn.Sequential(*layers)


class MultiScaleResidualBlock(nn.Module):
    """Parallel multi-resolution streams that exchange information (paper Fig. 1).

    Stream ``s`` runs at 1/2**s of the input resolution with ``channels * chan_factor**s``
    channels. The first column builds each stream by down-sampling the previous stream's
    output; between columns every stream receives all others, resampled to its scale and
    fused by selective kernel feature fusion.

    ``upsample``, ``share_final_fusion`` and ``attention_act`` select the official code's
    choices (see :class:`MIRNet`); their defaults keep this network's.
    """

    def __init__(
        self,
        channels: int,
        height: int = 3,
        width: int = 2,
        chan_factor: int = 2,
        reduction: int = 8,
        bias: bool = False,
        share_attention_across_columns: bool = True,
        upsample: str = "bilinear",
        share_final_fusion: bool = False,
        attention_act: nn.Module | None = None,
    ):
        super().__init__()
        self.height, self.width = height, width
        stream_channels = [channels * chan_factor**s for s in range(height)]

        columns = 1 if share_attention_across_columns else width
        self.attention = nn.ModuleList(
            nn.ModuleList(DualAttentionUnit(c, reduction, bias, attention_act) for c in stream_channels)
            for _ in range(columns)
        )
        # resample[src][dst] brings stream src to the scale and channels of stream dst.
        self.resample = nn.ModuleList(
            nn.ModuleList(
                nn.Identity()
                if src == dst
                else _resampler(stream_channels[src], abs(dst - src), chan_factor, dst < src, bias, upsample)
                for dst in range(height)
            )
            for src in range(height)
        )
        self.exchange = nn.ModuleList(
            SelectiveKernelFeatureFusion(c, height, reduction, bias) for c in stream_channels
        )
        # The final fusion brings every stream back to full resolution with up-samplers of
        # its own, separate from the exchange's (as in the published network).
        self.final_upsample = nn.ModuleList(
            nn.Identity() if s == 0 else _resampler(stream_channels[s], s, chan_factor, True, bias, upsample)
            for s in range(height)
        )
        # The official code fuses with the full-resolution exchange's fusion (no module here).
        self.share_final_fusion = share_final_fusion
        if not share_final_fusion:
            self.final_fusion = SelectiveKernelFeatureFusion(channels, height, reduction, bias)
        self.conv_out = _conv(channels, channels, 3, bias)

    def _column(self, index: int) -> nn.ModuleList:
        return self.attention[min(index, len(self.attention) - 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self._column(0)
        streams: list[torch.Tensor] = []
        inp = x
        for s in range(self.height):
            if s > 0:
                inp = self.resample[s - 1][s](inp)
            inp = first[s](inp)
            streams.append(inp)

        for column in range(1, self.width):
            exchanged = [
                self.exchange[dst]([self.resample[src][dst](streams[src]) for src in range(self.height)])
                for dst in range(self.height)
            ]
            units = self._column(column)
            streams = [units[s](exchanged[s]) for s in range(self.height)]

        fusion = self.exchange[0] if self.share_final_fusion else self.final_fusion
        fused = fusion([self.final_upsample[s](streams[s]) for s in range(self.height)])
        return x + self.conv_out(fused)


class RecursiveResidualGroup(nn.Module):
    """Several multi-scale residual blocks and a 3x3 conv, with a residual connection."""

    def __init__(self, channels: int, num_blocks: int, bias: bool = False, **block_kwargs):
        super().__init__()
        self.body = nn.Sequential(
            *(MultiScaleResidualBlock(channels, bias=bias, **block_kwargs) for _ in range(num_blocks)),
            _conv(channels, channels, 3, bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MIRNet(nn.Module):
    """MIRNet for image enhancement: maps an (N, 3, H, W) image in [0, 1] to its enhanced
    version of the same shape. Any H and W work: the input is replicate-padded (bottom and
    right) to a multiple of the coarsest stream's stride and the output cropped back.

    Args:
        in_channels: image channels (3 for RGB).
        features: channels of the full-resolution stream (64 in the paper).
        chan_factor: channel growth per halving of resolution (2 in the paper).
        num_groups: recursive residual groups (3 in the paper).
        num_blocks: multi-scale residual blocks per group (2 in the paper).
        height: parallel resolution streams per block (3 in the paper).
        width: dual-attention columns per block (2 in the paper).
        reduction: channel reduction in the attention and fusion bottlenecks (8).
        bias: whether convolutions have biases (the paper's network has none).
        share_attention_across_columns: see the module docstring.
        upsample: ``"bilinear"`` (a 3x3 conv and bilinear interpolation, the paper's
            figure) or ``"transposed"`` (a stride-2 transposed 3x3 conv, the official code).
        share_final_fusion: fuse each block's streams at the end with the full-resolution
            exchange's fusion, as the official code does, instead of a fusion of its own.
        share_attention_prelu: one PReLU slope for every dual attention unit of the
            network, as the official code has (``act=nn.PReLU()``, a default argument
            evaluated once), instead of one per unit. Saved once, as ``attention_prelu``.

    The three official choices together give the official network exactly: the
    ``official`` configuration (:mod:`mirnet.archs.configs`), which loads the authors'
    checkpoints (:mod:`mirnet.archs.official`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        features: int = 64,
        chan_factor: int = 2,
        num_groups: int = 3,
        num_blocks: int = 2,
        height: int = 3,
        width: int = 2,
        reduction: int = 8,
        bias: bool = False,
        share_attention_across_columns: bool = True,
        upsample: str = "bilinear",
        share_final_fusion: bool = False,
        share_attention_prelu: bool = False,
    ):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:  # checked here too, so that a bad value fails at once
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, not {upsample!r}")
        self.multiple = 2 ** (height - 1)
        # Registered here, once; every unit borrows it (parameter-free to create: the seeded
        # weights of the other layers do not move).
        self.attention_prelu = nn.PReLU() if share_attention_prelu else None
        self.conv_in = _conv(in_channels, features, 3, bias)
        self.groups = nn.Sequential(
            *(
                RecursiveResidualGroup(
                    features,
                    num_blocks,
                    bias=bias,
                    height=height,
                    width=width,
                    chan_factor=chan_factor,
                    reduction=reduction,
                    share_attention_across_columns=share_attention_across_columns,
                    upsample=upsample,
                    share_final_fusion=share_final_fusion,
                    attention_act=self.attention_prelu,
                )
                for _ in range(num_groups)
            )
        )
        self.conv_out = _conv(features, in_channels, 3, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(0)
        h, w = x.shape[-2:]
        # Pad to a multiple of the coarsest stride (a zero pad is a no-op). Replicate padding
        # works for any size, even 1x1, and the padded border is cropped off the output.
        padded = F.pad(x, (0, (-w) % self.multiple, 0, (-h) % self.multiple), mode="replicate")
        out = self.conv_out(self.groups(self.conv_in(padded))) + padded
        out = out[..., :h, :w]
        return out.squeeze(0) if squeeze else out


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters (shared modules counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
