"""The training loop: ``mirnet train --config configs/NAME.yaml --data PATH``.

One run directory holds everything a run makes::

    RUN_DIR/config.yaml        the resolved configuration
    RUN_DIR/split.json         which training pairs were held out for validation
    RUN_DIR/last.pt, best.pt   resumable checkpoints (model, optimizer, scheduler, position)
    RUN_DIR/log.csv            one row per epoch; curves.png plots it
    RUN_DIR/model.safetensors  the best weights (by validation PSNR), and model.json, its card

Validation pairs are held out of the *training* pairs by the seed; test pairs are never read.

Resuming is exact: every random choice (the epoch's shuffle, each sample's crop and flip,
MixUp) is a pure function of (seed, epoch, position), so a run stopped after any step and
resumed with ``--resume`` ends with the same weights as one that never stopped (on the same
device and thread count). Under ``torchrun`` the same loop runs DistributedDataParallel; see
:func:`setup_distributed`.
"""

from __future__ import annotations

import copy
import csv
import inspect
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import mirnet
from mirnet.archs import MIRNet, count_parameters
from mirnet.data import PairedPatchDataset, find_pairs, load_pair, sample_seed, split_validation
from mirnet.io import atomic_path
from mirnet.losses import EnhancementLoss
from mirnet.metrics import psnr_per_image, ssim_per_image
from mirnet.weights import WeightsError, arch_config, load_weights, save_weights

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "model": {"name": "tiny"},  # plus any MIRNet argument as an override
    "data": {
        "patch_size": 128,
        "repeat": 1,  # visits of each training pair per epoch
        "validation_pairs": 20,
        "mixup_alpha": 0.0,  # 0 disables MixUp; Beta(alpha, alpha) mixing weights otherwise
    },
    "loss": {"charbonnier": 1.0, "ssim": 0.0, "eps": 1e-3},
    "train": {
        "batch_size": 8,  # per process; the effective batch is this times the world size
        "epochs": 100,
        "max_steps": None,  # stop early after this many optimizer steps in total
        "lr": 2e-4,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "plateau_factor": 0.5,
        "plateau_patience": 5,
        "min_lr": 1e-6,
        "grad_clip": 0.0,  # max gradient norm; 0 disables clipping
        "precision": "auto",  # auto: bf16/fp16 AMP on CUDA, fp32 on CPU; or fp32, bf16, fp16 (any device)
        "checkpoint_every": 100,  # steps between last.pt saves, besides every epoch end
        "validate_every": 1,  # epochs
        "tensorboard": False,
        # Weights to start from instead of a random initialisation (fine-tuning): a bundled
        # model name or a .safetensors file of the same configuration. Ignored on --resume.
        "init_weights": None,
    },
}


