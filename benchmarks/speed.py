"""Inference speed and memory of each model and execution path, on one photo size.

    python benchmarks/speed.py                      # shipped models + paper, all paths, 600x400
    python benchmarks/speed.py --models tiny --paths plain-fp32 compile-bf16 --repeats 5
    python benchmarks/speed.py --large 24           # also a 24-megapixel photo, tiled (default model)

Each (model, path) runs in a fresh child process, so its peak memory (max RSS on the CPU,
max allocated on CUDA) is its own and a compilation cache of one path cannot help another.
Times are medians over ``--repeats`` calls after warm-up (the warm-up, which includes any
compilation, is reported separately). Every path is reported as a speed-up over plain fp32
(the model called as any PyTorch user would: eager, NCHW) of the same model measured in the
same run, and its output's PSNR against plain fp32's output (the reference). Prints a
Markdown table and writes JSON.

For the ``paper`` configuration, which ships no weights, a seeded random initialisation is
timed: speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# plain-fp32 is the baseline: the model called as any PyTorch user would, NCHW fp32 eager.
# eager-fp32 is mirnet's default path (channels-last layout); the others are opt-in.
BASELINE = "plain-fp32"
PATHS = [BASELINE, "eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16", "onnxruntime"]


def _load(model_name: str):
    """An Enhancer-ready (model, info) for a bundled model, or a seeded untrained configuration."""
    from mirnet.weights import arch_config, bundled_models, load_weights, save_weights

    if model_name in bundled_models():
        model, info = load_weights(bundled_models()[model_name])
        info["weights"] = str(bundled_models()[model_name])
        return model, info
    import mirnet

    torch.manual_seed(0)
    model = mirnet.build_model(model_name)
    # The ONNX path exports from (and caches by) a weights file, so write one.
    path = Path(tempfile.gettempdir()) / f"mirnet-bench-{model_name}.safetensors"
    save_weights(path, model, model_name, arch_config(model_name))
    return model, {"name": model_name, "arch": arch_config(model_name), "weights": str(path)}


def child(
    model_name: str, path: str, image_path: str, repeats: int, device: str, tile: int, out: str
) -> None:
    """Measure one (model, path) and print a JSON line; saves the output image to ``out``."""
    from mirnet.inference import Enhancer
    from mirnet.io import read_image

    model, info = _load(model_name)
    runner, precision = path.split("-") if "-" in path else (path, "fp32")
    enhancer = Enhancer(
        model,
        info,
        device=device,
        precision=precision,
        tile=tile,
        backend="onnxruntime" if runner == "onnxruntime" else "torch",
        compile=runner == "compile",
        channels_last=runner != "plain",
    )
    image = read_image(image_path)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def once() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = enhancer.enhance_tensor(image)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        once.result = result
        return time.perf_counter() - start

    if tile:
        # A large photo: warm up on one tile rather than pay a whole extra run.
        enhancer.enhance_tensor(image[..., :tile, :tile])
        warmup = 0.0
    else:
        warmup = once()
    times = [once() for _ in range(repeats)]
    np.save(out, once.result.numpy())
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps({"warmup_s": warmup, "seconds": float(np.median(times)), "times": times, "peak_mib": peak})
    )


def run_child(model: str, path: str, image: Path, repeats: int, device: str, tile: int, out: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        model,
        path,
        str(image),
        str(repeats),
        device,
        str(tile),
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def make_large_photo(megapixels: float, source: Path, folder: Path) -> Path:
    """A photo of about ``megapixels`` made by upscaling a sample (3:2)."""
    from PIL import Image

    width = int((megapixels * 1e6 * 1.5) ** 0.5)
    height = int(width / 1.5)
    path = folder / f"large_{width}x{height}.png"
    Image.open(source).convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", help="default: every bundled model, then paper")
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--image", default=str(ROOT / "samples" / "coffee_dark.png"), help="a 600x400 photo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--large", type=float, default=0, metavar="MP", help="also time a photo of MP megapixels"
    )
    parser.add_argument(
        "--json", default=None, help="output JSON (default benchmarks/results/speed-DEVICE.json)"
    )
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, path, image, repeats, device, tile, out = args.child
        child(model, path, image, int(repeats), device, int(tile), out)
        return

    from mirnet.tiling import DEFAULT_TILE
    from mirnet.weights import DEFAULT_MODEL, bundled_models

    models = args.models or [*sorted(bundled_models()), "paper"]
    paths = [p for p in args.paths if not (args.device.startswith("cuda") and p == "onnxruntime")]
    if BASELINE not in paths:
        paths.insert(0, BASELINE)
    image = Path(args.image)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = [(m, p, image, 0) for m in models for p in paths]
        if args.large:
            large = make_large_photo(args.large, image, tmp)
            # The default path only: what `mirnet enhance` does with a large photo.
            jobs.append((DEFAULT_MODEL, "eager-fp32", large, DEFAULT_TILE))
        references: dict[tuple[str, str], np.ndarray] = {}
        for model, path, photo, tile in jobs:
            out = tmp / f"{model}-{path}-{photo.stem}.npy"
            repeats = args.repeats if tile == 0 else 1
            print(f"... {model} {path} {photo.name}", file=sys.stderr, flush=True)
            result = run_child(model, path, photo, repeats, args.device, tile, out)
            row = {"model": model, "path": path, "image": photo.name, "tile": tile, **result}
            if "error" not in result:
                output = np.load(out)
                key = (model, photo.name)
                if path == BASELINE:
                    references[key] = output
                row["psnr_vs_fp32"] = psnr_db(output, references[key]) if key in references else None
                height, width = output.shape[-2:]
                row["megapixels_per_s"] = height * width / 1e6 / result["seconds"]
                base = next(
                    (r for r in rows if (r["model"], r["image"], r["path"]) == (model, photo.name, BASELINE)),
                    None,
                )
                row["speedup"] = base["seconds"] / result["seconds"] if base and "seconds" in base else None
                if path == BASELINE:
                    row["speedup"] = 1.0
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    meta = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
    }
    print(table(rows, meta))
    suffix = "-large" if args.large else ""
    default_json = ROOT / "benchmarks" / "results" / f"speed-{args.device.split(':')[0]}{suffix}.json"
    out_json = Path(args.json or default_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out_json}", file=sys.stderr)


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Device: {meta['device']} ({meta['threads']} threads), torch {meta['torch']}. "
        f"Command: `{meta['command']}`",
        "",
        "| model | path | photo | s / photo | MP/s | speed-up vs plain fp32 | PSNR vs plain fp32 (dB) "
        "| peak MiB | warm-up s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['path']} | {r['image']} | failed: {r['error'][:60]} | | | | | |"
            )
            continue
        quality = "reference" if r["path"] == BASELINE else _number(r["psnr_vs_fp32"], ".1f")
        speedup = _number(r["speedup"], ".2f", "x")
        lines.append(
            f"| {r['model']} | {r['path']} | {r['image']} | {r['seconds']:.3f} "
            f"| {r['megapixels_per_s']:.2f} | {speedup} | {quality} "
            f"| {r['peak_mib']:.0f} | {r['warmup_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
