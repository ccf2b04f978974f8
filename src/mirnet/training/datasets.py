"""The training set and validation sets a config describes: one paired folder (``--data``),
or several weighted sources (``data.sources``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mirnet.data.mixture import (
    MixedPatchDataset,
    Source,
    ValidationImage,
    clean_photos,
    clean_source,
    hold_out_photos,
    paired_source,
)
from mirnet.data.pairs import (
    ImagePair,
    PairedDataError,
    find_pairs,
    load_pair,
    read_scenes,
    split_validation,
    split_validation_by_scene,
)
from mirnet.data.patches import PairedPatchDataset
from mirnet.data.synthetic import Darkening
from mirnet.training.config import ExperimentConfig, SourceConfig

# The name of the one validation set of a single-folder run.
SINGLE = "validation"


@dataclass
class TrainingData:
    """What a run trains and validates on.

    ``validation`` maps a source name to its held-out images; a run with one folder has one
    set named :data:`SINGLE`. ``split`` is what ``split.json`` records: which images of
    which folder were trained on and which were held out.
    """

    dataset: Dataset
    validation: dict[str, list[ValidationImage]]
    split: dict[str, Any]
    train_count: int

    def summary(self) -> dict[str, Any]:
        """The split for a model card: how many images were trained on, which were held out."""

        def short(split: dict[str, Any]) -> dict[str, Any]:
            rest = {k: v for k, v in split.items() if k not in ("data", "train", "validation")}
            return {"root": split.get("data", split.get("root")), **rest,
                    "train_pairs": len(split["train"]), "validation_pairs": split["validation"]}  # fmt: skip

        if "sources" in self.split:
            return {"sources": {name: short(s) for name, s in self.split["sources"].items()}}
        return short(self.split)


def _as_saved(items: list, saved: dict, where: str) -> tuple[list, list]:
    """(train, validation) exactly as a run's split.json lists them, so that a resumed run
    trains on the same images even if the folder has changed since (new files are ignored)."""
    by_name = {item.name if isinstance(item, ImagePair) else item.stem: item for item in items}
    missing = [name for name in saved["train"] + saved["validation"] if name not in by_name]
    if missing:
        raise PairedDataError(
            f"{where}: split.json names {len(missing)} image(s) no longer there, e.g. {missing[0]}"
        )
    return [by_name[n] for n in saved["train"]], [by_name[n] for n in saved["validation"]]


def _split_pairs(
    pairs: list[ImagePair], count: int, seed: int, scenes: str | None, saved: dict | None, where: str
):
    """(train, validation) pairs: as ``saved`` (split.json on resume) says, else by scene or by pair."""
    if saved is not None:
        return _as_saved(pairs, saved, where)
    if scenes:
        return split_validation_by_scene(pairs, count, seed, read_scenes(scenes))
    return split_validation(pairs, count, seed)


def single_folder(
    config: ExperimentConfig, root: Path, progress: bool, saved: dict | None = None
) -> TrainingData:
    """The training pairs of one folder, with ``data.validation_pairs`` held out by the seed."""
    data = config.data
    pairs = find_pairs(root, "train")
    if saved is not None and "train" not in saved:
        raise PairedDataError(
            f"{root}: the run was started with data.sources; resume it with the same config"
        )
    train, held = _split_pairs(pairs, data.validation_pairs, config.seed, None, saved, str(root))
    dataset = PairedPatchDataset(train, data.patch_size, data.repeat, True, config.seed, progress)
    validation = [ValidationImage(pair.name, *load_pair(pair)) for pair in held]
    split = {"data": str(root), "train": [p.name for p in train], "validation": [p.name for p in held]}
    return TrainingData(dataset, {SINGLE: validation} if validation else {}, split, len(train))


def _source(spec: SourceConfig, config: ExperimentConfig, progress: bool, saved: dict | None) -> Source:
    patch_size, seed, root = config.data.patch_size, config.seed, Path(spec.root)
    where = f"data.sources {spec.name} ({root})"
    if spec.kind == "paired":
        pairs = find_pairs(root, spec.split)
        train, held = _split_pairs(pairs, spec.validation, seed, spec.scenes, saved, where)
        return paired_source(spec.name, train, held, patch_size, progress)
    photos = clean_photos(root)
    train, held = _as_saved(photos, saved, where) if saved else hold_out_photos(photos, spec.validation, seed)
    darkening = Darkening.from_overrides(config.data.darkening)
    return clean_source(spec.name, spec.kind, train, held, patch_size, seed, darkening, progress)


def mixed_sources(config: ExperimentConfig, progress: bool, saved: dict | None = None) -> TrainingData:
    """Every source of ``data.sources``, each with its own validation hold-out."""
    specs = config.data.sources
    saved_sources = (saved or {}).get("sources", {})
    if saved is not None and {s.name for s in specs} != saved_sources.keys():
        raise PairedDataError("the run was started with other data sources; resume it with the same config")
    sources = [_source(spec, config, progress, saved_sources.get(spec.name)) for spec in specs]
    dataset = MixedPatchDataset(
        sources,
        [spec.weight for spec in specs],
        config.data.samples_per_epoch,
        config.data.patch_size,
        config.seed,
    )
    split = {
        "sources": {
            spec.name: {
                "kind": spec.kind,
                "root": spec.root,
                "train": source.train_names,
                "validation": [image.name for image in source.validation],
            }
            for spec, source in zip(specs, sources, strict=True)
        }
    }
    validation = {source.name: source.validation for source in sources if source.validation}
    return TrainingData(dataset, validation, split, sum(len(s.images) for s in sources))


def training_data(
    config: ExperimentConfig, data_root: Path | None, progress: bool, saved: dict | None = None
) -> TrainingData:
    """The data of a run: ``data.sources`` when the config names them, else ``data_root``.

    ``saved`` is the split.json of the run being resumed: its split is used as it was.
    """
    if config.data.sources:
        return mixed_sources(config, progress, saved)
    return single_folder(config, data_root, progress, saved)
