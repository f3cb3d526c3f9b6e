"""SliceGPT (Ashkboos et al., ICLR 2024): norm fusion, PCA rotation and slicing.

Importing this package registers the sliced model types with ``AutoConfig`` and
``AutoModelForCausalLM`` so that ``from_pretrained`` loads sliced checkpoints.
"""

from .fusion import fuse_norms
from .modeling import SUPPORTED_FAMILIES, register_auto_classes
from .slicegpt import count_params, load_sliced, rotate_and_slice, save_sliced, slice_model

register_auto_classes()

__all__ = [
    "SUPPORTED_FAMILIES",
    "count_params",
    "fuse_norms",
    "load_sliced",
    "register_auto_classes",
    "rotate_and_slice",
    "save_sliced",
    "slice_model",
]
