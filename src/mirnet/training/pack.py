"""Random crops of a config's training data, packed into a size budget for another machine.

A lent GPU machine gets only what travels with the checkout (64 MiB here), far less than the
data: LoL-v1's our485 alone is about 300 MiB. :func:`pack_crops` loads the training images
of every source of ``data.sources`` exactly as ``mirnet train`` would (the same held-out
validation stays behind, unseen), cuts random crops from them, and writes them, losslessly
compressed, until the budget is spent, with a config that trains on them:

* paired sources: ``OUT/NAME/train/low/*.webp`` and ``OUT/NAME/train/high/*.webp``;
* synthetic and identity sources: the clean crops, ``OUT/NAME/*.webp`` (the darkening is
  drawn at training time, as here);
* ``OUT/config.yaml``: the config with each source's root moved to its packed folder and no
  validation hold-out (``validation: 0``), since what was held out stayed behind; checkpoints
  are chosen back here, on that validation;
* ``OUT/pack.json``: every crop's source image and box, and the budget.

Crops are drawn source after source in proportion to the sources' sampling weights, each
from the next image of a seeded shuffle of its source, so every image gives one crop before
any gives two. Lossless WebP keeps the dark inputs' noise exactly.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from tqdm import tqdm

from mirnet.data.mixture import Source
from mirnet.data.patches import PatchSize, describe, patch_shape
from mirnet.io import atomic_path
from mirnet.training.config import ExperimentConfig
from mirnet.training.datasets import mixed_sources


class PackError(ValueError):
    """The config or the budget cannot give a packed training set."""


@dataclass
class Crop:
    """One packed crop: which source image it came from, and where."""

    source: str
    image: str
    top: int
    left: int
    files: list[str]
    bytes: int


def encode_webp(image: torch.Tensor) -> bytes:
    """A uint8 (3, H, W) image as lossless WebP bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="WEBP", lossless=True, quality=80)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _next_source(counts: list[int], weights: list[float]) -> int:
    """The source furthest below its weighted share: crops follow the sampling weights."""
    return min(range(len(counts)), key=lambda i: ((counts[i] + 1) / weights[i], i))


def pack_crops(
    config: ExperimentConfig,
    out: str | Path,
    crop_size: PatchSize,
    budget_mib: float,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Pack random ``crop_size`` crops of ``config``'s training sources into ``out``.

    Stops before the crop that would take the packed images past ``budget_mib``. Returns
    what ``pack.json`` records. ``crop_size`` must hold the config's training patch.

    Raises:
        PackError: the config has no ``data.sources``, a crop is smaller than its patch, an
            image is smaller than a crop, or ``out`` already holds a pack.
    """
    if not config.data.sources:
        raise PackError("the config names no data.sources to pack")
    crop_h, crop_w = patch_shape(crop_size)
    patch_h, patch_w = patch_shape(config.data.patch_size)
    if crop_h < patch_h or crop_w < patch_w:
        patch = describe(config.data.patch_size)
        raise PackError(f"crops of {describe(crop_size)} cannot hold the config's {patch} patches")
    out = Path(out)
    if (out / "pack.json").exists() or (out / "config.yaml").exists():
        raise PackError(f"{out}: already holds a pack; choose another folder")
    budget = int(budget_mib * 2**20)
    data = mixed_sources(replace(config, data=replace(config.data, patch_size=[crop_h, crop_w])), progress)
    sources: list[Source] = data.dataset.sources
    rng = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(source.images), generator=rng).tolist() for source in sources]
    weights = [spec.weight for spec in config.data.sources]
    counts = [0] * len(sources)
    crops: list[Crop] = []
    used = 0
    bar = tqdm(total=budget, unit="B", unit_scale=True, desc="packing", disable=not progress)
    while True:
        index = _next_source(counts, weights)
        source = sources[index]
        k = counts[index]
        image_index = orders[index][k % len(orders[index])]
        low, high = source.images[image_index]
        top = int(torch.randint(0, low.shape[1] - crop_h + 1, (1,), generator=rng))
        left = int(torch.randint(0, low.shape[2] - crop_w + 1, (1,), generator=rng))
        window = (slice(None), slice(top, top + crop_h), slice(left, left + crop_w))
        name = f"{source.train_names[image_index]}_{k:05d}.webp"
        if source.kind == "paired":
            encoded = {
                f"train/low/{name}": encode_webp(low[window]),
                f"train/high/{name}": encode_webp(high[window]),
            }
        else:
            encoded = {name: encode_webp(high[window])}
        size = sum(len(blob) for blob in encoded.values())
        if used + size > budget:
            break
        for relative, blob in encoded.items():
            _write(out / source.name / relative, blob)
        crops.append(Crop(source.name, source.train_names[image_index], top, left, list(encoded), size))
        counts[index] += 1
        used += size
        bar.update(size)
    bar.close()
    if not crops:
        raise PackError(f"not one crop fits in {budget_mib} MiB")
    packed = config.to_dict()
    packed["name"] = f"{config.name}_packed"
    packed["data"]["sources"] = [
        {**spec, "root": str(out / spec["name"]), "validation": 0, "scenes": None}
        for spec in packed["data"]["sources"]
    ]
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(packed, sort_keys=False))
    record = {
        "config": config.name,
        "crop_size": [crop_h, crop_w],
        "budget_mib": budget_mib,
        "bytes": used,
        "seed": seed,
        "crops_per_source": {source.name: count for source, count in zip(sources, counts, strict=True)},
        "images_per_source": {source.name: len(source.images) for source in sources},
        "crops": [crop.__dict__ for crop in crops],
    }
    with atomic_path(out / "pack.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return record
