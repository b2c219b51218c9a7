"""skae: sparse autoencoders as scikit-learn estimators, trained with PyTorch.

The public names are imported on first use (PEP 562), so that ``import
skae.cli`` and ``skae --help`` do not pay for importing torch and
scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

#: Each public name and the module that defines it.
_EXPORTS = {
    "BaseSparseAutoencoder": "._base",
    "ConvSparseAutoencoder": "._conv",
    "JumpReLUSparseAutoencoder": "._jumprelu",
    "KLSparseAutoencoder": "._kl",
    "KSparseAutoencoder": "._ksparse",
    "L1SparseAutoencoder": "._l1",
    "L2SparseAutoencoder": "._l2",
    "SparseAutoencoderOutlierDetector": "._outlier",
    "StackedSparseAutoencoder": "._stacked",
    "TrainingDivergedError": "._engine.training",
    "load": "._persistence",
    "save": "._persistence",
}

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

if TYPE_CHECKING:
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


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
