"""The training loop: :class:`Trainer` and :func:`train`.

Resuming is exact: every random choice (the epoch's shuffle, each sample's source, crop,
flip and darkening, MixUp) is a pure function of (seed, epoch, position), so a run stopped
after any step and resumed with ``--resume`` ends with the same weights as one that never
stopped (on the same device and thread count). Under ``torchrun`` the same loop runs
DistributedDataParallel (see :mod:`mirnet.training.distributed`).
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from mirnet.archs import MIRNet
from mirnet.data import sample_seed
from mirnet.device import supports_bf16
from mirnet.losses import EnhancementLoss
from mirnet.training.config import ConfigError, ExperimentConfig, load_config, parse_config
from mirnet.training.datasets import training_data
from mirnet.training.distributed import carry_over_steps, rank_samplers, setup_distributed, step_batches
from mirnet.training.run_folder import RunFolder
from mirnet.training.validation import autocast, validate_sets
from mirnet.weights import WeightsError, arch_config, load_weights, resolve_weights


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops without writing broken weights."""


class TrainingStopped(Exception):
    """A stop signal (SIGINT, SIGTERM) ended training after saving a resumable last.pt."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}; resume with --resume")
        self.signum = signum


def autocast_settings(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a gradient scaler is needed)."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            # bf16 autocast: 1.25x (tiny) and 1.48x (small) faster training steps than fp32 on a
            # CPU with native bf16, with the same loss (benchmarks/train_speed.py); emulated
            # bf16 is slower than fp32, so other CPUs stay in fp32.
            precision = "bf16" if supports_bf16(device) else "fp32"
    # fp16 is also allowed on the CPU, where it is slow but takes the same path as a GPU
    # without bf16 (autocast, GradScaler, clipping the unscaled gradient): that is how it is tested.
    return {"fp32": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}[precision]


def mixup_plan(alpha: float, seed: int, size: int) -> tuple[float, list[int]]:
    """MixUp's Beta(alpha, alpha) weight and, for each position of a batch of ``size``, the
    position it is blended with; a pure function of the arguments."""
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    return lam, rng.permutation(size).tolist()


class _StopRequested:
    """Turns SIGINT/SIGTERM into a flag so the loop can save a checkpoint and exit."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, _frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _replan_cosine(scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, epochs: int) -> None:
    """Give a resumed cosine schedule ``epochs`` in all, as if it had been planned that way.

    PyTorch steps the cosine recursively from the previous rate, so changing ``T_max`` alone
    would leave a finished schedule at its minimum. When the plan changes, the rate is set to
    the closed form at the current epoch, from which the recursion follows the new cosine; an
    unchanged plan is left alone, so a plain resume stays bit-exact.
    """
    if scheduler.T_max == epochs:
        return
    scheduler.T_max = epochs
    cosine = (1 + math.cos(math.pi * min(scheduler.last_epoch, epochs) / epochs)) / 2
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = scheduler.eta_min + (base_lr - scheduler.eta_min) * cosine
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def _scheduler(optimizer: torch.optim.Optimizer, config: ExperimentConfig):
    cfg = config.train
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
    )


# A run's position before its first step.
START = {
    "epoch": 0,
    "step_in_epoch": 0,
    "global_step": 0,
    "best_psnr": -math.inf,
    "best_epoch": -1,
    # The running sum of this epoch's step losses, saved so that an epoch resumed half-way
    # still logs the mean over all its steps.
    "epoch_loss_sum": 0.0,
}


def build_model(arch: dict[str, Any], device: torch.device, init_weights: str | None, seed: int) -> MIRNet:
    """The network to train: seeded initial weights, or ``init_weights`` (fine-tuning)."""
    torch.manual_seed(seed)
    model = MIRNet(**arch)
    if init_weights:
        load_init_weights(model, init_weights, arch)
    # Channels-last layout: a 1.2x faster training step on CPU (oneDNN prefers it).
    return model.to(device, memory_format=torch.channels_last)


