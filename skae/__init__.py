"""skae: sparse autoencoders as scikit-learn estimators, trained with PyTorch."""

from ._base import BaseSparseAutoencoder
from ._conv import ConvSparseAutoencoder
from ._engine.training import TrainingDivergedError
from ._jumprelu import JumpReLUSparseAutoencoder
from ._kl import KLSparseAutoencoder
from ._ksparse import KSparseAutoencoder
from ._l1 import L1SparseAutoencoder
from ._l2 import L2SparseAutoencoder
from ._outlier import SparseAutoencoderOutlierDetector
from ._persistence import load, save
from ._stacked import StackedSparseAutoencoder

__version__ = "0.1.0.dev0"

__all__ = [
    "BaseSparseAutoencoder",
    "ConvSparseAutoencoder",
    "JumpReLUSparseAutoencoder",
    "KLSparseAutoencoder",
    "KSparseAutoencoder",
    "L1SparseAutoencoder",
    "L2SparseAutoencoder",
    "SparseAutoencoderOutlierDetector",
    "StackedSparseAutoencoder",
    "TrainingDivergedError",
    "__version__",
    "load",
    "save",
]
