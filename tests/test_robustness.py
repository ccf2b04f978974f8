"""Bad input for ``mirnet enhance`` and ``mirnet evaluate`` (issue 7).

Every bad file gets one clear line naming it, the good files in the same run still get done,
the exit status is 1, and nothing partial is left on disk. The corpus is made here, by the
tests themselves: no binary blobs in the repository.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mirnet.cli import build_parser, main
from mirnet.io import ImageReadError, read_image
from tests.conftest import make_pairs, smooth_image

RGB = smooth_image(3, 24, 32)  # H=24, W=32


# -- the corpus --------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + _chunk(b"IEND", b"")
    )


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """Write files that must fail; returns {name: words the error must contain}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    png_bytes, jpg_bytes = _encoded(RGB, "PNG"), _encoded(RGB, "JPEG")
    (folder / "cut_png.png").write_bytes(png_bytes[: len(png_bytes) // 2])
    (folder / "cut_jpg.jpg").write_bytes(jpg_bytes[: len(jpg_bytes) // 2])
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "folder.png").mkdir()
    (folder / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    expected = {
        "empty.png": "not an image",
        "cut_png.png": "truncated",
        "cut_jpg.jpg": "truncated",
        "text.png": "not an image",
        "folder.png": "no images",
        "bomb.png": "too many pixels",
        "missing.png": "no such file",
    }
    if hasattr(os, "mkfifo"):
        # A FIFO named like an image would block a reader forever.
        os.mkfifo(folder / "pipe.png")
        expected["pipe.png"] = "not a regular file"
    return expected


def write_good_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Write odd but valid images; returns {name: (width, height) the output must have}."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RGB[:1, :1]).save(folder / "one.png")
    Image.fromarray(RGB[:2, :3]).save(folder / "three_by_two.png")
    rgb16 = (RGB.astype(np.uint16) * 257)[:, :, :3]
    with open(folder / "deep.png", "wb") as handle:
        png.Writer(32, 24, greyscale=False, bitdepth=16).write(handle, rgb16.reshape(24, -1))
    Image.fromarray(np.dstack([RGB, np.full((24, 32), 200, np.uint8)]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(RGB).convert("L").save(folder / "gray.png")
    Image.fromarray(RGB).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    Image.fromarray(RGB).save(folder / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(RGB).save(folder / "good.png")
    sizes = {name: (32, 24) for name in ("deep.png", "rgba.png", "palette.png", "gray.png", "cmyk.jpg")}
    odd = {"one.png": (1, 1), "three_by_two.png": (3, 2), "rotated.jpg": (24, 32), "good.png": (32, 24)}
    return {**sizes, **odd}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny images on a nano model: a second thread only adds synchronisation, which costs
    dearly on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _error_lines(stderr: str, command: str = "enhance") -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith(f"mirnet {command}: error:")]


def _assert_no_temporaries(*folders: Path) -> None:
    for folder in folders:
        leftovers = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, leftovers


# -- mirnet enhance ----------------------------------------------------------------------
def test_enhance_reports_each_bad_file_and_does_the_rest(tmp_path, weights, capsys):
    inputs = tmp_path / "in"
    bad = write_bad_inputs(inputs)
    good = write_good_inputs(inputs)
    before = _listing(inputs)
    out = tmp_path / "out"
    names = sorted(good) + sorted(bad)
    paths = [str(inputs / n) for n in names]
    status = main(["enhance", *paths, "-o", str(out), "--weights", str(weights), "-q"])
    errors = _error_lines(capsys.readouterr().err)

    assert status == 1
    assert len(errors) == len(bad), errors  # one line per bad file, none for the good ones
    for name, words in bad.items():
        (line,) = [e for e in errors if f"{inputs / name}:" in e]
        assert words in line, line
    for name, (width, height) in good.items():
        with Image.open(out / f"{Path(name).stem}_enhanced.png") as result:
            assert result.size == (width, height), name
            assert result.mode == "RGB"
    assert _listing(out) == {f"{Path(n).stem}_enhanced.png" for n in good}  # nothing for the bad ones
    assert _listing(inputs) == before  # inputs untouched, nothing written beside them
    _assert_no_temporaries(inputs, out)


def test_exif_rotation_is_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(RGB).save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "r.jpg").permute(1, 2, 0).numpy()
    # Orientation 6 means "turn 90 degrees clockwise to display": that turn must fit best (JPEG
    # is lossy, so compare with the other turns and flips of the same shape).
    candidates = {
        "clockwise": np.rot90(RGB, k=-1),
        "anticlockwise": np.rot90(RGB, k=1),
        "transposed": RGB.transpose(1, 0, 2),
        "transversed": np.rot90(RGB, k=1)[::-1],
    }
    errors = {name: np.abs(image - c / 255.0).mean() for name, c in candidates.items()}
    assert min(errors, key=errors.get) == "clockwise", errors
    assert errors["clockwise"] < 0.5 * min(v for k, v in errors.items() if k != "clockwise"), errors


def test_enhance_subprocess_exit_status_and_stderr(tmp_path, weights):
    Image.fromarray(RGB).save(tmp_path / "good.png")
    (tmp_path / "text.png").write_text("not a PNG")
    args = ["good.png", "text.png", "missing.jpg", "-o", "out", "--weights", str(weights), "-q"]
    result = subprocess.run(
        [sys.executable, "-m", "mirnet", "enhance", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1, result.stderr
    assert sorted(_error_lines(result.stderr)) == [
        "mirnet enhance: error: missing.jpg: no such file or folder",
        "mirnet enhance: error: text.png: not an image file Pillow can read",
    ]
    assert _listing(tmp_path / "out") == {"good_enhanced.png"}


def test_unreadable_file(tmp_path, weights, capsys):
    path = tmp_path / "locked.png"
    Image.fromarray(RGB).save(path)
    path.chmod(0)
    try:
        if os.geteuid() == 0 or os.access(path, os.R_OK):
            pytest.skip("running as root (or without file permissions): chmod 000 cannot lock root out")
        assert main(["enhance", str(path), "-o", str(tmp_path / "out"), "--weights", str(weights), "-q"]) == 1
        (line,) = _error_lines(capsys.readouterr().err)
        assert str(path) in line and "permission denied" in line
    finally:
        path.chmod(0o644)


def test_permission_errors_without_root(tmp_path, weights, monkeypatch, capsys):
    # The chmod tests above skip under root; this feeds the same errors in directly, so the
    # reporting is checked everywhere.
    import mirnet.enhance
    import mirnet.io

    for name in ("locked.png", "fine.png"):
        Image.fromarray(RGB).save(tmp_path / name)
    real_open = mirnet.io.Image.open

    def open_unless_locked(path, *args, **kwargs):
        if Path(path).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def write_refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(mirnet.io.Image, "open", open_unless_locked)
    monkeypatch.setattr(mirnet.enhance, "write_image", write_refused)
    args = [str(tmp_path / "locked.png"), str(tmp_path / "fine.png"), "-o", str(tmp_path / "out")]
    assert main(["enhance", *args, "--weights", str(weights), "-q"]) == 1
    errors = sorted(_error_lines(capsys.readouterr().err))
    output = tmp_path / "out" / "fine_enhanced.png"
    assert errors == [
        f"mirnet enhance: error: {tmp_path / 'fine.png'}: cannot write {output}: Permission denied",
        f"mirnet enhance: error: {tmp_path / 'locked.png'}: permission denied",
    ]
    assert list((tmp_path / "out").iterdir()) == []


def test_output_folder_that_cannot_be_created(tmp_path, weights, capsys):
    Image.fromarray(RGB).save(tmp_path / "good.png")
    (tmp_path / "plain_file").write_text("a file where a folder should be")
    out = tmp_path / "plain_file" / "out"
    assert main(["enhance", str(tmp_path / "good.png"), "-o", str(out), "--weights", str(weights), "-q"]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(out) in line and "cannot create the output folder" in line
    assert _listing(tmp_path) == {"good.png", "plain_file"}


def test_output_that_cannot_be_written_fails_alone(tmp_path, weights, capsys):
    for name in ("a.png", "b.png"):
        Image.fromarray(RGB).save(tmp_path / name)
    out = tmp_path / "out"
    (out / "a_enhanced.png").mkdir(parents=True)  # a folder in the way of one output
    status = main(
        [
            "enhance",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            "-o",
            str(out),
            "--weights",
            str(weights),
            "-q",
        ]
    )
    assert status == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(tmp_path / "a.png") in line and "cannot write" in line and "a_enhanced.png" in line
    assert (out / "a_enhanced.png").is_dir() and (out / "b_enhanced.png").is_file()
    _assert_no_temporaries(out)


def test_read_only_output_folder(tmp_path, weights, capsys):
    Image.fromarray(RGB).save(tmp_path / "good.png")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.geteuid() == 0 or os.access(out, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable (see the plain-file case)")
        args = [str(tmp_path / "good.png"), "-o", str(out), "--weights", str(weights), "-q"]
        assert main(["enhance", *args]) == 1
        (line,) = _error_lines(capsys.readouterr().err)
        assert "cannot write" in line
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


def test_output_never_replaces_an_input(tmp_path, weights, capsys):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    Image.fromarray(RGB[::-1]).save(tmp_path / "a_enhanced.png")  # an input where a.png's output would go
    original = (tmp_path / "a_enhanced.png").read_bytes()
    args = [str(tmp_path / "a.png"), str(tmp_path / "a_enhanced.png"), "-o", str(tmp_path)]
    assert main(["enhance", *args, "--weights", str(weights), "-q"]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"{tmp_path / 'a.png'}:" in line and "would overwrite an input" in line
    assert (tmp_path / "a_enhanced.png").read_bytes() == original
    assert (tmp_path / "a_enhanced_enhanced.png").is_file()  # the other input still got done
    _assert_no_temporaries(tmp_path)


def test_outputs_get_ordinary_permissions(tmp_path, weights):
    # Atomic writes go through mkstemp, which makes 0600 files; outputs should honour the umask.
    Image.fromarray(RGB).save(tmp_path / "a.png")
    assert main(["enhance", str(tmp_path / "a.png"), "--weights", str(weights), "-q"]) == 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "a_enhanced.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_bad_weights_one_line_or_traceback_with_verbose(tmp_path, capsys):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["enhance", str(tmp_path / "a.png"), "--weights", str(bad), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _error_lines(err) == [err.strip()]
    assert str(bad) in err and "safetensors" in err
    assert main(["enhance", str(tmp_path / "a.png"), "--weights", str(bad), "-q", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("mirnet enhance: error:")
    assert not (tmp_path / "a_enhanced.png").exists()


# -- resource limits ---------------------------------------------------------------------
def test_max_pixels_is_checked_before_decoding(tmp_path):
    # The header claims 12 megapixels but the file holds almost no data: refusing it proves
    # the check reads only the header.
    (tmp_path / "huge.png").write_bytes(png_claiming(4000, 3000))
    message = r"too large, 4000x3000 is 12\.0 megapixels, over the limit of 10$"
    with pytest.raises(ImageReadError, match=message):
        read_image(tmp_path / "huge.png", max_pixels=10_000_000)
    Image.fromarray(RGB).save(tmp_path / "small.png")
    # The limit is inclusive.
    assert read_image(tmp_path / "small.png", max_pixels=24 * 32).shape == (3, 24, 32)
    with pytest.raises(ImageReadError, match="small.png: too large"):
        read_image(tmp_path / "small.png", max_pixels=24 * 32 - 1)


def test_enhance_max_megapixels(tmp_path, weights, capsys):
    assert build_parser().parse_args(["enhance", "x.png"]).max_megapixels == 100  # on by default
    (tmp_path / "huge.png").write_bytes(png_claiming(12_000, 10_000))  # 120 MP: over the default
    Image.fromarray(RGB).save(tmp_path / "small.png")
    huge, small = str(tmp_path / "huge.png"), str(tmp_path / "small.png")
    args = ["enhance", huge, small, "--weights", str(weights), "-q"]
    assert main(args) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert "huge.png: too large" in line and "over the limit of 100" in line
    assert (tmp_path / "small_enhanced.png").is_file()

    (tmp_path / "small_enhanced.png").unlink()
    assert main(["enhance", small, "--weights", str(weights), "-q", "--max-megapixels", "0.0005"]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert "small.png: too large" in line and "over the limit of 0.0005" in line
    assert not (tmp_path / "small_enhanced.png").exists()


# -- mirnet evaluate ---------------------------------------------------------------------
def test_evaluate_corrupt_pair_fails_fast_with_one_line(tmp_path, weights, capsys):
    root = make_pairs(tmp_path / "data", "test", 3, size=(24, 32))
    broken = root / "test" / "low" / "2.png"
    broken.write_bytes(broken.read_bytes()[:60])
    out = tmp_path / "report"
    args = ["evaluate", "--weights", str(weights), "--data", str(root), "--out", str(out), "-q"]
    args.append("--no-classical")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert _error_lines(err, "evaluate") == [err.strip()]
    assert str(broken) in err and "truncated" in err
    assert not out.exists()  # no half-written report


def test_evaluate_bad_dataset_and_weights(tmp_path, weights, capsys):
    common = ["--out", str(tmp_path / "report"), "-q", "--no-classical"]
    assert main(["evaluate", "--weights", str(weights), "--data", str(tmp_path / "nowhere"), *common]) == 1
    (line,) = _error_lines(capsys.readouterr().err, "evaluate")
    assert "nowhere: dataset folder not found" in line

    root = make_pairs(tmp_path / "data", "test", 1, size=(24, 32))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--weights", str(bad), "--data", str(root), *common]) == 1
    (line,) = _error_lines(capsys.readouterr().err, "evaluate")
    assert str(bad) in line and "refused or unreadable" in line


# -- fuzzing read_image ------------------------------------------------------------------
_SMALL = smooth_image(5, 16, 16)
_PREFIXES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    _encoded(_SMALL, "PNG")[:33],  # signature and a valid IHDR chunk
    _encoded(_SMALL, "PNG"),
    b"\xff\xd8\xff",
    _encoded(_SMALL, "JPEG"),
    _encoded(_SMALL, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08"),
]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns, then reads the pixels anyway
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(_PREFIXES),
    keep=st.floats(0, 1),
    tail=st.binary(max_size=512),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    suffix=st.sampled_from([".png", ".jpg"]),
)
def test_random_bytes_only_ever_raise_image_read_error(prefix, keep, tail, flips, suffix):
    # A real file cut anywhere, with a few bytes changed and noise after it, reaches deep into
    # the decoders. The pixel limit keeps a header claiming a huge image from costing memory.
    data = bytearray(prefix[: round(len(prefix) * keep)] + tail)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(bytes(data))
        try:
            image = read_image(path, max_pixels=2**20)
        except ImageReadError as err:
            assert str(path) in str(err) and "\n" not in str(err)
        else:
            assert image.dtype == torch.float32 and image.shape[0] == 3


@pytest.mark.parametrize(
    "option, message",
    [
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--device", "cuda:7"], "device 'cuda:7'"),  # no such GPU here, or no CUDA at all
        (["--tile", "7"], "tile size 7: use 0 (no tiling) or more than twice"),
    ],
)
def test_bad_options_fail_in_one_line_before_any_photo(tmp_path, weights, capsys, option, message):
    if option[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    Image.fromarray(RGB).save(tmp_path / "a.png")
    args = ["enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--weights", str(weights)]
    assert main([*args, *option]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert message in line and str(tmp_path / "a.png") not in line  # about the option, not the photo
    assert _listing(tmp_path / "out") == set()


def test_missing_inputs_are_reported_without_loading_a_model(tmp_path, monkeypatch, capsys):
    import mirnet.inference

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded with nothing to enhance")

    monkeypatch.setattr(mirnet.inference, "load_model", no_model)
    assert main(["enhance", str(tmp_path / "missing.png"), str(tmp_path / "gone"), "-q"]) == 1
    assert sorted(_error_lines(capsys.readouterr().err)) == [
        f"mirnet enhance: error: {tmp_path / 'gone'}: no such file or folder",
        f"mirnet enhance: error: {tmp_path / 'missing.png'}: no such file or folder",
    ]