class ConfigError(ValueError):
    """An experiment file that cannot be run as written: an unknown key, a bad value."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops without writing broken weights."""


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML experiment file and fill in the defaults."""
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a YAML mapping of sections (model, data, loss, train)")
    unknown = config.keys() - DEFAULTS.keys() - {"name", "description"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    # A misspelt key (epoch: for epochs:) would otherwise leave the default silently in force.
    model_keys = {"name", *inspect.signature(MIRNet).parameters}
    for section, defaults in DEFAULTS.items():
        given = config.get(section)
        if not isinstance(defaults, dict) or given is None:
            continue
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: {section} must be a mapping of keys, not {given!r}")
        allowed = model_keys if section == "model" else defaults.keys()
        unknown = given.keys() - allowed
        if unknown:
            raise ConfigError(
                f"{path}: unknown keys in {section}: {sorted(unknown)}; known: {', '.join(sorted(allowed))}"
            )
    return deep_merge(DEFAULTS, config)


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # setup_distributed created the process group, so train() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistributedContext:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1).

    NCCL on CUDA, gloo on CPU. Each process trains on its own shard of every epoch; DDP
    averages the gradients, so the effective batch is ``batch_size * world_size``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    context = DistributedContext(
        rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", 0))
    )
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(backend=backend)
        context.owns_group = True
    return context


def pick_device(context: DistributedContext) -> torch.device:
    """CUDA (this process's GPU under torchrun) when present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", context.local_rank)
    return torch.device("cpu")


def autocast_settings(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a gradient scaler is needed)."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        return torch.bfloat16, False
    if precision == "fp16":
        # Also allowed on the CPU, where it is slow but takes the same path as a GPU without
        # bf16 (autocast, GradScaler, clipping the unscaled gradient): that is how it is tested.
        return torch.float16, True
    raise ConfigError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.inference_mode()
def validate(
    model: torch.nn.Module, pairs, device: torch.device, dtype: torch.dtype | None, progress: bool = False
) -> dict[str, float]:
    """Mean PSNR and SSIM of the model on whole validation images."""
    model.eval()
    psnrs, ssims = [], []
    for pair in tqdm(pairs, desc="validating", unit="img", leave=False, disable=not progress):
        low, high = load_pair(pair)
        with _autocast(device, dtype):
            out = model(low.unsqueeze(0).to(device))
        out = out.float().clamp(0, 1).cpu()
        psnrs.append(float(psnr_per_image(out, high.unsqueeze(0))[0]))
        ssims.append(float(ssim_per_image(out, high.unsqueeze(0))[0]))
    model.train()
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def mixup_plan(alpha: float, seed: int, size: int) -> tuple[float, list[int]]:
    """MixUp's Beta(alpha, alpha) weight and, for each position of a batch of ``size``, the
    position it is blended with; a pure function of the arguments."""
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    return lam, rng.permutation(size).tolist()


def mixup(
    low: torch.Tensor, high: torch.Tensor, alpha: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each pair with another pair of the batch by a Beta(alpha, alpha) weight."""
    lam, perm = mixup_plan(alpha, seed, low.shape[0])
    return lam * low + (1 - lam) * low[perm], lam * high + (1 - lam) * high[perm]


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


class Trainer:
    """Holds a run's model, optimizer and position; :meth:`fit` runs it."""

    def __init__(
        self,
        config: dict[str, Any],
        data_root: str | os.PathLike,
        run_dir: str | os.PathLike,
        resume: bool = False,
        progress: bool = True,
        command: str | None = None,
    ):
        self.config = config
        self.data_root = Path(data_root)
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.command = command or " ".join(sys.argv)
        self.dist = setup_distributed()
        self.device = pick_device(self.dist)
        train_cfg = config["train"]
        self.dtype, needs_scaler = autocast_settings(train_cfg["precision"], self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_scaler else None
        seed = config["seed"]
        torch.manual_seed(seed)

        model_cfg = dict(config["model"])
        self.model_name = model_cfg.pop("name")
        self.arch = arch_config(self.model_name, **model_cfg)
        self.model = MIRNet(**self.arch)
        if train_cfg["init_weights"] and not resume:
            self._init_from(train_cfg["init_weights"])
        # Channels-last layout: a 1.2x faster training step on CPU (oneDNN prefers it).
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.ddp = (
            DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None
            )
            if self.dist.world_size > 1
            else self.model
        )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=train_cfg["lr"],
            betas=tuple(train_cfg["betas"]),
            weight_decay=train_cfg["weight_decay"],
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="max",
            factor=train_cfg["plateau_factor"],
            patience=train_cfg["plateau_patience"],
            min_lr=train_cfg["min_lr"],
        )
        loss_cfg = config["loss"]
        self.loss_fn = EnhancementLoss(loss_cfg["charbonnier"], loss_cfg["ssim"], loss_cfg["eps"])
        self.position = {
            "epoch": 0,
            "step_in_epoch": 0,
            "global_step": 0,
            "best_psnr": -math.inf,
            "best_epoch": -1,
            # The running sum of this epoch's step losses, saved so that an epoch resumed
            # half-way still logs the mean over all its steps.
            "epoch_loss_sum": 0.0,
        }
        self.stopped_by: int | None = None  # the signal that stopped fit(), if one did

        pairs = find_pairs(self.data_root, "train")
        self.train_pairs, self.val_pairs = split_validation(pairs, config["data"]["validation_pairs"], seed)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load_checkpoint(self.run_dir / "last.pt")
            if self.dist.is_main:
                # Temporary files of writes cut short by a SIGKILL: harmless, but they pile up.
                for stale in self.run_dir.glob(".*.tmp"):
                    stale.unlink(missing_ok=True)
                self._write_config()  # the run goes on with this config (e.g. more epochs)
        else:
            # Rank 0's view decides, for every rank: the others may not see its disk, and a rank
            # that raised alone would leave the rest waiting in a collective.
            (exists,) = self._broadcast([float(self.dist.is_main and (self.run_dir / "last.pt").exists())])
            if exists:
                raise FileExistsError(f"{self.run_dir} already holds a run; pass --resume or another --out")
            if self.dist.is_main:
                self._write_run_files()
        progress = progress and self.dist.is_main  # one loading bar, not one per rank
        self.dataset = PairedPatchDataset(
            self.train_pairs, config["data"]["patch_size"], config["data"]["repeat"], True, seed, progress
        )
        # Every rank's sampler, not just its own: a step's whole batch (all ranks' shards) is
        # needed to mix pairs across ranks exactly as one process would (see _batches).
        self.samplers = [
            DistributedSampler(
                self.dataset,
                num_replicas=self.dist.world_size,
                rank=rank,
                shuffle=True,
                seed=seed,
                drop_last=True,
            )
            for rank in range(self.dist.world_size)
        ]
        self.sampler = self.samplers[self.dist.rank]
        self.writer = None
        if train_cfg["tensorboard"] and self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self.writer = SummaryWriter(self.run_dir / "tensorboard")

    def _init_from(self, name_or_path: str) -> None:
        """Start from trained weights (fine-tuning); they must have this run's configuration."""
        from mirnet.inference import resolve_weights

        path = resolve_weights(name_or_path)
        trained, info = load_weights(path)
        if info["arch"] != self.arch:
            raise WeightsError(
                f"{path}: init_weights has configuration {info['arch']}, but this run trains {self.arch}"
            )
        self.model.load_state_dict(trained.state_dict())

    # -- files ---------------------------------------------------------------------------
    def _write_config(self) -> None:
        with atomic_path(self.run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _write_run_files(self) -> None:
        self._write_config()
        split = {
            "data": str(self.data_root),
            "train": [p.name for p in self.train_pairs],
            "validation": [p.name for p in self.val_pairs],
        }
        with atomic_path(self.run_dir / "split.json") as tmp:
            tmp.write_text(json.dumps(split, indent=1))

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "arch": self.arch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "position": dict(self.position),
            "world_size": self.dist.world_size,
            "batch_size": self.config["train"]["batch_size"],
        }

    def save_checkpoint(self, name: str = "last.pt") -> None:
        """Write a resumable checkpoint atomically (rank 0 only)."""
        if not self.dist.is_main:
            return
        with atomic_path(self.run_dir / name) as tmp:
            torch.save(self._checkpoint(), tmp)

    def _load_checkpoint(self, path: Path) -> None:
        checkpoint = None
        if self.dist.is_main and path.is_file():
            # weights_only: a checkpoint is data, never code.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if self.dist.world_size > 1:
            # Only rank 0 reads the file, so the run directory need not be shared between machines.
            holder = [checkpoint]
            dist.broadcast_object_list(holder, src=0)
            checkpoint = holder[0]
        if checkpoint is None:
            raise FileNotFoundError(f"{path}: no checkpoint to resume from")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.position = {"epoch_loss_sum": 0.0, **checkpoint["position"]}
        batch = self.config["train"]["batch_size"]
        saved = checkpoint.get("world_size", 1), checkpoint.get("batch_size", batch)
        if saved != (self.dist.world_size, batch) and self.position["step_in_epoch"]:
            # A step takes the next batch_size * world_size samples of the epoch's order, which
            # does not depend on the world size (see _batches): carry the samples done over to
            # the new step size, rounding down so that none is skipped (a few may repeat).
            done = self.position["step_in_epoch"] * saved[0] * saved[1]
            self.position["step_in_epoch"] = done // (batch * self.dist.world_size)

    def _log_epoch(self, row: dict[str, Any]) -> None:
        log = self.run_dir / "log.csv"
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
        if self.writer:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
        plot_curves(log, self.run_dir / "curves.png")

    def export(self) -> Path:
        """Write the best weights as model.safetensors with its model card model.json."""
        best = self.run_dir / ("best.pt" if (self.run_dir / "best.pt").exists() else "last.pt")
        checkpoint = torch.load(best, map_location="cpu", weights_only=True)
        model = MIRNet(**self.arch)
        model.load_state_dict(checkpoint["model"])
        weights = save_weights(self.run_dir / "model.safetensors", model, self.model_name, self.arch)
        position = checkpoint["position"]
        card = {
            "name": self.model_name,
            "arch": self.arch,
            "parameters": count_parameters(model),
            "data": {
                "root": str(self.data_root),
                "train_pairs": len(self.train_pairs),
                "validation_pairs": [p.name for p in self.val_pairs],
            },
            "epochs_trained": self.position["epoch"],
            "steps_trained": self.position["global_step"],
            "selected_by": "best validation PSNR",
            "selected_epoch": position["epoch"],
            "validation": {"psnr": position["best_psnr"], "epoch": position["best_epoch"]},
            "config": self.config,
            "command": self.command,
            "mirnet_version": mirnet.__version__,
            "torch_version": torch.__version__,
        }
        with atomic_path(self.run_dir / "model.json") as tmp:
            tmp.write_text(json.dumps(card, indent=2))
        return weights

    # -- the loop ------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[list[int]]:
        """The epoch's steps, each the whole step's batch over all ranks (batch_size x
        world_size indices); rank r trains on ``batch[r::world_size]``, its sampler's shard."""
        shards = []
        for sampler in self.samplers:
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        self.dataset.set_epoch(epoch)
        indices = shards[self.dist.rank]
        size = self.config["train"]["batch_size"]
        if len(indices) < size:
            raise ConfigError(
                f"{len(self.train_pairs)} training pairs x repeat {self.dataset.repeat} give {len(indices)} "
                f"samples per process, fewer than one batch of {size}: raise data.repeat or lower batch_size"
            )
        # The sampler deals the epoch's permutation out round-robin (rank r gets positions
        # r, r + world, ...), so interleaving the shards' k-th batches gives positions
        # [k * size * world, (k + 1) * size * world): step k is the same samples, in the same
        # order, as step k of one process with batch size * world.
        return [
            [shard[i + j] for j in range(size) for shard in shards]
            for i in range(0, len(indices) - size + 1, size)
        ]

    def _step(self, batch: list[int], epoch: int, step: int) -> float:
        rank, world = self.dist.rank, self.dist.world_size
        samples = [self.dataset[i] for i in batch[rank::world]]
        low = torch.stack([s[0] for s in samples])
        high = torch.stack([s[1] for s in samples])
        alpha = self.config["data"]["mixup_alpha"]
        if alpha > 0:
            # Mix within the whole step's batch, as one process would. A partner on another
            # rank is recomputed here: an item is a pure function of (seed, epoch, index).
            lam, perm = mixup_plan(alpha, sample_seed(self.config["seed"], epoch, -1 - step), len(batch))
            partners = [perm[rank + world * j] for j in range(len(samples))]
            mates = [
                (low[p // world], high[p // world]) if p % world == rank else self.dataset[batch[p]]
                for p in partners
            ]
            low = lam * low + (1 - lam) * torch.stack([m[0] for m in mates])
            high = lam * high + (1 - lam) * torch.stack([m[1] for m in mates])
        low = low.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        high = high.to(self.device, non_blocking=True)
        with _autocast(self.device, self.dtype):
            out = self.ddp(low)
        loss = self.loss_fn(out.float(), high)
        # The mean over ranks (DDP's gradient is that mean's): logged as the step's loss, and
        # a NaN on any rank stops every rank here rather than one leaving the others waiting.
        value = self._mean_across_ranks(float(loss.detach()))
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} at epoch {epoch}, step {step}; stopping without "
                "saving. Lower the learning rate or use fp32, and resume from last.pt."
            )
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.config["train"]["grad_clip"]
        if self.scaler:
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        return value

    def _mean_across_ranks(self, value: float) -> float:
        if self.dist.world_size == 1:
            return value
        tensor = torch.tensor([value], device=self.device, dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor) / self.dist.world_size

    def _broadcast(self, values: list[float]) -> list[float]:
        if self.dist.world_size == 1:
            return values
        tensor = torch.tensor(values, device=self.device, dtype=torch.float64)
        dist.broadcast(tensor, src=0)
        return tensor.tolist()

    def _any_rank(self, flag: bool) -> bool:
        if self.dist.world_size == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def _finish(self) -> Path:
        """Export on rank 0 while the other ranks wait, so that all return the weights' path
        and exit 0 together (a rank exiting non-zero makes torchrun kill the others)."""
        weights = self.export() if self.dist.is_main else self.run_dir / "model.safetensors"
        self._broadcast([0.0])  # a barrier that works the same on gloo and NCCL
        return weights

    def fit(self) -> Path | None:
        """Train until the configured epochs or steps, or a stop signal.

        Returns the exported weights (on every rank; rank 0 writes them), or None when stopped
        early by a signal (a resumable checkpoint is saved first).
        """
        cfg = self.config["train"]
        max_steps = cfg["max_steps"]
        if self.position["epoch"] >= cfg["epochs"] and self.dist.is_main:
            print(
                f"{self.run_dir}: already trained for {self.position['epoch']} epochs; raise "
                "train.epochs in the config to train longer. Exporting the best weights again.",
                file=sys.stderr,
            )
        self.model.train()
        with _StopRequested() as stop:
            for epoch in range(self.position["epoch"], cfg["epochs"]):
                batches = self._batches(epoch)
                start = self.position["step_in_epoch"]
                began = time.perf_counter()
                bar = tqdm(
                    total=len(batches),
                    initial=start,
                    desc=f"epoch {epoch + 1}/{cfg['epochs']}",
                    unit="step",
                    disable=not (self.progress and self.dist.is_main),
                    leave=False,
                )
                for step in range(start, len(batches)):
                    loss = self._step(batches[step], epoch, step)
                    self.position["epoch_loss_sum"] += loss
                    self.position["step_in_epoch"] = step + 1
                    self.position["global_step"] += 1
                    bar.update()
                    bar.set_postfix(loss=f"{loss:.4f}")
                    done = max_steps is not None and self.position["global_step"] >= max_steps
                    # A signal may reach the ranks at different steps: all stop at the first.
                    stopping = self._any_rank(stop.signal is not None)
                    if stopping or done or self.position["global_step"] % cfg["checkpoint_every"] == 0:
                        self.save_checkpoint()
                    if stopping:
                        bar.close()
                        self._broadcast([0.0])  # no rank exits (and gets the rest killed) before the save
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
        cfg = self.config["train"]
        # Each step's loss is already the mean over ranks.
        mean_loss = self.position["epoch_loss_sum"] / max(steps, 1)
        self.position.update(epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0)
        validate_now = self.val_pairs and (
            (epoch + 1) % cfg["validate_every"] == 0 or epoch + 1 == cfg["epochs"]
        )
        scores = {"psnr": math.nan, "ssim": math.nan}
        if validate_now:
            if self.dist.is_main:
                scores = validate(self.model, self.val_pairs, self.device, self.dtype)
            scores["psnr"], scores["ssim"] = self._broadcast([scores["psnr"], scores["ssim"]])
            # Every rank steps its scheduler on the same number, so learning rates agree.
            self.scheduler.step(scores["psnr"])
            if scores["psnr"] > self.position["best_psnr"]:
                self.position.update(best_psnr=scores["psnr"], best_epoch=epoch + 1)
                self.save_checkpoint("best.pt")
        if self.dist.is_main:
            # Logged before last.pt moves past the epoch, so a kill in between loses no row.
            self._log_epoch(
                {
                    "epoch": epoch + 1,
                    "step": self.position["global_step"],
                    "train_loss": round(mean_loss, 6),
                    "val_psnr": round(scores["psnr"], 4),
                    "val_ssim": round(scores["ssim"], 5),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": round(seconds, 1),
                    # Training steps only; a resumed epoch counts the steps run since the resume.
                    "seconds_per_step": round(seconds / steps_run, 4) if steps_run else math.nan,
                }
            )
            tqdm.write(
                f"epoch {epoch + 1}: loss {mean_loss:.4f}  val PSNR {scores['psnr']:.2f} dB  "
                f"SSIM {scores['ssim']:.4f}  lr {self.optimizer.param_groups[0]['lr']:.2e}  ({seconds:.0f} s)"
            )
        self.save_checkpoint()


def plot_curves(log_csv: Path, out_png: Path) -> None:
    """Plot training loss and validation PSNR per epoch from a run's log.csv."""
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
    ax_psnr.plot(epochs, [float(r["val_psnr"]) for r in rows], color="tab:orange")
    ax_psnr.set(xlabel="epoch", ylabel="PSNR (dB)", title="Validation PSNR")
    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


class TrainingStopped(Exception):
    """A stop signal (SIGINT, SIGTERM) ended training after saving a resumable last.pt."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}; resume with --resume")
        self.signum = signum


def train(
    config: dict[str, Any] | str | os.PathLike,
    data_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> Path | None:
    """Train a model as a config describes; returns the exported weights (see :class:`Trainer`).

    Raises :class:`TrainingStopped` when a signal stopped the run (its checkpoint is saved).
    """
    if not isinstance(config, dict):
        config = load_config(config)
    else:
        config = deep_merge(DEFAULTS, config)
    trainer = Trainer(config, data_root, run_dir, resume=resume, progress=progress, command=command)
    try:
        weights = trainer.fit()
        if weights is None:
            raise TrainingStopped(trainer.stopped_by)  # fit() returns None only when stopped
        return weights
    finally:
        if trainer.writer:
            trainer.writer.close()
        if trainer.dist.owns_group:
            dist.destroy_process_group()
