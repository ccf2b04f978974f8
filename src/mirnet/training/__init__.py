"""Training: ``mirnet train --config configs/NAME.yaml [--data PATH]``.

One concern per module:

* :mod:`~mirnet.training.config`: the experiment file, typed and checked before any work;
* :mod:`~mirnet.training.datasets`: the training and validation data a config describes;
* :mod:`~mirnet.training.distributed`: the ``torchrun`` process group and its collectives;
* :mod:`~mirnet.training.run_folder`: the files of a run (config, split, log, curves,
  checkpoints, model card);
* :mod:`~mirnet.training.loop`: :class:`Trainer`, the loop itself, and :func:`train`.
"""

from mirnet.training.config import ConfigError, ExperimentConfig, load_config, parse_config
from mirnet.training.loop import Trainer, TrainingDiverged, TrainingStopped, train

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingStopped",
    "load_config",
    "parse_config",
    "train",
]
