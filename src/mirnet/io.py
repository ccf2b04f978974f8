"""Reading and writing images.

Every image comes in as a float32 RGB tensor (3, H, W) in [0, 1], whatever its file kind
(PNG, JPEG, TIFF, WebP, BMP), bit depth (8 or 16), or mode (grayscale, RGBA, palette,
CMYK), and upright according to its EXIF orientation. Outputs are written atomically: to a
temporary file in the target folder, renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import png
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")

# Pillow's decompression-bomb guard stays on: a file claiming more than twice
# Image.MAX_IMAGE_PIXELS (179 megapixels) is refused before any pixel is decoded.

# Read once at import (single-threaded then): os.umask can only be read by setting it, which
# would briefly change it for every thread of the process.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Readers see the old file or the complete new one, never a half-written one, even if the
    process is killed mid-write. On error the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_TEMP_TAG}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file owner-only (0600), and so do some writers (safetensors
        # re-creates it): give the result the permissions an ordinary open() would (0666 less
        # the umask), so that outputs and weights stay readable by others.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Temporary files of atomic_path are named ".NAME.mirnet-HOST-PID-RANDOM.tmp": the host and
# process tell whether their writer still runs (a SIGKILL leaves the file behind).
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
_TEMP_TAG = f"mirnet-{_HOST}-{os.getpid()}"
_TEMP_NAME = re.compile(r"^\..+\.mirnet-(?P<host>[A-Za-z0-9]+)-(?P<pid>[0-9]+)-[A-Za-z0-9_]+\.tmp$")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks (a paper-sized weights file is 130 MB or more)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when its process was
    killed mid-write: only files of its naming pattern, written on this host by a process
    that no longer runs. Everyone else's files, and live writers', are left alone.

    Returns:
        The paths removed.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["host"] != _HOST or _running(int(match["pid"])):
            continue
        if entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


class ImageReadError(ValueError):
    """An input file that cannot be read as an image. The message names the file."""


def is_image_path(path: Path) -> bool:
    """Whether a path has one of the image suffixes we read."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an (H, W, 3) float32 array in [0, 1]."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: keep the full precision.
        data = np.asarray(image).astype(np.float32)
        scale = 65535.0 if mode.startswith("I;16") or data.max(initial=0) > 255 else 255.0
        gray = np.clip(data / scale, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Composite transparent pixels over black: the "nothing there" of a dark photo.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _is_16bit_colour_png(path: Path) -> bool:
    """Whether a file is a PNG with 16-bit colour samples (IHDR bit depth 16, colour type 2
    or 6). Pillow decodes those to 8 bits, so we read them with pypng instead."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    return header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16 and header[25] in (2, 6)


def _read_16bit_colour_png(path: Path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    data = data.reshape(height, width, info["planes"])
    rgb = data[..., :3].astype(np.float32) / 65535.0
    if info["alpha"]:
        rgb *= data[..., 3:4].astype(np.float32) / 65535.0  # over black, as for 8-bit RGBA
    return rgb


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> torch.Tensor:
    """Read an image file as a float32 RGB tensor (3, H, W) in [0, 1].

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this (``None``: only Pillow's
            decompression-bomb limit). Checked from the header, before any pixel is decoded,
            so an oversized photo gives an error instead of exhausting memory.

    Raises:
        ImageReadError: the path is missing, not a file, unreadable, not an image, truncated,
            or larger than ``max_pixels`` or Pillow's decompression-bomb limit. The message
            names the file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    if not path.is_file():
        # A FIFO or device would block or never end; only regular files are images.
        raise ImageReadError(f"{path}: not a regular file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(
                    f"{path}: too large, {width}x{height} is {width * height / 1e6:.1f} megapixels, "
                    f"over the limit of {max_pixels / 1e6:g}"
                )
            image = ImageOps.exif_transpose(image)
            image.load()
            array = _to_rgb_array(image)
        if _is_16bit_colour_png(path):
            # PNG has no EXIF orientation in practice; Pillow already validated the file.
            array = _read_16bit_colour_png(path)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: refused, too many pixels ({err})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, png.Error) as err:
        raise ImageReadError(f"{path}: corrupt or truncated image ({_one_line(err)})") from None
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode this image") from None
    except Exception as err:
        # Pillow's decoders meet malformed files with a zoo of exceptions (struct.error,
        # IndexError, TypeError, ZeroDivisionError, ...); to a caller they all mean "bad file".
        raise ImageReadError(f"{path}: corrupt image ({type(err).__name__}: {_one_line(err)})") from None
    return array_to_tensor(array)


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (errors are reported one per line)."""
    return " ".join(str(err).split()) or type(err).__name__


def to_uint(tensor: torch.Tensor, bits: int = 8) -> np.ndarray:
    """(3, H, W) float tensor in [0, 1] to an (H, W, 3) uint8 or uint16 array, rounded."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    top = 255 if bits == 8 else 65535
    array = tensor.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return np.round(array * top).astype(np.uint8 if bits == 8 else np.uint16)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """An (H, W, 3), (H, W, 4) or (H, W) array of uint8, uint16 or floats in [0, 1] to a
    (3, H, W) float32 tensor in [0, 1]: integers scaled by their maximum, gray repeated into
    three channels, a fourth (alpha) channel dropped."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) or (H, W) array, got shape {array.shape}")
    array = array[..., :3]
    if array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        data = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        data = array.astype(np.float32, copy=False)
        if data.size and (data.min() < 0 or data.max() > 1):
            raise ValueError("float arrays must hold values in [0, 1]")
    else:
        raise ValueError(f"unsupported array dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))


def tensor_to_array(tensor: torch.Tensor, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A (3, H, W) float tensor in [0, 1] to an (H, W, 3) array of ``dtype``: uint8 and uint16
    scaled and rounded (see :func:`to_uint`), floats as they are."""
    if dtype in (np.uint8, np.uint16):
        return to_uint(tensor, 8 if dtype == np.uint8 else 16)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"unsupported array dtype {np.dtype(dtype)}")
    return np.ascontiguousarray(tensor.detach().cpu().numpy().transpose(1, 2, 0).astype(dtype))


def write_image(path: str | os.PathLike, tensor: torch.Tensor, bits: int = 8) -> Path:
    """Write a (3, H, W) tensor in [0, 1] as an image, atomically.

    The format follows the suffix (PNG by default use); ``bits=16`` writes a 16-bit PNG.
    The file appears complete or not at all: it is written to a temporary file in the same
    folder and renamed into place.
    """
    path = Path(path)
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(tensor.shape)}")
    array = to_uint(tensor, bits)
    suffix = path.suffix.lower() or ".png"
    if bits == 16 and suffix != ".png":
        raise ValueError("16-bit output is written as PNG; use a .png path")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if bits == 16:
            _write_png16(handle, array)
        else:
            fmt = Image.registered_extensions().get(suffix, "PNG")
            Image.fromarray(array).save(handle, format=fmt)
    return path


def _write_png16(handle, array: np.ndarray) -> None:
    """Pillow cannot write 16-bit RGB PNG; pypng can."""
    height, width, _ = array.shape
    png.Writer(width, height, greyscale=False, bitdepth=16).write(handle, array.reshape(height, -1))
