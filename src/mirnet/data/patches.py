"""Training patches: random crops with flips/rotations (the 8 for square patches, the 4 that
keep a rectangular patch's shape), a pure function of (seed, epoch, index) so that a resumed
run sees exactly the samples it would have seen."""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mirnet.data.pairs import ImagePair, PairedDataError, load_pair


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A [0, 1] float image as uint8, to hold a dataset in a quarter of the memory."""
    return (image * 255).round().to(torch.uint8)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one sample's random crop and augmentation, a pure function of its
    arguments: resuming mid-epoch reproduces the exact same samples."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def dihedral(image: torch.Tensor, mode: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a (..., H, W) tensor (mode 0 is the identity)."""
    if mode & 4:
        image = image.transpose(-2, -1)
    if mode & 2:
        image = image.flip(-2)
    if mode & 1:
        image = image.flip(-1)
    return image


# A square side, or (height, width).
PatchSize = int | tuple[int, int] | list[int]


def patch_shape(patch_size: PatchSize) -> tuple[int, int]:
    """(height, width) of a patch given as one side or as (height, width)."""
    if isinstance(patch_size, int):
        return patch_size, patch_size
    height, width = patch_size
    return int(height), int(width)


def describe(patch_size: PatchSize) -> str:
    """A patch size for messages: ``320``, or ``320x480 (height x width)``."""
    height, width = patch_shape(patch_size)
    return str(height) if height == width else f"{height}x{width} (height x width)"


def fits(image: torch.Tensor, patch_size: PatchSize) -> bool:
    """Whether a (C, H, W) image is at least as tall and as wide as the patch."""
    height, width = patch_shape(patch_size)
    return image.shape[-2] >= height and image.shape[-1] >= width


def random_window(image: torch.Tensor, patch_size: PatchSize, rng: torch.Generator) -> tuple[slice, ...]:
    """A random ``patch_size`` window of a (C, H, W) image, as its index, drawn from ``rng``
    (the top row, then the left column)."""
    patch_h, patch_w = patch_shape(patch_size)
    h, w = image.shape[1:]
    top = int(torch.randint(0, h - patch_h + 1, (1,), generator=rng))
    left = int(torch.randint(0, w - patch_w + 1, (1,), generator=rng))
    return slice(None), slice(top, top + patch_h), slice(left, left + patch_w)


def random_crop_and_flip(
    images: tuple[torch.Tensor, ...], patch_size: PatchSize, rng: torch.Generator, augment: bool = True
) -> tuple[torch.Tensor, ...]:
    """The same random ``patch_size`` crop and flip/rotation of each of ``images`` (all of
    one size), drawn from ``rng``: a low image and its target stay aligned.

    A square patch gets one of the 8 flips/rotations; a rectangular one only the 4 that keep
    its shape (flips and the half turn), so that patches stack into batches.
    """
    window = random_window(images[0], patch_size, rng)
    images = tuple(image[window] for image in images)
    if augment:
        patch_h, patch_w = patch_shape(patch_size)
        mode = int(torch.randint(0, 8 if patch_h == patch_w else 4, (1,), generator=rng))
        images = tuple(dihedral(image, mode) for image in images)
    return images


def load_uint8_pairs(
    pairs: list[ImagePair], patch_size: PatchSize, progress: bool = True, desc: str = "loading pairs"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Decode every pair once (both images checked), as uint8 (3, H, W) tensors."""
    images = []
    for pair in tqdm(pairs, desc=desc, unit="pair", disable=not progress, leave=False):
        low, high = load_pair(pair)
        if not fits(low, patch_size):
            raise PairedDataError(f"{pair.low}: smaller than the patch size {describe(patch_size)}")
        images.append((to_uint8(low), to_uint8(high)))
    return images


class PairedPatchDataset(Dataset):
    """Random ``patch_size`` crops of training pairs with flips/rotations (see
    :func:`random_crop_and_flip`).

    The pairs are decoded once and held in memory as uint8 (236 pairs of 600x400 take
    340 MB). Each epoch visits every pair ``repeat`` times. The crop and augmentation of an
    item depend only on (seed, epoch, index); call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        pairs: list[ImagePair],
        patch_size: PatchSize,
        repeat: int = 1,
        augment: bool = True,
        seed: int = 0,
        progress: bool = True,
    ):
        self.pairs = pairs
        self.patch_size = patch_size
        self.repeat = repeat
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.images = load_uint8_pairs(pairs, patch_size, progress)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.images[index % len(self.pairs)]
        rng = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        low, high = random_crop_and_flip(pair, self.patch_size, rng, self.augment)
        return low.float() / 255, high.float() / 255
