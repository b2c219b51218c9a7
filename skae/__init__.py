"""skae: sparse autoencoders as scikit-learn estimators, trained with PyTorch."""

from ._base import BaseSparseAutoencoder
from ._ksparse import KSparseAutoencoder

__version__ = "0.1.0.dev0"

__all__ = ["BaseSparseAutoencoder", "KSparseAutoencoder", "__version__"]
