"""How far tiled inference departs from whole-photo inference, in PSNR.

    python benchmarks/tiling.py --photos PHOTO... [--tile 256] [--overlaps 0 32 64]
    python benchmarks/tiling.py --photos PHOTO... --upscale 4 --tile 1024   # large photos

Each photo is enhanced whole (the reference) and in tiles of ``--tile`` pixels with each
overlap, with and without the photo-wide attention statistics that
:class:`mirnet.tiling.GlobalContext` gives every tile. ``--upscale MP`` first resizes each
photo to about MP megapixels (a stand-in for a large camera photo). Prints a Markdown table
(mean and worst PSNR per setting) and writes JSON beside the speed results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import mirnet
from mirnet.inference import Enhancer
from mirnet.io import array_to_tensor, read_image
from mirnet.metrics import psnr
from mirnet.tiling import enhance_tiled

ROOT = Path(__file__).resolve().parents[1]


def load(photo: Path, megapixels: float) -> torch.Tensor:
    if not megapixels:
        return read_image(photo)
    picture = Image.open(photo).convert("RGB")
    scale = (megapixels * 1e6 / (picture.width * picture.height)) ** 0.5
    size = (round(picture.width * scale), round(picture.height * scale))
    picture = picture.resize(size, Image.Resampling.BICUBIC)
    return array_to_tensor(np.asarray(picture))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", nargs="+", type=Path, required=True)
    parser.add_argument("--model", default=None, help="bundled model (default: the default model)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlaps", nargs="+", type=int, default=[0, 32, 64])
    parser.add_argument("--upscale", type=float, default=0, metavar="MP")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    # One pass per photo, whatever the model's file asks for: this measures tiling alone.
    enhancer: Enhancer = mirnet.load_model(args.model, device="cpu", tile=0, self_ensemble=1)
    # What mirnet enhance runs on a large photo: tiles with the photo-wide statistics.
    tiled_enhancers = {
        overlap: Enhancer(enhancer.model, enhancer.info, device="cpu", tile=args.tile, overlap=overlap)
        for overlap in args.overlaps
    }
    results: dict[str, list[float]] = {}
    with torch.inference_mode():
        for photo in tqdm(args.photos, unit="photo"):
            image = load(photo, args.upscale)
            whole = enhancer.enhance_tensor(image)
            for overlap, tiled_enhancer in tiled_enhancers.items():
                alone = enhance_tiled(enhancer._forward, image[None], args.tile, overlap)[0]
                results.setdefault(f"overlap {overlap}, tiles alone", []).append(psnr(alone, whole))
                tiled = tiled_enhancer.enhance_tensor(image)
                results.setdefault(f"overlap {overlap}, global context", []).append(psnr(tiled, whole))
    size = f"about {args.upscale:g} MP" if args.upscale else "as they are"
    print(f"\n{len(args.photos)} photos ({size}), tile {args.tile}, model {enhancer.info['name']}\n")
    print("| setting | mean PSNR tiled vs whole (dB) | worst (dB) |\n|---|---:|---:|")
    for key, values in results.items():
        print(f"| {key} | {sum(values) / len(values):.2f} | {min(values):.2f} |")
    out = (
        args.json
        or ROOT / "benchmarks" / "results" / f"tiling-{args.tile}{'-large' if args.upscale else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python " + " ".join(["benchmarks/tiling.py", *sys.argv[1:]]),
        "photos": len(args.photos),
    }
    out.write_text(json.dumps({"meta": meta, "psnr": results}, indent=1))


if __name__ == "__main__":
    main()
