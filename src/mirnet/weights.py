"""Model weights: the bundled models, and safetensors files that carry their own configuration.

The package ships trained weights (:func:`bundled_models`); :func:`resolve_weights` turns a
bundled model's name, or a path, into a weights file. A weights file stores the network's
tensors plus, in the safetensors metadata, the architecture arguments (``mirnet.arch``) and
the configuration name (``mirnet.name``), so that a file alone rebuilds its model. Loading
never unpickles anything. PyTorch training checkpoints (``.pt``/``.pth``) are read with
``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mirnet.archs import MODEL_CONFIGS, MIRNet
from mirnet.archs import official as _official
from mirnet.io import atomic_path

DEFAULT_MODEL = "tiny"
# How many of the 8 flips and transposes of a photo a self-ensemble may average
# (mirnet.inference.average_over_flips); a weights file may ask for one (mirnet.self_ensemble).
SELF_ENSEMBLE_COPIES = (1, 2, 4, 8)


class WeightsError(ValueError):
    """A weights file that is missing, unsafe, corrupt, or does not fit the model."""


def bundled_models() -> dict[str, Path]:
    """Names and paths of the weights shipped inside the package."""
    folder = resources.files("mirnet") / "weights"
    if not folder.is_dir():
        return {}
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".safetensors")}


def resolve_weights(name_or_path: str | os.PathLike | None) -> Path:
    """The weights file for a bundled model name (``None``: the default), or a path as given."""
    bundled = bundled_models()
    key = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if key in bundled:
        return bundled[key]
    path = Path(key)
    if path.suffix or path.exists():
        return path
    known = ", ".join(sorted(bundled)) or "none"
    raise WeightsError(f"no bundled model named {key!r} (bundled: {known}); or give a weights file path")


def arch_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full MIRNet arguments of a named configuration with overrides applied."""
    if name not in MODEL_CONFIGS:
        raise WeightsError(f"unknown model configuration {name!r}; choose from {', '.join(MODEL_CONFIGS)}")
    return {**MODEL_CONFIGS[name], **overrides}


def save_weights(
    path: str | os.PathLike,
    model: MIRNet,
    name: str,
    arch: dict[str, Any],
    card: dict[str, Any] | None = None,
    self_ensemble: int = 1,
) -> Path:
    """Write a model's weights and configuration to a safetensors file, atomically; ``card``
    (where the weights come from, their licence...) is stored too, as ``mirnet.card``, and a
    ``self_ensemble`` above 1 (the copies each photo is averaged over when these weights are
    loaded; :func:`mirnet.inference.average_over_flips`) as ``mirnet.self_ensemble``."""
    if self_ensemble not in SELF_ENSEMBLE_COPIES:
        raise WeightsError(f"a self-ensemble takes 1, 2, 4 or 8 copies, not {self_ensemble!r}")
    path = Path(path)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = {"format": "pt", "mirnet.name": name, "mirnet.arch": json.dumps(arch, sort_keys=True)}
    if card is not None:
        metadata["mirnet.card"] = json.dumps(card, sort_keys=True)
    if self_ensemble != 1:
        metadata["mirnet.self_ensemble"] = str(self_ensemble)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _try_load(model: MIRNet, state: dict[str, torch.Tensor], assign: bool = False) -> bool:
    """Load ``state`` into ``model``; False if it does not fit (wrong keys or shapes).

    Goes through ``load_state_dict``, so that every layout the network still reads is
    accepted. ``assign`` (for a probe on the meta device) takes the tensors as they are.
    """
    try:
        model.load_state_dict(state, assign=assign)
    except RuntimeError:
        return False
    return True


def _guess_configuration(state: dict[str, torch.Tensor]) -> str:
    """Name the built-in configurations whose tensor shapes match a state dict."""
    matches = []
    for name, config in MODEL_CONFIGS.items():
        with torch.device("meta"):  # shapes only: no memory or time spent on the paper model's weights
            probe = MIRNet(**config)
        if _try_load(probe, state, assign=True):
            matches.append(name)
    if matches:
        return f"its shapes fit the {' / '.join(repr(m) for m in matches)} configuration"
    return "its shapes fit none of the built-in configurations"


