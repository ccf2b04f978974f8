"""Shared fixtures: small images and datasets the tests make themselves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# One thread: these models and images are tiny, and a second thread only adds OpenMP
# synchronisation (test_train.py took 195 s with 2 threads on busy cores, 5.5 s with 1).
torch.set_num_threads(1)


def smooth_image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth, colourful (H, W, 3) uint8 image: gradients plus blobs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        channels.append(
            0.5 + 0.3 * np.sin(3 * a * x + 4 * b * y + c) + 0.1 * rng.standard_normal((height, width))
        )
    return (np.clip(np.stack(channels, -1), 0, 1) * 255).round().astype(np.uint8)


def darken(image: np.ndarray, factor: float = 0.15, seed: int = 0) -> np.ndarray:
    """A low-light version: scaled down, gamma'd, with a little noise."""
    rng = np.random.default_rng(seed)
    dark = (image / 255.0) ** 1.3 * factor + rng.normal(0, 0.01, image.shape)
    return (np.clip(dark, 0, 1) * 255).round().astype(np.uint8)


def make_pairs(
    root: Path,
    split: str,
    count: int,
    low_name="low",
    high_name="high",
    size=(48, 64),
    low_fmt="{i}.png",
    high_fmt="{i}.png",
    offset: int = 0,
) -> Path:
    """Write ``count`` synthetic low/high pairs under root/split/{low,high}."""
    low_dir, high_dir = root / split / low_name, root / split / high_name
    low_dir.mkdir(parents=True, exist_ok=True)
    high_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        high = smooth_image(offset + i, *size)
        Image.fromarray(high).save(high_dir / high_fmt.format(i=i))
        Image.fromarray(darken(high, seed=i)).save(low_dir / low_fmt.format(i=i))
    return root


@pytest.fixture
def paired_dataset(tmp_path: Path) -> Path:
    """A real_pairs-like dataset: 10 train and 3 test synthetic pairs of 48x64."""
    root = tmp_path / "pairs"
    make_pairs(root, "train", 10)
    make_pairs(root, "test", 3, offset=100)
    return root


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """An (H, W, 3) uint8 image encoded in memory (PNG, or another format Pillow writes)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained nano model's weights file: fast, and enough to exercise the whole pipeline."""
    import mirnet
    from mirnet.weights import arch_config, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "nano.safetensors"
    return save_weights(path, mirnet.build_model("nano"), "nano", arch_config("nano"))
