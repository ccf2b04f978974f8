"""Peak memory of enhancing a whole photo, against the estimate that decides when to tile.

    python benchmarks/memory.py                                  # tiny, small, paper; 0.25 and 1 MP
    python benchmarks/memory.py --models tiny --megapixels 12 --precisions bf16

Each (model, precision, size) runs in a fresh child process, as ``mirnet enhance`` runs (freed
memory kept for reuse), on a random photo with the eager model: its peak resident memory (VmHWM,
Linux) after a small warm-up photo, minus the peak before it, is the photo's cost. That is set
against :func:`mirnet.tiling.whole_photo_bytes`, which must stay above it: ``mirnet enhance``
enhances a photo whole only when that estimate fits in the available memory
(:func:`mirnet.tiling.automatic_tile`). ``paper`` and ``small`` ship no weights and are timed with
seeded random ones: memory does not depend on their values. Prints a Markdown table and writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(model_name: str, precision: str, height: int, width: int) -> None:
    """Print (peak increase in bytes, estimate in bytes, precision used) for one whole photo."""
    import torch

    import mirnet
    from mirnet.device import keep_freed_memory, process_memory
    from mirnet.inference import Enhancer
    from mirnet.tiling import whole_photo_bytes
    from mirnet.weights import bundled_models

    keep_freed_memory()
    if model_name in bundled_models():
        enhancer = mirnet.load_model(model_name, device="cpu", precision=precision, tile=0, compile=False)
    else:
        torch.manual_seed(0)
        model = mirnet.build_model(model_name)
        info = {"name": model_name}
        enhancer = Enhancer(model, info, device="cpu", precision=precision, tile=0, compile=False)
    enhancer.enhance_tensor(torch.rand(3, 64, 64))
    before = process_memory("VmHWM")
    enhancer.enhance_tensor(torch.rand(3, height, width))
    features = enhancer.model.conv_in.out_channels
    estimate = whole_photo_bytes(features, height, width, enhancer.precision)
    measured = process_memory("VmHWM") - before
    print(json.dumps({"measured": measured, "estimate": estimate, "precision": enhancer.precision}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "small", "paper"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--megapixels", nargs="+", type=float, default=[0.25, 1.0])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "memory-cpu.json")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, precision, height, width = args.child
        child(model, precision, int(height), int(width))
        return
    if not os.path.exists("/proc/self/status"):
        sys.exit("needs Linux's /proc for peak memory")

    rows = []
    for model in args.models:
        for precision in args.precisions:
            for megapixels in args.megapixels:
                width = int((megapixels * 1e6 * 1.5) ** 0.5)  # 3:2, as cameras take them
                height = int(width / 1.5)
                command = [sys.executable, __file__, "--child", model, precision, str(height), str(width)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    failure = done.stderr.strip()[-200:]
                    print(f"{model} {precision} {megapixels} MP failed: {failure}", file=sys.stderr)
                    continue
                row = {"model": model, "size": f"{width}x{height}", "megapixels": width * height / 1e6}
                row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)

    lines = [
        "| model | precision | photo | measured peak (MiB) | bytes / pixel | estimate (MiB) "
        "| estimate / measured |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['size']} | {r['measured'] / 2**20:.0f} "
            f"| {r['measured'] / (r['megapixels'] * 1e6):.0f} | {r['estimate'] / 2**20:.0f} "
            f"| {r['estimate'] / r['measured']:.2f} |"
        )
    print("\n".join(lines))
    meta = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
