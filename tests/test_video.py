"""Videos: streaming enhancement with the timing, rotation and sound kept, no flicker, bad inputs.

Every clip is made here: 64x48, a dark still textured left part, and on the right a bright
square that moves and flashes, and noise that flashes, so that the frame-wide attention
statistics jump from frame to frame while the left part stays still (and no frame is a scene
cut: less than half the picture changes at once).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip(
    "av", reason="the video extra (PyAV) is not installed: pip install -c constraints.txt -e '.[video]'"
)

from mirnet.cli import main  # noqa: E402
from mirnet.enhance import enhance_videos  # noqa: E402
from mirnet.inference import load_model  # noqa: E402
from mirnet.video import (  # noqa: E402
    FrameEnhancer,
    SceneCutDetector,
    flicker,
    output_suffix,
    probe_video,
    read_frames,
    temporal_psnr,
)

WIDTH, HEIGHT, FPS, FRAMES = 64, 48, 12, 24
STATIC = (slice(4, 44), slice(2, 24))  # rows, columns of the still part, away from the flashes
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def enhancer():
    return load_model("tiny", device="cpu", precision="fp32")  # the reference, whatever the CPU


def synthetic_frames(count: int = FRAMES, seed: int = 0) -> np.ndarray:
    """(count, H, W, 3) uint8: still texture on the left, a flashing moving square on the right."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(8, 40, size=(HEIGHT, WIDTH, 3))
    frames = np.repeat(texture[None], count, axis=0).astype(np.float64)
    for index in range(count):
        noise_level = rng.choice([5, 60])  # the noise flashes too
        frames[index, :, 44:] = rng.integers(0, noise_level, size=(HEIGHT, WIDTH - 44, 3))
        brightness = rng.choice([90, 250])
        top, left = 6 + (index * 3) % 24, 36 + (index * 2) % 16
        frames[index, top : top + 16, left : left + 12] = brightness
    return frames.astype(np.uint8)


def make_clip(
    path: Path,
    frames: np.ndarray | None = None,
    audio: bool = True,
    rotation: int = 0,
    video_codec: str = "libx264",
    container_format: str | None = None,
    container_options: dict | None = None,
) -> Path:
    """Encode frames (default: :func:`synthetic_frames`) plus a 440 Hz tone as AAC."""
    frames = synthetic_frames() if frames is None else frames
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as out:
        video = out.add_stream(video_codec, rate=FPS)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if video_codec == "libx264":
            video.options = {"crf": "10"}
        if rotation:
            video.set_display_rotation(rotation)
        if audio:
            sound = out.add_stream("aac", rate=SAMPLE_RATE)
            sound.layout = "mono"
        for array in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(video.encode(None))
        if audio:
            seconds = len(frames) / FPS
            t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                chunk = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 1024], format="flt", layout="mono"
                )
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def test_output_suffixes():
    assert output_suffix(Path("a.MP4")) == ".mp4" and output_suffix(Path("a.m4v")) == ".mp4"
    assert output_suffix(Path("a.avi")) == ".mp4" and output_suffix(Path("a.mov")) == ".mov"
    assert output_suffix(Path("a.webm")) == ".mkv" and output_suffix(Path("a.mkv")) == ".mkv"
    assert output_suffix(Path("a.jpg")) == ".png"


def test_video_keeps_frames_timing_rotation_and_sound_and_gets_brighter(tmp_path, enhancer):
    src = make_clip(tmp_path / "clip.mp4", rotation=90)
    summary = enhancer.enhance_video(src, tmp_path / "out.mp4")
    before, after = probe_video(src), probe_video(tmp_path / "out.mp4")
    out_frames = list(read_frames(tmp_path / "out.mp4"))
    assert summary.frames == len(out_frames) == FRAMES == after["frames"]
    assert after["fps"] == before["fps"] == FPS
    assert after["duration"] == pytest.approx(before["duration"], abs=1e-3)
    assert after["duration"] == pytest.approx(FRAMES / FPS, abs=1e-3)
    assert after["rotation"] == before["rotation"] == 90
    assert (after["width"], after["height"]) == (WIDTH, HEIGHT)
    assert after["audio"] == before["audio"] == ["aac"]
    assert after["audio_durations"] == pytest.approx(before["audio_durations"], abs=1e-3)
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(src)  # copied, not re-encoded
    in_mean = np.mean(list(read_frames(src)))
    assert np.mean(out_frames) > 1.5 * in_mean


