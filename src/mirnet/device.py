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
    if hasattr(libc, "mallinfo2"):  # glibc 2.33+
        libc.mallinfo2.restype = _MallInfo2
    return libc


def keep_freed_memory() -> bool:
    """Have the C library keep the memory PyTorch frees for its next tensors, rather than
    give it back to the system (glibc only; the command line does this for every command).

    With glibc's defaults, a block above the mmap threshold (128 KiB, rising on its own up to
    32 MiB) gets fresh pages from the system and gives them back when freed, so each of the
    model's many full-resolution intermediate tensors pays for its pages to be zeroed and
    mapped again. On this project's 2-core CPU, keeping them made plain fp32 1.11-1.17x faster at
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


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc 2.33+)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def process_memory(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status, in bytes (``"VmHWM"``: peak
    resident, ``"RssAnon"``: resident anonymous); None where there is no such file (not Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError):
        pass
    return None


def _heap_free_bytes() -> int:
    """Bytes this process's heap holds freed and resident, ready for its next tensors (0
    without glibc 2.33+).

    :func:`keep_freed_memory` keeps a photo's peak after the photo is done; that memory is no
    longer the system's available memory, but it is this process's to reuse. glibc counts
    freed blocks whose pages went back to the system (:func:`return_freed_memory`) as free
    too, so the count is capped by the resident anonymous memory not in use by malloc.
    """
    libc = _glibc()
    mallinfo2 = getattr(libc, "mallinfo2", None) if libc is not None else None
    resident = process_memory("RssAnon")
    if mallinfo2 is None or resident is None:
        return 0
    info = mallinfo2()
    return int(max(0, min(info.fordblks, resident - info.uordblks - info.hblkhd)))


# Where the cgroup file systems are mounted, and this process's cgroups (both for tests).
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
# cgroup v2 and v1 memory files: the limit, the usage, the reclaimable file cache in memory.stat.
_CGROUP_FILES = {
    "v2": ("memory.max", "memory.current", "inactive_file"),
    "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def _cgroup_level_headroom(folder: str, version: str) -> int | None:
    """Bytes left under one cgroup's memory limit (its reclaimable file cache counted as
    free), None when it has no limit or no such files."""
    limit_name, usage_name, inactive_key = _CGROUP_FILES[version]
    try:
        with open(os.path.join(folder, limit_name)) as limit_file:
            limit = limit_file.read().strip()
        if limit == "max" or int(limit) >= 2**60:  # v1 writes "no limit" as a huge number
            return None
        with open(os.path.join(folder, usage_name)) as usage_file:
            usage = int(usage_file.read())
    except (OSError, ValueError):
        return None
    inactive = 0
    try:
        with open(os.path.join(folder, "memory.stat")) as stat:
            for line in stat:
                key, _, value = line.partition(" ")
                if key == inactive_key:
                    inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit) - usage + inactive)


def _cgroup_headroom() -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its parents
    (cgroup v2, or v1's memory controller), None when none is limited."""
    try:
        with open(PROC_CGROUP) as cgroups:
            lines = cgroups.read().splitlines()
    except OSError:
        return None
    headrooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "-", "")
        if controllers == "":
            version, base = "v2", CGROUP_ROOT
        elif "memory" in controllers.split(","):
            version, base = "v1", os.path.join(CGROUP_ROOT, "memory")
        else:
            continue
        # Every level from the process's own cgroup up to the mount's root (inside a container
        # the mount's root may be the process's cgroup itself).
        while True:
            headroom = _cgroup_level_headroom(os.path.join(base, path.lstrip("/")), version)
            if headroom is not None:
                headrooms.append(headroom)
            if path in ("", "/"):
                break
            path = os.path.dirname(path)
    return min(headrooms) if headrooms else None


def available_memory(device: str | torch.device | None = None, processes: int = 1) -> int | None:
    """Bytes a new computation on ``device`` can use now, or None where this cannot be told.

    CUDA: the GPU's free memory plus what PyTorch's allocator holds unused. CPU: the system's
    available memory (``MemAvailable`` on Linux, else the free pages), capped by the memory
    limits of this process's cgroups, shared among ``processes`` (those of a ``torchrun`` job
    on this machine), plus what this process's heap holds freed (:func:`keep_freed_memory`).
    """
    device = pick_device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    system = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    system = int(line.split()[1]) * 1024  # kB
                    break
    except (OSError, ValueError):
        pass
    if system is None:
        try:
            system = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    headroom = _cgroup_headroom()
    if headroom is not None:
        system = min(system, headroom)
    return system // max(1, processes) + _heap_free_bytes()