# Sane bounds for the integer arguments of a configuration read from a file: far beyond any
# trained MIRNet (the paper's: features 64, 3 groups of 2 blocks, height 3, width 2), yet small
# enough that even building the network's skeleton to compare shapes stays instant.
ARCH_BOUNDS = {
    "in_channels": (1, 4),
    "features": (1, 1024),
    "chan_factor": (1, 4),
    "num_groups": (1, 32),
    "num_blocks": (1, 32),
    "height": (1, 6),
    "width": (1, 8),
    "reduction": (1, 1024),
}

_ARCH_PARAMETERS = inspect.signature(MIRNet).parameters


def check_arch(arch: Any, state: dict[str, torch.Tensor], source: str) -> None:
    """Check a configuration read from a file against sane bounds and against the file's own
    tensors, without allocating the model: a file cannot make us build a network larger
    than its own weights (a 2.7 MB file saying ``features: 1024`` would otherwise allocate
    gigabytes before its shapes were compared).

    Raises:
        WeightsError: in one line, for an unknown argument, a value of the wrong type or out
            of bounds, a configuration that does not build, or tensors that do not fit it.
    """
    if not isinstance(arch, dict):
        raise WeightsError(f"{source}: its stored configuration is not a mapping of arguments")
    for key, value in arch.items():
        if key not in _ARCH_PARAMETERS:
            raise WeightsError(f"{source}: stored configuration has an unknown argument {key!r}")
        kind = type(_ARCH_PARAMETERS[key].default)
        if kind in (int, bool, str) and type(value) is not kind:  # bool is not int here
            raise WeightsError(f"{source}: stored configuration {key}={value!r} is not a {kind.__name__}")
        low, high = ARCH_BOUNDS.get(key, (None, None))
        if low is not None and not low <= value <= high:
            raise WeightsError(
                f"{source}: stored configuration {key}={value} is out of bounds ({low} to {high})"
            )
    try:
        with torch.device("meta"):  # shapes only: no memory spent
            skeleton = MIRNet(**arch)
    except Exception as err:  # noqa: BLE001 - a foreign configuration fails in many ways
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(
            f"{source}: stored configuration {arch!r} does not build a MIRNet ({message})"
        ) from None
    if not _try_load(skeleton, state, assign=True):
        load_state_into(skeleton, state, source)  # raises, explaining the mismatch


def load_state_into(model: MIRNet, state: dict[str, torch.Tensor], source: str) -> MIRNet:
    """Load a state dict, explaining a mismatch instead of listing hundreds of keys (counted
    on the keys as stored; on a mismatch the model is left partly loaded).

    Weights saved before the resamplers' parts were named (``main.5``...) load too: the
    network renames them itself (:class:`mirnet.archs.mirnet_arch.ResidualUpsample`).
    """
    if not _try_load(model, state):
        expected = model.state_dict()
        missing = expected.keys() - state.keys()
        unexpected = state.keys() - expected.keys()
        wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
        raise WeightsError(
            f"{source}: does not fit this model ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(wrong)} mis-shaped tensors); {_guess_configuration(state)}"
        )
    return model


def _load_failure(err: Exception) -> str:
    """The informative part of a ``torch.load`` failure, on one line.

    A weights-only refusal is a paragraph that ends up suggesting ``weights_only=False``
    (the very thing that would run the payload); keep only the line that says what was
    refused, e.g. "Trying to load unsupported GLOBAL posix.system ...".
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, pickle.UnpicklingError):
        for line in lines:
            if "nsupported" in line:
                return line.split("WeightsUnpickler error:")[-1].split(". Please use")[0].strip().rstrip(".")
    return " ".join(lines) or type(err).__name__


def read_checkpoint(path: str | os.PathLike) -> Any:
    """A PyTorch file's contents (``.pt``/``.pth``: a training checkpoint, a state dict, the
    authors' checkpoint), read with ``torch.load(weights_only=True)``: anything but tensors
    and plain containers (a pickled call, a class instance) is refused and never runs.

    Raises:
        WeightsError: one line, for a missing, refused or unreadable file; it never suggests
            ``weights_only=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError and friends
        raise WeightsError(
            f"{path}: refused or unreadable as a weights-only PyTorch file ({_load_failure(err)}). "
            "Only tensors and plain containers are loaded, never arbitrary pickled code; "
            "convert trusted files to .safetensors."
        ) from None


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    return tensors, metadata


