"""The torch engine: modules, data batching and the training loop.

Nothing in this package imports scikit-learn; the estimators in ``skae`` speak
numpy and sklearn and hand tensors-to-be to the engine through
:mod:`skae._engine.data`.
"""
