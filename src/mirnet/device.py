"""Where to run: the ``--device`` option's meaning, and whether bf16 is worth using there."""

from __future__ import annotations

import ctypes
import functools
import os
import sys

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


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc, whose malloc the two functions below tune; else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only; musl's mallopt does nothing
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """Have the C library keep the memory PyTorch frees for its next tensors, rather than
    give it back to the system (glibc only; the command line does this for every command).

    With glibc's defaults, a block above the mmap threshold (128 KiB, rising on its own up to
    32 MiB) gets fresh pages from the system and gives them back when freed, so each of the
    model's many full-resolution intermediate tensors pays for its pages to be zeroed and
    mapped again. On this project's 2-core CPU, keeping them made plain fp32 1.13x faster at
    600x400 and 2.69x faster at 1920x1080 (``benchmarks/speed.py``: its plain-fp32 row keeps
    the defaults, its kept-fp32 row does not). The same as starting the process with
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``. The price: the process holds on
    to its peak memory until it exits, or until :func:`return_freed_memory`. Set
    ``MIRNET_KEEP_FREED_MEMORY=0`` to keep the defaults.

    Returns whether the settings took effect (False off glibc, or when opted out).
    """
    libc = _glibc()
    if os.environ.get("MIRNET_KEEP_FREED_MEMORY", "1") == "0" or libc is None:
        return False
    # Never map big blocks separately, and never trim the heap: freed blocks stay for reuse.
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def return_freed_memory() -> None:
    """Hand the memory freed so far back to the system (glibc's ``malloc_trim``); a no-op
    where there is no glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
