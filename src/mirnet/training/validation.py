"""Validation during training: PSNR and SSIM on whole held-out images, per source."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from tqdm import tqdm

from mirnet.data.mixture import ValidationImage
from mirnet.metrics import psnr_per_image, ssim_per_image


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``, or nothing for fp32 (``dtype`` None)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.inference_mode()
def validate(
    model: torch.nn.Module,
    images: list[ValidationImage],
    device: torch.device,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Mean PSNR and SSIM of the model on whole validation images."""
    model.eval()
    psnrs, ssims = [], []
    for image in tqdm(images, desc="validating", unit="img", leave=False, disable=not progress):
        with autocast(device, dtype):
            out = model(image.low.unsqueeze(0).to(device))
        out, high = out.float().clamp(0, 1).cpu(), image.high.unsqueeze(0)
        psnrs.append(float(psnr_per_image(out, high)[0]))
        ssims.append(float(ssim_per_image(out, high)[0]))
    model.train()
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def validate_sets(
    model: torch.nn.Module,
    sets: dict[str, list[ValidationImage]],
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """(PSNR and SSIM averaged over the sets, each set counting the same whatever its size;
    ``val_psnr_NAME`` per set when there are several, for the log)."""
    results = {name: validate(model, images, device, dtype) for name, images in sets.items()}
    scores = {key: sum(r[key] for r in results.values()) / len(results) for key in ("psnr", "ssim")}
    per_set = (
        {f"val_psnr_{name}": round(r["psnr"], 4) for name, r in results.items()} if len(results) > 1 else {}
    )
    return scores, per_set
