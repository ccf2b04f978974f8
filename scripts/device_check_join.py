"""Join the bf16 weight pieces that scripts/device_check.sh brought back into one fp32 file.

    python scripts/device_check_join.py OUT/paper     # reads OUT/paper.bf16-K.safetensors

writes OUT/paper.safetensors with piece 0's metadata (the architecture ``mirnet`` reads), so
that ``mirnet enhance --weights`` and ``mirnet evaluate --weights`` take it. Only safetensors
are read: nothing is unpickled.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file


def join(prefix: str) -> Path:
    """Join ``PREFIX.bf16-K.safetensors`` (K = 0, 1, ...) into ``PREFIX.safetensors`` in fp32."""
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
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(f"wrote {join(sys.argv[1])}")
