"""Experiment files (``configs/*.yaml``), typed and checked before any data is read.

An experiment has a seed and four sections::

    seed: 0
    model: {name: tiny}                # a named configuration, plus any MIRNet argument
    data:  {patch_size: 128, ...}      # one --data folder, or data.sources (several, weighted)
    loss:  {charbonnier: 1.0, ssim: 0.2}
    train: {batch_size: 8, epochs: 100, lr: 4.0e-4, ...}

Every value is coerced to its type or refused: YAML 1.1 reads ``2e-4`` as a *string* (it
needs a dot, ``2.0e-4``), so numbers written as strings are accepted when they parse.
Every mistake is one line naming the file and the key (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mirnet.archs import MIRNet
from mirnet.archs.configs import MODEL_CONFIGS
from mirnet.data.mixture import SOURCE_KINDS
from mirnet.data.patches import describe, patch_shape
from mirnet.data.synthetic import Darkening

SSIM_WINDOW = 11  # the SSIM loss's Gaussian window (mirnet.metrics)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("plateau", "cosine")


class ConfigError(ValueError):
    """An experiment that cannot be run as written: an unknown key, a bad value."""


@dataclass
class SourceConfig:
    """One training source of ``data.sources`` (see :mod:`mirnet.data.mixture`)."""

    name: str
    kind: str  # paired, synthetic or identity
    root: str  # relative paths are relative to the working directory
    weight: float = 1.0  # sampling weight, relative to the other sources'
    validation: int = 16  # pairs (by scene) or photos held out for validation; 0: none
    scenes: str | None = None  # paired: a split,name,scene CSV; hold scenes out whole
    split: str = "train"  # paired: the split of the folder to train on


@dataclass
class DataConfig:
    patch_size: int | list[int] = 128  # a square's side, or [height, width]
    repeat: int = 1  # one folder: visits of each training pair per epoch
    validation_pairs: int = 20  # one folder: pairs held out for validation
    mixup_alpha: float = 0.0  # 0 disables MixUp; Beta(alpha, alpha) weights otherwise
    sources: list[SourceConfig] | None = None  # several sources instead of one --data folder
    samples_per_epoch: int = 3200  # with sources: patches per epoch
    darkening: dict[str, Any] = field(default_factory=dict)  # overrides of data.synthetic.Darkening


@dataclass
class LossConfig:
    charbonnier: float = 1.0
    ssim: float = 0.0
    eps: float = 1e-3


@dataclass
class TrainConfig:
    batch_size: int = 8  # per process; the effective batch is this times the world size
    epochs: int = 100
    max_steps: int | None = None  # stop early after this many optimizer steps in total
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    scheduler: str = "plateau"  # plateau: halve on a validation plateau; cosine: to min_lr over epochs
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    min_lr: float = 1e-6
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    precision: str = "auto"  # auto: bf16/fp16 AMP on CUDA, bf16 on CPUs with native bf16, else fp32
    checkpoint_every: int = 100  # steps between last.pt saves, besides every epoch end
    validate_every: int = 1  # epochs
    # Validate and export an exponential moving average of the weights, updated after every
    # step with this decay (0: off, the last step's weights). About 1 / (1 - decay) steps count.
    ema_decay: float = 0.0
    tensorboard: bool = False
    # Weights to start from instead of a random initialisation (fine-tuning): a bundled model
    # name or a .safetensors file of the same configuration, or of one with fewer groups (grown
    # deeper, see load_init_weights). Ignored on --resume.
    init_weights: str | None = None


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    description: str = ""
    seed: int = 0
    model: dict[str, Any] = field(default_factory=lambda: {"name": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to a run's ``config.yaml`` and model card."""
        return dataclasses.asdict(self)

    @property
    def arch_overrides(self) -> dict[str, Any]:
        """The MIRNet arguments given besides the configuration's name."""
        return {k: v for k, v in self.model.items() if k != "name"}


