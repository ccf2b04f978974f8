"""Random crops of a config's training data, packed into a size budget for another machine.

A lent GPU machine gets only what travels with the checkout (64 MiB in all, the repository
included), far less than the data: LoL-v1's our485 alone is about 300 MiB. :func:`pack_crops`
loads the training images of every source of ``data.sources`` with the same split as
``mirnet train`` (the held-out validation stays behind, unseen), cuts random crops from them
and writes them, losslessly compressed, until the budget is spent, with a config that trains
on them:

* paired sources: ``OUT/NAME/train/low/*.webp`` and ``OUT/NAME/train/high/*.webp``;
* synthetic and identity sources: the clean crops, ``OUT/NAME/*.webp`` (the darkening is
  drawn at training time, as here). Sources on the same folder of clean photos share one
  packed folder, so each trains on all of its crops;
* ``OUT/config.yaml``: the config with each source's root moved to its packed folder and no
  validation hold-out (``validation: 0``), since what was held out stayed behind. That run
  exports its last epoch; score the weights back here on the config's validation;
* ``OUT/pack.json``, written last (a folder without it is an interrupted pack): every crop's
  source image and box, and the budget.

Crops are drawn source after source in proportion to the sources' sampling weights, each
from the next image of a seeded shuffle of its source, so every image gives one crop before
any gives two, and none more than ``max_per_image`` (a box already packed is skipped).
Lossless WebP keeps the dark inputs' noise exactly.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from tqdm import tqdm

from mirnet.data.mixture import Source
from mirnet.data.pairs import PairedDataError
from mirnet.data.patches import PatchSize, describe, patch_shape, random_window
from mirnet.io import atomic_path
from mirnet.training.config import ExperimentConfig
from mirnet.training.datasets import mixed_sources


class PackError(ValueError):
    """The config, the crop size or the budget cannot give a packed training set."""


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
    # quality is the encoder's effort when lossless: 80 was within 1.5% of 100's size, 37x faster.
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="WEBP", lossless=True, quality=80)
    return buffer.getvalue()


def _next_source(counts: list[int], weights: list[float], open_: list[bool]) -> int | None:
    """The open source furthest below its weighted share: crops follow the sampling weights."""
    candidates = [i for i in range(len(counts)) if open_[i]]
    if not candidates:
        return None
    return min(candidates, key=lambda i: ((counts[i] + 1) / weights[i], i))


def _root_for(folder: Path) -> str:
    """A packed folder as the packed config names it: relative to the working directory
    (where ``mirnet train`` runs, on the other machine too) when it is inside it."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder.resolve())


