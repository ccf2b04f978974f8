"""Pack random crops of a config's training data for a machine that cannot hold the data.

    python scripts/pack_crops.py configs/general_tiny_wide.yaml device/data \
        --crop 256 --budget-mib 40

writes losslessly compressed crops of every source's training images (the config's held-out
validation stays here, unseen) into OUT, with OUT/config.yaml, which trains on them, and
OUT/pack.json, which lists every crop (see ``mirnet.training.pack``). Then, on that machine:
``mirnet train --config OUT/config.yaml --out RUN``. Put OUT in a folder that git ignores
(``.git/info/exclude``) and name it in the device tool's ``carry``.
"""

from __future__ import annotations

import argparse
import sys

from mirnet.training.config import ConfigError, load_config
from mirnet.training.pack import PackError, pack_crops


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="an experiment config with data.sources")
    parser.add_argument("out", help="a new folder for the crops, config.yaml and pack.json")
    parser.add_argument(
        "--crop", type=int, nargs="+", default=[256], metavar="SIDE",
        help="crop side, or height width (at least the config's patch; default 256)",
    )  # fmt: skip
    parser.add_argument(
        "--budget-mib", type=float, default=40.0, help="size of the packed images (default 40)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if len(args.crop) > 2:
        parser.error("--crop takes one side or a height and a width")
    crop = args.crop[0] if len(args.crop) == 1 else args.crop
    try:
        record = pack_crops(
            load_config(args.config), args.out, crop, args.budget_mib, args.seed, not args.quiet
        )
    except (ConfigError, PackError, ValueError) as err:
        sys.exit(f"error: {err}")
    counts = ", ".join(f"{name} {count}" for name, count in record["crops_per_source"].items())
    print(f"packed {len(record['crops'])} crops ({record['bytes'] / 2**20:.1f} MiB): {counts}")
    print(f"train on them with: mirnet train --config {args.out}/config.yaml --out RUN")


if __name__ == "__main__":
    main()
