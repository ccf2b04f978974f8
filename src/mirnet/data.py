"""Paired low/normal-light datasets.

Layouts understood by :func:`find_pairs` (``split`` is ``train`` or ``test``):

* generic: ``ROOT/{train,test}/{low,high}/`` (``real_pairs`` here), or ``ROOT/{low,high}/``
  for a single folder pair; files matched by stem, in any format :mod:`mirnet.io` reads;
* LoL-v1: ``ROOT/our485/{low,high}`` (train) and ``ROOT/eval15/{low,high}`` (test);
* LOL-v2 (Real_captured or Synthetic): ``ROOT/Train/{Low,Normal}`` and
  ``ROOT/Test/{Low,Normal}``, with ``lowNNNNN.png`` matched to ``normalNNNNN.png``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mirnet.io import is_image_path, read_image

SPLIT_FOLDERS = {
    "train": ("train", "our485", "Train"),
    "test": ("test", "eval15", "eval", "Test"),
}
LOW_FOLDERS = ("low", "Low")
HIGH_FOLDERS = ("high", "Normal", "normal", "High")
# LOL-v2 names pairs lowNNNNN / normalNNNNN: the prefix is dropped to match them.
_PAIR_PREFIX = re.compile(r"^(low|normal|high)", re.IGNORECASE)


class PairedDataError(ValueError):
    """A dataset folder that is missing, empty, or whose low/high files do not pair up."""


@dataclass(frozen=True)
class ImagePair:
    low: Path
    high: Path

    @property
    def name(self) -> str:
        return self.low.stem


def _pick(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _pair_key(path: Path) -> str:
    return _PAIR_PREFIX.sub("", path.stem)


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def resolve_pair_folders(root: str | Path, split: str = "train") -> tuple[Path, Path]:
    """Return the (low, high) folders of ``split`` under ``root``, for any known layout."""
    root = Path(root)
    if not root.is_dir():
        raise PairedDataError(f"{root}: dataset folder not found")
    if split not in SPLIT_FOLDERS:
        raise PairedDataError(f"unknown split {split!r}; use one of {', '.join(SPLIT_FOLDERS)}")
    for base in [root / name for name in SPLIT_FOLDERS[split]] + [root]:
        low, high = _pick(base, LOW_FOLDERS), _pick(base, HIGH_FOLDERS)
        if low and high:
            return low, high
    tried = ", ".join(f"{name}/{{low,high}}" for name in SPLIT_FOLDERS[split])
    raise PairedDataError(
        f"{root}: no {split} pairs found; expected one of {tried}, LOL-v2's "
        f"{'Train' if split == 'train' else 'Test'}/{{Low,Normal}}, or low/ and high/ directly"
    )


def find_pairs(root: str | Path, split: str = "train") -> list[ImagePair]:
    """All (low, high) image pairs of a split, sorted naturally by name.

    Raises:
        PairedDataError: no folders, no images, or files without a partner (all named).
    """
    low_dir, high_dir = resolve_pair_folders(root, split)
    lows = {_pair_key(p): p for p in low_dir.iterdir() if p.is_file() and is_image_path(p)}
    highs = {_pair_key(p): p for p in high_dir.iterdir() if p.is_file() and is_image_path(p)}
    if not lows:
        raise PairedDataError(f"{low_dir}: no images")
    unmatched = sorted(str(lows[k]) for k in lows.keys() - highs.keys())
    unmatched += sorted(str(highs[k]) for k in highs.keys() - lows.keys())
    if unmatched:
        shown = "\n  ".join(unmatched[:10]) + ("\n  ..." if len(unmatched) > 10 else "")
        raise PairedDataError(
            f"{len(unmatched)} file(s) in {low_dir} / {high_dir} have no partner:\n  {shown}"
        )
    pairs = [ImagePair(lows[k], highs[k]) for k in lows]
    return sorted(pairs, key=lambda pair: _natural_key(pair.low))


def split_validation(
    pairs: list[ImagePair], count: int, seed: int
) -> tuple[list[ImagePair], list[ImagePair]]:
    """Hold ``count`` pairs out of the training pairs for validation, chosen by ``seed``.

    Returns (train, validation). The choice depends only on the seed and the pair names,
    so it is the same on every machine and on resume.
    """
    if count <= 0:
        return list(pairs), []
    if count >= len(pairs):
        raise PairedDataError(f"cannot hold out {count} validation pairs from {len(pairs)}")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    train = [p for i, p in enumerate(pairs) if i not in held]
    validation = [p for i, p in enumerate(pairs) if i in held]
    return train, validation


def load_pair(pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one pair as float tensors, checking that both have the same size."""
    low, high = read_image(pair.low), read_image(pair.high)
    if low.shape != high.shape:
        raise PairedDataError(
            f"size mismatch: {pair.low} is {tuple(low.shape[1:])}, {pair.high} is {tuple(high.shape[1:])}"
        )
    return low, high


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
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


class PairedPatchDataset(Dataset):
    """Random ``patch_size`` crops of training pairs with the 8 flips/rotations.

    The pairs are decoded once and held in memory as uint8 (236 pairs of 600x400 take
    340 MB). Each epoch visits every pair ``repeat`` times. The crop and augmentation of an
    item depend only on (seed, epoch, index); call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        pairs: list[ImagePair],
        patch_size: int,
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
        self.images: list[tuple[torch.Tensor, torch.Tensor]] = []
        for pair in tqdm(pairs, desc="loading pairs", unit="pair", disable=not progress, leave=False):
            low, high = load_pair(pair)
            if min(low.shape[1:]) < patch_size:
                raise PairedDataError(f"{pair.low}: smaller than the patch size {patch_size}")
            self.images.append((_to_uint8(low), _to_uint8(high)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.images[index % len(self.pairs)]
        rng = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        h, w = low.shape[1:]
        top = int(torch.randint(0, h - self.patch_size + 1, (1,), generator=rng))
        left = int(torch.randint(0, w - self.patch_size + 1, (1,), generator=rng))
        window = (slice(None), slice(top, top + self.patch_size), slice(left, left + self.patch_size))
        low, high = low[window], high[window]
        if self.augment:
            mode = int(torch.randint(0, 8, (1,), generator=rng))
            low, high = dihedral(low, mode), dihedral(high, mode)
        return low.float() / 255, high.float() / 255


class PairedImageDataset(Dataset):
    """Whole image pairs, for validation and evaluation. Items are (low, high, name)."""

    def __init__(self, pairs: list[ImagePair]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        pair = self.pairs[index]
        low, high = load_pair(pair)
        return low, high, pair.name