def test_smoothing_lowers_flicker_on_still_content(tmp_path, enhancer):
    src = make_clip(tmp_path / "clip.mp4", audio=False)
    each = enhancer.enhance_video(src, tmp_path / "each.mp4", smoothing=0)
    smooth = enhancer.enhance_video(src, tmp_path / "smooth.mp4")
    assert not each.smoothed and smooth.smoothed and smooth.scene_cuts == 0
    each_frames = list(read_frames(tmp_path / "each.mp4"))
    smooth_frames = list(read_frames(tmp_path / "smooth.mp4"))
    # Stated margins: smoothing at least halves the flicker of the still part (measured: 27.5
    # levels frame by frame, 6.2 smoothed), and raises its temporal PSNR by at least 6 dB
    # (measured: 17.0 dB, 31.1).
    assert flicker(smooth_frames, STATIC) < 0.5 * flicker(each_frames, STATIC)
    assert temporal_psnr(smooth_frames, STATIC) > temporal_psnr(each_frames, STATIC) + 6.0


def test_batches_match_frames_one_at_a_time_and_scene_cuts_restart_the_average(enhancer):
    first = torch.from_numpy(synthetic_frames(5, seed=1)).permute(0, 3, 1, 2).float() / 255
    second = 1 - first  # another scene: bright where the first was dark
    frames = torch.cat([first, second])
    with FrameEnhancer(enhancer, fps=FPS) as batched:
        out = torch.cat([batched(frames[:4]), batched(frames[4:8]), batched(frames[8:])])
    with FrameEnhancer(enhancer, fps=FPS) as single:
        one_by_one = torch.cat([single(frame[None]) for frame in frames])
    assert batched.scene_cuts == single.scene_cuts == 1
    torch.testing.assert_close(out, one_by_one, atol=1e-5, rtol=0)
    alone = enhancer.enhance_tensor(frames)
    # The first frame of each scene has no past: it is enhanced exactly as on its own.
    torch.testing.assert_close(out[[0, 5]], alone[[0, 5]], atol=1e-5, rtol=0)
    assert (out[6:] - alone[6:]).abs().max() > 1e-3  # and later frames are smoothed


def test_large_frames_in_tiles_are_smoothed_too(enhancer):
    from mirnet.inference import Enhancer

    tiled = Enhancer(enhancer.model, enhancer.info, device="cpu", precision="fp32", tile=32, overlap=8)
    frames = torch.from_numpy(synthetic_frames(4)).permute(0, 3, 1, 2).float() / 255
    with FrameEnhancer(tiled, fps=FPS) as smoothed:
        out = smoothed(frames)
    alone = tiled.enhance_tensor(frames)  # tiles with the whole frame's statistics
    torch.testing.assert_close(out[0], alone[0], atol=1e-5, rtol=0)  # no past yet
    assert (out[1:] - alone[1:]).abs().max() > 1e-3


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_videos_run_one_copy_of_a_self_ensemble_and_say_so(enhancer, smoothing):
    from mirnet.inference import Enhancer

    quality = Enhancer(enhancer.model, enhancer.info, device="cpu", precision="fp32", self_ensemble=8)
    frames = torch.from_numpy(synthetic_frames(4)).permute(0, 3, 1, 2).float() / 255
    with pytest.warns(UserWarning, match="once per frame: its self-ensemble of 8 copies is for photos"):
        with FrameEnhancer(quality, fps=FPS, smoothing=smoothing) as once:
            out = once(frames)
    with FrameEnhancer(enhancer, fps=FPS, smoothing=smoothing) as plain:
        torch.testing.assert_close(out, plain(frames), atol=1e-5, rtol=0)


def test_scene_cut_detector_ignores_flashes_but_not_cuts():
    frames = torch.from_numpy(synthetic_frames()).permute(0, 3, 1, 2).float() / 255
    detector = SceneCutDetector()
    assert not any(detector(frames))
    assert detector(1 - frames[:1]) == [True]


