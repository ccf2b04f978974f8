"""Named MIRNet configurations, all in one place.

``paper`` is the network of the ECCV 2020 paper: 31,799,730 parameters, 12,311 more than the
official code's 31,787,419 (the paper reports 31.79M; the difference is explained in
:mod:`mirnet.archs.mirnet_arch`). ``official`` is the official code's network exactly
(github.com/swz30/MIRNet, networks/MIRNet_model.py), 31,787,419 parameters: what the
authors' checkpoints load into (:mod:`mirnet.archs.official`). The smaller ones are sized
for CPUs: ``tiny`` is the shipped default, fast enough for interactive use on a laptop;
``medium`` is tiny made twice as deep, grown from a trained tiny (not shipped yet: so far it
only matches tiny on validation); ``small`` is a wider middle ground for users with a few
minutes to spare per folder.
"""

from __future__ import annotations

from typing import Any

from mirnet.archs.mirnet_arch import MIRNet

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": dict(features=64, chan_factor=2, num_groups=3, num_blocks=2, height=3, width=2),
    # The paper's sizes with the official code's up-sampling, final fusion and shared PReLU.
    "official": dict(
        features=64,
        chan_factor=2,
        num_groups=3,
        num_blocks=2,
        height=3,
        width=2,
        upsample="transposed",
        share_final_fusion=True,
        share_attention_prelu=True,
    ),
    "small": dict(features=32, chan_factor=2, num_groups=2, num_blocks=2, height=3, width=2),
    # tiny's width, twice its depth: a quality model grown from a trained tiny (a new group that
    # starts as the identity, see mirnet.training.loop.load_init_weights), which a CPU can train
    # in hours where small from scratch would take days (configs/general_medium*.yaml).
    "medium": dict(features=16, chan_factor=2, num_groups=2, num_blocks=2, height=3, width=2),
    "tiny": dict(features=16, chan_factor=2, num_groups=1, num_blocks=2, height=3, width=2),
    # For tests and smoke runs: 84k parameters, every kind of layer present.
    "nano": dict(features=8, chan_factor=2, num_groups=1, num_blocks=1, height=3, width=2),
}


def list_models() -> list[str]:
    """Names of the built-in configurations."""
    return list(MODEL_CONFIGS)


def build_model(name: str, **overrides: Any) -> MIRNet:
    """Build an untrained MIRNet from a named configuration.

    Args:
        name: one of :func:`list_models`.
        **overrides: any :class:`MIRNet` argument, replacing the configuration's value.
    """
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model configuration {name!r}; choose from {', '.join(MODEL_CONFIGS)}")
    return MIRNet(**{**MODEL_CONFIGS[name], **overrides})
