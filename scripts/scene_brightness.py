"""How much of a paired dataset's ground-truth brightness the dark input tells, and how much
of a model's error on its test split is brightness.

    python scripts/scene_brightness.py --data ../data/LOL --scenes ../shared/data/lol/scenes.csv \
        [--weights tiny] [--json experiments/general_tiny_320/lol_brightness.json]

Brightness is an image's mean BT.601 gray level (:func:`mirnet.metrics.gray_mean`). On the
training split it reports:

- the correlation between the dark input's brightness and its ground truth's, over all pairs
  and within scenes (each pair's brightness minus its scene's mean);
- the share of the ground truth's brightness variance that lies between scenes, which a model
  can learn only by recognising a scene it was trained on.

With ``--weights`` it enhances the test split and scores it three ways: plain PSNR; GT-mean
PSNR (the output scaled to its own ground truth's brightness: no exposure error left); and
"scene-memory" PSNR, the output scaled to the mean ground-truth brightness of the *training*
pairs of the same scene. The last is what a model that remembered each training scene's
exposure could reach without knowing the test photo's ground truth; it is given only over the
test pairs whose scene is in the training split (13 of LoL-v1's 15), next to the plain and
GT-mean scores of the same pairs.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mirnet.data.pairs import find_pairs, load_pair, read_scenes
from mirnet.inference import load_model
from mirnet.io import atomic_path
from mirnet.metrics import gray_mean, psnr_per_image


def brightness(image: torch.Tensor) -> float:
    """Mean gray level of a (3, H, W) image in [0, 1]."""
    return float(gray_mean(image.unsqueeze(0))[0])


def correlation(a, b) -> float | None:
    """Pearson correlation, rounded; None where either side does not vary."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 3)


def training_statistics(pairs, scenes: dict[str, str]) -> tuple[dict, dict[str, float]]:
    """Input/ground-truth brightness statistics of the training pairs, and each scene's mean
    ground-truth brightness."""
    low, high, scene = [], [], []
    for pair in tqdm(pairs, desc="training pairs", unit="pair"):
        dark, bright = load_pair(pair)
        low.append(brightness(dark))
        high.append(brightness(bright))
        scene.append(scenes.get(pair.name, f"pair:{pair.name}"))
    low, high = np.array(low), np.array(high)
    members = defaultdict(list)
    for index, name in enumerate(scene):
        members[name].append(index)
    # Each pair's brightness minus its scene's mean; pairs alone in their scene are left out
    # of the within-scene correlation (their deviation is zero by construction).
    low_deviation, high_deviation, shared = np.zeros_like(low), np.zeros_like(high), np.zeros(len(low), bool)
    for indices in members.values():
        low_deviation[indices] = low[indices] - low[indices].mean()
        high_deviation[indices] = high[indices] - high[indices].mean()
        shared[indices] = len(indices) > 1
    scene_mean = {name: float(high[indices].mean()) for name, indices in members.items()}
    stats = {
        "pairs": len(pairs),
        "scenes": len(members),
        "scenes_with_several_pairs": sum(len(i) > 1 for i in members.values()),
        "input_brightness_p10_p50_p90": np.percentile(low, [10, 50, 90]).round(4).tolist(),
        "truth_brightness_p10_p50_p90": np.percentile(high, [10, 50, 90]).round(4).tolist(),
        "truth_brightness_std": round(float(high.std()), 4),
        "corr_input_truth_all": correlation(low, high),
        "corr_input_truth_within_scene": correlation(low_deviation[shared], high_deviation[shared]),
        # 1 - (variance around each scene's mean) / (total variance)
        "truth_variance_between_scenes": round(float(1 - high_deviation.var() / high.var()), 3),
    }
    return stats, scene_mean


def test_scores(pairs, scenes: dict[str, str], scene_mean: dict[str, float], weights: str) -> dict:
    """Plain, GT-mean and scene-memory PSNR of a model on the test pairs."""
    enhancer = load_model(weights)
    rows = []
    for pair in tqdm(pairs, desc="test pairs", unit="pair"):
        dark, truth = load_pair(pair)
        out = enhancer.enhance_tensor(dark).unsqueeze(0)
        truth = truth.unsqueeze(0)
        row = {
            "name": pair.name,
            "output_brightness": round(brightness(out[0]), 4),
            "truth_brightness": round(brightness(truth[0]), 4),
            "plain": float(psnr_per_image(out, truth)[0]),
            "gt_mean": float(psnr_per_image(out, truth, gt_mean=True)[0]),
        }
        known = scene_mean.get(scenes.get(pair.name, ""))
        if known is not None:
            scaled = (out * known / max(brightness(out[0]), 1e-12)).clamp(0, 1)
            row["scene_memory"] = float(psnr_per_image(scaled, truth)[0])
        rows.append(row)
    seen = [r for r in rows if "scene_memory" in r]

    def mean(key: str, subset: list[dict]) -> float | None:
        return round(float(np.mean([r[key] for r in subset])), 2) if subset else None

    output = np.array([r["output_brightness"] for r in rows])
    truth = np.array([r["truth_brightness"] for r in rows])
    return {
        "weights": weights,
        "pairs": len(rows),
        "plain": mean("plain", rows),
        "gt_mean": mean("gt_mean", rows),
        "corr_output_truth_brightness": correlation(output, truth),
        "pairs_with_training_scene": len(seen),
        "on_those": {k: mean(k, seen) for k in ("plain", "gt_mean", "scene_memory")},
        "per_pair": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="paired dataset root (train and test split)")
    parser.add_argument("--scenes", type=Path, required=True, help="split,name,scene CSV")
    parser.add_argument("--weights", help="also score this model (name or weights file) on the test split")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    scenes = read_scenes(args.scenes)
    stats, scene_mean = training_statistics(find_pairs(args.data, "train"), scenes)
    result = {"data": str(args.data), "training": stats}
    print(json.dumps(stats, indent=1))
    if args.weights:
        scores = test_scores(find_pairs(args.data, "test"), scenes, scene_mean, args.weights)
        result["test"] = scores
        print(json.dumps({k: v for k, v in scores.items() if k != "per_pair"}, indent=1))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
