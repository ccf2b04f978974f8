"""The authors' MIRNet checkpoints (github.com/swz30/MIRNet) in this package's layout.

Their ``.pth`` files hold the state dict of the official ``MIRNet`` (networks/MIRNet_model.py)
under ``state_dict``, often with the ``module.`` prefix of DataParallel, plus the epoch and
the optimiser's state. Written from the official code's module names, not copied from it.
The ``official`` configuration (:mod:`mirnet.archs.configs`) is the same network, so the
conversion is a renaming (:func:`checkpoint_filter_fn`, in the spirit of timm's), with three
kinds of entries that have no tensor of their own here:

* **shared modules, stored once per use**: each stream's attention unit appears once per
  column (``[DAU(...)] * width``), and the one PReLU of all attention units (a default
  argument, ``act=nn.PReLU()``) once per unit. Their copies must be equal; one is kept.
* **blur-pool filters** (``top.4.filt``, ``bot.0.filt`` of every down-sampler, buffers of
  utils/antialias.py's ``Downsample``): fixed [1, 2, 1] binomial filters here, so they are
  checked to be exactly that and dropped.
* **nothing for the final fusion**: the official blocks reuse ``selective_kernel.0``.

Official names, per multi-scale block (``body.G.body.B.``; the group's closing conv is
``body.G.body.NUM_BLOCKS``), against ours (``groups.G.body.B.``):

    blocks.S.C.{body.0,body.2,SA.spatial.conv,CA.conv_du.0,CA.conv_du.2,conv1x1}
        -> attention.0.S.{body.0,body.2,spatial_attention.conv,channel_attention.gate.1,
           channel_attention.gate.3,fuse}      (every column C; body.1 -> attention_prelu)
    selective_kernel.S.{conv_du.0,conv_du.1,fcs.K}  -> exchange.S.{squeeze.1,squeeze.2,excitations.K}
    down.{CHANNELS}_{FACTOR}.body.I / up.{CHANNELS}_{FACTOR}.body.I
        -> resample.SRC.DST.I  (SRC: the stream with CHANNELS; DST = SRC +- log2 FACTOR)
    last_up.S.body.I -> final_upsample.S.I
    resampler parts: top.0-3 -> body.0-3; top.5 (down) / top.4 (up) -> body_project;
                     bot.1 -> shortcut_project
    conv_out -> conv_out

Every tensor of the checkpoint must be used and every tensor of the model provided, with
the right shape; the first key that does not fit is named in a one-line
:class:`OfficialCheckpointError`.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from mirnet.archs.mirnet_arch import MIRNet

# What sets the official network apart from ours, as MIRNet arguments.
OFFICIAL_FLAGS: dict[str, Any] = dict(
    upsample="transposed", share_final_fusion=True, share_attention_prelu=True
)

# The attention units' parts, official name -> ours. body.1 is the shared PReLU.
_UNIT_PARTS = {
    "body.0": "body.0",
    "body.2": "body.2",
    "SA.spatial.conv": "spatial_attention.conv",
    "CA.conv_du.0": "channel_attention.gate.1",
    "CA.conv_du.2": "channel_attention.gate.3",
    "conv1x1": "fuse",
}
_DOWN_PARTS = {
    "top.0": "body.0",
    "top.1": "body.1",
    "top.2": "body.2",
    "top.3": "body.3",
    "top.5": "body_project",
    "bot.1": "shortcut_project",
}
_UP_PARTS = {
    "top.0": "body.0",
    "top.1": "body.1",
    "top.2": "body.2",
    "top.3": "body.3",
    "top.4": "body_project",
    "bot.1": "shortcut_project",
}
_BLUR_FILTERS = ("top.4.filt", "bot.0.filt")  # the down-samplers' fixed anti-aliasing filters


class OfficialCheckpointError(ValueError):
    """An official-layout checkpoint that does not fit the official network; one line."""


def unwrap_state_dict(checkpoint: Any) -> dict[str, Any]:
    """The state dict inside a checkpoint: under ``state_dict`` if nested there (as the
    official training script saves it, beside ``epoch`` and ``optimizer``), without the
    ``module.`` prefix that DataParallel adds to every key."""
    while isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        return {}
    return {
        (key[len("module.") :] if isinstance(key, str) and key.startswith("module.") else key): value
        for key, value in checkpoint.items()
    }


def is_official_checkpoint(checkpoint: Any) -> bool:
    """Whether a loaded ``.pth`` is in the official code's layout (rather than ours)."""
    state = unwrap_state_dict(checkpoint)
    return "conv_in.weight" in state and any(
        isinstance(key, str) and ".selective_kernel." in key for key in state
    )


