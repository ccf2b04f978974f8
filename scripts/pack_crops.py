"""Pack random crops of a config's training data for a machine that cannot hold the data.

    python scripts/pack_crops.py configs/paper_mix.yaml device/data --crop 320 --budget-mib 20
    python scripts/pack_crops.py configs/general_tiny_wide.yaml device/data --crop 320x480

writes losslessly compressed crops of every source's training images (the config's held-out
validation stays here, unseen) into the new folder OUT, with OUT/config.yaml, which trains on
them, and OUT/pack.json, which lists every crop (see ``mirnet.training.pack``). Run it from
the repository root with OUT inside it (``device/`` is git-ignored): the packed config names
its folders relative to the directory it was written from. Then, on that machine, from the
repository root: ``mirnet train --config OUT/config.yaml --out RUN``. For the device tool, name
OUT in ``carry``; everything that travels, the checkout included, must fit in 64 MiB.
"""

from __future__ import annotations

import argparse
import re
import sys

from mirnet.training.config import load_config
from mirnet.training.pack import pack_crops


def crop_size(text: str) -> int | list[int]:
    """``320`` (a square) or ``320x480`` (height x width)."""
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected SIDE or HEIGHTxWIDTH, e.g. 320 or 320x480, not {text!r}")
    height, width = match.groups()
    return int(height) if width is None else [int(height), int(width)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="an experiment config with data.sources")
    parser.add_argument("out", help="a new (or empty) folder for the crops, config.yaml and pack.json")
    parser.add_argument(
        "--crop", type=crop_size, default=256, metavar="SIDE|HxW",
        help="crop size, at least the config's patch and at most its smallest image (default 256)",
    )  # fmt: skip
    parser.add_argument(
        "--budget-mib", type=float, default=20.0,
        help="what the packed images may take, in MiB (default 20; the configs and pack.json add a few KiB)",
    )  # fmt: skip
    parser.add_argument("--max-per-image", type=int, default=4, help="crops of one image at most (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    try:
        config = load_config(args.config)
        record = pack_crops(
            config, args.out, args.crop, args.budget_mib, args.seed, args.max_per_image, not args.quiet
        )
    except (ValueError, OSError) as err:  # ConfigError, PackError: one line each
        sys.exit(f"error: {err}")
    counts = ", ".join(f"{name} {count}" for name, count in record["crops_per_source"].items())
    print(f"packed {len(record['crops'])} crops ({record['bytes'] / 2**20:.1f} MiB): {counts}")
    print(f"train on them with: mirnet train --config {args.out}/config.yaml --out RUN")


if __name__ == "__main__":
    main()
