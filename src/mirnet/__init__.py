"""mirnet: low-light photo enhancement with MIRNet (Zamir et al., ECCV 2020).

>>> import mirnet
>>> enhancer = mirnet.load_model()          # the bundled default model
>>> bright = enhancer.enhance(dark_image)   # PIL image, NumPy array or tensor
"""

__version__ = "0.1.0"

from mirnet.archs import build_model, list_models  # noqa: E402
from mirnet.inference import Enhancer, load_model  # noqa: E402

__all__ = ["Enhancer", "__version__", "build_model", "list_models", "load_model"]