def test_interrupted_run_leaves_nothing(tmp_path, enhancer, monkeypatch):
    src = make_clip(tmp_path / "clip.mp4")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    original, calls = FrameEnhancer.__call__, []

    def interrupted(self, frames):
        calls.append(len(frames))
        if len(calls) == 3:  # mid-way: frames already encoded and written to the temporary file
            raise KeyboardInterrupt
        return original(self, frames)

    monkeypatch.setattr(FrameEnhancer, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        enhancer.enhance_video(src, out_dir / "clip_enhanced.mp4")
    assert list(out_dir.iterdir()) == []  # no output, no temporary file

    def failing(self, frames):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(FrameEnhancer, "__call__", failing)
    outcomes = enhance_videos([(src, out_dir / "clip_enhanced.mp4")], enhancer, progress=False)
    assert outcomes[0].error == "enhancement failed: out of memory" and outcomes[0].output is None
    assert list(out_dir.iterdir()) == []


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Broken videos in ``folder``: file name -> a phrase its error must contain."""
    make_clip(folder / "movie.mp4")  # moov at the end: cut in half, nothing can be read
    data = (folder / "movie.mp4").read_bytes()
    (folder / "movie.mp4").unlink()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    make_clip(folder / "web.mp4", container_options={"movflags": "+faststart"})
    data = (folder / "web.mp4").read_bytes()  # moov first: the frames after the cut are missing
    (folder / "web.mp4").unlink()
    (folder / "short.mp4").write_bytes(data[: len(data) * 2 // 3])
    with av.open(str(folder / "sound.mp4"), "w") as out:  # audio only
        sound = out.add_stream("aac", rate=SAMPLE_RATE)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = SAMPLE_RATE, 0
        out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    # An AVI whose codec tag names no decoder FFmpeg has.
    make_clip(folder / "mpeg.avi", audio=False, video_codec="mpeg4")
    data = (folder / "mpeg.avi").read_bytes()
    (folder / "mpeg.avi").unlink()
    (folder / "odd.avi").write_bytes(data.replace(b"FMP4", b"QQQQ"))
    (folder / "empty.mp4").write_bytes(b"")
    with av.open(str(folder / "none.mkv"), "w") as out:  # a video stream without a frame
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        out.start_encoding()
    with av.open(str(folder / "none.mp4"), "w") as out:  # MP4 drops a video track without a frame
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        out.start_encoding()
    return {
        "cut.mp4": "cannot read it as a video",
        "short.mp4": "truncated",
        "sound.mp4": "no video stream",
        "odd.avi": "unsupported video codec",
        "empty.mp4": "zero-length video",
        "none.mkv": "zero-length video",
        "none.mp4": "zero-length video",
    }


def test_bad_videos_are_one_line_errors_and_the_rest_still_done(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = _bad_inputs(folder)
    make_clip(folder / "good.mov", frames=synthetic_frames(6))
    Image.fromarray(synthetic_frames(1)[0]).save(folder / "photo.png")
    out = tmp_path / "out"
    assert main(["enhance", str(folder), "-o", str(out), "--model", "tiny", "--device", "cpu", "-q"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == len(expected), errors
    for name, phrase in expected.items():
        (line,) = [e for e in errors if f"/{name}:" in e]
        assert line.startswith("mirnet enhance: error: ") and phrase in line, line
    assert sorted(p.name for p in out.iterdir()) == ["good_enhanced.mov", "photo_enhanced.png"]
    assert len(list(read_frames(out / "good_enhanced.mov"))) == 6


def test_missing_pyav_is_a_one_line_error_with_the_install_command(tmp_path, enhancer, monkeypatch):
    src = make_clip(tmp_path / "clip.mp4", frames=synthetic_frames(2), audio=False)
    monkeypatch.setitem(sys.modules, "av", None)  # as if it were not installed
    (outcome,) = enhance_videos([(src, tmp_path / "clip_enhanced.mp4")], enhancer, progress=False)
    assert "pip install -c constraints.txt -e '.[video]'" in outcome.error
