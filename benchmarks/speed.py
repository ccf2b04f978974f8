"""Inference speed and memory of each model and execution path, on one photo size.

    python benchmarks/speed.py                      # shipped models + paper, all paths, 600x400
    python benchmarks/speed.py --models tiny --paths plain-fp32 compile-bf16 --repeats 5
    python benchmarks/speed.py --models tiny --paths plain-fp32 default --rounds 5 --json /tmp/r5.json
    python benchmarks/speed.py --large 12           # also a 12-megapixel photo (default model)

Each (model, path) runs in a fresh child process, so its peak memory (max RSS on the CPU,
max allocated on CUDA) is its own and a compilation cache of one path cannot help another.
Times are medians over ``--repeats`` calls after warm-up (the warm-up, which includes any
compilation, is reported separately). With ``--rounds R`` each eager path at 600x400 (plain,
kept, eager, default without a package) runs in R processes, the paths in turn per round and
before any compiled path, and reports the median of their medians (each round's in the JSON):
on a shared machine one process can run 10-40% slower than the next with the same code.
Every path is reported as a speed-up over plain fp32 (the model called as any PyTorch user
would: eager, NCHW) of the same model measured in the same run, and its output's PSNR
against plain fp32's output (the reference). Every other path runs as the ``mirnet`` command
does, with freed memory kept for reuse (``mirnet.device.keep_freed_memory``); plain fp32 keeps
the C library's defaults. The machine's achievable matrix-multiply rate is measured first, in
the same process, in fp32 and bf16; each path is also reported as the share of that limit its
photo's multiply-accumulates reach (MACs counted by PyTorch's FLOP counter). Prints a Markdown
table and writes JSON.

``--large MP`` adds a photo of MP megapixels with the default path twice: as ``mirnet
enhance`` runs it (whole when it fits in the available memory, else in tiles; the row says
which ran) and in 512-pixel tiles, with the tiled output's PSNR against
the whole photo's when the first ran whole.

For the ``paper`` configuration, which ships no weights, a seeded random initialisation is
timed: speed does not depend on the weights' values. A model whose weights file asks for a
self-ensemble (the bundled ``quality``: 8 copies) is timed with it, on every path.
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
# eager-* are mirnet's eager model (channels-last layout) in fp32 and bf16.
BASELINE = "plain-fp32"
# "default" is what `mirnet enhance` does with no options: precision auto (bf16 where the CPU
# or GPU has it natively), channels-last, and this machine's AOTInductor package if
# `mirnet export --format aoti` built one, else the eager model. With the aoti paths it is
# measured both before ("no package") and after ("package built") they build the package.
# "aoti-bf16" is `mirnet enhance --fast` once `mirnet export --format aoti` compiled the model for
# this machine; it runs in two processes sharing an empty cache, so that the first pays the
# ahead-of-time compilation and the second only loads the package (both warm-ups reported).
# "kept-fp32" is plain fp32 with freed memory kept for reuse, as the mirnet command runs it:
# how much of every other path's speed-up comes from the memory setting alone.
PATHS = [
    BASELINE,
    "kept-fp32",
    "eager-fp32",
    "eager-bf16",
    "default",
    "compile-fp32",
    "compile-bf16",
    "aoti-bf16",
    "onnxruntime",
]
# The paths --rounds repeats: eager ones, whose later processes start as cold as the first.
REPEATABLE = {BASELINE, "kept-fp32", "eager-fp32", "eager-bf16", "default"}

# The tile argument of a large photo's row that lets mirnet choose, as `mirnet enhance` does.
AUTOMATIC = -1


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
    # The ONNX and AOTInductor paths export from (and cache by the hash of) a weights file, so
    # write one, once per run: safetensors headers are not byte-identical from one save to the
    # next, and every child process must find the same file.
    path = Path(os.environ.get("MIRNET_CACHE", tempfile.gettempdir())) / f"bench-{model_name}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(path, model, model_name, arch_config(model_name))
    return model, {"name": model_name, "arch": arch_config(model_name), "weights": str(path)}


def child(
    model_name: str, path: str, image_path: str, repeats: int, device: str, tile: int, out: str
) -> None:
    """Measure one (model, path) and print a JSON line; saves the output image to ``out``."""
    from mirnet.device import keep_freed_memory
    from mirnet.inference import Enhancer
    from mirnet.io import read_image
    from mirnet.tiling import DEFAULT_TILE

    runner, precision = path.split("-") if "-" in path else (path, "auto" if path == "default" else "fp32")
    # What the mirnet command does first, for every path it runs; plain PyTorch keeps glibc's
    # defaults (mirnet.device.keep_freed_memory).
    kept = runner != "plain" and keep_freed_memory()
    model, info = _load(model_name)
    automatic = tile == AUTOMATIC
    began = time.perf_counter()
    if runner == "aoti":
        from mirnet.export import cached_aoti, export_aoti

        package = cached_aoti(model, info["weights"], precision)
        if not package.is_file():  # the first process: compile ahead of time, once
            export_aoti(model.to(device), package, precision)
    enhancer = Enhancer(
        model,
        info,
        device=device,
        precision=precision,
        tile=None if automatic else tile,
        backend="onnxruntime" if runner == "onnxruntime" else "torch",
        # The default path finds a package that `mirnet export --format aoti` built (the aoti
        # rows build one); the others are pinned: eager, or compiled.
        compile=None if runner == "default" else runner in ("compile", "aoti"),
        channels_last=runner not in ("plain", "kept"),
        # On every path, as mirnet runs it: the quality model averages 8 copies of each photo.
        self_ensemble=info.get("self_ensemble", 1),
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

    if automatic:
        tile = enhancer.tile_for(*image.shape[-2:])  # what `mirnet enhance` chooses here, now
    if tile or automatic:
        # A large photo: warm up on one tile rather than pay a whole extra run.
        enhancer.enhance_tensor(image[..., :DEFAULT_TILE, :DEFAULT_TILE])
        warmup = 0.0
    else:
        once()
        warmup = time.perf_counter() - began  # loading (and compiling) plus the first photo
    times = [once() for _ in range(repeats)]
    np.save(out, once.result.numpy())
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_resident_mib()
    result = {"warmup_s": warmup, "seconds": float(np.median(times)), "times": times, "peak_mib": peak}
    result["memory_kept"] = kept
    result["precision"] = enhancer.precision if enhancer.backend == "torch" else "fp32"
    result["package"] = enhancer.package is not None
    result["tile_used"] = enhancer.last_tile  # what ran: a whole photo out of memory is tiled
    print(json.dumps(result))


def peak_resident_mib() -> float:
    """This process's peak resident memory. On Linux from /proc (VmHWM): ``ru_maxrss`` would
    start from the parent's peak at the moment it started this child."""
    from mirnet.device import process_memory

    peak = process_memory("VmHWM")
    if peak is not None:
        return peak / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


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