def exported_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint exports: the moving average (``train.ema_decay``) if the run
    kept one, else the model's own."""
    average = checkpoint.get("ema")
    if average is None:
        return checkpoint["model"]
    # AveragedModel's state: the network's under "module.", and its update count.
    return {key.removeprefix("module."): v for key, v in average.items() if key.startswith("module.")}


def load_weights(path: str | os.PathLike, name: str | None = None) -> tuple[MIRNet, dict[str, Any]]:
    """Build a model from a weights file.

    ``.safetensors`` files rebuild the configuration stored in them (or ``name``, if given).
    ``.pt``/``.pth`` files (our training checkpoints, or a bare state dict) are read with
    ``weights_only=True`` and need ``name`` unless they are our checkpoints. The authors'
    checkpoints (github.com/swz30/MIRNet) are recognised and converted in memory to the
    ``official`` configuration (:mod:`mirnet.archs.official`), with a hint to convert once.

    Returns:
        (model in eval mode, info) where info has ``name`` and ``arch``, and ``self_ensemble``
        when the file asks for one (the bundled ``quality`` model: 8).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    extra: dict[str, Any] = {}
    if suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        stored_name = metadata.get("mirnet.name")
        try:
            arch = json.loads(metadata["mirnet.arch"]) if "mirnet.arch" in metadata else None
        except ValueError as err:
            raise WeightsError(f"{path}: its stored configuration is not valid JSON ({err})") from None
        if "mirnet.self_ensemble" in metadata:
            copies = metadata["mirnet.self_ensemble"]
            if copies not in [str(n) for n in SELF_ENSEMBLE_COPIES]:
                raise WeightsError(f"{path}: stored self-ensemble {copies!r} is not 1, 2, 4 or 8 copies")
            extra["self_ensemble"] = int(copies)
    elif suffix in (".pt", ".pth", ".ckpt"):
        checkpoint = read_checkpoint(path)
        if isinstance(checkpoint, dict) and "model" in checkpoint and "arch" in checkpoint:
            # a training checkpoint: the weights its run validated and would export
            state, stored_name, arch = exported_state(checkpoint), checkpoint.get("name"), checkpoint["arch"]
        elif _official.is_official_checkpoint(checkpoint):  # the authors' .pth (swz30/MIRNet)
            try:
                arch, state = _official.convert_official(checkpoint)
            except _official.OfficialCheckpointError as err:
                raise WeightsError(f"{path}: does not fit the official MIRNet network ({err})") from None
            stored_name = "official"
            logging.getLogger("mirnet").warning(
                f"mirnet: {path}: the authors' MIRNet checkpoint, converted at every load; convert it "
                f"once with: mirnet convert {path} {path.with_suffix('.safetensors')}"
            )
        else:
            state, stored_name, arch = checkpoint, None, None
    else:
        raise WeightsError(f"{path}: unknown weights format; use .safetensors (or .pt/.pth)")
    if name is not None:
        arch = arch_config(name) if arch is None or stored_name != name else arch
        stored_name = name
    # A .pt may hold any weights-only value (a tensor, a list...); only a dict of tensors is weights.
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no model weights (expected a dict of tensors)")
    if arch is None:
        raise WeightsError(f"{path}: carries no configuration; name one ({_guess_configuration(state)})")
    check_arch(arch, state, str(path))  # before anything is allocated for the model
    model = load_state_into(MIRNet(**arch), state, str(path))
    return model.eval(), {"name": stored_name or "custom", "arch": arch, **extra}
