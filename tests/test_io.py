import os
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image

from mirnet.io import ImageReadError, read_image, write_image
from tests.conftest import smooth_image

RGB = smooth_image(0, 24, 32)


def _check(tensor, height=24, width=32):
    assert tensor.dtype == torch.float32 and tensor.shape == (3, height, width)
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp", ".bmp"])
def test_reads_common_formats(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(RGB).save(path)
    image = read_image(path)
    _check(image)
    if suffix in (".png", ".tif", ".bmp"):  # lossless
        assert torch.equal((image * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(RGB))


def test_reads_lossless_webp_exactly(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "x.webp", lossless=True)
    assert np.array_equal(
        (read_image(tmp_path / "x.webp") * 255).round().byte().permute(1, 2, 0).numpy(), RGB
    )


def test_grayscale_8_and_16_bit(tmp_path):
    gray8 = RGB[..., 0]
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    image = read_image(tmp_path / "g8.png")
    _check(image)
    assert torch.equal(image[0], image[2])
    assert torch.allclose(image[0], torch.from_numpy(gray8 / 255.0).float())

    gray16 = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    image16 = read_image(tmp_path / "g16.png")
    _check(image16)
    assert torch.allclose(image16[1], torch.from_numpy(gray16 / 65535.0).float(), atol=1e-6)


def test_16_bit_colour_png_keeps_precision(tmp_path):
    rgb16 = (np.random.default_rng(0).random((24, 32, 3)) * 65535).astype(np.uint16)
    with open(tmp_path / "c16.png", "wb") as handle:
        png.Writer(32, 24, greyscale=False, bitdepth=16).write(handle, rgb16.reshape(24, -1))
    image = read_image(tmp_path / "c16.png")
    _check(image)
    assert torch.allclose(image.permute(1, 2, 0), torch.from_numpy(rgb16 / 65535.0).float(), atol=1e-6)


def test_rgba_composited_over_black(tmp_path):
    rgba = np.dstack([RGB, np.full((24, 32), 128, np.uint8)])
    rgba[:, :8, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    _check(image)
    assert float(image[:, :, :8].max()) == 0.0
    assert abs(float(image[0, 5, 20]) - RGB[5, 20, 0] / 255 * 128 / 255) < 2 / 255


def test_palette_and_cmyk(tmp_path):
    Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    _check(read_image(tmp_path / "p.png"))
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "c.jpg")
    cmyk = read_image(tmp_path / "c.jpg")
    _check(cmyk)
    assert (cmyk - torch.from_numpy(RGB / 255.0).permute(2, 0, 1).float()).abs().mean() < 0.05


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(RGB).save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "r.jpg")
    _check(image, height=32, width=24)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("text.png", b"this is not an image\n", "not an image"),
        ("empty.jpg", b"", "not an image"),
    ],
)
def test_rejects_non_images(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(tmp_path / name)
    assert name in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_rejects_truncated_files(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(RGB).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path / "folder.png")


def test_decompression_bomb_is_refused(tmp_path):
    # A valid PNG header claiming 100000 x 100000 pixels: refused before decoding.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    blob = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "bomb.png").write_bytes(blob)
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("bits", [8, 16])
def test_write_round_trip(tmp_path, bits):
    tensor = torch.from_numpy(RGB / 255.0).permute(2, 0, 1).float()
    path = write_image(tmp_path / "out.png", tensor, bits=bits)
    back = read_image(path)
    assert (back - tensor).abs().max() <= (0.5 / 255 if bits == 8 else 1e-6) + 1e-7
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left behind


def test_write_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_image(tmp_path / "bad.png", torch.rand(4, 5, 5))
    with pytest.raises(ValueError):
        write_image(tmp_path / "bad.jpg", torch.rand(3, 5, 5), bits=16)
    assert os.listdir(tmp_path) == []


def test_enhance_removes_only_its_own_stale_temporaries(tmp_path):
    """A writer killed mid-write (SIGKILL) leaves its temporary file; the next ``mirnet
    enhance`` into that folder removes it, and nothing else."""
    import signal
    import subprocess
    import sys

    import mirnet.io
    from mirnet.cli import main

    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import sys, time\n"
        "from mirnet.io import atomic_path\n"
        f"with atomic_path({str(out / 'photo_enhanced.png')!r}) as tmp:\n"
        "    tmp.write_bytes(b'half a png')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    stale = Path(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    assert stale.exists() and stale.name.startswith(".photo_enhanced.png.mirnet-")

    live = out / f".live.png.{mirnet.io._TEMP_TAG}-abc.tmp"  # named by this process, which runs
    live.write_bytes(b"a live writer's")
    others = [out / ".photo.png.xyz.tmp", out / "notes.tmp", out / "keep.png"]
    for other in others:
        other.write_bytes(b"not ours")
    Image.fromarray(RGB).save(tmp_path / "photo.png")
    assert main(["enhance", str(tmp_path / "photo.png"), "-o", str(out), "-q", "--model", "tiny"]) == 0
    assert not stale.exists()
    assert live.exists() and all(other.exists() for other in others)
    assert (out / "photo_enhanced.png").is_file()
