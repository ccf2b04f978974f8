"""Training losses: Charbonnier and SSIM, combined with configurable weights."""

from __future__ import annotations

import torch
from torch import nn

from mirnet.metrics import ssim_map


class CharbonnierLoss(nn.Module):
    """mean(sqrt((pred - target)^2 + eps^2)): a smooth L1 that is robust to outliers."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((pred - target).pow(2) + self.eps**2).mean()


class SSIMLoss(nn.Module):
    """1 - SSIM (Gaussian window 11, sigma 1.5), on predictions clamped to [0, 1]."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # SSIM is computed in fp32 even under autocast: its variance terms cancel badly in bf16.
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return 1.0 - ssim_map(pred.float().clamp(0, 1), target.float()).mean()


class EnhancementLoss(nn.Module):
    """charbonnier_weight * Charbonnier + ssim_weight * (1 - SSIM)."""

    def __init__(self, charbonnier_weight: float = 1.0, ssim_weight: float = 0.0, eps: float = 1e-3):
        super().__init__()
        self.charbonnier_weight = charbonnier_weight
        self.ssim_weight = ssim_weight
        self.charbonnier = CharbonnierLoss(eps)
        self.ssim = SSIMLoss()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.charbonnier_weight * self.charbonnier(pred, target)
        if self.ssim_weight:
            loss = loss + self.ssim_weight * self.ssim(pred, target)
        return loss
