"""How far bf16 inference lands from fp32 on real photos: PSNR of the bf16 output against the
fp32 output of the same model, per photo, on paired test sets' dark photos.

    python benchmarks/bf16_fidelity.py --data lol=../data/LOL real_pairs=../shared/data/real_pairs

bf16 is used by default only where the outputs stay at least 45 dB from fp32 on real photos
(issue 18); this script is how that is checked. Writes JSON (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from mirnet.data import find_pairs
    from mirnet.inference import load_model
    from mirnet.io import read_image
    from mirnet.metrics import psnr

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, metavar="NAME=ROOT", help="paired test sets")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bf16-fidelity-cpu.json"))
    args = parser.parse_args()

    fp32 = load_model(args.model, device="cpu", precision="fp32")
    bf16 = load_model(args.model, device="cpu", precision="bf16")
    report = {"model": args.model, "torch": torch.__version__, "threads": torch.get_num_threads(), "sets": {}}
    for given in args.data:
        name, _, root = given.rpartition("=")
        rows, seconds = [], {"fp32": 0.0, "bf16": 0.0}
        for pair in find_pairs(root, "test"):
            image = read_image(pair.low)
            start = time.perf_counter()
            reference = fp32.enhance_tensor(image)
            seconds["fp32"] += time.perf_counter() - start
            start = time.perf_counter()
            fast = bf16.enhance_tensor(image)
            seconds["bf16"] += time.perf_counter() - start
            rows.append({"image": pair.low.name, "psnr_vs_fp32": float(psnr(fast, reference))})
        values = np.array([r["psnr_vs_fp32"] for r in rows])
        report["sets"][name] = {
            "photos": len(rows),
            "min_db": float(values.min()),
            "median_db": float(np.median(values)),
            "speedup_bf16": seconds["fp32"] / seconds["bf16"],
            "rows": rows,
        }
        print(
            f"{name}: {len(rows)} photos, bf16 vs fp32 min {values.min():.2f} dB, median "
            f"{np.median(values):.2f} dB; bf16 {seconds['fp32'] / seconds['bf16']:.2f}x faster"
        )
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
