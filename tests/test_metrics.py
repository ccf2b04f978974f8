import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mirnet import metrics
from mirnet.losses import CharbonnierLoss, EnhancementLoss, SSIMLoss


def _pair(seed=0, shape=(3, 40, 56), noise=0.1):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen)
    pred = (target + noise * torch.randn(shape, generator=gen)).clamp(0, 1)
    return pred, target


def _skimage_ssim(pred, target):
    return structural_similarity(
        pred.numpy().astype(np.float64),
        target.numpy().astype(np.float64),
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=0,
    )


@pytest.mark.parametrize("seed,noise", [(0, 0.1), (1, 0.02), (2, 0.3)])
def test_psnr_and_ssim_match_scikit_image(seed, noise):
    pred, target = _pair(seed, noise=noise)
    expected_psnr = peak_signal_noise_ratio(target.numpy(), pred.numpy(), data_range=1)
    assert abs(metrics.psnr(pred, target) - expected_psnr) < 1e-3
    assert abs(metrics.ssim(pred, target) - _skimage_ssim(pred, target)) < 1e-4


def test_batch_metrics_are_means_of_images():
    pairs = [_pair(s) for s in range(3)]
    pred = torch.stack([p for p, _ in pairs])
    target = torch.stack([t for _, t in pairs])
    assert metrics.psnr(pred, target) == pytest.approx(np.mean([metrics.psnr(p, t) for p, t in pairs]))
    assert metrics.ssim(pred, target) == pytest.approx(
        np.mean([_skimage_ssim(p, t) for p, t in pairs]), abs=1e-4
    )


def test_values_outside_unit_range_are_refused():
    pred, target = _pair()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.psnr(pred * 255, target * 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.ssim(pred - 0.5, target)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(pred, target[:, :10])


def test_gt_mean_removes_a_global_exposure_error():
    _, target = _pair(noise=0)
    darker = target * 0.5
    assert metrics.psnr(darker, target) < 15
    assert metrics.psnr(darker, target, gt_mean=True) > 60
    assert metrics.ssim(darker, target, gt_mean=True) > 0.999


def test_gt_mean_matches_a_direct_computation():
    pred, target = _pair(3)
    gray = lambda x: (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).mean()  # noqa: E731
    scaled = (pred * gray(target) / gray(pred)).clamp(0, 1)
    expected = peak_signal_noise_ratio(target.numpy(), scaled.numpy(), data_range=1)
    assert abs(metrics.psnr(pred, target, gt_mean=True) - expected) < 1e-3


def test_losses():
    pred, target = (x[None] for x in _pair())
    assert float(CharbonnierLoss()(target, target)) == pytest.approx(1e-3)
    assert float(SSIMLoss()(target, target)) == pytest.approx(0.0, abs=1e-6)
    combined = EnhancementLoss(1.0, 0.5)(pred, target)
    expected = CharbonnierLoss()(pred, target) + 0.5 * (1 - metrics.ssim(pred, target))
    assert float(combined) == pytest.approx(float(expected), abs=1e-4)
