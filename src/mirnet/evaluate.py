"""Scoring methods on paired test images: ``mirnet evaluate``.

Every method (the model, the classical baselines) is a function from a (3, H, W) image in
[0, 1] to an image of the same shape. Each is scored with PSNR and SSIM, plain and
GT-mean, on whole images; the results go to ``results.md`` (means), ``per_image.csv`` and
``results.json``, and a comparison figure shows chosen images side by side.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from mirnet.classical import identity
from mirnet.data import ImagePair, load_pair
from mirnet.io import atomic_path, to_uint
from mirnet.metrics import psnr_per_image, ssim_per_image

Method = Callable[[torch.Tensor], torch.Tensor]
METRICS = ("psnr", "ssim", "psnr_gt_mean", "ssim_gt_mean")


def score(output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM of one (3, H, W) output, plain and GT-mean."""
    out, gt = output.clamp(0, 1)[None], target[None]
    return {
        "psnr": float(psnr_per_image(out, gt)[0]),
        "ssim": float(ssim_per_image(out, gt)[0]),
        "psnr_gt_mean": float(psnr_per_image(out, gt, gt_mean=True)[0]),
        "ssim_gt_mean": float(ssim_per_image(out, gt, gt_mean=True)[0]),
    }


def evaluate_methods(
    pairs: list[ImagePair],
    methods: dict[str, Method],
    keep: set[str] | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, torch.Tensor]]]:
    """Run and score every method on every pair.

    Returns (rows, kept): one row per (image, method) with its scores, and the outputs of
    the images named in ``keep`` (for figures), with their input and ground truth.
    """
    rows: list[dict[str, Any]] = []
    kept: dict[str, dict[str, torch.Tensor]] = {}
    for pair in tqdm(pairs, desc="evaluating", unit="img", disable=not progress):
        low, high = load_pair(pair)
        if keep and pair.name in keep:
            kept[pair.name] = {"input": low, "ground truth": high}
        for name, method in methods.items():
            output = method(low).float().clamp(0, 1)
            rows.append({"image": pair.name, "method": name, **score(output, high)})
            if pair.name in kept and method is not identity:  # the input is shown already
                kept[pair.name][name] = output
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
        f"{meta.get('data', '')} ({meta.get('split', '')}, {summary[next(iter(summary))]['images']} pairs)"
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
