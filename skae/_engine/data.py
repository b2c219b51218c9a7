"""Rows of X, read in bounded chunks and handed to the device as batches.

X is a validated 2-D numpy array, a numpy memmap, or a scipy CSR matrix. Every
pass over the data reads it in *chunks* of about :data:`CHUNK_BYTES` of dense
rows; batches are slices of a chunk. So a sparse matrix is densified one batch
at a time, and a memmap never has more than one chunk of its pages resident:
peak memory does not grow with the number of rows.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

CHUNK_BYTES = 64 * 2**20


class RowSource:
    """Uniform row access to a dense array, a memmap or a CSR matrix."""

    def __init__(self, X) -> None:
        self.X = X
        self.n_rows, self.n_features = X.shape
        self.is_sparse = sp.issparse(X)
        self.is_memmap = isinstance(X, np.memmap)

    def chunk_rows(self, batch_size: int) -> int:
        """Rows per chunk: a whole number of batches, about CHUNK_BYTES dense."""
        bytes_per_row = 8 * max(self.n_features, 1)
        n_batches = max(1, CHUNK_BYTES // (bytes_per_row * batch_size))
        return n_batches * batch_size

    def read(self, rows) -> np.ndarray | sp.csr_matrix:
        """Rows ``rows`` (a slice or sorted index array) as an in-memory chunk."""
        chunk = self.X[rows]
        if self.is_memmap:
            chunk = np.array(chunk)
            _drop_resident_pages(self.X, rows)
        return chunk


def _drop_resident_pages(X: np.memmap, rows) -> None:
    """Tell the kernel we are done with the pages of ``X[rows]``.

    Pages of a file mapping count in the process's resident memory until the
    kernel reclaims them; releasing each chunk's pages after copying it keeps
    a streamed fit's peak memory at one chunk. Only shared mappings are
    released: for a copy-on-write mapping (mode 'c') it would drop the user's
    in-memory changes.
    """
    mm = getattr(X, "_mmap", None)
    if mm is None or X.mode not in ("r", "r+") or not X.flags.c_contiguous:
        return
    if not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    if isinstance(rows, slice):
        first, stop, _ = rows.indices(X.shape[0])
    else:
        first, stop = int(rows[0]), int(rows[-1]) + 1
    if stop <= first:
        return
    row_bytes = X.strides[0]
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    start = X.ctypes.data - base + first * row_bytes
    end = X.ctypes.data - base + stop * row_bytes
    page = mmap.PAGESIZE
    start = -(-start // page) * page
    end = end // page * page
    if end > start:
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass


def sequential_chunks(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n_rows)``."""
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


def shuffled_chunks(
    source: RowSource,
    rows: np.ndarray,
    batch_size: int,
    rng: np.random.RandomState,
) -> list[np.ndarray]:
    """One epoch's row order, cut into chunks.

    In-memory data gets a full permutation of ``rows``. A memmap gets a
    permutation of contiguous blocks of ``batch_size`` rows, read a chunk of
    blocks at a time in sorted order and shuffled within the chunk: reads
    stay sequential on disk while batches still mix distant rows.
    """
    chunk_rows = source.chunk_rows(batch_size)
    if not source.is_memmap:
        order = rows[rng.permutation(len(rows))]
        return [order[i : i + chunk_rows] for i in range(0, len(order), chunk_rows)]
    blocks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    blocks = [blocks[i] for i in rng.permutation(len(blocks))]
    per_chunk = chunk_rows // batch_size
    chunks = []
    for i in range(0, len(blocks), per_chunk):
        chunk = np.sort(np.concatenate(blocks[i : i + per_chunk]))
        chunks.append(chunk)
    return chunks


def to_tensor(rows, device: torch.device) -> torch.Tensor:
    """A dense float32 tensor on ``device`` holding a copy of ``rows``."""
    if sp.issparse(rows):
        rows = rows.toarray()
    array = np.array(rows, dtype=np.float32, order="C", copy=True)
    return torch.from_numpy(array).to(device)


def iter_batches(
    source: RowSource,
    chunks,
    batch_size: int,
    device: torch.device,
    rng: np.random.RandomState | None = None,
) -> Iterator[torch.Tensor]:
    """Batches of at most ``batch_size`` rows, chunk by chunk.

    A dense chunk goes to the device in one copy and is sliced there; a
    sparse chunk is densified one batch at a time. With ``rng`` the rows of a
    memmap's chunk are shuffled once more, mixing its blocks; in-memory chunks
    are already in random order.
    """
    for rows in chunks:
        chunk = source.read(rows)
        if rng is not None and source.is_memmap:
            chunk = chunk[rng.permutation(chunk.shape[0])]
        if not sp.issparse(chunk):
            chunk = to_tensor(chunk, device)
        for start in range(0, chunk.shape[0], batch_size):
            batch = chunk[start : start + batch_size]
            yield to_tensor(batch, device) if sp.issparse(batch) else batch


def column_sums(source: RowSource, rows=None) -> tuple[np.ndarray, float, int]:
    """Per-column sums, total sum of squares and row count, in float64."""
    total = np.zeros(source.n_features)
    squares = 0.0
    if rows is None:
        chunks = sequential_chunks(source.n_rows, source.chunk_rows(1))
        n = source.n_rows
    else:
        step = source.chunk_rows(1)
        chunks = (rows[i : i + step] for i in range(0, len(rows), step))
        n = len(rows)
    for idx in chunks:
        chunk = source.read(idx)
        if sp.issparse(chunk):
            total += np.asarray(chunk.sum(axis=0, dtype=np.float64)).ravel()
            squares += float(chunk.multiply(chunk).sum(dtype=np.float64))
        else:
            chunk = np.asarray(chunk, dtype=np.float64)
            total += chunk.sum(axis=0)
            squares += float(np.einsum("ij,ij->", chunk, chunk))
    return total, squares, n


def find_non_finite(source: RowSource) -> tuple[int, int, float] | None:
    """The first (row, column, value) of X that is NaN or infinite, or None."""
    step = source.chunk_rows(1)
    for idx in sequential_chunks(source.n_rows, step):
        chunk = source.read(idx)
        if sp.issparse(chunk):
            if np.isfinite(chunk.data).all():
                continue
            coo = chunk.tocoo()
            bad = np.flatnonzero(~np.isfinite(coo.data))
            order = np.lexsort((coo.col[bad], coo.row[bad]))[0]
            i = bad[order]
            return idx.start + int(coo.row[i]), int(coo.col[i]), float(coo.data[i])
        if chunk.dtype.kind != "f" or np.isfinite(chunk).all():
            continue
        row, col = np.argwhere(~np.isfinite(chunk))[0]
        return idx.start + int(row), int(col), float(chunk[row, col])
    return None
