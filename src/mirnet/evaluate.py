"""Scoring methods on test sets: ``mirnet evaluate``.

Every method (the models, the classical baselines) is a function from a (3, H, W) image in
[0, 1] to an image of the same shape. Each is scored with PSNR and SSIM, plain and
GT-mean, on whole images; the results go to ``results.md`` (means), ``per_image.csv`` and
``results.json``, and a comparison figure shows chosen images side by side.

A test set (:class:`TestSet`) is one of:

* ``paired``: a folder of (low, high) pairs, any layout :func:`mirnet.data.find_pairs` reads;
* ``well-exposed``: good photos as their own targets ("do no harm": the output should be
  nearly the input);
* ``darkened``: clean photos darkened as a camera would (:func:`mirnet.data.synthetic.darken`,
  one fixed seed per photo), with the clean photo as target.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from mirnet.classical import identity
from mirnet.data import ImagePair, load_pair, sample_seed
from mirnet.data.mixture import clean_photos
from mirnet.data.patches import to_uint8
from mirnet.data.synthetic import darken
from mirnet.io import atomic_path, read_image, to_uint
from mirnet.metrics import psnr_per_image, ssim_per_image

Method = Callable[[torch.Tensor], torch.Tensor]
METRICS = ("psnr", "ssim", "psnr_gt_mean", "ssim_gt_mean")


# An output identical to its target has an infinite PSNR, which would make any mean over a
# set infinite (well-exposed photos returned unchanged do this). Per-image PSNR is capped here,
# a little above the 58.9 dB of 8-bit rounding noise: below that, no difference is visible.
PSNR_CAP = 60.0


def score(output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR (capped at :data:`PSNR_CAP`) and SSIM of one (3, H, W) output, plain and GT-mean."""
    out, gt = output.clamp(0, 1)[None], target[None]
    return {
        "psnr": min(float(psnr_per_image(out, gt)[0]), PSNR_CAP),
        "ssim": float(ssim_per_image(out, gt)[0]),
        "psnr_gt_mean": min(float(psnr_per_image(out, gt, gt_mean=True)[0]), PSNR_CAP),
        "ssim_gt_mean": float(ssim_per_image(out, gt, gt_mean=True)[0]),
    }


