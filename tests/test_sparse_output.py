"""KSparseAutoencoder(sparse_output=True): codes as a CSR matrix."""

import numpy as np
import pytest
import scipy.sparse as sp

from skae import (
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
)

VARIANTS = {
    "topk": {},
    "batchtopk": {"k_mode": "batch"},
    "mp": {"encoder": "mp"},
    "omp": {"encoder": "omp"},
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_csr_codes_are_the_dense_codes(sparse_data, variant, dtype):
    X = sparse_data.astype(dtype)
    sae = KSparseAutoencoder(64, k=3, max_iter=3, random_state=0, **VARIANTS[variant])
    dense = sae.fit(X).transform(X)
    codes = sae.set_params(sparse_output=True).transform(X)
    assert sp.issparse(codes) and codes.format == "csr"
    assert codes.dtype == dtype
    assert codes.has_sorted_indices
    # Only the non-zero codes are stored, and the same ones.
    assert codes.nnz == np.count_nonzero(dense)
    np.testing.assert_array_equal(codes.toarray(), dense)
    if variant != "batchtopk":
        assert np.diff(codes.indptr).max() <= 3
    # Decoded from the stored codes' atoms alone: the same up to rounding.
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(
        sae.inverse_transform(codes), sae.inverse_transform(dense), tol, tol
    )


def test_fit_transform_and_more_batches_than_one(sparse_data):
    X = sparse_data.astype(np.float32)
    sae = KSparseAutoencoder(
        65536, k=4, max_iter=1, batch_size=32, random_state=0, sparse_output=True
    )
    codes = sae.fit_transform(X)
    # Inference batches of 16 * 64 rows at this width: two of them.
    assert 16 * sae._inference_batch_rows() < len(X)
    assert sp.issparse(codes) and codes.shape == (len(X), 65536)
    dense = sae.set_params(sparse_output=False).transform(X)
    np.testing.assert_array_equal(codes.toarray(), dense)


def test_pandas_output_refuses_sparse_codes(sparse_data):
    sae = KSparseAutoencoder(16, k=2, max_iter=1, sparse_output=True)
    sae.set_output(transform="pandas").fit(sparse_data)
    with pytest.raises(ValueError, match="sparse"):
        sae.transform(sparse_data)


@pytest.mark.parametrize(
    "make",
    [
        lambda: L1SparseAutoencoder(32, max_iter=3, random_state=0),
        lambda: KLSparseAutoencoder(
            32, output_activation="sigmoid", max_iter=3, random_state=0
        ),
        lambda: JumpReLUSparseAutoencoder(32, max_iter=3, random_state=0),
        lambda: KSparseAutoencoder(
            32, k=3, normalize_input=True, max_iter=3, random_state=0
        ),
    ],
    ids=["l1", "kl-sigmoid", "jumprelu", "topk-normalized"],
)
def test_sparse_codes_decode_as_dense_ones(sparse_data, make, monkeypatch):
    X = sparse_data.astype(np.float32)
    if "sigmoid" in repr(make()):
        X = (X - X.min()) / (X.max() - X.min())
    sae = make().fit(X)
    dense = sae.transform(X)
    dense[:, ::2] = 0  # some rows empty, some columns never stored
    expected = sae.inverse_transform(dense)

    def no_dense_decode(codes):
        raise AssertionError("sparse codes were decoded as dense ones")

    monkeypatch.setattr(sae.module_, "decode", no_dense_decode, raising=False)
    decoded = sae.inverse_transform(sp.csr_matrix(dense))
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6)
    # CSC input and float64 codes too.
    np.testing.assert_allclose(
        sae.inverse_transform(sp.csc_matrix(dense.astype(np.float64))),
        expected,
        rtol=1e-5,
        atol=1e-6,
    )
