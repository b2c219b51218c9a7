"""Matrix products in bfloat16: the ``precision`` parameter.

With ``precision='bfloat16'`` the engine's dense products (the encoder and
decoder matrix products, the convolutions, matching pursuit's correlations)
take bfloat16 operands, which the hardware multiplies with float32
accumulation, and hand their result back in the caller's dtype. Everything
else stays in float32: the weights the optimizer updates, activations,
penalties, the loss, and top-k training's sparse backward and decoder.
This is what ``torch.autocast`` does to a product, written out so that it
also covers the top-k engine's custom autograd functions; the choice is a
context, like autocast's, set by the estimator around training and
inference.

bfloat16 keeps float32's range with an 8-bit mantissa, so a product's
result is off by about 0.4% of its size; top-k may then swap latents whose
pre-activations tie to that precision. On a GPU, and on CPUs with
AVX512-BF16 or AMX, bfloat16 products run several times faster than
float32 ones; elsewhere torch emulates them, slower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

#: Values of the estimators' ``precision`` parameter.
PRECISIONS = ("auto", "float32", "bfloat16")

_PRODUCT_DTYPE: ContextVar[torch.dtype | None] = ContextVar(
    "skae_product_dtype", default=None
)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype of products for ``precision`` on ``device``; None for the
    operands' own (float32 for training, float64 for float64 inference).

    ``'auto'`` is bfloat16 on a CUDA device that multiplies it natively
    (compute capability 8.0 and up: Ampere, Hopper and later), and the
    operands' own dtype elsewhere, so that results on a CPU do not depend
    on the CPU's instruction set. (``torch.cuda.is_bf16_supported`` also
    counts older GPUs, which emulate bfloat16, slowly.)
    """
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else None
    return None


@contextmanager
def products_in(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the engine's products in ``dtype`` (None: the operands' own)
    inside the block."""
    token = _PRODUCT_DTYPE.set(dtype)
    try:
        yield
    finally:
        _PRODUCT_DTYPE.reset(token)


def product_dtype(operand: Tensor) -> torch.dtype:
    """The dtype in which a product with ``operand`` runs here."""
    dtype = _PRODUCT_DTYPE.get()
    return operand.dtype if dtype is None else dtype


def product(fn: Callable[..., Tensor], *operands, **kwargs) -> Tensor:
    """``fn(*operands, **kwargs)`` with its tensor operands in the product
    dtype, the result cast back to the last operand's dtype (a weight's).

    Autograd sees the casts: gradients reach the float32 operands in
    float32.
    """
    dtype_out = [t for t in operands if isinstance(t, Tensor)][-1].dtype
    dtype = _PRODUCT_DTYPE.get()
    if dtype is None or dtype == dtype_out:
        return fn(*operands, **kwargs)
    cast = [t.to(dtype) if isinstance(t, Tensor) else t for t in operands]
    return fn(*cast, **kwargs).to(dtype_out)
