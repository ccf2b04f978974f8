"""Synthetic low-light photos made from well-exposed ones, the way a camera would make them.

A clean sRGB photo is taken back to linear light, its exposure lowered, its white balance
shifted, photon shot noise and sensor read noise added, and it is taken back to sRGB and
8 bits (optionally JPEG). This follows the "unprocessing" model of Brooks et al., CVPR 2019
("Unprocessing Images for Learned Raw Denoising"): heteroscedastic Gaussian noise of variance
``shot * x + read`` in linear light, with the read noise tied to the shot noise by their
fitted log-linear relation. The ranges below give dark photos whose mean is mostly between
0.02 and 0.15, like LoL's low images (mean about 0.05-0.1).

So that the model learns to leave good photos alone, a fraction of samples is only slightly
darkened (a gentle lift is wanted) and a fraction is not darkened at all (the target is the
input itself).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Darkening:
    """Ranges of the camera-like darkening; every sample draws its own values from them.

    Exposure is the factor applied in linear light (log-uniform). Shot noise is the variance
    per unit of linear signal (log-uniform, Brooks et al.'s range capped for 8-bit photos);
    read noise follows log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26).
    """

    exposure: tuple[float, float] = (0.01, 0.2)
    gentle_exposure: tuple[float, float] = (0.3, 0.85)
    gentle_fraction: float = 0.15  # samples only slightly darkened
    well_exposed_fraction: float = 0.1  # samples left as they are: input = target
    shot_noise: tuple[float, float] = (1e-4, 6e-3)
    white_balance: tuple[float, float] = (0.75, 1.3)  # red and blue gains relative to green
    jpeg_fraction: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)

    @classmethod
    def from_overrides(cls, overrides: dict) -> Darkening:
        """The defaults with a config's ``data.darkening`` values in place (YAML lists as tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})

    def __post_init__(self) -> None:
        for name in ("exposure", "gentle_exposure", "shot_noise", "white_balance", "jpeg_quality"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"darkening {name}: need 0 < low <= high, got [{low}, {high}]")
        for name in ("gentle_fraction", "well_exposed_fraction", "jpeg_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"darkening {name}: must be in [0, 1], got {getattr(self, name)}")
        if self.gentle_fraction + self.well_exposed_fraction > 1:
            raise ValueError("darkening: gentle_fraction + well_exposed_fraction must be at most 1")


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function's inverse (IEC 61966-2-1), for values in [0, 1]."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function, for linear values in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def darken(
    image: torch.Tensor, rng: np.random.Generator, ranges: Darkening = Darkening(), mode: str | None = None
) -> torch.Tensor:
    """A camera-like dark version of a well-exposed uint8 (3, H, W) photo, as uint8.

    Args:
        image: the clean photo, uint8 sRGB.
        rng: the source of every random choice (seed it for reproducible samples).
        ranges: the ranges to draw from.
        mode: ``"dark"``, ``"gentle"`` or ``"none"`` to force one kind of sample; ``None``
            draws it by ``ranges``' fractions.
    """
    if mode is None:
        u = rng.uniform()
        mode = (
            "none"
            if u < ranges.well_exposed_fraction
            else "gentle"
            if u < ranges.well_exposed_fraction + ranges.gentle_fraction
            else "dark"
        )
    if mode == "none":
        return image.clone()
    if mode not in ("dark", "gentle"):
        raise ValueError(f"unknown darkening mode {mode!r}; use dark, gentle or none")
    linear = srgb_to_linear(image.numpy().astype(np.float32) / 255)
    exposure = _log_uniform(rng, *(ranges.exposure if mode == "dark" else ranges.gentle_exposure))
    gains = np.array(
        [_log_uniform(rng, *ranges.white_balance), 1.0, _log_uniform(rng, *ranges.white_balance)],
        dtype=np.float32,
    )
    linear = linear * (exposure * gains[:, None, None])
    shot = _log_uniform(rng, *ranges.shot_noise)
    if mode == "gentle":
        shot *= exposure  # a brighter exposure: relatively less noise
    read = float(np.exp(2.18 * np.log(shot) + 1.20 + rng.normal(0.0, 0.26)))
    std = np.sqrt(np.maximum(shot * linear + read, 0.0))
    linear = linear + std * rng.standard_normal(linear.shape).astype(np.float32)
    srgb = np.round(linear_to_srgb(linear) * 255).astype(np.uint8)
    if rng.uniform() < ranges.jpeg_fraction:
        quality = int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1))
        buffer = io.BytesIO()
        Image.fromarray(srgb.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=quality)
        srgb = np.asarray(Image.open(buffer).convert("RGB")).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(srgb))
