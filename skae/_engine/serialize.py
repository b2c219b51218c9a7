"""Trees of plain data and tensors, stored without pickle.

A tree (dicts, lists, tuples, numbers, strings, tensors, numpy arrays, random
streams and instances of :func:`storable` classes) becomes a JSON document,
with every tensor replaced by a reference, and a dict of named tensors. Both
go into one `safetensors <https://huggingface.co/docs/safetensors>`_ file, the
JSON in its header's metadata. Reading a file builds only plain data, tensors
and instances of the classes registered with :func:`storable` (filled with
plain data): nothing in a file can make code run.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import sys
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from .files import atomic_output

_STORABLE: dict[str, type] = {}

#: The largest header the safetensors library reads.
MAX_HEADER_BYTES = 100_000_000

# safetensors' names of torch's dtypes.
_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint64: "U64",
    torch.uint32: "U32",
    torch.uint16: "U16",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def storable(cls: type) -> type:
    """Register ``cls`` as a class whose instances a tree may hold.

    An instance is stored as its attributes (``vars``), each itself storable,
    and read back by filling a bare instance (``__init__`` is not called).
    Only registered classes are ever created when reading.
    """
    _STORABLE[cls.__name__] = cls
    return cls


class FileFormatError(ValueError):
    """A file that is not what it should be (not skae's, damaged, foreign)."""


# ------------------------------------------------------------------ trees


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def tensor_key(self, path: str, tensor: torch.Tensor) -> str:
        key, n = path or "tensor", 1
        while key in self.tensors:
            n += 1
            key = f"{path}#{n}"
        self.tensors[key] = tensor.detach().cpu()
        return key

    def encode(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, np.integer, np.bool_)):
            return value.item() if isinstance(value, np.generic) else value
        if isinstance(value, (float, np.floating)):
            value = float(value)
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, list):
            return [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            items = [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]
            return {"__tuple__": items}
        if isinstance(value, dict):
            return self.encode_dict(value, path)
        if isinstance(value, torch.Tensor):
            return {"__tensor__": self.tensor_key(path, value)}
        if isinstance(value, np.ndarray):
            return self.encode_array(value, path)
        if isinstance(value, np.random.RandomState):
            return {"__random_state__": self.encode(value.get_state(), path)}
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        if isinstance(value, PurePath):
            return {"__path__": str(value)}
        name = type(value).__name__
        if _STORABLE.get(name) is type(value):
            fields = self.encode_dict(vars(value), path)
            return {"__record__": name, "fields": fields}
        raise TypeError(f"cannot store a {type(value).__name__} (at {path or 'top'})")

    def encode_dict(self, value: dict, path: str) -> Any:
        plain = all(isinstance(k, str) and not k.startswith("__") for k in value)
        if plain:
            return {
                k: self.encode(v, f"{path}.{k}" if path else k)
                for k, v in value.items()
            }
        items = [
            [self.encode(k, path), self.encode(v, f"{path}.{k}")]
            for k, v in value.items()
        ]
        return {"__dict__": items}

    def encode_array(self, value: np.ndarray, path: str) -> Any:
        if value.dtype.kind in "biuf":
            tensor = torch.from_numpy(np.array(value, order="C"))
            return {"__ndarray__": self.tensor_key(path, tensor)}
        if value.dtype.kind in "OU" and all(isinstance(v, str) for v in value.flat):
            return {
                "__strings__": value.ravel().tolist(),
                "shape": list(value.shape),
                "dtype": value.dtype.str,
            }
        raise TypeError(f"cannot store an array of dtype {value.dtype} (at {path})")


def encode(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``tree`` as JSON-compatible data and the tensors it refers to by name."""
    encoder = _Encoder()
    return encoder.encode(tree, ""), encoder.tensors


def decode(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The tree that :func:`encode` gave ``data`` and ``tensors`` for."""
    if isinstance(data, list):
        return [decode(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        ((tag, value),) = data.items()
        if tag == "__float__":
            return float(value)
        if tag == "__tuple__":
            return tuple(decode(v, tensors) for v in value)
        if tag == "__dict__":
            return {decode(k, tensors): decode(v, tensors) for k, v in value}
        if tag == "__tensor__":
            return _tensor(tensors, value)
        if tag == "__ndarray__":
            return _tensor(tensors, value).numpy()
        if tag == "__random_state__":
            random_state = np.random.RandomState()
            random_state.set_state(decode(value, tensors))
            return random_state
        if tag == "__device__":
            return torch.device(value)
        if tag == "__path__":
            return Path(value)
    if "__strings__" in data:
        return np.array(data["__strings__"], dtype=data["dtype"]).reshape(data["shape"])
    if "__record__" in data:
        cls = _STORABLE.get(data["__record__"])
        if cls is None:
            raise FileFormatError(f"unknown stored type {data['__record__']!r}")
        record = cls.__new__(cls)
        vars(record).update(decode(data["fields"], tensors))
        return record
    if any(key.startswith("__") for key in data):
        raise FileFormatError(f"unknown stored value {sorted(data)}")
    return {key: decode(value, tensors) for key, value in data.items()}


def save_tree(
    path: str | os.PathLike,
    tree: Any,
    kind: tuple[str, str],
    version: int,
    **metadata: str,
) -> None:
    """Write ``tree`` atomically as a file of ``kind``, ``(format, key)`` such
    as ``("skae.estimator", "estimator")``, in format ``version``: its JSON in
    the header under ``key``, beside ``metadata``, and its tensors."""
    data, tensors = encode(tree)
    name, key = kind
    header = {"format": name, "format_version": str(version), **metadata}
    write_file(path, tensors, header | {key: json.dumps(data)})


def load_tree(path: str | os.PathLike, kind: tuple[str, str], version: int) -> Any:
    """The tree of a file :func:`save_tree` wrote as ``kind``, in a format up
    to ``version``; raises FileFormatError (a ValueError) otherwise."""
    tensors, metadata = read_file(path)
    name, key = kind
    if metadata.get("format") != name or key not in metadata:
        raise FileFormatError(f"it holds no {name}")
    written = int(metadata.get("format_version", 0))
    if written > version:
        raise FileFormatError(
            f"it was written by skae {metadata.get('skae_version', '(newer)')} in "
            f"{name} format {written}; this skae reads formats up to {version}: "
            "upgrade skae"
        )
    return decode(json.loads(metadata[key]), tensors)


def _tensor(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in tensors:
        raise FileFormatError(f"the tensor {key!r} is missing")
    return tensors[key]


# ------------------------------------------------------------------ files


def write_file(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write a safetensors file atomically (see :func:`.files.atomic_output`).

    Written here rather than by ``safetensors.torch.save_file``, which opens
    the destination by name and would need a second copy of every tensor in
    memory to go through a private file: tensors are streamed one at a time.
    """
    if sys.byteorder != "little":  # safetensors is little-endian
        raise OSError("saving skae files needs a little-endian machine")
    # Largest elements first, so that every tensor starts aligned.
    order = sorted(tensors, key=lambda k: -tensors[k].element_size())
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for key in order:
        tensor = tensors[key]
        if tensor.dtype not in _DTYPES:
            raise TypeError(f"cannot store a tensor of dtype {tensor.dtype}")
        size = tensor.numel() * tensor.element_size()
        header[key] = {
            "dtype": _DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    if len(encoded) > MAX_HEADER_BYTES:  # safetensors would not read it back
        raise ValueError(
            f"the file's header would take {len(encoded) / 1e6:.0f} MB, more than "
            f"the {MAX_HEADER_BYTES / 1e6:.0f} MB safetensors reads (very many "
            "feature names?)"
        )
    with atomic_output(path) as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for key in order:
            _write_tensor(file, tensors[key])


def _write_tensor(file: BinaryIO, tensor: torch.Tensor) -> None:
    if tensor.numel() == 0:
        return
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    file.write(memoryview(flat.view(torch.uint8).numpy()))


def read_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a safetensors file, read without pickle.

    Raises :class:`FileFormatError` when the file is not a safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    _check_header(path)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, RuntimeError) as exc:
        raise FileFormatError(f"damaged safetensors file ({exc})") from None
    return tensors, metadata


def _check_header(path: str | os.PathLike) -> None:
    """Fail with a plain message unless the file starts as safetensors does:
    a little-endian header length, then a JSON object. Only a regular file
    is opened: reading a named pipe or a device could block or never end."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise FileFormatError("not a regular file")
    with open(path, "rb") as file:
        start = file.read(9)
    if len(start) < 9 or start[8:9] != b"{":
        raise FileFormatError("not a safetensors file")
    (length,) = struct.unpack("<Q", start[:8])
    if length > os.path.getsize(path) - 8:
        raise FileFormatError("not a safetensors file (its header is cut short)")


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a safetensors file, without reading its tensors."""
    from safetensors import SafetensorError, safe_open

    _check_header(path)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as file:
            return file.metadata() or {}
    except (SafetensorError, RuntimeError) as exc:
        raise FileFormatError(f"damaged safetensors file ({exc})") from None


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (nothing is loaded)."""
    try:
        _check_header(path)
    except (OSError, FileFormatError):
        return False
    return True


# --------------------------------------------------------------- modules

# nn.Module's own bookkeeping (parameters, buffers, hooks, train/eval flag),
# rebuilt by the module's constructor rather than stored.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def module_state(module: nn.Module) -> dict:
    """A module's tensors (``state_dict``) and, for it and each submodule, its
    other attributes (sparsity rule, settings, counters), as a tree."""
    attributes = {
        name: {k: v for k, v in vars(sub).items() if k not in _MODULE_INTERNALS}
        for name, sub in module.named_modules()
    }
    return {"tensors": dict(module.state_dict()), "attributes": attributes}


def restore_module(module: nn.Module, state: dict) -> nn.Module:
    """Fill ``module``, built with the stored module's shape (on the meta
    device, so that building it allocates nothing), with ``state`` from
    :func:`module_state`; raise FileFormatError if they do not fit."""
    expected = module.state_dict()
    tensors = state["tensors"]
    wrong = [
        f"{name}: {tuple(tensors[name].shape) if name in tensors else 'missing'} "
        f"stored, {tuple(value.shape)} expected"
        for name, value in expected.items()
        if name not in tensors or tensors[name].shape != value.shape
    ]
    wrong += [f"{name}: not expected" for name in tensors if name not in expected]
    if wrong:
        raise FileFormatError(f"its weights do not fit the model ({'; '.join(wrong)})")
    # Fresh memory, as a trained module has: a tensor read from the file may
    # be aligned otherwise, and BLAS kernels sum in another order then.
    module = module.to_empty(device="cpu")
    module.load_state_dict(tensors)
    for name, attributes in state["attributes"].items():
        try:
            sub = module.get_submodule(name)
        except AttributeError:
            raise FileFormatError(f"the model has no part {name!r}") from None
        # A module whose attributes were renamed reads older files' names.
        upgrade = getattr(type(sub), "upgrade_attributes", None)
        if upgrade is not None and isinstance(attributes, dict):
            attributes = upgrade(attributes)
        for key, value in attributes.items():
            _check_attribute(sub, key)
            vars(sub)[key] = value
    return module


def _check_attribute(module: nn.Module, key: str) -> None:
    """Refuse a stored attribute that would hide a method, a property or one
    of the module's tensors or parts."""
    owned = (
        key in module._parameters or key in module._buffers or key in module._modules
    )
    declared = getattr(type(module), key, None)
    if key in _MODULE_INTERNALS or owned or isinstance(declared, (Callable, property)):
        raise FileFormatError(f"the model's attribute {key!r} cannot be set")
