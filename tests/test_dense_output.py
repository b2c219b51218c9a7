"""How transform builds its dense output: one zeroed array, its pages mapped
up front, each batch's codes written into its rows in place."""

import numpy as np
import pytest
import torch

import skae._base
from skae import KSparseAutoencoder
from skae._base import _map_pages
from skae._engine.modules import TopKAutoencoder


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mapping_the_pages_leaves_every_value_zero(dtype):
    # 3 pages and a bit: the last, partial page is touched too.
    array = np.zeros((7, 1000), dtype)
    _map_pages(array)
    assert not array.any()


def test_the_codes_are_written_in_place_into_one_output_mapped_first(
    sparse_data, monkeypatch
):
    X = sparse_data.astype(np.float32)
    sae = KSparseAutoencoder(32, k=3, max_iter=1, batch_size=64, random_state=0)
    sae.fit(X)
    monkeypatch.setattr(type(sae), "_inference_batch_rows", lambda self: 300)
    events = []

    def map_pages(array):
        events.append(("map", array.__array_interface__["data"][0], array.any()))
        _map_pages(array)

    def encode_into(module, x, out):
        events.append(("fill", out.data_ptr(), out.shape))
        original(module, x, out)

    original = TopKAutoencoder.encode_into
    monkeypatch.setattr(skae._base, "_map_pages", map_pages)
    monkeypatch.setattr(TopKAutoencoder, "encode_into", encode_into)
    codes = sae.transform(X)

    start = codes.__array_interface__["data"][0]
    assert events[0] == ("map", start, False)  # zeros, before any batch
    fills = events[1:]
    assert [kind for kind, _, _ in fills] == ["fill"] * -(-len(X) // 300)
    row_bytes = codes.strides[0]
    assert [pointer for _, pointer, _ in fills] == [
        start + row * row_bytes for row in range(0, len(X), 300)
    ]
    with torch.inference_mode():
        expected = sae.module_.encode(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(codes, expected)
