"""The run folder: everything a training run writes, each file written atomically::

    RUN/config.yaml        the resolved configuration
    RUN/split.json         which images were trained on and which held out (read back on resume)
    RUN/last.pt, best.pt   resumable checkpoints (model, its moving average if kept, optimizer,
                           scheduler, position)
    RUN/log.csv            one row per epoch; curves.png plots it
    RUN/model.safetensors  the best weights (by validation PSNR), and model.json, its card

Only rank 0 writes; checkpoints are plain tensors and numbers, loaded with
``weights_only=True`` (a checkpoint is data, never code).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
import yaml

import mirnet
from mirnet.archs import MIRNet, count_parameters
from mirnet.io import atomic_path
from mirnet.weights import exported_state, read_checkpoint, save_weights


class RunFolder:
    """Reads and writes the files of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tensorboard = None  # a SummaryWriter once open_tensorboard() is called

    def open_tensorboard(self) -> None:
        """Also log every epoch's row to RUN/tensorboard (needs the tensorboard package)."""
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(self.path / "tensorboard")

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def holds_run(self) -> bool:
        return (self.path / "last.pt").exists()

    def clear_stale_temporaries(self) -> None:
        """Remove the temporary files of writes cut short by a SIGKILL: harmless, but they pile up."""
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def _write_text(self, name: str, text: str) -> None:
        with atomic_path(self.path / name) as tmp:
            tmp.write_text(text)

    def write_config(self, config: dict[str, Any]) -> None:
        self._write_text("config.yaml", yaml.safe_dump(config, sort_keys=False))

    def write_split(self, split: dict[str, Any]) -> None:
        self._write_text("split.json", json.dumps(split, indent=1))

    def read_split(self) -> dict[str, Any] | None:
        """The split a run started with, or None for a run folder that has none."""
        path = self.path / "split.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_card(self, card: dict[str, Any]) -> None:
        self._write_text("model.json", json.dumps(card, indent=2))

    def save_checkpoint(self, state: dict[str, Any], name: str = "last.pt") -> None:
        with atomic_path(self.path / name) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, name: str = "last.pt") -> dict[str, Any] | None:
        path = self.path / name
        return read_checkpoint(path) if path.is_file() else None  # weights-only: nothing runs

    def best_checkpoint(self) -> dict[str, Any]:
        """best.pt, or last.pt for a run that never validated."""
        return self.load_checkpoint("best.pt") or self.load_checkpoint("last.pt")

    def export(self, name: str, arch: dict[str, Any], card: dict[str, Any]) -> Path:
        """Write the best checkpoint's weights as model.safetensors, and model.json, its card:
        ``card`` plus what the checkpoint and the weights tell (epoch, validation, size)."""
        checkpoint = self.best_checkpoint()
        model = MIRNet(**arch)
        model.load_state_dict(exported_state(checkpoint))
        weights = save_weights(self.path / "model.safetensors", model, name, arch)
        position = checkpoint["position"]
        self.write_card(
            {
                "name": name,
                "arch": arch,
                "parameters": count_parameters(model),
                **card,
                "selected_epoch": position["epoch"],
                # None for a run without a validation set (its last epoch is exported)
                "validation": (
                    {"psnr": position["best_psnr"], "epoch": position["best_epoch"]}
                    if position["best_epoch"] > 0
                    else None
                ),
                "mirnet_version": mirnet.__version__,
                "torch_version": torch.__version__,
            }
        )
        return weights

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Append one epoch's row to log.csv (replacing a row of the same epoch) and redraw curves.png."""
        log = self.path / "log.csv"
        rows = []
        if log.exists():
            with open(log, newline="") as handle:
                # A run killed after logging an epoch but before its checkpoint logs it again on
                # resume: the new row replaces the old one.
                rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < row["epoch"]]
        with atomic_path(log) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            writer.writeheader()
            writer.writerows([*rows, row])
        plot_curves(log, self.path / "curves.png")
        if self.tensorboard:
            for key, value in row.items():
                if key != "epoch":
                    self.tensorboard.add_scalar(key, value, row["epoch"])


def plot_curves(log_csv: Path, out_png: Path) -> None:
    """Plot training loss and validation PSNR per epoch (per source too) from a run's log.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv) as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in rows])
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    sources = [key for key in rows[0] if key.startswith("val_psnr_")]
    ax_psnr.plot(
        epochs, [float(r["val_psnr"]) for r in rows], color="black", label="mean" if sources else None
    )
    for key in sources:
        ax_psnr.plot(epochs, [float(r[key]) for r in rows], label=key.removeprefix("val_psnr_"), alpha=0.8)
    ax_psnr.set(xlabel="epoch", ylabel="PSNR (dB)", title="Validation PSNR")
    if sources:
        ax_psnr.legend(fontsize=8)
    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
