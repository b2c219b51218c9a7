"""Rows of X, read in bounded chunks and handed to the device as batches.

X is a validated 2-D numpy array, a numpy memmap, or a scipy CSR matrix. Every
pass over the data reads it in *chunks* of about :data:`CHUNK_BYTES` of dense
rows; batches are slices of a chunk. So a sparse matrix is densified one batch
at a time, and a memmap never has more than one chunk of its pages resident:
peak memory does not grow with the number of rows.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from .serialize import storable

CHUNK_BYTES = 16 * 2**20
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


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
        """Rows ``rows`` (a slice or sorted index array) as a private copy."""
        if self.is_memmap:
            return self._read_memmap(rows)
        chunk = self.X[rows]
        return chunk.copy() if isinstance(rows, slice) else chunk

    def _read_memmap(self, rows) -> np.ndarray:
        # Copy run by run of consecutive rows, releasing each run's pages at
        # once: page faults map far more than the rows asked for, so one
        # fancy index over scattered blocks would hold many times the chunk.
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.n_rows))
        out = np.empty((len(rows), self.n_features), dtype=self.X.dtype)
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
        stops = np.append(starts[1:], len(rows))
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            run = slice(int(rows[start]), int(rows[stop - 1]) + 1)
            out[start:stop] = self.X[run]
            _drop_resident_pages(self.X, run)
        return out


def _drop_resident_pages(X: np.memmap, rows: slice) -> None:
    """Tell the kernel we are done with the pages of ``X[rows]``.

    Pages of a file mapping count in the process's resident memory until the
    kernel reclaims them; releasing each run's pages after copying it keeps
    a streamed fit's peak memory at one chunk. Only shared mappings are
    released: for a copy-on-write mapping (mode 'c') it would drop the user's
    in-memory changes.
    """
    mm = getattr(X, "_mmap", None)
    if mm is None or X.mode not in ("r", "r+") or not X.flags.c_contiguous:
        return
    if not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first, stop, _ = rows.indices(X.shape[0])
    if stop <= first:
        return
    row_bytes = X.strides[0]
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    start = X.ctypes.data - base + first * row_bytes
    end = X.ctypes.data - base + stop * row_bytes
    # Widen to whole pages plus a margin: a page fault maps neighbouring
    # pages too ("fault-around", 64 KiB by default). Releasing a page that is
    # read again later only costs a page-cache lookup.
    page, margin = mmap.PAGESIZE, 2**17
    start = max(0, (start - margin) // page * page)
    end = min(len(mm), -(-(end + margin) // page) * page)
    if end > start:
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass


def sequential_chunks(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n_rows)``."""
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


@storable
class IndexRows:
    """A set of rows of in-memory data, as a sorted index array."""

    def __init__(self, indices: np.ndarray) -> None:
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def split(
        self, n_taken: int, rng: np.random.RandomState
    ) -> tuple[IndexRows, IndexRows]:
        """(rest, taken): ``n_taken`` rows drawn at random, and the others."""
        permuted = self.indices[rng.permutation(len(self.indices))]
        return IndexRows(np.sort(permuted[n_taken:])), IndexRows(
            np.sort(permuted[:n_taken])
        )

    def shard(self, rank: int, world_size: int) -> IndexRows:
        """One process's share: every ``world_size``-th row from the
        ``rank``-th, all shares of one size (up to ``world_size - 1`` rows
        are left out) so that every process runs as many steps."""
        n = len(self.indices) // world_size
        return IndexRows(self.indices[rank::world_size][:n])

    def ordered(self, chunk_rows: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.indices), chunk_rows):
            yield self.indices[start : start + chunk_rows]

    def shuffled(
        self, chunk_rows: int, rng: np.random.RandomState
    ) -> Iterator[np.ndarray]:
        """A full random permutation, cut into chunks."""
        order = self.indices[rng.permutation(len(self.indices))]
        for start in range(0, len(order), chunk_rows):
            yield order[start : start + chunk_rows]