def merged(results: list[dict]) -> dict:
    """One path's child processes as one result: the median of their medians (``--rounds``).

    A failed round fails the path; rounds must agree on what they ran (package, precision,
    tile), or their times would not be of the same thing.
    """
    for round_, result in enumerate(results, 1):
        if "error" in result:
            return {**result, "error": f"round {round_}: {result['error']}"}
    kinds = {tuple(r.get(key) for key in ("package", "precision", "tile_used")) for r in results}
    if len(kinds) > 1:
        return {"error": f"rounds ran different things (package, precision, tile): {sorted(kinds)}"}
    result = dict(results[0])
    result["seconds"] = float(np.median([r["seconds"] for r in results]))
    result["times"] = [t for r in results for t in r["times"]]
    result["warmup_s"] = float(np.median([r["warmup_s"] for r in results]))
    result["peak_mib"] = max(r["peak_mib"] for r in results)
    if len(results) > 1:
        result["round_seconds"] = [r["seconds"] for r in results]
    return result


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


def gemm_rate(dtype: torch.dtype, device: str, size: int = 2048, repeats: int = 10) -> float:
    """The machine's achievable matrix-multiply rate in GMAC/s for ``dtype``: the median of
    ``repeats`` square products of ``size``, with this process's threads (as the children)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for _ in range(repeats + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return size**3 / float(np.median(times[2:])) / 1e9


def model_gmacs(model_name: str, height: int, width: int) -> float:
    """Multiply-accumulates (in billions) of the forward passes of one photo of this size (a
    self-ensemble's 8), counted by PyTorch's FLOP counter (convolutions and matrix products;
    2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, info = _load(model_name)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.rand(1, 3, height, width))
    return counter.get_total_flops() / 2 / 1e9 * info.get("self_ensemble", 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", help="default: every bundled model, then paper")
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--image", default=str(ROOT / "samples" / "coffee_dark.png"), help="a 600x400 photo")
    parser.add_argument("--repeats", type=int, default=3, help="photos timed per process (median)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each eager path's 600x400 process this many times, the paths in turn, and report "
        "the median: the spread between processes on a shared machine can be larger than a gain",
    )
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
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")

    from mirnet.tiling import DEFAULT_TILE
    from mirnet.weights import DEFAULT_MODEL, bundled_models

    models = args.models or [*sorted(bundled_models()), "paper"]
    paths = [p for p in args.paths if not (args.device.startswith("cuda") and p == "onnxruntime")]
    # The baseline first: every other row's speed-up and PSNR are against it.
    paths = [BASELINE] + [p for p in paths if p != BASELINE]
    image = Path(args.image)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = [(m, p, image, 0) for m in models for p in paths]
        if args.large:
            large = make_large_photo(args.large, image, tmp)
            # The default path only: what `mirnet enhance` does with a large photo.
            jobs.append((DEFAULT_MODEL, "default", large, AUTOMATIC))
            jobs.append((DEFAULT_MODEL, "default", large, DEFAULT_TILE))
        # The hardware limit, measured in this process, and each model's work per photo.
        limits = {
            "fp32": gemm_rate(torch.float32, args.device),
            "bf16": gemm_rate(torch.bfloat16, args.device),
        }
        print(f"... GEMM rate: {limits['fp32']:.0f} GMAC/s fp32, {limits['bf16']:.0f} bf16", file=sys.stderr)
        from PIL import Image

        width, height = Image.open(image).size
        gmacs = {m: model_gmacs(m, height, width) for m in models}
        references: dict[tuple[str, str], np.ndarray] = {}
        os.environ["MIRNET_CACHE"] = str(tmp / "cache")  # no package from an earlier run
        expanded = []
        exported = "aoti-bf16" in paths and "default" in paths
        for model, path, photo, tile in jobs:
            runs = ["first process", "second process"] if path.startswith("aoti") else [""]
            if exported and path == "default" and tile == 0:
                runs = ["no package"]
            expanded += [(model, path, photo, tile, run) for run in runs]
        if exported:
            # The default path again, on a machine where `mirnet export --format aoti` has run
            # (the aoti rows above built the package): what every later `mirnet enhance` gets.
            expanded += [(model, "default", image, 0, "package built") for model in models]
        outputs = {
            job: tmp / f"{index}-{job[0]}-{job[1]}-{job[2].stem}.npy" for index, job in enumerate(expanded)
        }
        results: dict[tuple, list[dict]] = {job: [] for job in expanded}
        # Rounds repeat the eager paths at 600x400 only, all of them before any compilation:
        # a compiled path's second process would find its caches warm, and the aoti rows build
        # the package that "default (no package)" must not find.
        repeated = [
            job
            for job in expanded
            if job[1] in REPEATABLE and job[2] == image and job[3] == 0 and job[4] != "package built"
        ]
        schedule = [(round_, job) for round_ in range(args.rounds) for job in repeated]
        schedule += [(0, job) for job in expanded if job not in repeated]
        for round_, job in schedule:
            model, path, photo, tile, run = job
            repeats = args.repeats if photo == image else 1
            round_note = (
                f" (round {round_ + 1} of {args.rounds})" if job in repeated and args.rounds > 1 else ""
            )
            print(f"... {model} {path} {run} {photo.name}{round_note}", file=sys.stderr, flush=True)
            results[job].append(run_child(model, path, photo, repeats, args.device, tile, outputs[job]))
        for job in expanded:
            model, path, photo, tile, run = job
            out = outputs[job]
            result = merged(results[job])
            row = {
                "model": model,
                "path": f"{path} ({run})" if run else path,
                "image": photo.name,
                "tile": "automatic" if tile == AUTOMATIC else tile,
            }
            row.update(result)
            if "error" not in result:
                output = np.load(out)
                key = (model, photo.name)
                if photo == image:
                    if path == BASELINE:
                        references[key] = output
                    row["psnr_vs_fp32"] = psnr_db(output, references[key]) if key in references else None
                else:
                    used = "whole" if result["tile_used"] == 0 else f"{result['tile_used']}-pixel tiles"
                    row["path"] = f"{path} ({'automatic: ' if tile == AUTOMATIC else ''}{used})"
                    if tile == AUTOMATIC and result["tile_used"] == 0:
                        references[key] = output  # the whole photo: what tiles are compared with
                    elif key in references:
                        row["psnr_vs_whole"] = psnr_db(output, references[key])
                height, width = output.shape[-2:]
                row["megapixels_per_s"] = height * width / 1e6 / result["seconds"]
                base = next(
                    (r for r in rows if (r["model"], r["image"], r["path"]) == (model, photo.name, BASELINE)),
                    None,
                )
                row["speedup"] = base["seconds"] / result["seconds"] if base and "seconds" in base else None
                if path == BASELINE:
                    row["speedup"] = 1.0
                if photo == image:
                    row["gmacs"] = gmacs[model]
                    # The share of the machine's matrix-multiply rate (in the path's precision)
                    # that the photo's MACs reach: how far the path is from the hardware.
                    row["limit_fraction"] = gmacs[model] / result["seconds"] / limits[result["precision"]]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    meta = {
        "gemm_gmac_per_s": limits,
        "gmacs_per_photo": gmacs,
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
        f"Measured GEMM rate: {meta['gemm_gmac_per_s']['fp32']:.0f} GMAC/s fp32, "
        f"{meta['gemm_gmac_per_s']['bf16']:.0f} GMAC/s bf16; GMAC per photo: "
        + ", ".join(f"{m} {g:.1f}" for m, g in meta["gmacs_per_photo"].items()),
        "",
        "| model | path | photo | s / photo | MP/s | speed-up vs plain fp32 | PSNR vs plain fp32 (dB) "
        "| share of GEMM limit | peak MiB | warm-up s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['path']} | {r['image']} | failed: {r['error'][:60]} | | | | | | |"
            )
            continue
        quality = "reference" if r["path"] == BASELINE else _number(r.get("psnr_vs_fp32"), ".1f")
        if "psnr_vs_whole" in r:
            quality = f"{r['psnr_vs_whole']:.1f} vs whole"
        speedup = _number(r["speedup"], ".2f", "x")
        lines.append(
            f"| {r['model']} | {r['path']} | {r['image']} | {r['seconds']:.3f} "
            f"| {r['megapixels_per_s']:.2f} | {speedup} | {quality} "
            f"| {_number(r.get('limit_fraction'), '.0%')} ({r['precision']}) "
            f"| {r['peak_mib']:.0f} | {r['warmup_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
