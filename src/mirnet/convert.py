"""``mirnet convert``: the authors' MIRNet checkpoints as this package's weights files.

The authors publish trained MIRNet weights (github.com/swz30/MIRNet, README, "pretrained
models": ``model_lol.pth`` for LoL, ``model_fivek.pth`` for MIT-Adobe FiveK) as PyTorch
``.pth`` files. :func:`convert_checkpoint` reads one with ``torch.load(weights_only=True)``
(tensors and plain containers only: nothing is unpickled into code), maps its keys onto the
``official`` configuration (:mod:`mirnet.archs.official`), and writes a ``.safetensors``
file that carries its configuration, like every weights file here, and its model card (the
source file's SHA-256 and the weights' licence) in its metadata and beside it (``OUT.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

import mirnet
from mirnet.archs import MIRNet, count_parameters
from mirnet.archs.official import OfficialCheckpointError, convert_official, is_official_checkpoint
from mirnet.io import atomic_path, file_sha256
from mirnet.weights import WeightsError, load_state_into, read_checkpoint, save_weights

# Recorded in every converted model card. The authors' LICENSE.md (an "academic public
# license") allows non-commercial use only: their weights never ship inside this package.
LICENCE_NOTE = (
    "The authors' MIRNet weights (Zamir et al., ECCV 2020; github.com/swz30/MIRNet) are for "
    "non-commercial research and teaching use only, under the licence in that repository "
    "(LICENSE.md), crediting the authors. The mirnet package never ships them; this converted "
    "copy is under the same terms."
)


def convert_checkpoint(source: str | os.PathLike, output: str | os.PathLike) -> tuple[Path, Path]:
    """Convert an official MIRNet checkpoint into a weights file and its model card.

    Args:
        source: the authors' ``.pth`` (its state dict may be nested under ``state_dict`` and
            its keys carry DataParallel's ``module.`` prefix).
        output: the ``.safetensors`` file to write (atomically); the card goes beside it,
            with the suffix ``.json``.

    Returns:
        (weights file, model card).

    Raises:
        WeightsError: one line naming the file, for an unsafe or unreadable file, one not in
            the official layout, or the first tensor that does not fit the official network.
    """
    source, output = Path(source), Path(output)
    if output.suffix.lower() != ".safetensors":
        raise WeightsError(f"{output}: the converted weights are written as .safetensors; name it so")
    checkpoint = read_checkpoint(source)
    if not is_official_checkpoint(checkpoint):
        raise WeightsError(
            f"{source}: not a checkpoint of the official MIRNet code (github.com/swz30/MIRNet): "
            "it has no conv_in.weight and selective_kernel tensors"
        )
    try:
        arch, state = convert_official(checkpoint)
    except OfficialCheckpointError as err:
        raise WeightsError(f"{source}: does not fit the official MIRNet network ({err})") from None
    model = load_state_into(MIRNet(**arch), state, str(source))
    epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
    card = {
        "name": "official",
        "arch": arch,
        "parameters": count_parameters(model),
        "source": {
            "file": source.name,
            "sha256": file_sha256(source),
            "format": "state dict of MIRNet in networks/MIRNet_model.py, github.com/swz30/MIRNet",
            **({"epoch": epoch} if isinstance(epoch, int) else {}),
        },
        "license": LICENCE_NOTE,
        "converted_with": f"mirnet {mirnet.__version__} (mirnet convert), torch {torch.__version__}",
    }
    weights = save_weights(output, model, "official", arch, card)
    card_path = output.with_suffix(".json")
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    return weights, card_path
