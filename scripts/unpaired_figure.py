"""A picture of real dark photos with no ground truth: input | gamma | CLAHE | MIRNet.

    python scripts/unpaired_figure.py PHOTO... --out docs/unpaired.png [--model tiny [OTHER.safetensors ...]]

The README's picture of DICM, LIME and LoL evaluation photos comes from this script (the
command is in the README). Photos are enhanced whole, as ``mirnet enhance`` would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

import mirnet
from mirnet.classical import clahe, gamma_to_mean
from mirnet.evaluate import comparison_figure
from mirnet.io import read_image


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="picture to write (.png or .jpg)")
    parser.add_argument(
        "--model",
        nargs="+",
        default=[None],
        help="bundled model names or weights files, one column each (default: the default model)",
    )
    parser.add_argument("--width", type=int, default=300, help="width of each picture in the grid")
    parser.add_argument(
        "--with-ground-truth",
        action="store_true",
        help="the photos are the low images of pairs: show the high image of the same name (in the "
        "sibling high/ folder) last",
    )
    args = parser.parse_args()

    enhancers = {}
    for choice in args.model:
        enhancer = mirnet.load_model(choice)
        label = f"MIRNet {enhancer.info['name']}"
        if choice is not None and Path(choice).suffix:  # a weights file: named by its run folder
            label = Path(choice).parent.name
        enhancers[label] = enhancer
    rows = {}
    for photo in tqdm(args.photos, unit="photo"):
        dark = read_image(photo)
        name = f"{photo.parent.name}/{photo.name}"
        name = name if len(name) <= 20 else photo.name  # the label must fit above the picture
        rows[name] = {
            "input": dark,
            "gamma": gamma_to_mean(dark),
            "CLAHE": clahe(dark),
            **{label: enhancer(dark) for label, enhancer in enhancers.items()},
        }
        if args.with_ground_truth:
            rows[name]["ground truth"] = read_image(photo.parent.parent / "high" / photo.name)
    print(comparison_figure(rows, args.out, tile_width=args.width))


if __name__ == "__main__":
    main()