def pack_crops(
    config: ExperimentConfig,
    out: str | Path,
    crop_size: PatchSize,
    budget_mib: float,
    seed: int = 0,
    max_per_image: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Pack random ``crop_size`` crops of ``config``'s training sources into a new folder ``out``.

    Stops before the crop that would take the packed images past ``budget_mib``, or when every
    image has given ``max_per_image`` crops. Returns what ``pack.json`` records.
    ``crop_size`` must hold the config's training patch, and every training image the crop.

    Raises:
        PackError: no ``data.sources``, a crop smaller than the patch or larger than an image,
            a budget that is not a positive number or too small for one crop, a plateau
            schedule (it steps on validation, which the packed run has none of), or an
            ``out`` that exists and is not empty.
    """
    if not config.data.sources:
        raise PackError("the config names no data.sources to pack")
    if not (math.isfinite(budget_mib) and budget_mib > 0):
        raise PackError(f"the budget must be a positive number of MiB, not {budget_mib}")
    if max_per_image < 1:
        raise PackError(f"max_per_image must be at least 1, not {max_per_image}")
    if config.train.scheduler == "plateau":
        raise PackError(
            "train.scheduler plateau steps on validation, which a packed run has none of; use cosine"
        )
    crop_h, crop_w = patch_shape(crop_size)
    patch_h, patch_w = patch_shape(config.data.patch_size)
    if crop_h < patch_h or crop_w < patch_w:
        patch = describe(config.data.patch_size)
        raise PackError(f"crops of {describe(crop_size)} cannot hold the config's {patch} patches")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackError(f"{out}: exists and is not an empty folder; choose a new one")
    budget = int(budget_mib * 2**20)
    try:
        data = mixed_sources(
            replace(config, data=replace(config.data, patch_size=[crop_h, crop_w])), progress
        )
    except PairedDataError as err:
        raise PackError(str(err).replace("the patch size", "the crop size")) from None
    sources: list[Source] = data.dataset.sources
    specs = config.data.sources
    # One packed folder per source, but clean sources with the same training photos (the same
    # folder and hold-out) share one: more distinct crops for the same bytes.
    folders: dict[str, str] = {}
    for i, (spec, source) in enumerate(zip(specs, sources, strict=True)):
        twin = next(
            (
                specs[j].name
                for j in range(i)
                if spec.kind != "paired"
                and specs[j].kind != "paired"
                and (specs[j].root, sources[j].train_names) == (spec.root, source.train_names)
            ),
            None,
        )
        folders[spec.name] = folders[twin] if twin else spec.name

    rng = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(source.images), generator=rng).tolist() for source in sources]
    weights = [spec.weight for spec in specs]
    counts = [0] * len(sources)
    open_ = [True] * len(sources)
    packed_boxes: set[tuple[str, str, int, int]] = set()
    crops: list[Crop] = []
    used = 0
    bar = tqdm(total=budget, unit="B", unit_scale=True, desc="packing", disable=not progress)
    while (index := _next_source(counts, weights, open_)) is not None:
        source, k = sources[index], counts[index]
        counts[index] += 1
        if k + 1 >= max_per_image * len(orders[index]):
            open_[index] = False  # every image has given its crops
        image_index = orders[index][k % len(orders[index])]
        low, high = source.images[image_index]
        window = random_window(low, (crop_h, crop_w), rng)
        top, left = window[1].start, window[2].start
        image = source.train_names[image_index]
        box = (folders[source.name], image, top, left)
        if box in packed_boxes:
            continue  # the same crop again (a small image has few boxes)
        name = f"{image}_{top}_{left}.webp"
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
            path = out / folders[source.name] / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(blob)
        packed_boxes.add(box)
        crops.append(
            Crop(source.name, image, top, left, [f"{folders[source.name]}/{r}" for r in encoded], size)
        )
        used += size
        bar.update(size)
    bar.close()
    if not crops:
        raise PackError(f"not one crop fits in {budget_mib} MiB")

    packed = config.to_dict()
    packed["name"] = f"{config.name}_packed"
    packed["description"] = (
        f"Random {describe(crop_size)} crops of the training images of {config.name}, packed by "
        f"scripts/pack_crops.py into {out} ({used / 2**20:.1f} MiB, seed {seed}); its validation "
        f"stayed behind, so this run exports its last epoch. {config.description}"
    )
    packed["data"]["sources"] = [
        {
            **spec,
            "root": _root_for(out / folders[spec["name"]]),
            "validation": 0,
            "scenes": None,
            "split": "train",
        }
        for spec in packed["data"]["sources"]
    ]
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(packed, sort_keys=False))
    per_source = {spec.name: sum(c.source == spec.name for c in crops) for spec in specs}
    record = {
        "config": config.name,
        "crop_size": [crop_h, crop_w],
        "budget_mib": budget_mib,
        "bytes": used,
        "seed": seed,
        "max_per_image": max_per_image,
        "crops_per_source": per_source,
        "images_per_source": {source.name: len(source.images) for source in sources},
        "crops": [asdict(crop) for crop in crops],
    }
    with atomic_path(out / "pack.json") as tmp:  # last: its presence marks a finished pack
        tmp.write_text(json.dumps(record, indent=1))
    return record
