"""Top-k selection compiled with numba, for float32 and bfloat16 rows on the CPU.

``torch.topk`` pays for every element of a row with a branch it cannot
predict. Here a row costs one streaming pass, then work on a few candidates:

1. The row's columns fall into ``n`` strided groups of ``G`` columns
   (group ``j`` holds ``j, j + n, j + 2n, ...``; a ragged end of fewer than
   ``G`` columns stays outside and is always read), whose maxima one
   vectorised pass finds.
2. One histogram of the maxima gives a threshold ``T`` that at least ``k``
   of them reach, so the ``k`` largest entries of the row are all at least
   ``T`` and lie in groups whose maximum is. Only those groups are read
   again.
3. Radix selection over those few candidates finds the exact ``k``-th
   largest; the entries above it are kept, then ties with it in candidate
   order until ``k`` are.

Values are compared through the order-preserving integer keys of their bits
(the radix-select of Alabi et al., 2012), so bfloat16 rows are selected as
they are, without a cast. A row that holds a NaN is left to ``torch.topk``,
which ranks NaN above every number; :func:`select_rows` flags those rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SIGN = np.int32(-(2**31))
_MAGNITUDE = np.int32(2**31 - 1)
#: Signed keys of +inf and -inf: any key outside them is a NaN's.
_INF_KEY = np.int32(0x7F800000)
_NEG_INF_KEY = np.int32(-0x7F800001)
_HISTOGRAM_BITS = 8


@njit
def _signed_key(bits, shift):
    """An int32 that orders as the float whose bits are ``bits << shift``."""
    b = np.int32(bits) << shift
    return b ^ ((b >> 31) & _MAGNITUDE)


@njit
def _key(bits, shift):
    """The unsigned order-preserving key of a float's bits."""
    return np.uint32(_signed_key(bits, shift) ^ _SIGN)


@njit
def _bit_length(x):
    n = 0
    while x:
        x >>= np.uint32(1)
        n += 1
    return n


@njit
def _histogram(keys, m, k, hist):
    """Bins ``keys[:m]`` (not all equal, ``m > k``) by ``2**8`` equal ranges
    of their span: ``(lo, shift, b, above)``, ``b`` the bin that holds the
    ``k``-th largest and ``above`` how many keys lie in higher bins."""
    lo = keys[0]
    hi = keys[0]
    for t in range(1, m):
        lo = min(lo, keys[t])
        hi = max(hi, keys[t])
    shift = np.uint32(max(0, _bit_length(hi - lo) - _HISTOGRAM_BITS))
    n_bins = ((hi - lo) >> shift) + 1
    hist[:n_bins] = 0
    for t in range(m):
        hist[(keys[t] - lo) >> shift] += 1
    b = n_bins - 1
    above = 0
    while above + hist[b] < k:
        above += hist[b]
        b -= 1
    return lo, shift, b, above


@njit
def _all_equal_or_k(keys, m, k):
    """Whether the ``k``-th largest of ``keys[:m]`` is simply their minimum."""
    if m == k:
        return True
    for t in range(1, m):
        if keys[t] != keys[0]:
            return False
    return True


@njit
def _threshold(keys, m, k, hist):
    """A key that at least ``k`` of ``keys[:m]`` reach, near the ``k``-th
    largest: the lower edge of the histogram bin that holds it."""
    if _all_equal_or_k(keys, m, k):
        return keys[:m].min()
    lo, shift, b, _ = _histogram(keys, m, k, hist)
    return lo + (np.uint32(b) << shift)


@njit
def _kth_key(keys, m, k, spare, hist):
    """The ``k``-th largest of ``keys[:m]``, by radix selection; overwrites
    ``keys`` and ``spare`` (each ``m`` long or more)."""
    while not _all_equal_or_k(keys, m, k):
        lo, shift, b, above = _histogram(keys, m, k, hist)
        k -= above
        n_in_bin = 0
        for t in range(m):
            spare[n_in_bin] = keys[t]
            n_in_bin += ((keys[t] - lo) >> shift) == b
        m = n_in_bin
        keys, spare = spare, keys
    return keys[:m].min()


@njit
def _scratch(width, n_groups):
    """Per-thread buffers of :func:`_pick`: group keys, candidate keys and
    their spare (radix selection works in both), columns, histogram."""
    return (
        np.empty(n_groups, np.uint32),
        np.empty(2 * width, np.uint32),
        np.empty(2 * width, np.uint32),
        np.empty(width, np.int64),
        np.empty(2**_HISTOGRAM_BITS + 1, np.int64),
    )


