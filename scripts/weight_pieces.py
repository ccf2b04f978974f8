"""Weights in bf16 pieces under 16 MiB, the most a device call returns per file, and back.

    python scripts/weight_pieces.py split RUN/model.safetensors OUT/paper   # OUT/paper.bf16-K.safetensors
    python scripts/weight_pieces.py join OUT/paper                          # OUT/paper.safetensors (fp32)

``split`` writes the tensors in bf16, in order, into pieces under 16 MiB (``paper``: 4 pieces,
61 MiB), piece 0 with the file's metadata (the architecture ``mirnet`` reads); ``join`` puts
them back into one fp32 file that ``mirnet enhance --weights`` and ``mirnet evaluate
--weights`` take. Only safetensors are read: nothing is unpickled.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

PIECE_BYTES = int(15.75 * 2**20)  # and a header: under 16 MiB


def split(weights: str, prefix: str) -> list[Path]:
    """Write ``weights`` as ``PREFIX.bf16-K.safetensors`` (K = 0, 1, ...), each under 16 MiB."""
    pieces: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    with safe_open(weights, "pt") as handle:
        metadata = handle.metadata()
        for key in handle.keys():
            tensor = handle.get_tensor(key)
            tensor = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
            if pieces[-1] and size + tensor.nbytes > PIECE_BYTES:
                pieces.append({})
                size = 0
            pieces[-1][key] = tensor
            size += tensor.nbytes
    paths = [Path(f"{prefix}.bf16-{index}.safetensors") for index in range(len(pieces))]
    for index, (piece, path) in enumerate(zip(pieces, paths, strict=True)):
        save_file(piece, path, metadata=metadata if index == 0 else None)
    return paths


def join(prefix: str) -> Path:
    """Join ``PREFIX.bf16-K.safetensors`` into ``PREFIX.safetensors`` in fp32."""
    pattern = re.compile(re.escape(Path(prefix).name) + r"\.bf16-(\d+)\.safetensors")
    pieces = sorted(
        (int(m.group(1)), path)
        for path in Path(prefix).parent.iterdir()
        if (m := pattern.fullmatch(path.name))
    )
    if not pieces or [k for k, _ in pieces] != list(range(len(pieces))):
        raise SystemExit(
            f"error: {prefix}.bf16-K.safetensors: pieces missing (found {[k for k, _ in pieces]})"
        )
    tensors, metadata = {}, None
    for index, path in pieces:
        with safe_open(path, "pt") as handle:
            metadata = handle.metadata() if index == 0 else metadata
            tensors.update({key: handle.get_tensor(key).float() for key in handle.keys()})
    out = Path(f"{prefix}.safetensors")
    save_file(tensors, out, metadata=metadata)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "split":
        print(f"wrote {len(split(sys.argv[2], sys.argv[3]))} pieces")
    elif len(sys.argv) == 3 and sys.argv[1] == "join":
        print(f"wrote {join(sys.argv[2])}")
    else:
        raise SystemExit(__doc__)
