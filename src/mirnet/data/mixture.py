"""Training on several sources at once: real pairs, synthetic pairs from clean photos, and
well-exposed photos as their own targets, each drawn with its own sampling weight.

Each source holds its training images in memory (uint8) and its own validation images,
held out by scene (paired sources with a scenes file) or by photo (clean photos), so that
validation can be reported per source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mirnet.data.pairs import PairedDataError, load_pair, split_validation
from mirnet.data.patches import (
    PatchSize,
    describe,
    fits,
    load_uint8_pairs,
    random_crop_and_flip,
    sample_seed,
    to_uint8,
)
from mirnet.data.synthetic import Darkening, darken
from mirnet.io import is_image_path, read_image

SOURCE_KINDS = ("paired", "synthetic", "identity")


@dataclass
class ValidationImage:
    """One whole validation image and its target, float (3, H, W) in [0, 1]."""

    name: str
    low: torch.Tensor
    high: torch.Tensor


@dataclass
class Source:
    """One kind of training sample (see :data:`SOURCE_KINDS`).

    ``paired``: crops of real (low, high) pairs. ``synthetic``: crops of clean photos darkened
    by :func:`~mirnet.data.synthetic.darken` (target: the clean crop). ``identity``: crops of
    clean photos that are both input and target (a good photo must come back unchanged).
    """

    name: str
    kind: str
    images: list[tuple[torch.Tensor, torch.Tensor]]  # (low, high); for clean photos low is high
    validation: list[ValidationImage]
    train_names: list[str]
    darkening: Darkening | None = None

    def sample(self, rng: torch.Generator, patch_size: PatchSize) -> tuple[torch.Tensor, torch.Tensor]:
        """One random training patch (low, high), uint8, drawn from ``rng``."""
        index = int(torch.randint(0, len(self.images), (1,), generator=rng))
        low, high = self.images[index]
        if self.kind == "paired":
            return random_crop_and_flip((low, high), patch_size, rng)
        (clean,) = random_crop_and_flip((high,), patch_size, rng)
        if self.kind == "identity":
            return clean, clean
        numpy_rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=rng)))
        return darken(clean, numpy_rng, self.darkening), clean


def clean_photos(root: str | Path) -> list[Path]:
    """The image files under ``root`` (recursively), sorted: well-exposed photos."""
    root = Path(root)
    if not root.is_dir():
        raise PairedDataError(f"{root}: folder of clean photos not found")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    if not paths:
        raise PairedDataError(f"{root}: no images")
    return paths


def hold_out_photos(paths: list[Path], count: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Split photos into (train, validation) with ``count`` validation photos chosen by seed,
    exactly as :func:`~mirnet.data.pairs.split_validation` holds out pairs."""
    return split_validation(paths, count, seed)


def load_clean(paths: list[Path], patch_size: PatchSize, progress: bool, desc: str) -> list[torch.Tensor]:
    """Decode clean photos once as uint8, refusing any smaller than a patch."""
    images = []
    for path in tqdm(paths, desc=desc, unit="photo", disable=not progress, leave=False):
        image = to_uint8(read_image(path))
        if not fits(image, patch_size):
            raise PairedDataError(f"{path}: smaller than the patch size {describe(patch_size)}")
        images.append(image)
    return images


def paired_source(name: str, train_pairs, validation_pairs, patch_size: PatchSize, progress: bool) -> Source:
    """A source of real pairs; every image of every pair (validation too) is read now."""
    images = load_uint8_pairs(train_pairs, patch_size, progress, desc=f"loading {name}")
    validation = [ValidationImage(pair.name, *load_pair(pair)) for pair in validation_pairs]
    return Source(name, "paired", images, validation, [p.name for p in train_pairs])


def clean_source(
    name: str,
    kind: str,
    train_paths: list[Path],
    validation_paths: list[Path],
    patch_size: PatchSize,
    seed: int,
    darkening: Darkening | None,
    progress: bool,
) -> Source:
    """A source of clean photos, darkened (``synthetic``) or as their own target (``identity``).

    Synthetic validation images are darkened once, in ``dark`` mode, from a seed fixed per
    photo, so the validation set is the same at every epoch and on resume.
    """
    clean = load_clean(train_paths, patch_size, progress, f"loading {name}")
    validation = []
    for i, path in enumerate(validation_paths):
        image = read_image(path)
        low = image
        if kind == "synthetic":
            rng = np.random.default_rng(sample_seed(seed, -1, i))
            low = darken(to_uint8(image), rng, darkening, mode="dark").float() / 255
        validation.append(ValidationImage(path.stem, low, image))
    return Source(
        name, kind, [(c, c) for c in clean], validation, [p.stem for p in train_paths], darkening=darkening
    )


class MixedPatchDataset(Dataset):
    """``samples_per_epoch`` patches a epoch, each from a source drawn by weight.

    The source, the image, the crop, the flip and the darkening of an item are a pure
    function of (seed, epoch, index), as in :class:`~mirnet.data.patches.PairedPatchDataset`,
    so resuming mid-epoch is exact. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        sources: list[Source],
        weights: list[float],
        samples_per_epoch: int,
        patch_size: PatchSize,
        seed: int,
    ):
        if len(sources) != len(weights) or not sources:
            raise ValueError("one weight per source, and at least one source")
        self.sources = sources
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.samples_per_epoch = samples_per_epoch
        self.patch_size = patch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        source = self.sources[int(torch.multinomial(self.weights, 1, generator=rng))]
        low, high = source.sample(rng, self.patch_size)
        return low.float() / 255, high.float() / 255