@dataclass
class TestItem:
    """One test image: its name and how to load (input, target)."""

    name: str
    load: Callable[[], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TestSet:
    name: str
    kind: str  # paired, well-exposed or darkened (see the module docstring)
    items: list[TestItem]
    source: str  # the folder(s), for the reports


def paired_set(name: str, pairs: list[ImagePair], source: str) -> TestSet:
    """A test set of real (low, high) pairs."""
    return TestSet(name, "paired", [TestItem(p.name, lambda p=p: load_pair(p)) for p in pairs], source)


def _photos(folders: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(name, path) of every photo under ``folders``; names carry the folder when there are several."""
    names = [Path(folder).name for folder in folders]
    if len(set(names)) < len(names):  # real_pairs/test/high and lol/eval15/high: say test/high, eval15/high
        names = ["/".join(Path(folder).resolve().parts[-2:]) for folder in folders]
    found = []
    for name, folder in zip(names, folders, strict=True):
        for path in clean_photos(folder):
            found.append((f"{name}/{path.stem}" if len(folders) > 1 else path.stem, path))
    return found


def well_exposed_set(name: str, folders: list[str | os.PathLike]) -> TestSet:
    """Well-exposed photos as their own targets: a model that does no harm returns them nearly unchanged."""

    def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(path)
        return image, image

    items = [TestItem(n, lambda p=p: load(p)) for n, p in _photos(folders)]
    return TestSet(name, "well-exposed", items, ", ".join(map(str, folders)))


def darkened_set(name: str, folders: list[str | os.PathLike], seed: int = 0) -> TestSet:
    """Clean photos darkened as a camera would (``dark`` mode, a fixed seed per photo), with
    the clean photo as target: a repeatable test on photos of any kind."""

    def load(index: int, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        clean = read_image(path)
        rng = np.random.default_rng(sample_seed(seed, -2, index))
        return darken(to_uint8(clean), rng, mode="dark").float() / 255, clean

    items = [TestItem(n, lambda i=i, p=p: load(i, p)) for i, (n, p) in enumerate(_photos(folders))]
    return TestSet(name, "darkened", items, ", ".join(map(str, folders)))


def evaluate_methods(
    items: list[TestItem],
    methods: dict[str, Method],
    keep: set[str] | None = None,
    progress: bool = True,
    desc: str = "evaluating",
) -> tuple[list[dict[str, Any]], dict[str, dict[str, torch.Tensor]]]:
    """Run and score every method on every test image.

    Returns (rows, kept): one row per (image, method) with its scores, and the outputs of
    the images named in ``keep`` (for figures), with their input and ground truth.
    """
    rows: list[dict[str, Any]] = []
    kept: dict[str, dict[str, torch.Tensor]] = {}
    for item in tqdm(items, desc=desc, unit="img", disable=not progress):
        low, high = item.load()
        if keep and item.name in keep:
            kept[item.name] = {"input": low, "ground truth": high}
        for name, method in methods.items():
            output = method(low).float().clamp(0, 1)
            rows.append({"image": item.name, "method": name, **score(output, high)})
            if item.name in kept and method is not identity:  # the input is shown already
                kept[item.name][name] = output
    return rows, kept


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of each metric per method, in the order methods first appear."""
    summary: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {m: float(np.mean([r[m] for r in mine])) for m in METRICS}
        summary[method]["images"] = len(mine)
    return summary


def markdown_table(summary: dict[str, dict[str, float]], title: str | None = None) -> str:
    """The means as a Markdown table."""
    lines = [f"**{title}**", ""] if title else []
    lines += [
        "| method | PSNR (dB) | SSIM | PSNR GT-mean | SSIM GT-mean |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, m in summary.items():
        scores = f"{m['psnr']:.2f} | {m['ssim']:.3f} | {m['psnr_gt_mean']:.2f} | {m['ssim_gt_mean']:.3f}"
        lines.append(f"| {method} | {scores} |")
    return "\n".join(lines) + "\n"


def write_reports(
    rows: list[dict[str, Any]], out_dir: str | os.PathLike, meta: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Write results.md, per_image.csv and results.json into ``out_dir``; return the means."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    title = (
        f"{meta.get('data', '')} ({meta.get('split', '')}, {summary[next(iter(summary))]['images']} images)"
    )
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(markdown_table(summary, title))
    with atomic_path(out_dir / "per_image.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "method", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps({"meta": meta, "mean": summary, "per_image": rows}, indent=1))
    return summary


def comparison_figure(
    kept: dict[str, dict[str, torch.Tensor]], path: str | os.PathLike, tile_width: int = 300
) -> Path:
    """One row per image: input | each method | ground truth (if given), labelled; written as
    JPEG if ``path`` ends in .jpg/.jpeg (smaller, for documentation), else PNG."""
    font = ImageFont.load_default(size=16)
    label_height = 24
    rows = []
    for name, images in kept.items():
        order = ["input", *[k for k in images if k not in ("input", "ground truth")]]
        order += ["ground truth"] if "ground truth" in images else []
        tiles = []
        for label in order:
            picture = Image.fromarray(to_uint(images[label]))
            height = round(picture.height * tile_width / picture.width)
            picture = picture.resize((tile_width, height), Image.Resampling.LANCZOS)
            canvas = Image.new("RGB", (tile_width, height + label_height), "white")
            canvas.paste(picture, (0, label_height))
            ImageDraw.Draw(canvas).text(
                (4, 3), f"{label} ({name})" if label == "input" else label, fill="black", font=font
            )
            tiles.append(canvas)
        row = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        x = 0
        for tile in tiles:
            row.paste(tile, (x, 0))
            x += tile.width
        rows.append(row)
    figure = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        figure.paste(row, (0, y))
        y += row.height
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            figure.save(tmp, format="JPEG", quality=88)
        else:
            figure.save(tmp, format="PNG")
    return path
