"""Packing random crops of a config's training data for a machine that cannot hold it."""

import json
import subprocess
import sys
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
    """Pairs of 48x64 in 4 scenes of 2, and 6 clean photos of 40x48 for two clean sources."""
    if not (tmp_path / "pairs").exists():
        make_pairs(tmp_path / "pairs", "train", 8)
        scenes = "".join(f"train,{i},scene{(i + 1) // 2}\n" for i in range(1, 9))
        (tmp_path / "scenes.csv").write_text("split,name,scene\n" + scenes)
        (tmp_path / "clean").mkdir()
        for i in range(6):
            Image.fromarray(smooth_image(50 + i, 40, 48)).save(tmp_path / "clean" / f"photo{i}.png")
    config = load_config(ROOT / "configs" / "smoke.yaml").to_dict()
    config["train"]["scheduler"] = "cosine"
    real = {"name": "real", "kind": "paired", "root": str(tmp_path / "pairs"), "weight": 2, "validation": 2}
    config["data"].update(
        samples_per_epoch=8,
        sources=[
            {**real, "scenes": str(tmp_path / "scenes.csv")},
            {"name": "dark", "kind": "synthetic", "root": str(tmp_path / "clean"), "validation": 2},
            {"name": "good", "kind": "identity", "root": str(tmp_path / "clean"), "validation": 2},
        ],
        **data,
    )
    return config


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_crops_are_exact_copies_of_training_images_only(tmp_path):
    config = parse_config(_config(tmp_path))
    record = pack_crops(config, tmp_path / "pack", 36, budget_mib=0.05, progress=False)
    held_out = {
        name: {image.name for image in images}
        for name, images in mixed_sources(config, False).validation.items()
    }
    assert held_out["real"] in ({"1", "2"}, {"3", "4"}, {"5", "6"}, {"7", "8"})  # one whole scene
    assert record["crops"] and record["bytes"] <= 0.05 * 2**20
    assert sum(f.stat().st_size for f in (tmp_path / "pack").rglob("*.webp")) == record["bytes"]
    counts = record["crops_per_source"]
    assert (
        abs(counts["real"] - 2 * counts["dark"]) <= 2 and abs(counts["dark"] - counts["good"]) <= 1
    )  # weights
    for crop in record["crops"]:
        assert crop["image"] not in held_out[crop["source"]]  # validation stays behind
        box = (slice(crop["top"], crop["top"] + 36), slice(crop["left"], crop["left"] + 36))
        if crop["source"] == "real":
            for packed, side in zip(crop["files"], ("low", "high"), strict=True):
                original = _read(tmp_path / "pairs" / "train" / side / f"{crop['image']}.png")
                assert np.array_equal(_read(tmp_path / "pack" / packed), original[box])  # lossless, aligned
        else:
            assert crop["files"][0].startswith("dark/")  # the two clean sources share one folder
            original = _read(tmp_path / "clean" / f"{crop['image']}.png")
            assert np.array_equal(_read(tmp_path / "pack" / crop["files"][0]), original[box])


def test_the_same_seed_packs_the_same_crops_and_no_box_twice(tmp_path):
    config = parse_config(_config(tmp_path))
    a = pack_crops(config, tmp_path / "a", [36, 40], budget_mib=0.03, progress=False)
    b = pack_crops(config, tmp_path / "b", [36, 40], budget_mib=0.03, progress=False)
    c = pack_crops(config, tmp_path / "c", [36, 40], budget_mib=0.03, seed=1, progress=False)
    assert a["crops"] == b["crops"] and a["crops"] != c["crops"]
    # A budget for everything: each image gives at most max_per_image crops, each box once.
    everything = pack_crops(config, tmp_path / "d", [36, 40], budget_mib=100, max_per_image=2, progress=False)
    per_image = {}
    for crop in everything["crops"]:
        per_image[crop["source"], crop["image"]] = per_image.get((crop["source"], crop["image"]), 0) + 1
    assert max(per_image.values()) <= 2 and len(per_image) == 6 + 4 + 4  # every training image
    files = [file for crop in everything["crops"] for file in crop["files"]]
    assert len(files) == len(set(files))


def test_the_packed_config_trains_on_the_crops_without_a_hold_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # roots are written relative to the working directory
    config = _config(tmp_path)
    config["data"]["sources"][0]["split"] = "test"  # packed into train/ all the same
    make_pairs(tmp_path / "pairs", "test", 8)
    pack_crops(parse_config(config), Path("pack"), 36, budget_mib=0.05, progress=False)
    packed = yaml.safe_load(Path("pack/config.yaml").read_text())
    assert [s["root"] for s in packed["data"]["sources"]] == ["pack/real", "pack/dark", "pack/dark"]
    assert all(s["validation"] == 0 and s["split"] == "train" for s in packed["data"]["sources"])
    weights = train(parse_config(packed), None, tmp_path / "run", progress=False)
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert weights.exists() and card["validation"] is None and "no validation" in card["selected_by"]
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert all(not source["validation"] for source in split["sources"].values())
    record = json.loads(Path("pack/pack.json").read_text())
    packed_real = {Path(c["files"][0]).stem for c in record["crops"] if c["source"] == "real"}
    assert set(split["sources"]["real"]["train"]) == packed_real


def test_it_refuses_what_cannot_be_packed(tmp_path):
    config = parse_config(_config(tmp_path))
    with pytest.raises(PackError, match="cannot hold the config's 32 patches"):
        pack_crops(config, tmp_path / "a", 24, budget_mib=1, progress=False)
    with pytest.raises(PackError, match="not one crop fits"):
        pack_crops(config, tmp_path / "b", 36, budget_mib=1e-6, progress=False)
    for budget in (float("inf"), float("nan"), 0):
        with pytest.raises(PackError, match="positive number"):
            pack_crops(config, tmp_path / "b", 36, budget_mib=budget, progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "left_over.webp").write_bytes(b"")  # an interrupted pack, say
    with pytest.raises(PackError, match="not an empty folder"):
        pack_crops(config, tmp_path / "c", 36, budget_mib=0.01, progress=False)
    with pytest.raises(PackError, match="no data.sources"):
        pack_crops(
            parse_config(load_config(ROOT / "configs" / "smoke.yaml").to_dict()), tmp_path / "d", 36, 1
        )
    with pytest.raises(PackError, match="smaller than the crop size 44"):
        pack_crops(config, tmp_path / "e", 44, budget_mib=1, progress=False)  # clean photos are 40x48
    plateau = _config(tmp_path)
    plateau["train"]["scheduler"] = "plateau"
    with pytest.raises(PackError, match="plateau"):
        pack_crops(parse_config(plateau), tmp_path / "f", 36, budget_mib=1, progress=False)


def test_the_script_takes_height_x_width_and_fails_in_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path)))
    script = [sys.executable, str(ROOT / "scripts" / "pack_crops.py"), str(config)]
    done = subprocess.run([*script, str(tmp_path / "a"), "--crop", "36x40", "--budget-mib", "0.02", "-q"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.startswith("packed ") and json.loads((tmp_path / "a" / "pack.json").read_text())[
        "crop_size"
    ] == [36, 40]
    failed = subprocess.run(
        [*script, str(tmp_path / "b"), "--budget-mib", "inf"], capture_output=True, text=True
    )
    assert (
        failed.returncode == 1
        and failed.stderr.strip().count("\n") == 0
        and "positive number" in failed.stderr
    )
