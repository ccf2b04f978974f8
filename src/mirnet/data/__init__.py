"""Training and evaluation data.

* :mod:`~mirnet.data.pairs`: paired folders on disk (generic, LoL-v1, LOL-v2 layouts) and
  validation hold-outs, by pair or by scene;
* :mod:`~mirnet.data.patches`: random crops with flips/rotations, a pure function of
  (seed, epoch, index);
* :mod:`~mirnet.data.synthetic`: camera-like darkening of clean photos;
* :mod:`~mirnet.data.mixture`: several sources (real, synthetic, well-exposed) mixed by weight.
"""

from mirnet.data.pairs import (
    ImagePair,
    PairedDataError,
    find_pairs,
    load_pair,
    read_scenes,
    resolve_pair_folders,
    split_validation,
    split_validation_by_scene,
)
from mirnet.data.patches import PairedPatchDataset, dihedral, sample_seed

__all__ = [
    "ImagePair",
    "PairedDataError",
    "PairedPatchDataset",
    "dihedral",
    "find_pairs",
    "load_pair",
    "read_scenes",
    "resolve_pair_folders",
    "sample_seed",
    "split_validation",
    "split_validation_by_scene",
]
