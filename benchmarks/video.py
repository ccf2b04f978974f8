"""Frames per second of ``mirnet enhance clip.mp4``, end to end (decode, enhance, encode).

    python benchmarks/video.py                          # 640x360 and 1280x720, eager fp32 and --fast
    python benchmarks/video.py --frames 20 --sizes 640x360
    python benchmarks/video.py --paths eager-fp32 eager-fp32-each fast

Paths, all with temporal smoothing unless named ``-each``: ``eager-fp32`` is the reference
(``--precision fp32``); ``fast`` is ``--fast`` (compiled, bf16 where the hardware has it);
``eager-bf16`` is ``--precision bf16``; ``eager-fp32-each`` is ``--frame-by-frame``, to show
what the smoothing costs.
Each path first enhances a short warm-up clip of the same size (for ``fast``, this is where
the compilation happens; reported as warm-up seconds), then the timed clip. Speed-ups are
against ``eager-fp32`` measured in the same run. The clips are made here: a sample photo
scaled to the size, with a bright square moving over it and fresh sensor noise on every
frame. Prints a Markdown table and writes JSON (default benchmarks/results/video-DEVICE.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["eager-fp32", "fast", "eager-bf16", "eager-fp32-each"]
FPS = 24


def make_clip(path: Path, size: tuple[int, int], frames: int, photo: Path, seed: int = 0) -> Path:
    """A clip of ``frames`` frames: ``photo`` at ``size``, a moving bright square, fresh noise."""
    import av

    width, height = size
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.open(photo).convert("RGB").resize(size, Image.Resampling.BICUBIC), np.float32)
    side = height // 6
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for index in range(frames):
            frame = base + rng.normal(0, 4, base.shape)
            left = (index * width // max(frames, 1)) % (width - side)
            frame[height // 3 : height // 3 + side, left : left + side] = 230
            array = np.clip(frame, 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def run_path(
    path: str, model: str, device: str, clip: Path, warmup_clip: Path, batch: int, out: Path
) -> dict:
    """Warm up on one clip, then time the enhancement of another; one result row."""
    from mirnet.inference import load_model
    from mirnet.video import DEFAULT_SMOOTHING

    # fast picks its own precision (bf16 where the hardware has it).
    precision = "bf16" if "bf16" in path else "fp32"
    enhancer = load_model(model, device=device, precision=precision, fast=path == "fast")
    smoothing = 0.0 if path.endswith("-each") else DEFAULT_SMOOTHING
    began = time.perf_counter()
    enhancer.enhance_video(warmup_clip, out, smoothing=smoothing, batch_frames=batch)
    warmup = time.perf_counter() - began
    summary = enhancer.enhance_video(clip, out, smoothing=smoothing, batch_frames=batch)
    return {
        "path": path,
        "precision": enhancer.precision,
        "compiled": enhancer.compiled,
        "smoothed": summary.smoothed,
        "size": f"{summary.width}x{summary.height}",
        "frames": summary.frames,
        "seconds": summary.seconds,
        "fps": summary.frames / summary.seconds,
        "warmup_s": warmup,
        "encoder": summary.encoder,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"], metavar="WxH")
    parser.add_argument("--paths", nargs="+", default=PATHS[:2], choices=PATHS)
    parser.add_argument("--frames", type=int, default=48, help="frames in the timed clip (default 48)")
    parser.add_argument("--batch-frames", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--model", default=None, help="bundled model name (default: the default model)")
    parser.add_argument("--photo", default=str(ROOT / "samples" / "coffee_dark.png"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/video-DEVICE.json")
    args = parser.parse_args()

    import av

    from mirnet.video import pick_encoder
    from mirnet.weights import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size_text in args.sizes:
            size = tuple(int(v) for v in size_text.lower().split("x"))
            clip = make_clip(tmp / f"clip_{size_text}.mp4", size, args.frames, Path(args.photo))
            # Two batches and one frame: the first batch of a video runs eagerly (it creates
            # the running averages), the others through the compiled graph, the last padded.
            warmup = make_clip(
                tmp / f"warmup_{size_text}.mp4", size, 2 * args.batch_frames + 1, Path(args.photo), 1
            )
            for path in args.paths:
                print(f"... {path} {size_text}", file=sys.stderr, flush=True)
                row = run_path(path, model, args.device, clip, warmup, args.batch_frames, tmp / "out.mp4")
                base = next((r for r in rows if r["size"] == row["size"] and r["path"] == PATHS[0]), None)
                row["speedup"] = row["fps"] / base["fps"] if base else None
                if path == PATHS[0]:
                    row["speedup"] = 1.0
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    meta = {
        "model": model,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "av": av.__version__,
        "encoder": pick_encoder(av),
        "batch_frames": args.batch_frames,
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
    }
    print(table(rows, meta))
    out_json = Path(args.json or ROOT / "benchmarks" / "results" / f"video-{args.device.split(':')[0]}.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out_json}", file=sys.stderr)


def table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Model {meta['model']} on {meta['device']} ({meta['threads']} threads), torch {meta['torch']}, "
        f"PyAV {meta['av']} ({meta['encoder']}), {meta['batch_frames']} frames per batch. "
        f"Command: `{meta['command']}`",
        "",
        "| size | path | frames/s | speed-up vs eager fp32 | warm-up s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else ""
        lines.append(f"| {r['size']} | {r['path']} | {r['fps']:.2f} | {speedup} | {r['warmup_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
