"""Finding paired low/normal-light images on disk, and holding some out for validation.

Layouts understood by :func:`find_pairs` (``split`` is ``train`` or ``test``):

* generic: ``ROOT/{train,test}/{low,high}/`` (``real_pairs`` here), or ``ROOT/{low,high}/``
  for a single folder pair; files matched by stem, in any format :mod:`mirnet.io` reads;
* LoL-v1: ``ROOT/our485/{low,high}`` (train) and ``ROOT/eval15/{low,high}`` (test);
* LOL-v2 (Real_captured or Synthetic): ``ROOT/Train/{Low,Normal}`` and
  ``ROOT/Test/{Low,Normal}``, with ``lowNNNNN.png`` matched to ``normalNNNNN.png``.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from mirnet.io import is_image_path, read_image

SPLIT_FOLDERS = {
    "train": ("train", "our485", "Train"),
    "test": ("test", "eval15", "eval", "Test"),
}
LOW_FOLDERS = ("low", "Low")
HIGH_FOLDERS = ("high", "Normal", "normal", "High")
# LOL-v2 names pairs lowNNNNN / normalNNNNN: the prefix is dropped to match them.
_PAIR_PREFIX = re.compile(r"^(low|normal|high)", re.IGNORECASE)


T = TypeVar("T")  # pairs, or photo paths


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


def split_validation(pairs: list[T], count: int, seed: int) -> tuple[list[T], list[T]]:
    """Hold ``count`` pairs out of the training pairs for validation, chosen by ``seed``.

    Returns (train, validation). The choice depends only on the seed and the pair names,
    so it is the same on every machine and on resume.
    """
    if count <= 0:
        return list(pairs), []
    if count >= len(pairs):
        raise PairedDataError(f"cannot hold out {count} for validation from {len(pairs)}")
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


def read_scenes(path: str | Path) -> dict[str, str]:
    """Scene ids by pair name from a ``split,name,scene`` CSV (``lol/scenes.csv``,
    ``real_pairs/scenes.csv``). Pairs of one scene are near-copies of each other, so they
    must be held out together."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise PairedDataError(f"{path}: cannot read the scenes file ({err.strerror})") from None
    if not rows or not {"name", "scene"} <= rows[0].keys():
        raise PairedDataError(f"{path}: expected a CSV with the columns split,name,scene")
    return {row["name"]: row["scene"] for row in rows}


def split_validation_by_scene(
    pairs: list[ImagePair], count: int, seed: int, scenes: dict[str, str]
) -> tuple[list[ImagePair], list[ImagePair]]:
    """Hold whole scenes out for validation until at least ``count`` pairs are held out.

    The scenes are taken in an order drawn from ``seed``; a pair missing from ``scenes`` is
    its own scene. Returns (train, validation); no scene is in both.
    """
    if count <= 0:
        return list(pairs), []
    scene_of = {p.name: scenes.get(p.name, f"pair:{p.name}") for p in pairs}
    scene_sizes = Counter(scene_of.values())
    ordered = sorted(scene_sizes)
    order = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed)).tolist()
    held: set[str] = set()
    size = 0
    for i in order:
        if size >= count:
            break
        held.add(ordered[i])
        size += scene_sizes[ordered[i]]
    if size >= len(pairs):
        raise PairedDataError(f"cannot hold out {count} validation pairs by scene from {len(pairs)}")
    train = [p for p in pairs if scene_of[p.name] not in held]
    validation = [p for p in pairs if scene_of[p.name] in held]
    return train, validation