def load_init_weights(model: MIRNet, name_or_path: str, arch: dict[str, Any]) -> None:
    """Start from trained weights: the run's configuration (fine-tuning), or the same network
    with fewer recursive residual groups (growing it deeper).

    Growing keeps the trained network's function: its groups are copied, and each new group,
    appended after them, starts as the identity (a group is ``x + body(x)``, and its body's last
    convolution starts at zero; its other layers keep their seeded weights and start learning
    once that convolution moves off zero). The deeper network so begins at the trained one's
    quality rather than from scratch (configs/general_medium*.yaml grow ``medium`` from ``tiny``).
    """
    path = resolve_weights(name_or_path)
    trained, info = load_weights(path)
    source = info["arch"]
    if source == arch:
        model.load_state_dict(trained.state_dict())
        return
    groups = source.get("num_groups", 0)
    if {**source, "num_groups": arch.get("num_groups")} != arch or groups > arch["num_groups"]:
        raise WeightsError(
            f"{path}: init_weights has configuration {source}, but this run trains {arch} "
            "(only the number of groups may grow)"
        )
    missing, unexpected = model.load_state_dict(trained.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("groups.") for key in missing)
    with torch.no_grad():
        for group in model.groups[groups:]:
            last = group.body[-1]
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, clip: float
) -> None:
    """Backward and one optimizer step; with fp16, through the gradient scaler, clipping the
    unscaled gradient (``clip`` 0: no clipping)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    if scaler:
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()


def _check_resumable(checkpoint: dict[str, Any] | None, path: Path, arch: dict[str, Any], name: str) -> None:
    if checkpoint is None:
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    if checkpoint["arch"] != arch:
        raise ConfigError(
            f"{path}: --resume with another model: the run trains {checkpoint['name']} {checkpoint['arch']}, "
            f"the config asks for {name} {arch}"
        )


class Trainer:
    """Holds a run's model, optimizer, data and position; :meth:`fit` runs it."""

    def __init__(
        self,
        config: ExperimentConfig,
        data_root: str | os.PathLike | None,
        run_dir: str | os.PathLike,
        resume: bool = False,
        progress: bool = True,
        command: str | None = None,
    ):
        self.config = config
        self.folder = RunFolder(run_dir)
        self.progress = progress
        self.command = command or " ".join(sys.argv)
        self.dist = setup_distributed()
        self.device = self.dist.device
        self.dtype, needs_scaler = autocast_settings(config.train.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_scaler else None

        self.model_name = config.model["name"]
        self.arch = arch_config(self.model_name, **config.arch_overrides)
        self.model = build_model(
            self.arch, self.device, None if resume else config.train.init_weights, config.seed
        )
        self.ddp = self.model
        if self.dist.world_size > 1:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        cfg = config.train
        # The averaged weights are what validation scores and the export writes: at a small
        # learning rate, one step's weights wander by tenths of a dB from epoch to epoch.
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay
            else None
        )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.scheduler = _scheduler(self.optimizer, config)
        self.loss_fn = EnhancementLoss(config.loss.charbonnier, config.loss.ssim, config.loss.eps)
        self.position = dict(START)
        self.stopped_by: int | None = None  # the signal that stopped fit(), if one did

        # Rank 0 alone reads the run folder and tells the others: they may not see its disk,
        # and a rank that raised alone would leave the rest waiting in a collective.
        checkpoint, saved_split = None, None
        if resume:
            if self.dist.is_main:
                checkpoint, saved_split = self.folder.load_checkpoint(), self.folder.read_split()
            checkpoint, saved_split = self.dist.broadcast_object((checkpoint, saved_split))
            _check_resumable(checkpoint, self.folder.path / "last.pt", self.arch, self.model_name)
        else:
            (exists,) = self.dist.broadcast([float(self.dist.is_main and self.folder.holds_run())])
            if exists:
                raise FileExistsError(
                    f"{self.folder.path} already holds a run; pass --resume or another --out"
                )
        root = Path(data_root) if data_root is not None else None
        self.data = training_data(config, root, progress and self.dist.is_main, saved_split)
        if checkpoint is not None:
            self._restore(checkpoint)
        if self.dist.is_main:
            self.folder.create()
            if resume:
                self.folder.clear_stale_temporaries()
            else:
                self.folder.write_split(self.data.split)
            self.folder.write_config(config.to_dict())  # on resume: the run goes on with this config
        self.samplers = rank_samplers(self.data.dataset, self.dist.world_size, config.seed)
        if len(self.samplers[self.dist.rank]) < cfg.batch_size:
            raise ConfigError(
                f"{self.data.train_count} training images give {len(self.samplers[self.dist.rank])} samples "
                f"per process, fewer than one batch of {cfg.batch_size}: raise data.repeat (or "
                "data.samples_per_epoch) or lower train.batch_size"
            )
        if cfg.tensorboard and self.dist.is_main:
            self.folder.open_tensorboard()

    @property
    def scored_model(self) -> torch.nn.Module:
        """The network that validation scores and the export writes: the average, if kept."""
        return self.ema.module if self.ema else self.model

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, name: str = "last.pt") -> None:
        """Write a resumable checkpoint atomically (rank 0 only)."""
        if self.dist.is_main:
            self.folder.save_checkpoint(
                {
                    "name": self.model_name,
                    "arch": self.arch,
                    "model": self.model.state_dict(),
                    "ema": self.ema.state_dict() if self.ema else None,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler else None,
                    "position": dict(self.position),
                    "world_size": self.dist.world_size,
                    "batch_size": self.config.train.batch_size,
                },
                name,
            )

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        if self.ema:
            if checkpoint.get("ema") is not None:
                self.ema.load_state_dict(checkpoint["ema"])
            else:  # a run that kept no average starts one at its restored weights
                self.ema.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            _replan_cosine(self.scheduler, self.config.train.epochs)
        if self.scaler and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.position = {"epoch_loss_sum": 0.0, **checkpoint["position"]}
        batch = self.config.train.batch_size
        self.position["step_in_epoch"] = carry_over_steps(
            self.position["step_in_epoch"],
            (checkpoint.get("world_size", 1), checkpoint.get("batch_size", batch)),
            (self.dist.world_size, batch),
        )

    def export(self) -> Path:
        """Write the best weights as model.safetensors with its model card model.json."""
        return self.folder.export(
            self.model_name,
            self.arch,
            {
                "data": self.data.summary(),
                "epochs_trained": self.position["epoch"],
                "steps_trained": self.position["global_step"],
                "selected_by": (
                    "best validation PSNR" + (" (mean over sources)" if len(self.data.validation) > 1 else "")
                    if self.data.validation
                    else "the last epoch (no validation set)"
                ),
                "config": self.config.to_dict(),
                "command": self.command,
            },
        )

    # -- the loop ------------------------------------------------------------------------
    def _step(self, batch: list[int], epoch: int, step: int) -> float:
        rank, world, dataset = self.dist.rank, self.dist.world_size, self.data.dataset
        samples = [dataset[i] for i in batch[rank::world]]
        low = torch.stack([s[0] for s in samples])
        high = torch.stack([s[1] for s in samples])
        alpha = self.config.data.mixup_alpha
        if alpha > 0:
            # Mix within the whole step's batch, as one process would. A partner on another
            # rank is recomputed here: an item is a pure function of (seed, epoch, index).
            lam, perm = mixup_plan(alpha, sample_seed(self.config.seed, epoch, -1 - step), len(batch))
            partners = [perm[rank + world * j] for j in range(len(samples))]
            mates = [
                (low[p // world], high[p // world]) if p % world == rank else dataset[batch[p]]
                for p in partners
            ]
            low = lam * low + (1 - lam) * torch.stack([m[0] for m in mates])
            high = lam * high + (1 - lam) * torch.stack([m[1] for m in mates])
        low = low.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        high = high.to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype):
            out = self.ddp(low)
        loss = self.loss_fn(out.float(), high)
        # The mean over ranks (DDP's gradient is that mean's): logged as the step's loss, and
        # a NaN on any rank stops every rank here rather than one leaving the others waiting.
        value = self.dist.mean(float(loss.detach()))
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} at epoch {epoch}, step {step}; stopping without "
                "saving. Lower the learning rate or use fp32, and resume from last.pt."
            )
        optimizer_step(loss, self.optimizer, self.scaler, self.config.train.grad_clip)
        if self.ema:
            self.ema.update_parameters(self.model)
        return value

    def _finish(self) -> Path:
        """Export on rank 0 while the other ranks wait, so that all return the weights' path
        and exit 0 together (a rank exiting non-zero makes torchrun kill the others)."""
        weights = self.export() if self.dist.is_main else self.folder.path / "model.safetensors"
        self.dist.broadcast([0.0])
        return weights

    def close(self) -> None:
        """Close the run folder and leave the process group.

        DDP's reducer holds the process group and gloo's pending work, so it is released
        first, not at interpreter exit, where tearing it down could abort a process after a
        finished run (seen as "terminate called without an active exception" on one rank of
        a two-machine run).
        """
        self.folder.close()
        self.ddp = self.model
        gc.collect()
        self.dist.close()

    def fit(self) -> Path | None:
        """Train until the configured epochs or steps, or a stop signal.

        Returns the exported weights (on every rank; rank 0 writes them), or None when stopped
        early by a signal (a resumable checkpoint is saved first).
        """
        cfg = self.config.train
        if self.position["epoch"] >= cfg.epochs and self.dist.is_main:
            print(
                f"{self.folder.path}: already trained for {self.position['epoch']} epochs; raise "
                "train.epochs in the config to train longer. Exporting the best weights again.",
                file=sys.stderr,
            )
        self.model.train()
        with _StopRequested() as stop:
            for epoch in range(self.position["epoch"], cfg.epochs):
                self.data.dataset.set_epoch(epoch)
                batches = step_batches(self.samplers, epoch, cfg.batch_size, self.dist.rank)
                start = self.position["step_in_epoch"]
                began = time.perf_counter()
                show = self.progress and self.dist.is_main
                bar = tqdm(
                    total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                    disable=not show, leave=False,
                )  # fmt: skip
                for step in range(start, len(batches)):
                    loss = self._step(batches[step], epoch, step)
                    self.position["epoch_loss_sum"] += loss
                    self.position["step_in_epoch"] = step + 1
                    self.position["global_step"] += 1
                    bar.update()
                    bar.set_postfix(loss=f"{loss:.4f}")
                    done = cfg.max_steps is not None and self.position["global_step"] >= cfg.max_steps
                    # A signal may reach the ranks at different steps: all stop at the first.
                    stopping = self.dist.any(stop.signal is not None)
                    if stopping or done or self.position["global_step"] % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    if stopping:
                        bar.close()
                        self.dist.broadcast([0.0])  # no rank exits (and gets the rest killed) before the save
                        # A rank stopped by another's signal reports SIGTERM, as torchrun sends.
                        self.stopped_by = stop.signal or signal.SIGTERM
                        if self.dist.is_main:
                            how = f"signal {stop.signal}" if stop.signal else "a signal to another rank"
                            print(f"stopped by {how}; resume with --resume", file=sys.stderr)
                        return None
                    if done:
                        bar.close()
                        return self._finish()
                bar.close()
                self._end_epoch(epoch, len(batches), len(batches) - start, time.perf_counter() - began)
        return self._finish()

    def _end_epoch(self, epoch: int, steps: int, steps_run: int, seconds: float) -> None:
        """Validate, log and checkpoint after an epoch of ``steps`` steps, ``steps_run`` of
        which ran in this process's lifetime, in ``seconds`` (training only, not validation)."""
        cfg = self.config.train
        mean_loss = self.position["epoch_loss_sum"] / max(steps, 1)  # each step's loss is the mean over ranks
        self.position.update(epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0)
        validate_now = self.data.validation and (
            (epoch + 1) % cfg.validate_every == 0 or epoch + 1 == cfg.epochs
        )
        scores, per_source = {"psnr": math.nan, "ssim": math.nan}, {}
        if validate_now:
            if self.dist.is_main:
                scores, per_source = validate_sets(
                    self.scored_model, self.data.validation, self.device, self.dtype
                )
            scores["psnr"], scores["ssim"] = self.dist.broadcast([scores["psnr"], scores["ssim"]])
        # Every rank steps its scheduler on the same number, so learning rates agree.
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if validate_now:
                self.scheduler.step(scores["psnr"])
        else:
            self.scheduler.step()
        if validate_now and scores["psnr"] > self.position["best_psnr"]:
            self.position.update(best_psnr=scores["psnr"], best_epoch=epoch + 1)
            self.save_checkpoint("best.pt")
        if self.dist.is_main:
            lr = self.optimizer.param_groups[0]["lr"]
            row = {
                "epoch": epoch + 1,
                "step": self.position["global_step"],
                "train_loss": round(mean_loss, 6),
                "val_psnr": round(scores["psnr"], 4),
                "val_ssim": round(scores["ssim"], 5),
                **per_source,
                "lr": lr,
                "seconds": round(seconds, 1),
                # Training steps only; a resumed epoch counts the steps run since the resume.
                "seconds_per_step": round(seconds / steps_run, 4) if steps_run else math.nan,
            }
            # Logged before last.pt moves past the epoch, so a kill in between loses no row.
            self.folder.log_epoch(row)
            tqdm.write(
                f"epoch {epoch + 1}: loss {mean_loss:.4f}  val PSNR {scores['psnr']:.2f} dB  "
                f"SSIM {scores['ssim']:.4f}  lr {lr:.2e}  ({seconds:.0f} s)"
            )
        self.save_checkpoint()


def train(
    config: ExperimentConfig | dict[str, Any] | str | os.PathLike,
    data_root: str | os.PathLike | None,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Train a model as a config describes; returns the exported weights (see :class:`Trainer`).

    ``config`` is a checked :class:`ExperimentConfig`, plain data (checked here) or a YAML path.

    Raises:
        ConfigError: a config mistake, before any data is read.
        TrainingStopped: a signal stopped the run (its checkpoint is saved).
    """
    if isinstance(config, dict):
        config = parse_config(config, "config")
    elif not isinstance(config, ExperimentConfig):
        config = load_config(config)
    if data_root is None and not config.data.sources:
        raise ConfigError(f"{config.name}: give a data folder (--data), or list data.sources in the config")
    trainer = Trainer(config, data_root, run_dir, resume=resume, progress=progress, command=command)
    try:
        weights = trainer.fit()
        if weights is None:
            raise TrainingStopped(trainer.stopped_by)  # fit() returns None only when stopped
        return weights
    finally:
        trainer.close()
