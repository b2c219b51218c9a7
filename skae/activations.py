"""Harvest the activations of a torch model into an ``.npy`` file to fit on.

:func:`harvest` runs any ``torch.nn.Module`` over your inputs, catches the
output (or input) of one of its submodules with a forward hook, and streams
it into an ``.npy`` file, one row per sample and sequence position. The file
comes back as a read-only memmap that every skae estimator fits by streaming
it, so the activations never need to fit in memory.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from ._engine.files import check_writable_folder

__all__ = ["harvest"]

#: Dtypes an activation file can hold.
DTYPES = ("float16", "float32", "float64")
#: Bytes written between two saves of the progress (flush and record).
SAVE_BYTES = 64 * 2**20
#: Seconds between two saves of the progress, whatever was written.
SAVE_SECONDS = 30.0
#: Relative and absolute tolerance of the check that a resumed harvest runs
#: the same model on the same inputs (recomputed activations may differ in
#: their last bits, on a GPU for example).
RESUME_RTOL, RESUME_ATOL = 1e-3, 1e-5


class _Caught(Exception):
    """Raised by the hook once it has the activations, to skip the layers
    after the harvested one."""


def harvest(
    model: torch.nn.Module,
    layer: str,
    inputs: Iterable,
    path: str | os.PathLike,
    *,
    capture: str = "output",
    mask: str | Callable | None = None,
    forward: Callable | None = None,
    max_rows: int | None = None,
    dtype: str = "float32",
    verbose: bool = False,
) -> np.memmap:
    """Run a torch model over inputs and save one layer's activations.

    A forward hook on the submodule ``layer`` catches its activations for
    each batch of ``inputs``; the model runs in eval mode under
    ``torch.no_grad()`` on its own device, and stops right after the layer
    (the layers after it do not run). Each batch's activations, of shape
    ``(batch, ..., n_features)``, are flattened to one row per sample and
    position, as SAE trainers do, and appended to an ``.npy`` file that
    grows by chunks: memory holds one batch at a time.

    The file is written as ``path + '.partial'``, with its progress in
    ``path + '.partial.json'``, and renamed to ``path`` when every batch is
    in. If the harvest is interrupted (Ctrl-C, an error, a lost machine),
    calling ``harvest`` again with the same arguments resumes it: it runs
    the first batch again to check that the model and the inputs give the
    same activations as before (and refuses to go on if they do not), skips
    the batches already saved, and continues.

    Parameters
    ----------
    model : torch.nn.Module
        Any torch model. Its training mode is restored afterwards.
    layer : str
        The name of a submodule, as in ``model.named_modules()`` (for
        example ``'layers.1'`` or ``'transformer.h.6.mlp'``).
    inputs : iterable
        Batches to run the model on, in a fixed order (an interrupted
        harvest resumes by position in it, so a shuffling ``DataLoader``
        would resume on other rows; the first-batch check catches that).
        Each batch is a tensor (or array), called as ``model(batch)``; a
        dict, called as ``model(**batch)``; or a tuple or list, whose first
        element is the input (as a ``DataLoader`` yields ``(x, y)``).
        Tensors are moved to the model's device.
    path : str or path-like
        The ``.npy`` file to create. An existing file is never overwritten.
    capture : {'output', 'input'}, default='output'
        Catch what ``layer`` returns (the first tensor, if it returns a
        tuple) or the first tensor it is called with: the residual stream
        going into a transformer block, say.
    mask : str or callable, default=None
        Which positions to keep: the name of a key of dict batches (such as
        ``'attention_mask'``), or a function of the batch. It gives a mask of
        the activations' shape without the feature axis; positions where it
        is zero (padding) are dropped. None keeps every position.
    forward : callable, default=None
        ``forward(model, batch)`` runs the model on a batch, for models that
        need something other than the calls described under ``inputs``.
    max_rows : int, default=None
        Stop once the file holds this many rows (the last batch is cut).
    dtype : {'float32', 'float16', 'float64'}, default='float32'
        The dtype of the file.
    verbose : bool, default=False
        Show a progress bar of the batches and the rows written.

    Returns
    -------
    activations : numpy.memmap of shape (n_rows, n_features)
        The finished file, opened read-only. Its rows follow the inputs'
        order, and within a batch the positions in C order (the kept ones,
        with a mask): for batches of shape ``(batch, seq, n_features)``
        without a mask, row ``r`` of a batch is sample ``r // seq``, position
        ``r % seq``.

    Raises
    ------
    FileExistsError
        If ``path`` exists.
    ValueError
        Before any work, for a layer that is not in the model, an unwritable
        folder, or bad arguments; during the harvest, for activations that
        are not finite, a mask of the wrong shape, or a resumed harvest whose
        first batch differs from the one saved.

    See Also
    --------
    skae.inspect.top_activating : The rows that excite a latent most.

    Examples
    --------
    >>> import tempfile, os
    >>> import torch
    >>> from skae import KSparseAutoencoder
    >>> from skae.activations import harvest
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)
    ... )
    >>> batches = [torch.randn(64, 8) for _ in range(10)]
    >>> folder = tempfile.mkdtemp()
    >>> X = harvest(model, "1", batches, os.path.join(folder, "relu.npy"))
    >>> X.shape
    (640, 32)
    >>> sae = KSparseAutoencoder(64, k=4, max_iter=2, random_state=0).fit(X)
    >>> int((sae.transform(X[:5]) != 0).sum(axis=1).max())
    4
    """
    path = Path(path)
    module = _checked_arguments(model, layer, path, capture, mask, max_rows, dtype)
    partial = _Partial(path, {"layer": layer, "capture": capture, "dtype": dtype})
    device = _device_of(model)
    run = forward or _call
    training = model.training
    model.eval()
    try:
        with _hook(module, capture) as caught, torch.no_grad():
            _fill(partial, inputs, run, model, caught, device, mask, max_rows, verbose)
    finally:
        model.train(training)
    return partial.finish()


def _checked_arguments(model, layer, path, capture, mask, max_rows, dtype):
    """The submodule to hook, once every argument is checked."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    modules = dict(model.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(str(layer), [n for n in modules if n], n=5)
        hint = f" Close names: {close}." if close else ""
        raise ValueError(
            f"layer={layer!r} is not a submodule of the model; names are those "
            f"of model.named_modules().{hint}"
        )
    if capture not in ("output", "input"):
        raise ValueError(f"capture must be 'output' or 'input', got {capture!r}.")
    if mask is not None and not (isinstance(mask, str) or callable(mask)):
        raise TypeError(f"mask must be a key, a callable or None, got {mask!r}.")
    if max_rows is not None and (
        not isinstance(max_rows, Integral) or isinstance(max_rows, bool) or max_rows < 1
    ):
        raise ValueError(f"max_rows must be a positive int or None, got {max_rows!r}.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
    if path.exists():
        raise FileExistsError(
            f"{str(path)!r} exists; harvest never overwrites a file. Remove it "
            "or choose another path."
        )
    check_writable_folder(path, "path")
    return modules[layer]


def _device_of(model: torch.nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _call(model: torch.nn.Module, batch) -> None:
    if isinstance(batch, Mapping):
        model(**batch)
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        model(batch[0])
    else:
        model(batch)


def _to_device(batch, device: torch.device):
    """The batch with its tensors (and arrays) on ``device``."""
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(batch).to(device)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            if (tensor := _first_tensor(item)) is not None:
                return tensor
    return None


@contextlib.contextmanager
def _hook(module: torch.nn.Module, capture: str):
    """A list that receives the layer's activations for each forward pass;
    the hook then stops the pass by raising ``_Caught``."""
    caught: list[torch.Tensor] = []

    def keep(value) -> None:
        tensor = _first_tensor(value)
        if tensor is None:
            raise TypeError(f"the layer's {capture} holds no tensor to harvest.")
        caught.append(tensor.detach())
        raise _Caught

    if capture == "output":
        handle = module.register_forward_hook(lambda m, args, output: keep(output))
    else:
        handle = module.register_forward_pre_hook(
            lambda m, args, kwargs: keep([*args, kwargs]), with_kwargs=True
        )
    try:
        yield caught
    finally:
        handle.remove()


def _activations(model, batch, run, caught, device, mask, dtype) -> np.ndarray:
    """One batch's activations as rows, the masked positions dropped."""
    caught.clear()
    batch = _to_device(batch, device)
    with contextlib.suppress(_Caught):
        run(model, batch)
    if not caught:
        raise ValueError("the layer did not run when the model ran on a batch.")
    values = caught[0]
    rows = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values[:, None]
    if mask is not None:
        kept = batch[mask] if isinstance(mask, str) else mask(batch)
        kept = torch.as_tensor(kept, device=values.device)
        if tuple(kept.shape) != tuple(values.shape[:-1]):
            raise ValueError(
                f"the mask has shape {tuple(kept.shape)}; the activations "
                f"{tuple(values.shape)} need {tuple(values.shape[:-1])}."
            )
        rows = rows[kept.reshape(-1).bool()]
    rows = rows.to("cpu", torch.float64 if dtype == "float64" else torch.float32)
    rows = rows.numpy().astype(dtype, copy=False)
    if not np.isfinite(rows).all():
        raise ValueError(
            "the layer's activations hold NaN or infinity; nothing is written "
            "for this batch."
        )
    return rows


def _fill(partial, inputs, run, model, caught, device, mask, max_rows, verbose):
    from tqdm.auto import tqdm

    total = len(inputs) if hasattr(inputs, "__len__") else None
    bar = tqdm(total=total, unit="batch", desc="harvest", disable=not verbose)
    try:
        for number, batch in enumerate(inputs):
            if partial.rows == max_rows:
                break
            if number < partial.batches and number > 0:
                bar.update()
                continue
            rows = _activations(model, batch, run, caught, device, mask, partial.dtype)
            if number < partial.batches:  # the first batch of a resumed harvest
                partial.check_first_batch(rows)
            else:
                room = rows if max_rows is None else rows[: max_rows - partial.rows]
                partial.append(room)
            bar.update()
            bar.set_postfix(rows=partial.rows, refresh=False)
    finally:
        bar.close()
        partial.save()


class _Partial:
    """The growing ``.partial`` file and its progress record."""

    def __init__(self, path: Path, identity: dict) -> None:
        self.path, self.identity = path, identity
        self.file = Path(f"{path}.partial")
        self.record = Path(f"{path}.partial.json")
        self.dtype = identity["dtype"]
        self.array: np.memmap | None = None
        self.rows = self.batches = 0
        self.unsaved_bytes, self.saved_at = 0, time.monotonic()
        if self.file.exists() or self.record.exists():
            self._resume()

    def _resume(self) -> None:
        try:
            record = json.loads(self.record.read_text())
            fields = (record["identity"], record["rows"], record["batches"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(
                f"{str(self.file)!r} has no readable progress record "
                f"{str(self.record)!r}, so it cannot be resumed. Remove both "
                "to start afresh."
            ) from None
        identity, self.rows, self.batches = fields
        if identity != self.identity:
            raise ValueError(
                f"the interrupted harvest in {str(self.file)!r} was of "
                f"{identity}, not {self.identity}. Remove {str(self.file)!r} "
                f"and {str(self.record)!r} to start afresh, or resume it with "
                "its own arguments."
            )
        if self.batches and not self.file.exists():
            raise ValueError(
                f"{str(self.file)!r} is missing; remove {str(self.record)!r} "
                "to start afresh."
            )
        if self.batches:
            self.array = np.load(self.file, mmap_mode="r+")

    def check_first_batch(self, rows: np.ndarray) -> None:
        saved = np.array(self.array[: min(len(rows), self.rows)], dtype=np.float64)
        again = rows[: len(saved)].astype(np.float64)
        scale = max(float(np.abs(saved).max(initial=0.0)), 1.0)
        if again.shape != saved.shape or not np.allclose(
            again, saved, rtol=RESUME_RTOL, atol=RESUME_ATOL * scale
        ):
            raise ValueError(
                f"refusing to resume {str(self.file)!r}: the first batch gives "
                "other activations than the interrupted harvest saved, so the "
                "model or the inputs have changed. Remove "
                f"{str(self.file)!r} and {str(self.record)!r} to start afresh."
            )

    def append(self, rows: np.ndarray) -> None:
        if self.array is None:
            self.array = np.lib.format.open_memmap(
                self.file, mode="w+", dtype=self.dtype, shape=self._capacity(rows, 0)
            )
        self._check_width(rows)
        if self.rows + len(rows) > len(self.array):
            self._grow(self._capacity(rows, len(self.array)))
        self.array[self.rows : self.rows + len(rows)] = rows
        self.rows += len(rows)
        self.batches += 1
        self.unsaved_bytes += rows.nbytes
        if (
            self.unsaved_bytes >= SAVE_BYTES
            or time.monotonic() - self.saved_at >= SAVE_SECONDS
        ):
            self.save()

    def _check_width(self, rows: np.ndarray) -> None:
        if rows.shape[1] != self.array.shape[1]:
            raise ValueError(
                f"a batch gave {rows.shape[1]} features where the earlier ones "
                f"gave {self.array.shape[1]}."
            )

    def _capacity(self, rows: np.ndarray, current: int) -> tuple[int, int]:
        """Room for ``rows`` more: the current size doubled, or at least
        64 MiB of rows."""
        chunk = max(SAVE_BYTES // (rows.shape[1] * rows.itemsize), 1)
        return max(self.rows + len(rows), 2 * current, chunk), rows.shape[1]

    def _grow(self, shape: tuple[int, int]) -> None:
        self.save()
        self._resize(shape)
        self.array = np.load(self.file, mmap_mode="r+")

    def _resize(self, shape: tuple[int, int]) -> None:
        """Rewrite the header for ``shape`` in place (numpy leaves room in it
        for a longer first axis) and fit the file to it."""
        offset, dtype = self.array.offset, self.array.dtype
        self.array.flush()
        self.array = None  # unmapped once no view of it is left
        header = {"descr": np.lib.format.dtype_to_descr(dtype)}
        header |= {"fortran_order": False, "shape": shape}
        with open(self.file, "r+b") as file:
            version = np.lib.format.read_magic(file)
            file.seek(0)
            writer = (
                np.lib.format.write_array_header_1_0
                if version == (1, 0)
                else np.lib.format.write_array_header_2_0
            )
            writer(file, header)
            if file.tell() != offset:  # never expected with numpy's padding
                raise RuntimeError(f"could not resize {str(self.file)!r} in place.")
            file.truncate(offset + shape[0] * shape[1] * dtype.itemsize)

    def save(self) -> None:
        """Flush the rows and record how many are safely written."""
        if self.array is not None:
            self.array.flush()
        record = {"identity": self.identity, "rows": self.rows}
        record["batches"] = self.batches
        temporary = Path(f"{self.record}.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.record)
        self.unsaved_bytes, self.saved_at = 0, time.monotonic()

    def finish(self) -> np.memmap:
        if self.array is None:
            self.record.unlink(missing_ok=True)
            raise ValueError("the inputs gave no rows to harvest.")
        self.save()
        self._resize((self.rows, self.array.shape[1]))
        if self.path.exists():
            raise FileExistsError(f"{str(self.path)!r} appeared while harvesting.")
        os.replace(self.file, self.path)
        self.record.unlink()
        return np.load(self.path, mmap_mode="r")
