"""Network architectures. The model is in :mod:`mirnet.archs.mirnet_arch`; the named
configurations are in :mod:`mirnet.archs.configs`."""

from mirnet.archs.configs import MODEL_CONFIGS, build_model, list_models
from mirnet.archs.mirnet_arch import MIRNet, count_parameters

__all__ = ["MIRNet", "MODEL_CONFIGS", "build_model", "count_parameters", "list_models"]
