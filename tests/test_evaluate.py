"""``mirnet evaluate`` on several test sets and models in one command (issue 14)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

import mirnet
from mirnet.cli import main
from mirnet.evaluate import PSNR_CAP, darkened_set, score, well_exposed_set
from mirnet.weights import arch_config, save_weights
from tests.conftest import make_pairs, smooth_image


@pytest.fixture
def two_models(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        paths.append(
            save_weights(
                folder / "model.safetensors", mirnet.build_model("nano"), "nano", arch_config("nano")
            )
        )
    return paths


def _photos(folder, count):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(smooth_image(i, 40, 48)).save(folder / f"{i}.png")
    return folder


def test_identical_images_score_the_cap_not_infinity():
    image = torch.rand(3, 16, 16)
    scores = score(image, image)
    assert scores["psnr"] == PSNR_CAP and scores["ssim"] == pytest.approx(1.0)


def test_darkened_set_is_repeatable_and_dark(tmp_path):
    folder = _photos(tmp_path / "clean", 3)
    a, b = darkened_set("d", [folder]), darkened_set("d", [folder])
    for x, y in zip(a.items, b.items, strict=True):
        (low_x, high_x), (low_y, _) = x.load(), y.load()
        assert torch.equal(low_x, low_y) and low_x.mean() < 0.5 * high_x.mean()


def test_well_exposed_names_carry_their_folder_when_there_are_several(tmp_path):
    test_set = well_exposed_set("w", [_photos(tmp_path / "a", 2), _photos(tmp_path / "b", 2)])
    assert [item.name for item in test_set.items] == ["a/0", "a/1", "b/0", "b/1"]
    low, high = test_set.items[0].load()
    assert torch.equal(low, high)


def test_several_sets_and_models_in_one_command(tmp_path, two_models, capsys):
    lol = make_pairs(tmp_path / "lol", "eval15", 2)
    make_pairs(tmp_path / "lol", "our485", 2)
    pairs = make_pairs(tmp_path / "pairs", "test", 3)
    clean = _photos(tmp_path / "clean", 3)
    out = tmp_path / "eval"
    args = ["evaluate", "--weights", *map(str, two_models), "--data", f"lol={lol}", f"mine={pairs}"]
    args += ["--darkened", str(clean), "--well-exposed", str(clean), "--out", str(out), "-q"]
    assert main(args) == 0
    for name, images in [("lol", 2), ("mine", 3), ("darkened", 3), ("well-exposed", 3)]:
        report = json.loads((out / name / "results.json").read_text())  # strict JSON: no Infinity
        labels = set(report["mean"])
        assert {"MIRNet nano (run0)", "MIRNet nano (run1)", "gamma (mean to 0.45)"} <= labels
        assert all(m["images"] == images and math.isfinite(m["psnr"]) for m in report["mean"].values())
        assert ("dark input" in labels) == (name != "well-exposed")  # the input is the target there
    summary = (out / "summary.md").read_text()
    assert summary.count("| method |") == 4 and "well-exposed" in summary


def test_a_self_ensemble_is_scored_under_its_own_label(tmp_path, two_models):
    pairs = make_pairs(tmp_path / "pairs", "test", 2)
    out = tmp_path / "eval"
    args = ["evaluate", "--weights", str(two_models[0]), "--data", str(pairs), "--no-classical"]
    assert main([*args, "--self-ensemble", "2", "--out", str(out), "-q"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["mean"]) == ["MIRNet nano x2"]
    assert report["meta"]["models"][0]["self_ensemble"] == 2
    assert main([*args, "--out", str(tmp_path / "plain"), "-q"]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())["mean"]["MIRNet nano"]
    assert plain["psnr"] != report["mean"]["MIRNet nano x2"]["psnr"]


def test_nothing_to_score_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--classical-only", "--out", str(tmp_path / "e")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "give --data, --darkened or --well-exposed" in line
