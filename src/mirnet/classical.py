"""Classical low-light baselines, from Pillow and scikit-image rather than hand-written.

Each takes and returns a (3, H, W) float tensor in [0, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from skimage import color, exposure

from mirnet.io import to_uint


def _numpy(image: torch.Tensor) -> np.ndarray:
    return image.double().numpy().transpose(1, 2, 0)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.clip(array, 0, 1).transpose(2, 0, 1))).float()


def identity(image: torch.Tensor) -> torch.Tensor:
    """The dark input itself: the floor every method should beat."""
    return image.clone()


def autocontrast(image: torch.Tensor) -> torch.Tensor:
    """Pillow's ImageOps.autocontrast: stretch each channel's histogram to 0..255."""
    return _tensor(np.asarray(ImageOps.autocontrast(Image.fromarray(to_uint(image)))) / 255.0)


def histogram_equalisation(image: torch.Tensor) -> torch.Tensor:
    """Global histogram equalisation with one histogram over all three channels
    (scikit-image ``equalize_hist`` of the RGB array), which keeps the colour balance that
    equalising each channel separately would break."""
    with warnings.catch_warnings():
        # skimage warns that "this might be a color image": one shared histogram is the intent.
        warnings.filterwarnings("ignore", message="This might be a color image")
        return _tensor(exposure.equalize_hist(_numpy(image)))


def clahe(image: torch.Tensor) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (scikit-image ``equalize_adapthist``,
    default clip limit 0.01 on 1/8-size tiles)."""
    return _tensor(exposure.equalize_adapthist(_numpy(image)))


def gamma_to_mean(image: torch.Tensor, target: float = 0.45) -> torch.Tensor:
    """Gamma correction with the exponent that maps the mean luminance to ``target``
    (scikit-image ``adjust_gamma``)."""
    mean = float(color.rgb2gray(_numpy(image)).mean())
    gamma = float(np.log(target) / np.log(min(max(mean, 1e-4), 0.999)))
    return _tensor(exposure.adjust_gamma(_numpy(image), gamma))


CLASSICAL_METHODS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "dark input": identity,
    "autocontrast (PIL)": autocontrast,
    "histogram equalisation": histogram_equalisation,
    "CLAHE": clahe,
    "gamma (mean to 0.45)": gamma_to_mean,
}
