"""What a fitted sparse autoencoder has learned: how often and how strongly
each latent fires, which rows excite it most, and how its dictionary atoms
relate to each other and to known atoms.

The helpers that read codes stream X through the estimator's own inference
batches, on its device and in X's float precision, exactly as ``transform``
encodes it; only one batch of codes exists at a time, never the
(n_samples, n_components) matrix. The latents are the columns of
``transform``'s output: the last layer's units for
:class:`~skae.StackedSparseAutoencoder`, and every map at every pooled
position for :class:`~skae.ConvSparseAutoencoder`.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, validate_params
from sklearn.utils.validation import check_array, check_is_fitted

from ._base import BaseSparseAutoencoder, _output_dtype
from ._engine.device import limited_threads, resolve_device

_FLOATS = (np.float64, np.float32)
# Entries of one block of cosines: 32 MiB in float64, whatever the dictionary.
_BLOCK_ENTRIES = 2**22

# ------------------------------------------------------------------- codes


@validate_params(
    {
        "estimator": [BaseSparseAutoencoder],
        "X": ["array-like", "sparse matrix"],
    },
    prefer_skip_nested_validation=True,
)
def latent_statistics(estimator, X) -> Bunch:
    """How often and how strongly each latent fires on X.

    X is encoded one inference batch at a time and the sums are kept in
    float64, so any number of rows (a memmap, a sparse matrix) takes the
    memory of one batch of codes.

    Parameters
    ----------
    estimator : BaseSparseAutoencoder
        A fitted skae estimator. Its latents are the columns of its
        ``transform`` output (for :class:`~skae.ConvSparseAutoencoder`: each
        map at each pooled position).
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
        Data to encode.

    Returns
    -------
    statistics : :class:`~sklearn.utils.Bunch`
        With the following attributes, each array of shape (n_latents,) in
        float64:

        firing_frequency
            Share of the rows on which the latent's code is non-zero. Sigmoid
            codes (:class:`~skae.KLSparseAutoencoder`) are all but never
            exactly zero, so theirs is about 1; ``mean_activation`` says more
            for them.
        mean_activation
            Mean code over all rows.
        mean_active_activation
            Mean code over the rows where the latent fires, NaN for a latent
            that never fires on X (``np.nanmean`` and friends skip it).
        n_samples
            The number of rows of X, an int.

    See Also
    --------
    top_activating : The rows that excite given latents most.

    Examples
    --------
    >>> import numpy as np
    >>> from skae import KSparseAutoencoder
    >>> from skae.inspect import latent_statistics
    >>> X = np.random.RandomState(0).standard_normal((200, 8))
    >>> sae = KSparseAutoencoder(16, k=2, max_iter=2, random_state=0).fit(X)
    >>> stats = latent_statistics(sae, X)
    >>> stats.n_samples, stats.firing_frequency.shape
    (200, (16,))
    >>> bool(stats.firing_frequency.sum() <= 2)  # at most k=2 latents per row
    True
    """
    fired, total, n_samples = 0, 0, 0
    with estimator._code_batches(X) as batches:
        for _, codes in batches:
            fired = fired + (codes != 0).sum(dim=0)
            total = total + codes.sum(dim=0, dtype=torch.float64)
            n_samples += codes.shape[0]
    fired = fired.cpu().numpy().astype(np.float64)
    total = total.cpu().numpy()
    # Codes are zero where a latent does not fire, so the sum over the rows
    # where it fires is the sum over all rows.
    mean_active = np.divide(
        total, fired, out=np.full_like(total, np.nan), where=fired > 0
    )
    return Bunch(
        firing_frequency=fired / n_samples,
        mean_activation=total / n_samples,
        mean_active_activation=mean_active,
        n_samples=n_samples,
    )


def _checked_latents(latent, estimator) -> np.ndarray:
    """``latent`` as a non-empty 1-D int64 array of valid latent indices."""
    latents = np.atleast_1d(np.asarray(latent))
    if latents.ndim != 1 or latents.size == 0 or latents.dtype.kind not in "iu":
        raise ValueError(
            f"latent must be an int or a non-empty 1-D list of ints; got {latent!r}."
        )
    n_latents = len(estimator.get_feature_names_out())
    outside = latents[(latents < 0) | (latents >= n_latents)]
    if outside.size:
        raise ValueError(
            f"latent {outside[0]} is out of range: {type(estimator).__name__} "
            f"has {n_latents} latents, numbered 0 to {n_latents - 1}."
        )
    return latents.astype(np.int64)


@validate_params(
    {
        "estimator": [BaseSparseAutoencoder],
        "X": ["array-like", "sparse matrix"],
        "latent": [Interval(Integral, 0, None, closed="left"), "array-like"],
        "n": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def top_activating(estimator, X, latent, n=10) -> tuple[np.ndarray, np.ndarray]:
    """The rows of X that excite a latent most, strongest first.

    X is encoded one inference batch at a time, and each batch's codes are
    merged into a running best ``n`` per latent, so memory stays at one
    batch of codes plus ``n`` rows per latent, however long X is.

    Parameters
    ----------
    estimator : BaseSparseAutoencoder
        A fitted skae estimator.
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
        Data to search.
    latent : int or array-like of int
        A latent (a column of ``transform``'s output), or several.
    n : int, default=10
        Rows to return per latent. If X has fewer rows, all of them are
        returned.

    Returns
    -------
    indices : ndarray of int64
        Row numbers in X, ordered by decreasing code; of two rows with the
        same code, the one that comes first in X comes first. Shape
        ``(min(n, n_samples),)`` for one latent, ``(n_latents, min(n,
        n_samples))`` for several.
    activations : ndarray
        The codes of those rows, of the same shape, in X's float dtype.

    See Also
    --------
    latent_statistics : How often and how strongly each latent fires.

    Examples
    --------
    >>> import numpy as np
    >>> from skae import KSparseAutoencoder
    >>> from skae.inspect import top_activating
    >>> X = np.random.RandomState(0).standard_normal((200, 8))
    >>> sae = KSparseAutoencoder(16, k=2, max_iter=2, random_state=0).fit(X)
    >>> rows, codes = top_activating(sae, X, latent=3, n=5)
    >>> rows.shape, bool(np.all(np.diff(codes) <= 0))
    ((5,), True)
    >>> top_activating(sae, X, latent=[0, 1, 2], n=4)[0].shape
    (3, 4)
    """
    check_is_fitted(estimator)
    latents = _checked_latents(latent, estimator)
    best_codes = best_rows = None
    with estimator._code_batches(X) as batches:
        for start, codes in batches:
            index = torch.from_numpy(latents).to(codes.device)
            values = codes[:, index].T
            rows = torch.arange(start, start + codes.shape[0], device=codes.device)
            rows = rows.expand_as(values)
            if best_codes is not None:
                # The best so far come from earlier rows, so they go first.
                values = torch.cat([best_codes, values], dim=1)
                rows = torch.cat([best_rows, rows], dim=1)
            # A stable sort keeps equal codes in row order: the earlier row
            # wins a tie.
            order = values.sort(dim=1, descending=True, stable=True).indices[:, :n]
            best_codes, best_rows = values.gather(1, order), rows.gather(1, order)
    indices, activations = best_rows.cpu().numpy(), best_codes.cpu().numpy()
    if np.ndim(latent) == 0:
        return indices[0], activations[0]
    return indices, activations


# ------------------------------------------------------------------- atoms


def _atoms(estimator_or_atoms, name: str) -> tuple[np.ndarray, torch.device]:
    """The atoms, one per row, and the device to compare them on: a skae
    estimator's own, else the CPU."""
    device = torch.device("cpu")
    atoms = estimator_or_atoms
    if hasattr(estimator_or_atoms, "fit"):
        check_is_fitted(estimator_or_atoms, "components_")
        atoms = estimator_or_atoms.components_
        if isinstance(estimator_or_atoms, BaseSparseAutoencoder):
            device = resolve_device(estimator_or_atoms.device, for_training=False)
    return check_array(atoms, dtype=_FLOATS, input_name=name), device


def _unit_rows(atoms: np.ndarray, device: torch.device, dtype) -> torch.Tensor:
    """The rows of ``atoms`` scaled to unit norm on ``device``; zero rows stay
    zero, so their cosine with anything is 0."""
    rows = torch.tensor(np.ascontiguousarray(atoms), dtype=dtype, device=device)
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return rows / norms.clamp_min(torch.finfo(dtype).tiny)


def _block_rows(n_columns: int) -> int:
    return max(1, _BLOCK_ENTRIES // max(n_columns, 1))


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.float32 if _output_dtype(dtype) == np.float32 else torch.float64


@validate_params(
    {"estimator_or_atoms": [HasMethods(["fit"]), "array-like"]},
    prefer_skip_nested_validation=True,
)
def atom_similarity(estimator_or_atoms) -> np.ndarray:
    """Cosine similarity between every pair of dictionary atoms.

    Parameters
    ----------
    estimator_or_atoms : estimator or array-like of shape (n_atoms, n_features)
        A fitted estimator with ``components_`` (any skae estimator, PCA,
        MiniBatchDictionaryLearning...), or the atoms themselves, one per
        row. A skae estimator's atoms are compared on its device.

    Returns
    -------
    similarity : ndarray of shape (n_atoms, n_atoms)
        ``similarity[i, j]`` is the cosine of atoms ``i`` and ``j``, in
        [-1, 1]; float32 for float32 atoms, else float64. An all-zero atom
        has cosine 0 with every atom, itself included. This is a dense
        matrix: to find near-duplicates in a large dictionary, use
        :func:`duplicate_atoms`, which never holds it whole.

    See Also
    --------
    duplicate_atoms : The pairs of atoms above a cosine threshold.

    Examples
    --------
    >>> from skae.inspect import atom_similarity
    >>> atom_similarity([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]]).round(3)
    array([[ 1.   ,  0.707,  0.   ],
           [ 0.707,  1.   , -0.707],
           [ 0.   , -0.707,  1.   ]])
    """
    atoms, device = _atoms(estimator_or_atoms, "atoms")
    similarity = np.empty((len(atoms), len(atoms)), dtype=_output_dtype(atoms.dtype))
    with limited_threads(), torch.inference_mode():
        unit = _unit_rows(atoms, device, _torch_dtype(atoms.dtype))
        step = _block_rows(len(unit))
        for start in range(0, len(unit), step):
            block = unit[start : start + step] @ unit.T
            similarity[start : start + step] = block.clamp_(-1, 1).cpu().numpy()
    return similarity


@validate_params(
    {
        "estimator_or_atoms": [HasMethods(["fit"]), "array-like"],
        "threshold": [Interval(Real, -1, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def duplicate_atoms(
    estimator_or_atoms, threshold=0.95
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of dictionary atoms whose cosine is at least ``threshold``.

    The cosines are computed a block of atoms at a time, each against the
    atoms after it, so memory stays at one block (about 2^22 cosines) even
    for dictionaries of 2^15 atoms and more.

    Parameters
    ----------
    estimator_or_atoms : estimator or array-like of shape (n_atoms, n_features)
        A fitted estimator with ``components_``, or the atoms, one per row.
        A skae estimator's atoms are compared on its device.
    threshold : float, default=0.95
        The smallest cosine, in [-1, 1], that makes a pair. The cosine is
        signed: an atom and its negation are not duplicates (with
        non-negative codes, they add opposite directions).

    Returns
    -------
    pairs : ndarray of shape (n_pairs, 2), dtype int64
        Atom indices ``(i, j)`` with ``i < j``, by decreasing cosine (ties
        by ``i``, then ``j``).
    similarities : ndarray of shape (n_pairs,)
        The cosine of each pair, float32 for float32 atoms, else float64.

    See Also
    --------
    atom_similarity : The full matrix of cosines.

    Examples
    --------
    >>> import numpy as np
    >>> from skae.inspect import duplicate_atoms
    >>> atoms = np.eye(4)
    >>> atoms[3] = [0.99, 0.1, 0.0, 0.0]  # nearly atom 0
    >>> pairs, similarities = duplicate_atoms(atoms, threshold=0.9)
    >>> pairs
    array([[0, 3]])
    >>> similarities.round(3)
    array([0.995])
    """
    atoms, device = _atoms(estimator_or_atoms, "atoms")
    pairs, similarities = [], []
    with limited_threads(), torch.inference_mode():
        unit = _unit_rows(atoms, device, _torch_dtype(atoms.dtype))
        step = _block_rows(len(unit))
        for start in range(0, len(unit), step):
            # Each block against itself and the atoms after it: the cosines
            # above the diagonal.
            block = unit[start : start + step] @ unit[start:].T
            later = torch.ones_like(block, dtype=torch.bool).triu_(diagonal=1)
            i, j = torch.nonzero((block >= threshold) & later, as_tuple=True)
            similarities.append(block[i, j].clamp_(-1, 1).cpu().numpy())
            pairs.append(torch.stack([i, j], dim=1).cpu().numpy() + start)
    pairs = np.concatenate(pairs).astype(np.int64)
    similarities = np.concatenate(similarities)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -similarities))
    return pairs[order], similarities[order]


@validate_params(
    {
        "true_atoms": ["array-like"],
        "learned_atoms_or_estimator": [HasMethods(["fit"]), "array-like"],
        "threshold": [Interval(Real, 0, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def dictionary_recovery(true_atoms, learned_atoms_or_estimator, threshold=0.9) -> Bunch:
    """How well a learned dictionary recovers known atoms.

    Each true atom is matched with the learned atom of largest absolute
    cosine: the sign is ignored, and the learned atoms may come in any order
    and at any scale. Cosines are computed in float64, a block of true atoms
    at a time.

    Parameters
    ----------
    true_atoms : array-like of shape (n_true_atoms, n_features)
        The known atoms, one per row, such as the dictionary returned by
        :func:`skae.datasets.make_sparse_signals`.
    learned_atoms_or_estimator : estimator or array-like of shape \
(n_learned_atoms, n_features)
        A fitted estimator with ``components_`` (any skae estimator,
        MiniBatchDictionaryLearning, ...), or the learned atoms, one per row.
        A skae estimator's atoms are compared on its device.
    threshold : float, default=0.9
        A true atom counts as recovered when its best absolute cosine is
        above this, in [0, 1].

    Returns
    -------
    recovery : :class:`~sklearn.utils.Bunch`
        With the following attributes:

        best_cosine
            ndarray of shape (n_true_atoms,): each true atom's largest
            absolute cosine with any learned atom, in [0, 1].
        best_match
            ndarray of shape (n_true_atoms,), int64: the index of that learned
            atom (the first one, if several tie).
        mean_best_cosine
            The mean of ``best_cosine``, a float.
        recovered_fraction
            The share of true atoms with ``best_cosine > threshold``, a float.

    Examples
    --------
    >>> import numpy as np
    >>> from skae.inspect import dictionary_recovery
    >>> true_atoms = np.eye(3)
    >>> learned = -2 * true_atoms[[2, 0, 1]]  # reordered, flipped, scaled
    >>> recovery = dictionary_recovery(true_atoms, learned)
    >>> recovery.best_match, recovery.recovered_fraction
    (array([1, 2, 0]), 1.0)
    """
    learned, device = _atoms(learned_atoms_or_estimator, "learned atoms")
    true = check_array(true_atoms, dtype=_FLOATS, input_name="true_atoms")
    if true.shape[1] != learned.shape[1]:
        raise ValueError(
            f"true_atoms have {true.shape[1]} features but the learned atoms "
            f"have {learned.shape[1]}; both must describe the same space."
        )
    best_cosine, best_match = [], []
    with limited_threads(), torch.inference_mode():
        true_unit = _unit_rows(true, device, torch.float64)
        learned_unit = _unit_rows(learned, device, torch.float64)
        step = _block_rows(len(learned_unit))
        for start in range(0, len(true_unit), step):
            block = (true_unit[start : start + step] @ learned_unit.T).abs_()
            values, indices = block.max(dim=1)
            best_cosine.append(values.clamp_(max=1).cpu().numpy())
            best_match.append(indices.cpu().numpy())
    best_cosine = np.concatenate(best_cosine)
    return Bunch(
        best_cosine=best_cosine,
        best_match=np.concatenate(best_match).astype(np.int64),
        mean_best_cosine=float(best_cosine.mean()),
        recovered_fraction=float(np.mean(best_cosine > threshold)),
    )
