"""Where to run: the ``--device`` option's meaning, and whether bf16 is worth using there."""

from __future__ import annotations

import torch


class OptionError(ValueError):
    """An option that cannot work as given (device, precision, backend, tile size); the
    command line reports it in one line, before any photo is read."""


def pick_device(device: str | torch.device | None = None, local_rank: int | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when present (GPU ``local_rank`` when given: this process's
    under ``torchrun``), else the CPU.

    Raises :class:`OptionError`, in one line a user can act on, for a name torch does not know or a
    CUDA device this machine does not have (checked before any model is moved there).
    """
    if device in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
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


def supports_bf16(device: str | torch.device | None = None) -> bool:
    """Whether bf16 is fast on this device: a GPU with bf16, or a CPU with AVX-512 bf16/AMX."""
    device = pick_device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # Without native bf16 instructions, oneDNN emulates it and bf16 is slower than fp32.
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