@storable
class BlockRows:
    """A set of rows of a memmap, as contiguous blocks of ``block_size`` rows.

    Only block numbers are stored, so the bookkeeping of a streamed fit is a
    ``block_size``-th of the number of rows, and reads stay sequential on disk.
    """

    def __init__(self, blocks: np.ndarray, block_size: int, n_rows: int) -> None:
        self.blocks = blocks
        self.block_size = block_size
        self.n_rows = n_rows

    def __len__(self) -> int:
        full = len(self.blocks) * self.block_size
        last = (self.n_rows - 1) // self.block_size
        has_last = len(self.blocks) and self.blocks[-1] == last
        return full - (self.block_size * (last + 1) - self.n_rows if has_last else 0)

    def split(
        self, n_taken: int, rng: np.random.RandomState
    ) -> tuple[BlockRows, BlockRows]:
        """(rest, taken): whole blocks holding about ``n_taken`` rows, at random."""
        wanted = max(1, round(n_taken / self.block_size))
        n_blocks = min(len(self.blocks) - 1, wanted)
        permuted = self.blocks[rng.permutation(len(self.blocks))]
        rest, taken = np.sort(permuted[n_blocks:]), np.sort(permuted[:n_blocks])
        return self._like(rest), self._like(taken)

    def shard(self, rank: int, world_size: int) -> BlockRows:
        """One process's share: every ``world_size``-th whole block from the
        ``rank``-th, all shares of one size (the file's short last block and
        up to ``world_size - 1`` blocks are left out) so that every process
        runs as many steps."""
        last = (self.n_rows - 1) // self.block_size
        short = self.n_rows % self.block_size != 0
        full = self.blocks[self.blocks != last] if short else self.blocks
        n = len(full) // world_size
        return self._like(full[rank::world_size][:n])

    def _like(self, blocks: np.ndarray) -> BlockRows:
        return BlockRows(blocks, self.block_size, self.n_rows)

    def _rows(self, blocks: np.ndarray) -> np.ndarray:
        starts = blocks * self.block_size
        rows = (starts[:, None] + np.arange(self.block_size)).ravel()
        return rows[rows < self.n_rows]

    def ordered(self, chunk_rows: int) -> Iterator[np.ndarray]:
        per_chunk = max(1, chunk_rows // self.block_size)
        for start in range(0, len(self.blocks), per_chunk):
            yield self._rows(self.blocks[start : start + per_chunk])

    def shuffled(
        self, chunk_rows: int, rng: np.random.RandomState
    ) -> Iterator[np.ndarray]:
        """Blocks in random order, a chunk of them at a time, each chunk sorted.

        :func:`iter_batches` shuffles the rows inside each chunk, so batches
        still mix distant parts of the file.
        """
        per_chunk = max(1, chunk_rows // self.block_size)
        order = self.blocks[rng.permutation(len(self.blocks))]
        for start in range(0, len(order), per_chunk):
            yield self._rows(np.sort(order[start : start + per_chunk]))


BLOCK_BYTES = 2**16


def all_rows(source: RowSource) -> IndexRows | BlockRows:
    """Every row of ``source``, in the representation that suits it.

    A memmap's blocks are about :data:`BLOCK_BYTES`, whatever the batch
    size: small enough that every chunk, and so every batch, mixes many
    distant stretches of the file, large enough to read efficiently.
    """
    if source.is_memmap:
        row_bytes = source.X.dtype.itemsize * max(source.n_features, 1)
        block_size = max(1, BLOCK_BYTES // row_bytes)
        n_blocks = -(-source.n_rows // block_size)
        return BlockRows(np.arange(n_blocks), block_size, source.n_rows)
    return IndexRows(np.arange(source.n_rows))


def to_tensor(
    rows, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``rows``, a private chunk from :meth:`RowSource.read`, as a dense
    tensor on ``device``; on the CPU it may share ``rows``' memory."""
    if sp.issparse(rows):
        rows = rows.toarray()
    array = np.ascontiguousarray(rows, dtype=_NUMPY_DTYPES[dtype])
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        # From pinned memory the copy runs asynchronously, and the host goes on
        # queueing the steps of the previous chunk's batches meanwhile.
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def iter_batches(
    source: RowSource,
    chunks,
    batch_size: int,
    device: torch.device,
    rng: np.random.RandomState | None = None,
    dtype: torch.dtype = torch.float32,
) -> Iterator[torch.Tensor]:
    """Batches of at most ``batch_size`` rows, chunk by chunk.

    A dense chunk goes to the device in one copy and is sliced there; a
    sparse chunk is densified one batch at a time. With ``rng`` the rows of a
    memmap's chunk are shuffled once more, mixing its blocks; in-memory chunks
    are already in random order.
    """
    for rows in chunks:
        chunk = source.read(rows)
        if not sp.issparse(chunk):
            chunk = to_tensor(chunk, device, dtype)
        if rng is not None and source.is_memmap:
            chunk = chunk[torch.from_numpy(rng.permutation(chunk.shape[0])).to(device)]
        for start in range(0, chunk.shape[0], batch_size):
            batch = chunk[start : start + batch_size]
            yield to_tensor(batch, device, dtype) if sp.issparse(batch) else batch


def column_sums(source: RowSource, rows=None) -> tuple[np.ndarray, float, int]:
    """Per-column sums, total sum of squares and row count, in float64.

    Over ``rows`` (an :class:`IndexRows` or :class:`BlockRows`), else all rows.
    """
    total = np.zeros(source.n_features)
    squares = 0.0
    step = source.chunk_rows(1)
    if rows is None:
        chunks, n = sequential_chunks(source.n_rows, step), source.n_rows
    else:
        chunks, n = rows.ordered(step), len(rows)
    for idx in chunks:
        chunk_sum, chunk_squares = _chunk_sums(source.read(idx))
        total += chunk_sum
        squares += chunk_squares
    return total, squares, n


def _chunk_sums(chunk) -> tuple[np.ndarray, float]:
    """Column sums and sum of squares of a chunk, in float64."""
    if sp.issparse(chunk):
        chunk = chunk.astype(np.float64)  # squared in float32, values lose digits
        return np.asarray(chunk.sum(axis=0)).ravel(), float(chunk.multiply(chunk).sum())
    chunk = np.asarray(chunk, dtype=np.float64)
    return chunk.sum(axis=0), float(np.einsum("ij,ij->", chunk, chunk))


class Scan(NamedTuple):
    """What :func:`scan_values` found: the first (row, column, value) that is
    NaN or infinite, or None; the largest magnitude of the values before
    it; and, when asked for and every value is finite, the column sums, sum
    of squares and row count of :func:`column_sums`."""

    bad: tuple[int, int, float] | None
    largest: float
    sums: tuple[np.ndarray, float, int] | None = None


def scan_values(source: RowSource, *, sums: bool = False) -> Scan:
    """One pass over X: its first non-finite value, the largest magnitude,
    and with ``sums`` its column sums, so that a fit reads X once for its
    checks and its mean."""
    largest = 0.0
    total = np.zeros(source.n_features) if sums else None
    squares = 0.0
    for idx in sequential_chunks(source.n_rows, source.chunk_rows(1)):
        chunk = source.read(idx)
        values = chunk.data if sp.issparse(chunk) else chunk
        if values.size == 0:
            continue
        high, low = float(values.max()), float(values.min())
        if math.isfinite(high) and math.isfinite(low):
            largest = max(largest, high, -low)
            if sums:
                # Squares of values past 1e154 overflow: the checks of the
                # magnitude that follow say so, without a warning first.
                with np.errstate(over="ignore", invalid="ignore"):
                    chunk_sum, chunk_squares = _chunk_sums(chunk)
                total += chunk_sum
                squares += chunk_squares
            continue
        if sp.issparse(chunk):
            coo = chunk.tocoo()
            bad = np.flatnonzero(~np.isfinite(coo.data))
            i = bad[np.lexsort((coo.col[bad], coo.row[bad]))[0]]
            where = (idx.start + int(coo.row[i]), int(coo.col[i]), float(coo.data[i]))
            return Scan(where, largest)
        row, col = np.argwhere(~np.isfinite(chunk))[0]
        return Scan((idx.start + int(row), int(col), float(chunk[row, col])), largest)
    return Scan(None, largest, (total, squares, source.n_rows) if sums else None)