@njit
def _pick(row, shift, k, group_size, scratch, out_values, out_indices):
    """Select the ``k`` largest of ``row`` (a float's bits per entry), given
    the keys of its strided groups' maxima (``scratch[0]``); write their bits
    and columns."""
    group_keys, keys, spare, columns, hist = scratch
    width = row.shape[0]
    n_groups = group_keys.shape[0]
    grouped = n_groups * group_size
    for c in range(n_groups):
        keys[c] = group_keys[c]
    threshold = _threshold(keys, n_groups, k, hist)
    m = 0
    for c in range(n_groups):
        if group_keys[c] >= threshold:
            for j in range(c, grouped, n_groups):
                keys[m] = _key(row[j], shift)
                columns[m] = j
                m += keys[m] >= threshold
    for j in range(grouped, width):  # the ragged end
        keys[m] = _key(row[j], shift)
        columns[m] = j
        m += keys[m] >= threshold
    spare[:m] = keys[:m]
    kth = _kth_key(spare, m, k, spare[m:], hist)
    ties = k
    for t in range(m):
        ties -= keys[t] > kth
    kept = 0
    for t in range(m):
        take = keys[t] > kth or (keys[t] == kth and ties > 0)
        ties -= take and keys[t] == kth
        if take:
            out_values[kept] = row[columns[t]]
            out_indices[kept] = columns[t]
            kept += 1


@njit(nogil=True, cache=True, boundscheck=False)
def _select_float32(pre, group_size, k, values, indices, has_nan, start, stop):
    width = pre.shape[1]
    n_groups = width // group_size
    maxima = np.empty(n_groups, np.float32)
    scratch = _scratch(width, n_groups)
    group_keys = scratch[0]
    bits = pre.view(np.int32)
    value_bits = values.view(np.int32)
    for r in range(start, stop):
        row = pre[r]
        maxima[:] = row[:n_groups]
        for g in range(1, group_size):
            # np.maximum carries a NaN through, so one check below finds it.
            np.maximum(maxima, row[g * n_groups : (g + 1) * n_groups], maxima)
        nan = False
        for c in range(n_groups):
            nan |= maxima[c] != maxima[c]
        for j in range(n_groups * group_size, width):
            nan |= row[j] != row[j]
        has_nan[r] = nan
        if nan:
            continue
        maxima_bits = maxima.view(np.int32)
        for c in range(n_groups):
            group_keys[c] = _key(maxima_bits[c], 0)
        _pick(bits[r], 0, k, group_size, scratch, value_bits[r], indices[r])


@njit(nogil=True, cache=True, boundscheck=False)
def _select_bfloat16(bits, group_size, k, values, indices, has_nan, start, stop):
    width = bits.shape[1]
    n_groups = width // group_size
    highest = np.empty(n_groups, np.int32)
    lowest = np.empty(n_groups, np.int32)
    scratch = _scratch(width, n_groups)
    group_keys = scratch[0]
    for r in range(start, stop):
        row = bits[r]
        for c in range(n_groups):
            highest[c] = lowest[c] = _signed_key(row[c], 16)
        for g in range(1, group_size):
            segment = row[g * n_groups : (g + 1) * n_groups]
            for c in range(n_groups):
                key = _signed_key(segment[c], 16)
                highest[c] = max(highest[c], key)
                lowest[c] = min(lowest[c], key)
        top, bottom = highest.max(), lowest.min()
        for j in range(n_groups * group_size, width):
            top = max(top, _signed_key(row[j], 16))
            bottom = min(bottom, _signed_key(row[j], 16))
        # A NaN's key lies above +inf's or, with its sign bit set, below -inf's.
        has_nan[r] = top > _INF_KEY or bottom < _NEG_INF_KEY
        if has_nan[r]:
            continue
        for c in range(n_groups):
            group_keys[c] = np.uint32(highest[c] ^ _SIGN)
        _pick(row, 16, k, group_size, scratch, values[r], indices[r])


def select_rows(
    pre: np.ndarray,
    group_size: int,
    k: int,
    values: np.ndarray,
    indices: np.ndarray,
    has_nan: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Write the ``k`` largest entries of rows ``start:stop`` of ``pre`` and
    their columns into ``values`` and ``indices``, in no particular order,
    and whether each row holds a NaN (left unselected) into ``has_nan``.

    ``pre`` is a C-contiguous float32 array, or the int16 bits of a
    bfloat16 one, with ``values`` of the same dtype; the GIL is released, so
    threads may share the rows.
    """
    select = _select_bfloat16 if pre.dtype == np.int16 else _select_float32
    select(pre, group_size, k, values, indices, has_nan, start, stop)
