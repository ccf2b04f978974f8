"""Classical low-light baselines, from Pillow and scikit-image rather than hand-written.

Each takes and returns a (3, H, W) float tensor in [0, 1]. scikit-image works on (H, W, 3)
float64 arrays; its results are clipped back to [0, 1] against rounding overshoot.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from skimage import color, exposure

from mirnet.io import array_to_tensor, tensor_to_array, to_uint


def identity(image: torch.Tensor) -> torch.Tensor:
    """The dark input itself: the floor every method should beat."""
    return image.clone()


def autocontrast(image: torch.Tensor) -> torch.Tensor:
    """Pillow's ImageOps.autocontrast: stretch each channel's histogram to 0..255."""
    return array_to_tensor(np.asarray(ImageOps.autocontrast(Image.fromarray(to_uint(image)))))


def histogram_equalisation(image: torch.Tensor) -> torch.Tensor:
    """Global histogram equalisation with one histogram over all three channels
    (scikit-image ``equalize_hist`` of the RGB array), which keeps the colour balance that
    equalising each channel separately would break."""
    with warnings.catch_warnings():
        # skimage warns that "this might be a color image": one shared histogram is the intent.
        warnings.filterwarnings("ignore", message="This might be a color image")
        return array_to_tensor(np.clip(exposure.equalize_hist(tensor_to_array(image, np.float64)), 0, 1))


def clahe(image: torch.Tensor) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (scikit-image ``equalize_adapthist``,
    default clip limit 0.01 on 1/8-size tiles)."""
    return array_to_tensor(np.clip(exposure.equalize_adapthist(tensor_to_array(image, np.float64)), 0, 1))


def gamma_to_mean(image: torch.Tensor, target: float = 0.45) -> torch.Tensor:
    """Gamma correction with the exponent that maps the mean luminance to ``target``
    (scikit-image ``adjust_gamma``)."""
    array = tensor_to_array(image, np.float64)
    mean = float(color.rgb2gray(array).mean())
    gamma = float(np.log(target) / np.log(min(max(mean, 1e-4), 0.999)))
    return array_to_tensor(np.clip(exposure.adjust_gamma(array, gamma), 0, 1))


CLASSICAL_METHODS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "dark input": identity,
    "autocontrast (PIL)": autocontrast,
    "histogram equalisation": histogram_equalisation,
    "CLAHE": clahe,
    "gamma (mean to 0.45)": gamma_to_mean,
}