# -- coercion ----------------------------------------------------------------------------
class _Checker:
    """Coerces and checks the values of one file, naming it and the key in every error."""

    def __init__(self, origin: str):
        self.origin = origin

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {key}: {message}")

    def integer(self, key: str, value: Any, minimum: int | None = None) -> int:
        number = value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            number = int(value)
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int):
            raise self.fail(key, f"must be a whole number, got {value!r}")
        if minimum is not None and number < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {number}")
        return number

    def number(
        self,
        key: str,
        value: Any,
        minimum: float | None = None,
        above: float | None = None,
        below: float | None = None,
    ) -> float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise self.fail(key, f"must be a number, got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, int | float) or number != number:
            raise self.fail(key, f"must be a number, got {value!r}")
        number = float(number)
        if minimum is not None and number < minimum:
            raise self.fail(key, f"must be at least {minimum:g}, got {number:g}")
        if above is not None and not number > above:
            raise self.fail(key, f"must be more than {above:g}, got {number:g}")
        if below is not None and not number < below:
            raise self.fail(key, f"must be less than {below:g}, got {number:g}")
        return number

    def choice(self, key: str, value: Any, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def text(self, key: str, value: Any, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def mapping(self, key: str, value: Any, known: set[str] | None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of keys, not {value!r}")
        unknown = sorted(map(str, value.keys() - known)) if known is not None else []
        if unknown:
            raise self.fail(key, f"unknown keys {unknown}; known: {', '.join(sorted(known))}")
        return value


def _model(check: _Checker, given: Any) -> dict[str, Any]:
    signature = inspect.signature(MIRNet).parameters
    given = check.mapping("model", given, {"name", *signature})
    name = given.get("name", "tiny")
    check.choice("model.name", name, tuple(MODEL_CONFIGS))
    model: dict[str, Any] = {"name": name}
    for key, value in given.items():
        if key == "name":
            continue
        if signature[key].annotation in (bool, "bool"):
            model[key] = check.boolean(f"model.{key}", value)
        else:
            model[key] = check.integer(f"model.{key}", value, minimum=1)
    width = model.get("width", MODEL_CONFIGS[name]["width"])
    if width < 2:
        # With one column, the last column's attention and fusion outputs go unused, so some
        # parameters never get a gradient (DistributedDataParallel refuses such a model).
        raise check.fail("model.width", f"must be at least 2, got {width}")
    return model


def _source(check: _Checker, index: int, given: Any) -> SourceConfig:
    key = f"data.sources[{index}]"
    known = {f.name for f in dataclasses.fields(SourceConfig)}
    given = check.mapping(key, given, known)
    missing = [name for name in ("name", "kind", "root") if name not in given]
    if missing:
        raise check.fail(key, f"missing {', '.join(missing)}")
    name = check.text(f"{key}.name", given["name"])
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise check.fail(
            f"{key}.name", f"use letters, digits and _ only (it names log columns), got {name!r}"
        )
    source = SourceConfig(
        name=name,
        kind=check.choice(f"{key}.kind", given["kind"], SOURCE_KINDS),
        root=check.text(f"{key}.root", given["root"]),
        weight=check.number(f"{key}.weight", given.get("weight", 1.0), above=0),
        # 0: no hold-out, for data already split elsewhere (mirnet.training.pack)
        validation=check.integer(f"{key}.validation", given.get("validation", 16), minimum=0),
        scenes=check.text(f"{key}.scenes", given.get("scenes"), optional=True),
        split=check.choice(f"{key}.split", given.get("split", "train"), ("train", "test")),
    )
    if source.kind != "paired" and source.scenes:
        raise check.fail(f"{key}.scenes", "only paired sources have scenes")
    return source


def _darkening(check: _Checker, given: Any) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(Darkening)}
    given = check.mapping("data.darkening", given, known)
    try:
        Darkening.from_overrides(given)
    except (TypeError, ValueError) as err:
        raise check.fail("data.darkening", str(err)) from None
    return dict(given)


def _patch_size(check: _Checker, value: Any) -> int | list[int]:
    """A square patch's side, or [height, width] for a rectangular one (each at least 8)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise check.fail("data.patch_size", f"must be one size or [height, width], got {value!r}")
        sides = [check.integer("data.patch_size", side, minimum=8) for side in value]
        return sides[0] if sides[0] == sides[1] else sides
    return check.integer("data.patch_size", value, minimum=8)


def _data(check: _Checker, given: Any) -> DataConfig:
    known = {f.name for f in dataclasses.fields(DataConfig)}
    given = {**dataclasses.asdict(DataConfig()), **check.mapping("data", given, known)}
    sources = given["sources"]
    if sources is not None:
        if not isinstance(sources, list) or not sources:
            raise check.fail("data.sources", f"must be a list of sources, got {sources!r}")
        sources = [_source(check, i, s) for i, s in enumerate(sources)]
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise check.fail("data.sources", f"source names must differ, got {names}")
    return DataConfig(
        patch_size=_patch_size(check, given["patch_size"]),
        repeat=check.integer("data.repeat", given["repeat"], minimum=1),
        validation_pairs=check.integer("data.validation_pairs", given["validation_pairs"], minimum=1),
        mixup_alpha=check.number("data.mixup_alpha", given["mixup_alpha"], minimum=0),
        sources=sources,
        samples_per_epoch=check.integer("data.samples_per_epoch", given["samples_per_epoch"], minimum=1),
        darkening=_darkening(check, given["darkening"]),
    )


def _loss(check: _Checker, given: Any) -> LossConfig:
    known = {f.name for f in dataclasses.fields(LossConfig)}
    given = {**dataclasses.asdict(LossConfig()), **check.mapping("loss", given, known)}
    loss = LossConfig(
        charbonnier=check.number("loss.charbonnier", given["charbonnier"], minimum=0),
        ssim=check.number("loss.ssim", given["ssim"], minimum=0),
        eps=check.number("loss.eps", given["eps"], above=0),
    )
    if loss.charbonnier == 0 and loss.ssim == 0:
        raise check.fail("loss", "charbonnier and ssim are both 0: nothing to train on")
    return loss


def _train(check: _Checker, given: Any) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {**dataclasses.asdict(TrainConfig()), **check.mapping("train", given, known)}
    betas = given["betas"]
    if not isinstance(betas, list | tuple) or len(betas) != 2:
        raise check.fail("train.betas", f"must be a list of two numbers, got {betas!r}")
    train = TrainConfig(
        batch_size=check.integer("train.batch_size", given["batch_size"], minimum=1),
        epochs=check.integer("train.epochs", given["epochs"], minimum=1),
        max_steps=None
        if given["max_steps"] is None
        else check.integer("train.max_steps", given["max_steps"], minimum=1),
        lr=check.number("train.lr", given["lr"], above=0),
        betas=[check.number(f"train.betas[{i}]", b, minimum=0, below=1) for i, b in enumerate(betas)],
        weight_decay=check.number("train.weight_decay", given["weight_decay"], minimum=0),
        scheduler=check.choice("train.scheduler", given["scheduler"], SCHEDULERS),
        plateau_factor=check.number("train.plateau_factor", given["plateau_factor"], above=0, below=1),
        plateau_patience=check.integer("train.plateau_patience", given["plateau_patience"], minimum=0),
        min_lr=check.number("train.min_lr", given["min_lr"], minimum=0),
        grad_clip=check.number("train.grad_clip", given["grad_clip"] or 0.0, minimum=0),
        precision=check.choice("train.precision", given["precision"], PRECISIONS),
        checkpoint_every=check.integer("train.checkpoint_every", given["checkpoint_every"], minimum=1),
        validate_every=check.integer("train.validate_every", given["validate_every"], minimum=1),
        ema_decay=check.number("train.ema_decay", given["ema_decay"], minimum=0, below=1),
        tensorboard=check.boolean("train.tensorboard", given["tensorboard"]),
        init_weights=check.text("train.init_weights", given["init_weights"], optional=True),
    )
    if train.min_lr > train.lr:
        raise check.fail("train.min_lr", f"{train.min_lr:g} is above train.lr {train.lr:g}")
    return train


def parse_config(raw: Any, origin: str = "config") -> ExperimentConfig:
    """Check and coerce an experiment given as plain data (YAML's), filling in the defaults.

    Raises:
        ConfigError: the first mistake, in one line naming ``origin`` and the key.
    """
    check = _Checker(origin)
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: not a YAML mapping of sections (model, data, loss, train)")
    known = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(map(str, raw.keys() - known))
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level keys {unknown}; known: {', '.join(sorted(known))}")
    config = ExperimentConfig(
        name=str(raw.get("name", "experiment")),
        description=str(raw.get("description") or ""),
        seed=check.integer("seed", raw.get("seed", 0), minimum=0),
        model=_model(check, raw.get("model")),
        data=_data(check, raw.get("data")),
        loss=_loss(check, raw.get("loss")),
        train=_train(check, raw.get("train")),
    )
    if config.loss.ssim > 0 and min(patch_shape(config.data.patch_size)) < SSIM_WINDOW:
        raise check.fail(
            "data.patch_size",
            f"{describe(config.data.patch_size)} is smaller than the SSIM loss's {SSIM_WINDOW}-pixel window",
        )
    return config


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and check a YAML experiment file (see :func:`parse_config`)."""
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from None
    return parse_config(raw if raw is not None else {}, str(path))
