"""Packing random crops of a config's training data for a machine that cannot hold it."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mirnet.training import load_config, parse_config, train
from mirnet.training.datasets import mixed_sources
from mirnet.training.pack import PackError, pack_crops

from .conftest import make_pairs, smooth_image

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, **data) -> dict:
    if not (tmp_path / "pairs").exists():
        make_pairs(tmp_path / "pairs", "train", 8)
        (tmp_path / "clean").mkdir()
        for i in range(6):
            Image.fromarray(smooth_image(50 + i, 40, 48)).save(tmp_path / "clean" / f"photo{i}.png")
    config = load_config(ROOT / "configs" / "smoke.yaml").to_dict()
    config["data"].update(
        samples_per_epoch=8,
        sources=[
            {"name": "real", "kind": "paired", "root": str(tmp_path / "pairs"), "weight": 2, "validation": 2},
            {"name": "dark", "kind": "synthetic", "root": str(tmp_path / "clean"), "validation": 2},
            {"name": "good", "kind": "identity", "root": str(tmp_path / "clean"), "validation": 1},
        ],
        **data,
    )
    return config


def test_crops_are_exact_copies_of_training_images_only(tmp_path):
    config = parse_config(_config(tmp_path))
    record = pack_crops(config, tmp_path / "pack", 36, budget_mib=0.05, progress=False)
    held_out = {
        name: [image.name for image in images]
        for name, images in mixed_sources(config, False).validation.items()
    }
    assert record["crops"] and record["bytes"] <= 0.05 * 2**20
    on_disk = sum(f.stat().st_size for f in (tmp_path / "pack").rglob("*.webp"))
    assert on_disk == record["bytes"]
    counts = record["crops_per_source"]
    assert (
        abs(counts["real"] - 2 * counts["dark"]) <= 2 and abs(counts["dark"] - counts["good"]) <= 1
    )  # weights
    for crop in record["crops"]:
        assert crop["image"] not in held_out[crop["source"]]  # validation stays behind
        if crop["source"] == "real":
            original = np.asarray(Image.open(tmp_path / "pairs" / "train" / "low" / f"{crop['image']}.png"))
            packed = np.asarray(Image.open(tmp_path / "pack" / "real" / crop["files"][0]))
        else:
            original = np.asarray(Image.open(tmp_path / "clean" / f"{crop['image']}.png"))
            packed = np.asarray(Image.open(tmp_path / "pack" / crop["source"] / crop["files"][0]))
        window = original[crop["top"] : crop["top"] + 36, crop["left"] : crop["left"] + 36]
        assert np.array_equal(packed, window)  # lossless


def test_the_same_seed_packs_the_same_crops(tmp_path):
    config = parse_config(_config(tmp_path))
    a = pack_crops(config, tmp_path / "a", [36, 40], budget_mib=0.03, progress=False)
    b = pack_crops(config, tmp_path / "b", [36, 40], budget_mib=0.03, progress=False)
    c = pack_crops(config, tmp_path / "c", [36, 40], budget_mib=0.03, seed=1, progress=False)
    assert a["crops"] == b["crops"] and a["crops"] != c["crops"]


def test_the_packed_config_trains_on_the_crops_without_a_hold_out(tmp_path):
    pack_crops(parse_config(_config(tmp_path)), tmp_path / "pack", 36, budget_mib=0.05, progress=False)
    packed = yaml.safe_load((tmp_path / "pack" / "config.yaml").read_text())
    assert {s["root"] for s in packed["data"]["sources"]} == {
        str(tmp_path / "pack" / n) for n in ("real", "dark", "good")
    }
    assert all(s["validation"] == 0 for s in packed["data"]["sources"])
    weights = train(parse_config(packed), None, tmp_path / "run", progress=False)
    assert weights.exists()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert all(not source["validation"] for source in split["sources"].values())


def test_it_refuses_what_cannot_be_packed(tmp_path):
    config = parse_config(_config(tmp_path))
    with pytest.raises(PackError, match="cannot hold the config's 32 patches"):
        pack_crops(config, tmp_path / "a", 24, budget_mib=1, progress=False)
    with pytest.raises(PackError, match="not one crop fits"):
        pack_crops(config, tmp_path / "b", 36, budget_mib=1e-6, progress=False)
    pack_crops(config, tmp_path / "c", 36, budget_mib=0.01, progress=False)
    with pytest.raises(PackError, match="already holds a pack"):
        pack_crops(config, tmp_path / "c", 36, budget_mib=0.01, progress=False)
    with pytest.raises(PackError, match="no data.sources"):
        pack_crops(
            parse_config(load_config(ROOT / "configs" / "smoke.yaml").to_dict()),
            tmp_path / "d",
            24,
            1,
            progress=False,
        )
    with pytest.raises(ValueError, match="smaller than the patch size"):
        pack_crops(config, tmp_path / "e", 44, budget_mib=1, progress=False)  # clean photos are 40x48
