"""isogauss-hf: Isotropic Gaussian fully connected layers for Hugging Face transformers.

Selected fully connected layers are stored as the mean and std of every row and column (2n + 2m
numbers instead of n * m), sampled at run time (Eq. 2), and learned by GDU or WDU.
"""

__version__ = "0.1.0"

from .callback import IsoGaussCallback
from .config import IsoGaussConfig
from .layer import IsoGaussFusedLinear, IsoGaussLinear
from .mapping import ARCHITECTURES, ArchitectureSpec, register_architecture
from .model import IsoGaussModel, get_isogauss_model
from .tracking import StatisticsLogger
from . import models  # noqa: F401  registers the isogauss-ffn8 architecture
from . import peft_integration  # noqa: F401  registers the ISOGAUSS method with PEFT

__all__ = [
    "__version__",
    "IsoGaussCallback",
    "IsoGaussConfig",
    "IsoGaussLinear",
    "IsoGaussFusedLinear",
    "IsoGaussModel",
    "get_isogauss_model",
    "ARCHITECTURES",
    "ArchitectureSpec",
    "register_architecture",
    "StatisticsLogger",
]
