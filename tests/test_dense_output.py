"""How transform builds its dense output: one zeroed array, each batch's
codes written into its rows in place."""

import numpy as np
import torch

from skae import KSparseAutoencoder
from skae._engine.modules import TopKAutoencoder


def test_the_codes_are_written_in_place_into_one_output(sparse_data, monkeypatch):
    """Each inference batch fills its own rows of the returned array (no
    matrix of its own, copied after), and the codes are the module's."""
    X = sparse_data.astype(np.float32)
    sae = KSparseAutoencoder(32, k=3, max_iter=1, batch_size=64, random_state=0)
    sae.fit(X)
    monkeypatch.setattr(type(sae), "_inference_batch_rows", lambda self: 300)
    fills = []  # (address, rows) of each batch's output

    def encode_into(module, x, out):
        fills.append((out.data_ptr(), out.shape[0]))
        original(module, x, out)

    original = TopKAutoencoder.encode_into
    monkeypatch.setattr(TopKAutoencoder, "encode_into", encode_into)
    codes = sae.transform(X)

    start, row_bytes = codes.__array_interface__["data"][0], codes.strides[0]
    assert fills == [
        (start + row * row_bytes, min(300, len(X) - row))
        for row in range(0, len(X), 300)
    ]
    with torch.inference_mode():
        expected = sae.module_.encode(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(codes, expected)