def _count(state: dict[str, Any], pattern: str) -> int:
    """How many consecutive indices 0, 1, ... fill ``{}`` in keys matching ``pattern``."""
    regex = re.compile(pattern.format(r"(\d+)"))
    found = {int(m.group(1)) for key in state if isinstance(key, str) and (m := regex.match(key))}
    count = 0
    while count in found:
        count += 1
    return count


def official_arch(checkpoint: Any) -> dict[str, Any]:
    """The MIRNet arguments of the official network a checkpoint was saved from.

    Read from its keys and shapes: ``n_feat`` from ``conv_in``, ``n_RRG``, ``n_MSRB``,
    ``height`` and ``width`` from the indices present. The official code fixes the rest:
    channels double per stream (its resamplers hard-code ``* 2`` and ``// 2``), reduction 8.
    """
    state = unwrap_state_dict(checkpoint)
    biased = next((k for k in state if isinstance(k, str) and k.endswith(".bias")), None)
    if biased is not None:
        # The official MIRNet(bias=True) puts biases on a few layers only (conv_in, conv_out,
        # each block's conv_out), which no configuration here reproduces; the published
        # checkpoints have none.
        raise OfficialCheckpointError(
            f"{biased}: a checkpoint of the official MIRNet with bias=True, which has no "
            "equivalent here (the published checkpoints have no biases)"
        )
    conv_in, conv_out = state.get("conv_in.weight"), state.get("conv_out.weight")
    for key, tensor in (("conv_in.weight", conv_in), ("conv_out.weight", conv_out)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
            raise OfficialCheckpointError(f"missing key {key}, or not a 4-d tensor")
    features, in_channels = conv_in.shape[:2]
    if conv_out.shape[0] != in_channels:
        raise OfficialCheckpointError(
            f"conv_out.weight: {conv_out.shape[0]} output channels for {in_channels} input "
            "channels; only networks that return an image like their input are supported"
        )
    block = r"body\.0\.body\.0\."
    arch = dict(
        in_channels=int(in_channels),
        features=int(features),
        chan_factor=2,
        num_groups=_count(state, r"body\.{}\.body\.0\."),
        num_blocks=_count(state, r"body\.0\.body\.{}\.blocks\."),  # not the closing conv
        height=_count(state, block + r"selective_kernel\.{}\."),
        width=_count(state, block + r"blocks\.0\.{}\."),
        **OFFICIAL_FLAGS,
    )
    for name in ("num_groups", "num_blocks", "height", "width"):
        if arch[name] == 0:
            raise OfficialCheckpointError(f"no multi-scale block found ({name} reads as 0)")
    if arch["in_channels"] == 3:
        del arch["in_channels"]  # the default: keep the stored configuration like ours
    return arch


def _key_map(model: MIRNet) -> list[tuple[str, str | None]]:
    """(official key, our key) for every tensor of the official network ``model`` mirrors,
    in the official state dict's order; ``None`` for the blur-pool filters (no tensor here)."""
    groups = model.groups
    num_blocks = len(groups[0].body) - 1
    first = groups[0].body[0]
    height, width = first.height, first.width
    features = model.conv_in.out_channels
    channels = [features * 2**s for s in range(height)]
    pairs: list[tuple[str, str | None]] = [("conv_in.weight", "conv_in.weight")]

    def resampler(official: str, ours: str, steps: int, up: bool) -> None:
        for step in range(steps):
            for part, mine in (_UP_PARTS if up else _DOWN_PARTS).items():
                pairs.append((f"{official}.body.{step}.{part}.weight", f"{ours}.{step}.{mine}.weight"))
            if not up:
                pairs.extend((f"{official}.body.{step}.{f}", None) for f in _BLUR_FILTERS)

    for g in range(len(groups)):
        for b in range(num_blocks):
            off, ours = f"body.{g}.body.{b}", f"groups.{g}.body.{b}"
            for s in range(height):
                for c in range(width):  # one unit per stream, stored once per column
                    unit, mine = f"{off}.blocks.{s}.{c}", f"{ours}.attention.0.{s}"
                    for part, our_part in _UNIT_PARTS.items():
                        pairs.append((f"{unit}.{part}.weight", f"{mine}.{our_part}.weight"))
                    pairs.append((f"{unit}.body.1.weight", "attention_prelu.weight"))
            for s in range(1, height):
                resampler(f"{off}.last_up.{s}", f"{ours}.final_upsample.{s}", s, up=True)
            # down.{C}_{F}: stream src (C channels) down by F = 2**steps; then up likewise.
            for src in range(height):
                for dst in range(height - 1, src, -1):
                    resampler(
                        f"{off}.down.{channels[src]}_{2 ** (dst - src)}",
                        f"{ours}.resample.{src}.{dst}",
                        dst - src,
                        False,
                    )
            for src in range(height - 1, 0, -1):
                for dst in range(src):
                    resampler(
                        f"{off}.up.{channels[src]}_{2 ** (src - dst)}",
                        f"{ours}.resample.{src}.{dst}",
                        src - dst,
                        True,
                    )
            pairs.append((f"{off}.conv_out.weight", f"{ours}.conv_out.weight"))
            for s in range(height):
                fusion, mine = f"{off}.selective_kernel.{s}", f"{ours}.exchange.{s}"
                pairs.append((f"{fusion}.conv_du.0.weight", f"{mine}.squeeze.1.weight"))
                pairs.append((f"{fusion}.conv_du.1.weight", f"{mine}.squeeze.2.weight"))
                pairs.extend(
                    (f"{fusion}.fcs.{k}.weight", f"{mine}.excitations.{k}.weight") for k in range(height)
                )
        pairs.append((f"body.{g}.body.{num_blocks}.weight", f"groups.{g}.body.{num_blocks}.weight"))
    pairs.append(("conv_out.weight", "conv_out.weight"))
    return pairs


def _binomial_filter(channels: int) -> torch.Tensor:
    taps = torch.tensor([1.0, 2.0, 1.0])
    return (taps[:, None] * taps[None, :] / 16).expand(channels, 1, 3, 3)


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def checkpoint_filter_fn(checkpoint: Any, model: MIRNet) -> dict[str, torch.Tensor]:
    """An official checkpoint's tensors renamed into ``model``'s state dict (timm's
    ``checkpoint_filter_fn`` convention): ``model`` must be an official network (built with
    :data:`OFFICIAL_FLAGS`, e.g. from :func:`official_arch`; on the meta device is enough).

    Checks, naming the first offending key: every tensor the official layout needs is
    present, with the shape the model needs; copies of a shared module are equal; the
    blur-pool filters are the [1, 2, 1] binomial ones; and nothing is left over.

    Raises:
        OfficialCheckpointError: one line, naming the first key that does not fit.
    """
    state = unwrap_state_dict(checkpoint)
    expected = model.state_dict()
    pairs = _key_map(model)
    unmapped = expected.keys() - {ours for _, ours in pairs}
    if unmapped:  # a model that is not the official network (or a bug in the map)
        raise OfficialCheckpointError(
            f"the model is not an official network: nothing maps to its {sorted(unmapped)[0]}"
        )
    converted: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}  # our key -> the official key it came from
    for official, ours in pairs:
        tensor = state.get(official)
        if not isinstance(tensor, torch.Tensor):
            what = "missing key" if tensor is None else "not a tensor:"
            raise OfficialCheckpointError(
                f"{what} {official} (the official layout of this configuration has it)"
            )
        if ours is None:
            filt = _binomial_filter(tensor.shape[0] if tensor.dim() else 0)
            if _shape(tensor) != _shape(filt) or not torch.allclose(tensor.float(), filt, atol=1e-7):
                raise OfficialCheckpointError(
                    f"{official}: not the [1, 2, 1] binomial blur-pool filter of shape {_shape(filt)} "
                    "that this network uses (a checkpoint of another filter size?)"
                )
            continue
        if _shape(tensor) != _shape(expected[ours]):
            raise OfficialCheckpointError(
                f"{official}: shape {_shape(tensor)}, where the official network of this "
                f"configuration has {_shape(expected[ours])}"
            )
        if ours in converted:
            if not torch.equal(tensor, converted[ours]):
                raise OfficialCheckpointError(
                    f"{official}: differs from {source[ours]}, which the official network shares it with"
                )
            continue
        converted[ours] = tensor
        source[ours] = official
    used = {official for official, _ in pairs}
    left = next((key for key in state if key not in used), None)
    if left is not None:
        raise OfficialCheckpointError(f"unexpected key {left} (not part of the official network)")
    return {key: converted[key] for key in expected}


def convert_official(checkpoint: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(MIRNet arguments, state dict in our layout) of an official checkpoint, checked.

    >>> arch, state = convert_official(torch.load("model_lol.pth", weights_only=True))
    >>> MIRNet(**arch).load_state_dict(state)
    """
    arch = official_arch(checkpoint)
    with torch.device("meta"):  # keys and shapes only
        model = MIRNet(**arch)
    return arch, checkpoint_filter_fn(checkpoint, model)
