"""Make the sample low-light photos in samples/ from public-domain / CC0 images that
scikit-image ships (astronaut, coffee, chelsea, rocket; licences in samples/README.md).

A dark exposure is simulated in linear light: undo the sRGB curve, scale the exposure down,
add shot (Poisson) and read (Gaussian) noise as a small sensor would, and re-apply the
curve. Run: python scripts/make_samples.py  (deterministic: seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

SAMPLES = {"astronaut": 0.06, "coffee": 0.05, "chelsea": 0.07, "rocket": 0.08}
FULL_WELL = 2000.0  # photo-electrons at white before the exposure drop
READ_NOISE = 1.5  # electrons


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def darken(image: np.ndarray, exposure: float, rng: np.random.Generator) -> np.ndarray:
    linear = srgb_to_linear(image.astype(np.float64) / 255.0) * exposure
    electrons = rng.poisson(linear * FULL_WELL) + rng.normal(0, READ_NOISE, linear.shape)
    dark = linear_to_srgb(np.clip(electrons / FULL_WELL, 0, 1))
    return (dark * 255).round().astype(np.uint8)


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "samples"
    out.mkdir(exist_ok=True)
    for index, (name, exposure) in enumerate(SAMPLES.items()):
        image = getattr(data, name)()[..., :3]
        if max(image.shape[:2]) > 640:  # keep the repository light
            pil = Image.fromarray(image)
            pil.thumbnail((640, 640), Image.Resampling.LANCZOS)
            image = np.asarray(pil)
        dark = darken(image, exposure, np.random.default_rng(index))
        Image.fromarray(dark).save(out / f"{name}_dark.png", optimize=True)
        print(f"{name}: {dark.shape[1]}x{dark.shape[0]}, mean {dark.mean():.1f}/255")


if __name__ == "__main__":
    main()
