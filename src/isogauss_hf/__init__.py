"""isogauss-hf: Isotropic Gaussian fully connected layers for Hugging Face transformers.

Selected fully connected layers are stored as the mean and std of every row and column (2n + 2m
numbers instead of n * m), sampled at run time (Eq. 2), and learned by GDU or WDU.

Where things live (each module's docstring says more):

======================  ===============================================================================
``settings``            allowed rules / noise modes and their checks (``LayerOptions``)
``functional``          the equations: Eq. 2, sampling, row/column statistics, GDU, WDU, standardization
``noise``               seeded standard-normal noise of a draw (the checkpoint contract)
``_runtime``            threads, ``torch.compile`` of the equations, scratch buffers (``set_compile``)
``layers``              layer kinds (``IsoGaussLinear``, ``IsoGaussConv2d``), the (rule, noise) update table
``config``              ``IsoGaussConfig`` (also a PEFT config)
``mapping``             where each architecture keeps its blocks and matrices (``mapping_cnn``: CNN modules)
``convert``             module replacement, parameter report, ``iter_isogauss_layers``
``sampling``            evaluation over draws (pinning, averaging)
``model``               ``IsoGaussModel`` / ``get_isogauss_model``
``checkpoint``          what a compressed checkpoint holds; ``serialization``: the file I/O
``auto``                native loading: ``AutoModelFor*.from_pretrained`` / ``pipeline`` on a compressed checkpoint
``hub``                 model card and push; ``peft_integration``: the PEFT method
``callback``            ``IsoGaussCallback`` (the distribution step in a Trainer); ``distributed``: DDP helpers
``tracking``            ``StatisticsLogger``; ``errors``: every exception class
``baselines``           drop / lowrank / frozen run variants; ``evaluation``: accuracy with a 95 % interval
``analysis``            how Gaussian each matrix is, which blocks can be replaced (``isogauss-analyze``)
``heads``               the Table 6 two-layer classifier head for CNNs
``recipes``, ``cli``    experiments and the ``isogauss-finetune`` command; ``tasks``: datasets and metrics
======================  ===============================================================================
"""

from ._version import __version__
from ._runtime import set_compile
from .callback import IsoGaussCallback
from .config import IsoGaussConfig
from .convert import iter_isogauss_layers
from .layers import IsoGaussConv2d, IsoGaussFusedLinear, IsoGaussLayer, IsoGaussLinear
from .mapping import ARCHITECTURES, ArchitectureSpec, register_architecture
from .model import IsoGaussModel, get_isogauss_model
from .tracking import StatisticsLogger
from . import models  # noqa: F401  registers the isogauss-ffn8 architecture
from . import drop_cnn  # noqa: F401  registers the ResNet block-removal baseline
from . import auto  # noqa: F401  registers compressed checkpoints with AutoConfig / AutoModel* / pipeline
from . import peft_integration  # noqa: F401  registers the ISOGAUSS method with PEFT

__all__ = [
    "__version__",
    "set_compile",
    "IsoGaussCallback",
    "IsoGaussConfig",
    "IsoGaussLayer",
    "IsoGaussLinear",
    "IsoGaussFusedLinear",
    "IsoGaussConv2d",
    "IsoGaussModel",
    "get_isogauss_model",
    "iter_isogauss_layers",
    "ARCHITECTURES",
    "ArchitectureSpec",
    "register_architecture",
    "StatisticsLogger",
]
