"""Datasets: folder layouts, validation hold-outs, paired augmentation, synthetic darkening
and mixed sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mirnet.data import (
    PairedDataError,
    PairedPatchDataset,
    dihedral,
    find_pairs,
    read_scenes,
    split_validation,
    split_validation_by_scene,
)
from mirnet.data.mixture import MixedPatchDataset, clean_photos, clean_source, hold_out_photos
from mirnet.data.synthetic import Darkening, darken, linear_to_srgb, srgb_to_linear
from tests.conftest import make_pairs, smooth_image


# -- layouts -------------------------------------------------------------------------------
def test_generic_layout(tmp_path):
    make_pairs(tmp_path, "train", 3)
    make_pairs(tmp_path, "test", 2, offset=10)
    assert [p.name for p in find_pairs(tmp_path, "train")] == ["1", "2", "3"]
    assert [p.name for p in find_pairs(tmp_path, "test")] == ["1", "2"]


def test_lol_v1_layout(tmp_path):
    make_pairs(tmp_path, "our485", 3)
    make_pairs(tmp_path, "eval15", 2)
    train, test = find_pairs(tmp_path, "train"), find_pairs(tmp_path, "test")
    assert {p.low.parent.parent.name for p in train} == {"our485"} and len(train) == 3
    assert {p.low.parent.parent.name for p in test} == {"eval15"} and len(test) == 2


def test_lol_v2_layout_pairs_low_and_normal_by_number(tmp_path):
    make_pairs(tmp_path, "Train", 12, "Low", "Normal", low_fmt="low{i:05d}.png", high_fmt="normal{i:05d}.png")
    pairs = find_pairs(tmp_path, "train")
    # Natural order (2 before 10), and each low file matched to the normal file of its number.
    assert [p.name for p in pairs][:3] == ["low00001", "low00002", "low00003"]
    assert all(p.low.name[3:] == p.high.name[6:] for p in pairs)


def test_unmatched_files_are_named(tmp_path):
    make_pairs(tmp_path, "train", 2)
    Image.fromarray(smooth_image(0)).save(tmp_path / "train" / "low" / "orphan.png")
    with pytest.raises(PairedDataError, match="orphan.png"):
        find_pairs(tmp_path, "train")


# -- hold-outs -------------------------------------------------------------------------------
def test_split_by_pair_is_seeded(tmp_path):
    pairs = find_pairs(make_pairs(tmp_path, "train", 10), "train")
    a, b = split_validation(pairs, 3, seed=1), split_validation(pairs, 3, seed=1)
    assert a == b and len(a[1]) == 3 and not set(a[0]) & set(a[1])


def test_split_by_scene_never_separates_a_scene(tmp_path):
    pairs = find_pairs(make_pairs(tmp_path, "train", 12), "train")
    scenes = {str(i): str((i - 1) // 3) for i in range(1, 13)}  # 4 scenes of 3 near-copies
    for seed in range(5):
        train, held = split_validation_by_scene(pairs, 4, seed, scenes)
        held_scenes = {scenes[p.name] for p in held}
        assert len(held) >= 4 and not held_scenes & {scenes[p.name] for p in train}
        assert len(held) == 3 * len(held_scenes)


def test_scenes_file(tmp_path):
    path = tmp_path / "scenes.csv"
    path.write_text("split,name,scene\ntrain,1,0\ntrain,2,0\n")
    assert read_scenes(path) == {"1": "0", "2": "0"}
    path.write_text("a,b\n1,2\n")
    with pytest.raises(PairedDataError, match="split,name,scene"):
        read_scenes(path)


# -- paired augmentation ---------------------------------------------------------------------
def test_patches_apply_the_same_crop_and_flip_to_low_and_high(tmp_path):
    root = tmp_path / "pairs"
    (root / "train" / "low").mkdir(parents=True)
    (root / "train" / "high").mkdir(parents=True)
    for i in range(3):
        high = smooth_image(i, 40, 56)
        Image.fromarray(high).save(root / "train" / "high" / f"{i}.png")
        Image.fromarray(high // 4).save(
            root / "train" / "low" / f"{i}.png"
        )  # low is a pixelwise function of high
    dataset = PairedPatchDataset(find_pairs(root, "train"), 16, repeat=8, seed=3, progress=False)
    for index in range(len(dataset)):
        low, high = dataset[index]
        assert low.shape == high.shape == (3, 16, 16)
        assert torch.equal((low * 255).round(), torch.div((high * 255).round(), 4, rounding_mode="floor"))
    again = PairedPatchDataset(find_pairs(root, "train"), 16, repeat=8, seed=3, progress=False)
    assert all(torch.equal(dataset[i][0], again[i][0]) for i in range(len(dataset)))
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i][0], again[i][0]) for i in range(len(dataset)))


def test_rectangular_patches_keep_their_shape_through_every_flip(tmp_path):
    # [height, width] patches get only the flips that keep their shape (so they stack into
    # batches), and images smaller than the patch on either side are refused.
    from mirnet.data.patches import random_crop_and_flip

    image = torch.arange(3 * 30 * 40).reshape(3, 30, 40)
    rng = torch.Generator().manual_seed(0)
    crops = [random_crop_and_flip((image, image + 1), [12, 20], rng) for _ in range(64)]
    assert all(low.shape == high.shape == (3, 12, 20) for low, high in crops)
    assert all(torch.equal(low + 1, high) for low, high in crops)
    corners = {int(low[0, 0, 0]) % 40 < int(low[0, 0, -1]) % 40 for low, _ in crops}
    assert corners == {True, False}  # some are mirrored left to right
    root = make_pairs(tmp_path / "pairs", "train", 2, size=(32, 48))  # height, width
    assert PairedPatchDataset(find_pairs(root, "train"), [24, 48], progress=False)[0][0].shape == (3, 24, 48)
    with pytest.raises(PairedDataError, match="smaller than the patch size"):
        PairedPatchDataset(find_pairs(root, "train"), [24, 56], progress=False)


def test_square_patches_draw_as_they_always_did():
    # Pinned before rectangular patches existed: the same seed gives the same crops and flips,
    # given as one side or as [side, side], so older runs reproduce and resume bit-exactly.
    from mirnet.data.patches import random_crop_and_flip

    image = torch.arange(3 * 30 * 40).reshape(3, 30, 40)
    for size in (16, [16, 16]):
        rng = torch.Generator().manual_seed(7)
        crops = [random_crop_and_flip((image,), size, rng)[0] for _ in range(5)]
        corners = [(int(c[0, 0, 0]), int(c[0, -1, -1])) for c in crops]
        assert corners == [(32, 617), (1063, 448), (84, 699), (1063, 448), (352, 937)]


def test_dihedral_gives_eight_different_views():
    image = torch.arange(12.0).reshape(1, 3, 4)
    views = {tuple(dihedral(image, mode).flatten().tolist()) for mode in range(8)}
    assert len(views) == 8


def test_corrupt_validation_pair_fails_when_the_data_is_opened(tmp_path):
    from mirnet.training import load_config, parse_config
    from mirnet.training.datasets import training_data

    root = make_pairs(tmp_path / "pairs", "train", 10)
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml").to_dict()
    config["data"]["validation_pairs"] = 2
    for pair in find_pairs(root, "train"):
        pair.high.write_bytes(b"not an image")  # every pair: whichever are held out are broken
    with pytest.raises(Exception, match="not an image file|corrupt"):
        training_data(parse_config(config), root, progress=False)


# -- synthetic darkening ---------------------------------------------------------------------
def _photo(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(smooth_image(seed, 96, 128).transpose(2, 0, 1).copy())


def test_srgb_round_trip():
    x = np.linspace(0, 1, 101)
    assert np.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)


def test_darkening_is_deterministic_per_seed():
    photo = _photo()
    a = darken(photo, np.random.default_rng(7))
    b = darken(photo, np.random.default_rng(7))
    c = darken(photo, np.random.default_rng(8))
    assert a.dtype == torch.uint8 and a.shape == photo.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dark_photos_have_the_brightness_of_real_dark_photos():
    # LoL's low images have a mean of about 0.05-0.1; the dark mode's middle half must sit
    # around there, and none may be brighter than the photo it came from.
    photo = _photo()
    means = [
        float(darken(photo, np.random.default_rng(s), mode="dark").float().mean()) / 255 for s in range(60)
    ]
    assert 0.03 <= np.percentile(means, 25) and np.percentile(means, 75) <= 0.16
    assert max(means) < float(photo.float().mean()) / 255


def test_gentle_darkening_is_between_dark_and_the_original():
    photo = _photo(1)
    original = float(photo.float().mean())
    gentle = [float(darken(photo, np.random.default_rng(s), mode="gentle").float().mean()) for s in range(20)]
    dark = [float(darken(photo, np.random.default_rng(s), mode="dark").float().mean()) for s in range(20)]
    assert np.median(dark) < np.median(gentle) < original


def test_well_exposed_samples_are_left_alone():
    photo = _photo(2)
    assert torch.equal(darken(photo, np.random.default_rng(0), mode="none"), photo)
    ranges = Darkening(well_exposed_fraction=1.0, gentle_fraction=0.0)
    assert torch.equal(darken(photo, np.random.default_rng(0), ranges), photo)


def test_darkening_ranges_are_checked():
    with pytest.raises(ValueError, match="exposure"):
        Darkening(exposure=(0.5, 0.1))
    with pytest.raises(ValueError, match="at most 1"):
        Darkening(gentle_fraction=0.6, well_exposed_fraction=0.6)


# -- mixed sources ---------------------------------------------------------------------------
def _clean_folder(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(smooth_image(i, 40, 48)).save(root / f"{i}.jpg", quality=95)
    return root


def test_mixed_dataset_is_a_pure_function_of_seed_epoch_index(tmp_path):
    photos = clean_photos(_clean_folder(tmp_path / "clean", 6))
    train, held = hold_out_photos(photos, 2, seed=0)
    assert len(held) == 2 and not set(train) & set(held)
    synthetic = clean_source("synthetic", "synthetic", train, held, 16, 0, Darkening(), progress=False)
    identity = clean_source("identity", "identity", train, held, 16, 0, None, progress=False)
    assert synthetic.validation[0].high.shape == (3, 40, 48)  # whole photos
    assert torch.equal(identity.validation[0].low, identity.validation[0].high)

    def dataset():
        return MixedPatchDataset([synthetic, identity], [3.0, 1.0], 200, 16, seed=5)

    a, b = dataset(), dataset()
    for i in (0, 17, 199):
        assert all(torch.equal(x, y) for x, y in zip(a[i], b[i], strict=True))
    same = sum(torch.equal(*a[i]) for i in range(200))  # identity samples (and the few left as they are)
    assert 30 <= same <= 90  # about a quarter are identity samples, by weight


def _mixed_config(tmp_path: Path, **train_overrides) -> dict:
    from mirnet.training import load_config

    if not (tmp_path / "pairs").exists():
        make_pairs(tmp_path / "pairs", "train", 8)
        _clean_folder(tmp_path / "clean", 6)
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml").to_dict()
    config["data"].update(
        samples_per_epoch=8,
        sources=[
            {"name": "real", "kind": "paired", "root": str(tmp_path / "pairs"), "validation": 2},
            {"name": "dark", "kind": "synthetic", "root": str(tmp_path / "clean"), "validation": 2},
            {"name": "good", "kind": "identity", "root": str(tmp_path / "clean"), "validation": 2},
        ],
    )
    config["train"].update(train_overrides)
    return config


def test_a_mixed_run_reports_validation_per_source(tmp_path):
    from mirnet.training import parse_config, train

    weights = train(parse_config(_mixed_config(tmp_path)), None, tmp_path / "run", progress=False)
    assert weights.exists()
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert {"val_psnr_real", "val_psnr_dark", "val_psnr_good"} <= set(log[0].split(","))


def test_a_mixed_run_trains_on_rectangular_patches(tmp_path):
    from mirnet.training import parse_config, train

    config = _mixed_config(tmp_path)
    config["data"]["patch_size"] = [24, 40]  # pairs are 48x64 and clean photos 40x48 (height x width)
    assert train(parse_config(config), None, tmp_path / "run", progress=False).exists()
    config["data"]["patch_size"] = [24, 200]
    with pytest.raises(PairedDataError, match=r"smaller than the patch size 24x200 \(height x width\)"):
        train(parse_config(config), None, tmp_path / "run2", progress=False)


def test_a_mixed_run_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    from mirnet.training import parse_config, train

    straight = train(
        parse_config(_mixed_config(tmp_path, scheduler="cosine")), None, tmp_path / "a", progress=False
    )
    train(
        parse_config(_mixed_config(tmp_path, scheduler="cosine", max_steps=5)),
        None,
        tmp_path / "b",
        progress=False,
    )
    resumed = train(
        parse_config(_mixed_config(tmp_path, scheduler="cosine")),
        None,
        tmp_path / "b",
        resume=True,
        progress=False,
    )
    a, b = load_file(straight), load_file(resumed)
    assert all(torch.equal(a[key], b[key]) for key in a)
