"""Flicker of frame-by-frame and smoothed video enhancement, and the README's strip of frames.

    python scripts/video_figure.py   # docs/video_strip.jpg, benchmarks/results/video-flicker.json

Makes a test clip from a sample photo (a still, dark scene with fresh sensor noise on every
frame, and a torch beam that sweeps over its right part and flickers on and off, as in a
night video), enhances it frame by frame (``--frame-by-frame``) and smoothed (the default),
and measures both on the still left part of the frame, which the beam never reaches:

* flicker: the mean absolute change of its mean brightness (luma, 8-bit levels) from one
  frame to the next;
* temporal PSNR: the mean PSNR between consecutive frames there (higher is steadier).

The picture shows a few frames before and after, and the still part's brightness over time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import mirnet  # noqa: E402
from mirnet.io import atomic_path  # noqa: E402
from mirnet.video import flicker, read_frames, temporal_psnr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FPS = 24


def make_clip(path: Path, photo: Path, width: int, frames: int, seed: int = 0) -> tuple[slice, slice]:
    """Write the test clip (with a 440 Hz tone); returns the still region (rows, columns)."""
    import av

    rng = np.random.default_rng(seed)
    image = Image.open(photo).convert("RGB")
    height = round(image.height * width / image.width / 2) * 2
    base = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    rows, cols = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "12"}
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for index in range(frames):
            # The beam: a soft disc sweeping back and forth over the right part, flickering.
            phase = index / frames * 2 * np.pi
            centre_x = width * (0.8 + 0.1 * np.sin(phase))
            centre_y = height * (0.5 + 0.25 * np.cos(1.7 * phase))
            radius = height / 8
            beam = np.exp(-((cols - centre_x) ** 2 + (rows - centre_y) ** 2) / (2 * radius**2))
            strength = rng.choice([0.2, 1.0, 2.0])
            frame = base * (1 + strength * beam[..., None]) + strength * 60 * beam[..., None]
            frame += rng.normal(0, 3, frame.shape)  # sensor noise, new on every frame
            array = np.clip(frame, 0, 255).astype(np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(video.encode(None))
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(16000 * frames // FPS) / 16000)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return slice(0, height), slice(0, int(width * 0.3))  # 3 beam radii from its nearest centre


def brightness(frames: list[np.ndarray], region: tuple[slice, slice]) -> np.ndarray:
    crop = np.stack(frames)[:, region[0], region[1]].astype(np.float64)
    return (0.299 * crop[..., 0] + 0.587 * crop[..., 1] + 0.114 * crop[..., 2]).mean(axis=(1, 2))


def figure(
    clips: dict[str, list[np.ndarray]], region: tuple[slice, slice], out: Path, columns: int = 4
) -> None:
    """Frames before and after (smoothed), and the still part's brightness over time."""
    count = len(clips["input"])
    picks = np.linspace(0, count - 1, columns).round().astype(int)
    fig = plt.figure(figsize=(2.4 * columns, 6.4), dpi=100)
    grid = fig.add_gridspec(3, columns, height_ratios=[1, 1, 1.1])
    for row, name in enumerate(["input", "smoothed"]):
        for column, index in enumerate(picks):
            axis = fig.add_subplot(grid[row, column])
            axis.imshow(clips[name][index])
            axis.set_xticks([]), axis.set_yticks([])
            axis.set_title(f"{'before' if name == 'input' else 'after'}, frame {index}", fontsize=8)
    axis = fig.add_subplot(grid[2, :])
    for name, style in [("frame by frame", "tab:red"), ("smoothed", "tab:blue")]:
        axis.plot(brightness(clips[name], region), color=style, label=name)
    axis.set_xlabel("frame")
    axis.set_ylabel("mean brightness, still left part")
    axis.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="jpg", pil_kwargs={"quality": 80})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photo", type=Path, default=ROOT / "samples" / "chelsea_dark.png")
    parser.add_argument("--width", type=int, default=320, help="clip width (height from the photo)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--model", default=None, help="bundled model name or weights file")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "video_strip.jpg")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "video-flicker.json")
    args = parser.parse_args()

    enhancer = mirnet.load_model(args.model, device="cpu", precision="fp32")  # the reference
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip.mp4"
        region = make_clip(clip, args.photo, args.width, args.frames)
        enhancer.enhance_video(clip, tmp / "each.mp4", smoothing=0)
        smooth = enhancer.enhance_video(clip, tmp / "smooth.mp4")
        clips = {
            "input": list(read_frames(clip)),
            "frame by frame": list(read_frames(tmp / "each.mp4")),
            "smoothed": list(read_frames(tmp / "smooth.mp4")),
        }
    rows = {
        name: {"flicker": flicker(frames, region), "temporal_psnr": temporal_psnr(frames, region)}
        for name, frames in clips.items()
    }
    result = {
        "clip": f"{args.photo.name}, {smooth.width}x{smooth.height}, {smooth.frames} frames at {FPS} fps",
        "still_region": {
            "rows": [region[0].start, region[0].stop],
            "columns": [region[1].start, region[1].stop],
        },
        "model": enhancer.info["name"],
        "precision": enhancer.precision,
        "scene_cuts": smooth.scene_cuts,
        "rows": rows,
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    figure(clips, region, args.out)
    print(f"{result['clip']}, model {result['model']}, {smooth.scene_cuts} scene cuts found\n")
    print("| frames | flicker (levels) | temporal PSNR (dB) |")
    print("|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['flicker']:.3f} | {row['temporal_psnr']:.2f} |")
    print(f"\nwrote {args.out} ({args.out.stat().st_size // 1024} KB) and {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
