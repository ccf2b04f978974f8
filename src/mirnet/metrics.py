"""Image quality metrics on images in [0, 1].

PSNR and SSIM follow the definitions scikit-image uses (``peak_signal_noise_ratio`` and
``structural_similarity`` with ``data_range=1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False``; Wang et al. 2004), computed per image and averaged over the
batch. Inputs outside [0, 1] are refused: scoring such images with the [0, 1] peak (or
[0, 1] images with a peak of 255, which gives the "65 dB on LoL" of some reports) yields
numbers that mean nothing.

``gt_mean=True`` gives the "GT-mean" variant of the low-light literature: the prediction is
scaled so that its mean gray level matches the ground truth's, then clipped to [0, 1],
before scoring. It removes the global exposure error, which a user can fix with one slider,
and scores the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, as in OpenCV's RGB-to-gray conversion used by GT-mean code.
_LUMA = (0.299, 0.587, 0.114)


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"{name} must be shaped (C, H, W) or (N, C, H, W), got {tuple(image.shape)}")
    return image


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _as_batch(pred, "pred"), _as_batch(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    for name, image in (("pred", pred), ("target", target)):
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0 or low != low or high != high:
            raise ValueError(
                f"{name} has values in [{low:.4g}, {high:.4g}]; metrics need images in [0, 1] "
                "(clamp model outputs, and divide 8-bit images by 255)"
            )
    return pred.double(), target.double()


def gray_mean(images: torch.Tensor) -> torch.Tensor:
    """Mean BT.601 luma of each image in an (N, 3, H, W) batch, shape (N,)."""
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1).mean(dim=(1, 2))


def match_gt_mean(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale each prediction so its mean gray level equals its target's, clipped to [0, 1]."""
    pred, target = _as_batch(pred, "pred"), _as_batch(target, "target")
    scale = gray_mean(target) / gray_mean(pred).clamp_min(1e-12)
    return (pred * scale.view(-1, 1, 1, 1)).clamp(0.0, 1.0)


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, gt_mean: bool = False) -> torch.Tensor:
    """PSNR in dB of each image pair, shape (N,). Identical images give +inf."""
    pred, target = _check_pair(pred, target)
    if gt_mean:
        pred = match_gt_mean(pred, target)
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def psnr(pred: torch.Tensor, target: torch.Tensor, gt_mean: bool = False) -> float:
    """Mean PSNR in dB over the batch, for images in [0, 1]."""
    return float(psnr_per_image(pred, target, gt_mean).mean())


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, as scipy's gaussian_filter uses for this size."""
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return taps / taps.sum()


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (N, C, H-window+1, W-window+1) of images with data range 1.

    Only the positions where the whole window fits are returned; scikit-image crops the same
    border before averaging. Differentiable, so the SSIM loss uses it too.
    """
    channels = pred.shape[1]
    taps = gaussian_window(window, sigma, pred.dtype).to(pred.device)
    # The 2-D Gaussian is separable: one horizontal and one vertical depthwise pass.
    horizontal = taps.view(1, 1, 1, -1).expand(channels, 1, 1, window)
    vertical = taps.view(1, 1, -1, 1).expand(channels, 1, window, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x * mu_x
    var_y = blur(target * target) - mu_y * mu_y
    cov = blur(pred * target) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, gt_mean: bool = False) -> torch.Tensor:
    """SSIM of each image pair, averaged over pixels and channels, shape (N,)."""
    pred, target = _check_pair(pred, target)
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(pred.shape[-2:])}")
    if gt_mean:
        pred = match_gt_mean(pred, target)
    return ssim_map(pred, target).mean(dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor, gt_mean: bool = False) -> float:
    """Mean SSIM over the batch (Gaussian window 11, sigma 1.5), for images in [0, 1]."""
    return float(ssim_per_image(pred, target, gt_mean).mean())
