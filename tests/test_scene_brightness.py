"""scripts/scene_brightness.py: the brightness statistics behind the LoL-v1 analysis in the README."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mirnet.data.pairs import find_pairs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "scene_brightness.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("scene_brightness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_pair(root: Path, split: str, name: str, truth: float, dark: float) -> None:
    """A flat gray pair with the given brightness (0-1) for its ground truth and dark input."""
    for folder, level in (("high", truth), ("low", dark)):
        (root / split / folder).mkdir(parents=True, exist_ok=True)
        pixels = np.full((32, 48, 3), round(level * 255), np.uint8)
        Image.fromarray(pixels).save(root / split / folder / f"{name}.png")


def test_scene_statistics_and_scene_memory(tmp_path: Path, script, weights: Path) -> None:
    # Two scenes whose ground truths are 0.3 and 0.6 bright whatever the input's brightness,
    # so the input tells nothing of it and all of its variance lies between scenes.
    scenes = {}
    for index, (scene, truth, dark) in enumerate(
        [("a", 0.3, 0.02), ("a", 0.3, 0.08), ("b", 0.6, 0.03), ("b", 0.6, 0.07), ("b", 0.6, 0.05)]
    ):
        write_pair(tmp_path, "train", str(index), truth, dark)
        scenes[str(index)] = scene
    write_pair(tmp_path, "test", "10", 0.6, 0.04)  # a photo of scene b
    write_pair(tmp_path, "test", "11", 0.5, 0.04)  # a scene not trained on
    scenes.update({"10": "b", "11": "c"})

    stats, scene_mean = script.training_statistics(find_pairs(tmp_path, "train"), scenes)
    assert stats["pairs"] == 5 and stats["scenes"] == 2
    assert stats["truth_variance_between_scenes"] == pytest.approx(1.0)
    assert scene_mean["a"] == pytest.approx(0.3, abs=0.003)
    assert scene_mean["b"] == pytest.approx(0.6, abs=0.003)

    scores = script.test_scores(find_pairs(tmp_path, "test"), scenes, scene_mean, str(weights))
    assert scores["pairs"] == 2 and scores["pairs_with_training_scene"] == 1
    known = next(row for row in scores["per_pair"] if row["name"] == "10")
    # The remembered brightness is the test photo's own here, so it scores as GT-mean does.
    assert known["scene_memory"] == pytest.approx(known["gt_mean"], abs=0.05)
    assert "scene_memory" not in next(row for row in scores["per_pair"] if row["name"] == "11")
