"""A picture of synthetic dark photos next to real ones, to judge the synthetic darkening by eye.

    python scripts/synthetic_figure.py --out docs/synthetic_vs_real.jpg [--clean PHOTO...] [--real PHOTO...]

Each of the top rows is a clean photo followed by its darkened versions from
``mirnet.data.synthetic.darken``: "dark" mode with two seeds and "gentle" mode with one. The
bottom row is real dark photos (LoL and real_pairs low images by default). Every dark picture
is captioned with its mean brightness (the mean over pixels of the [0, 1] image).

It also prints the mean brightness of many synthetic dark samples ("dark" mode, one seed per
sample, on 256x256 center crops of the clean pool) and of every real dark photo in the given
folders, as median and 10th/90th percentiles, so that their ranges can be compared. The
README's numbers and picture come from this script with its defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from mirnet.data.patches import to_uint8
from mirnet.data.synthetic import darken
from mirnet.io import atomic_path, is_image_path, read_image

DATA = Path("../shared/data")
CLEAN = DATA / "clean/bsds500/test"
LOL_LOW = DATA / "lol/eval15/low"
REAL_PAIRS_LOW = DATA / "real_pairs/test/low"
# (mode, seed) of the darkened versions shown beside each clean photo
VERSIONS = [("dark", 0), ("dark", 1), ("gentle", 0)]


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_path(p))


def default_real() -> list[Path]:
    """Two LoL eval15 low images (1.png and 779.png, or the first others there) and the first
    two real_pairs test low images."""
    lol = [LOL_LOW / name for name in ("1.png", "779.png")]
    lol = [p for p in lol if p.exists()]
    lol += [p for p in image_files(LOL_LOW) if p not in lol][: 2 - len(lol)]
    return lol + image_files(REAL_PAIRS_LOW)[:2]


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[..., top : top + size, left : left + size]


def brightness(image: torch.Tensor) -> float:
    """Mean over pixels of a [0, 1] float or uint8 image, on the [0, 1] scale."""
    return float(image.float().mean()) / (255.0 if image.dtype == torch.uint8 else 1.0)


def summary(name: str, values: list[float]) -> str:
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return f"{name:<44} n={len(values):>3}  median {median:.3f}  p10 {p10:.3f}  p90 {p90:.3f}"


def tile(image: torch.Tensor, caption: str, width: int, font: ImageFont.ImageFont) -> Image.Image:
    """The picture fitted into a width x (2/3 width) box, on white, with a caption above."""
    label_height = 24
    box_height = round(width * 2 / 3)
    array = image if image.dtype == torch.uint8 else to_uint8(image.clamp(0, 1))
    picture = Image.fromarray(array.permute(1, 2, 0).numpy())
    scale = min(width / picture.width, box_height / picture.height)
    size = (round(picture.width * scale), round(picture.height * scale))
    picture = picture.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, box_height + label_height), "white")
    canvas.paste(picture, ((width - size[0]) // 2, label_height + (box_height - size[1]) // 2))
    ImageDraw.Draw(canvas).text((4, 3), caption, fill="black", font=font)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="picture to write (.jpg or .png)")
    parser.add_argument(
        "--clean", nargs="+", type=Path, default=None, help=f"clean photos (default: first 4 of {CLEAN})"
    )
    parser.add_argument(
        "--real",
        nargs="+",
        type=Path,
        default=None,
        help="real dark photos (default: 2 LoL eval15 and 2 real_pairs test low images)",
    )
    parser.add_argument("--width", type=int, default=400, help="width of each picture in the grid")
    parser.add_argument("--samples", type=int, default=200, help="synthetic dark samples in the summary")
    parser.add_argument("--crop", type=int, default=256, help="center crop of the summary's samples")
    parser.add_argument(
        "--pool", type=Path, default=CLEAN, help="folder of clean photos the summary's samples come from"
    )
    parser.add_argument(
        "--real-folders",
        nargs="+",
        type=Path,
        default=[LOL_LOW, REAL_PAIRS_LOW],
        help="folders of real dark photos for the summary",
    )
    args = parser.parse_args()

    clean = args.clean or image_files(CLEAN)[:4]
    real = args.real or default_real()
    font = ImageFont.load_default(size=16)

    rows = []
    for photo in tqdm(clean, unit="photo", desc="figure"):
        image = read_image(photo)
        tiles = [tile(image, f"clean {photo.name} (mean {brightness(image):.3f})", args.width, font)]
        for mode, seed in VERSIONS:
            dark = darken(to_uint8(image), np.random.default_rng(seed), mode=mode)
            caption = f"{mode}, seed {seed}: mean {brightness(dark):.3f}"
            tiles.append(tile(dark, caption, args.width, font))
        rows.append(tiles)
    real_tiles = []
    for photo in real:
        image = read_image(photo)
        source = "/".join(photo.parts[-4:])  # e.g. lol/eval15/low/1.png
        real_tiles.append(tile(image, f"real {source}: mean {brightness(image):.3f}", args.width, font))
    rows.append(real_tiles)

    columns = max(len(r) for r in rows)
    tile_w, tile_h = rows[0][0].size
    gap = 12  # white space above the real row, to set it apart
    figure = Image.new("RGB", (columns * tile_w, len(rows) * tile_h + gap), "white")
    for i, row in enumerate(rows):
        y = i * tile_h + (gap if i == len(rows) - 1 else 0)
        for j, picture in enumerate(row):
            figure.paste(picture, (j * tile_w, y))
    with atomic_path(args.out) as tmp:
        if args.out.suffix.lower() in (".jpg", ".jpeg"):
            figure.save(tmp, format="JPEG", quality=85)
        else:
            figure.save(tmp, format="PNG")
    print(f"wrote {args.out} ({figure.width}x{figure.height}, {args.out.stat().st_size / 1024:.0f} KiB)")

    pool = image_files(args.pool)
    synthetic = []
    for seed in tqdm(range(args.samples), unit="sample", desc="synthetic"):
        image = center_crop(to_uint8(read_image(pool[seed % len(pool)])), args.crop)
        synthetic.append(brightness(darken(image, np.random.default_rng(seed), mode="dark")))
    print("mean brightness of dark photos (mean over pixels of the [0, 1] image):")
    print(summary(f"synthetic dark ({'/'.join(args.pool.parts[-2:])}, {args.crop}px)", synthetic))
    for folder in args.real_folders:
        values = [brightness(read_image(p)) for p in image_files(folder)]
        print(summary("/".join(folder.parts[-3:]), values))


if __name__ == "__main__":
    main()
