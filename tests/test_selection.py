"""Top-k selection: the compiled kernel and torch's grouped selection keep the
entries torch.topk keeps, on random, drawn and adversarial rows."""

import math
import sys
import threading

import numpy as np
import pytest
import torch

import skae._engine
from skae._engine import compiled
from skae._engine import topk as topk_module
from skae._engine.topk import (
    _compiled_group_size,
    _group_size,
    _share_rows,
    largest_k,
    topk_relu,
)


@pytest.fixture(autouse=True)
def torch_threads():
    """Tests here set torch's threads; the next test gets them back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def compiled_kernels():
    """Both kernels loaded and checked before a test patches what their
    first-use check calls; and loaded at all, so that the compiled side of
    every test runs the kernel, not the fallback."""
    for dtype in (torch.float32, torch.bfloat16):
        assert topk_module._compiled_kernels(dtype) is compiled


@pytest.fixture(params=["compiled", "torch"])
def implementation(request, monkeypatch):
    """Each CPU selection in turn: the compiled kernel, then torch's grouped
    selection that stands in where numba cannot load."""
    if request.param == "torch":
        monkeypatch.setattr(topk_module, "_compiled_kernels", lambda dtype: None)
    return request.param


@pytest.fixture
def kernel_calls(monkeypatch):
    """The row ranges that the compiled kernel was called on."""
    calls = []
    original = compiled.select_rows

    def select_rows(*args):
        calls.append((args[-2], args[-1], threading.get_ident()))
        original(*args)

    monkeypatch.setattr(compiled, "select_rows", select_rows)
    return calls


def kept_set_matches_topk(pre, k):
    """The selection keeps k distinct columns whose values are the k
    largest, as torch.topk's are (ties may pick other columns); a NaN
    counts as the largest value, as torch.topk ranks it."""
    values, indices = largest_k(pre, k)
    assert values.shape == indices.shape == (pre.shape[0], k)
    assert values.dtype == pre.dtype and indices.dtype == torch.long
    expected = torch.topk(pre, k, dim=1).values
    torch.testing.assert_close(
        values.sort(dim=1).values,
        expected.sort(dim=1).values,
        rtol=0,
        atol=0,
        equal_nan=True,
    )
    torch.testing.assert_close(
        pre.gather(1, indices), values, rtol=0, atol=0, equal_nan=True
    )
    assert all(len(set(row.tolist())) == k for row in indices)


def gaussian(n_rows, width, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_rows, width, generator=generator).to(dtype)


@pytest.mark.parametrize(
    ("width", "k"),
    [(256, 8), (4096, 32), (16384, 32), (65536, 4), (1000, 16), (4099, 32), (40, 39)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selection_matches_topk(implementation, width, k, dtype):
    pre = gaussian(100, width, dtype)
    values, indices = largest_k(pre, k)
    expected = torch.topk(pre, k, dim=1)
    assert torch.equal(values.sort(dim=1).values, expected.values.sort(dim=1).values)
    if dtype == torch.float32:  # distinct Gaussian floats: no ties to break
        assert torch.equal(
            indices.sort(dim=1).values, expected.indices.sort(dim=1).values
        )
    assert torch.equal(pre.gather(1, indices), values)


@pytest.mark.parametrize(("width", "k"), [(512, 16), (4096, 32)])
def test_float64_selection_matches_topk(width, k):
    assert _group_size(width, k) > 1  # the grouped path is the one under test
    pre = gaussian(100, width, torch.float64)
    values, indices = largest_k(pre, k)
    expected = torch.topk(pre, k, dim=1)
    assert torch.equal(indices.sort(dim=1).values, expected.indices.sort(dim=1).values)
    assert torch.equal(pre.gather(1, indices), values)


@pytest.mark.parametrize("k", [0, 300])
def test_keeping_none_or_every_column(implementation, kernel_calls, k):
    pre = gaussian(10, 300)
    values, indices = largest_k(pre, k)
    assert values.shape == indices.shape == (10, k)
    assert torch.equal(values.sort(dim=1).values, pre.sort(dim=1).values[:, 300 - k :])
    assert kernel_calls == []  # the kernel needs 0 < k < width


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_columns_past_the_last_whole_group_are_selected(implementation, dtype):
    """A width that groups do not divide leaves a ragged end of columns
    outside every group; entries there are kept when they are the largest."""
    width, k = 4099, 32
    assert width % _compiled_group_size(width, k) == 3
    pre = gaussian(50, width)
    pre[:, -3:] += 10  # the ragged end holds each row's three largest
    pre[::2, -1] = -10  # or, every other row, two of them
    kept_set_matches_topk(pre.to(dtype), k)


@pytest.mark.parametrize("width", [256, 4096])
def test_selection_with_ties_keeps_k_largest(implementation, width):
    # Integer pre-activations tie everywhere: any tie-break is a right answer
    # as long as k distinct columns holding the k largest values come back.
    generator = torch.Generator().manual_seed(1)
    pre = torch.randint(0, 5, (200, width), generator=generator).float()
    kept_set_matches_topk(pre, 8)


def test_the_compiled_selection_breaks_ties_the_same_way_every_time():
    pre = torch.randint(0, 3, (300, 4096), generator=torch.Generator().manual_seed(2))
    first = largest_k(pre.float(), 32)
    second = largest_k(pre.float(), 32)
    assert torch.equal(first[1], second[1])


# Rows that break selections: every value equal, all negative, a few huge
# values among tiny ones, float extremes, and ties at the k-th place.
ADVERSARIAL_ROWS = {
    "all equal": lambda g, w: torch.full((w,), 0.5),
    "all negative": lambda g, w: -torch.rand(w, generator=g) - 1,
    "huge among tiny": lambda g, w: (
        torch.randn(w, generator=g) * 1e-30 + (torch.rand(w, generator=g) < 0.01) * 1e30
    ),
    "float extremes": lambda g, w: torch.tensor([3.3e38, -3.3e38, 1e-38, -1e-38, 0.0])[
        torch.randint(0, 5, (w,), generator=g)
    ],
    "infinities": lambda g, w: torch.tensor([math.inf, -math.inf, 1.0, -0.0, 0.0])[
        torch.randint(0, 5, (w,), generator=g)
    ],
    "ties at the k-th place": lambda g, w: torch.randint(
        0, 3, (w,), generator=g
    ).float(),
    "one spike": lambda g, w: torch.zeros(w).index_fill_(
        0, torch.randint(0, w, (1,), generator=g), 1.0
    ),
    "all minus infinity": lambda g, w: torch.full((w,), -math.inf),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("width", [256, 4096, 4099, 32768])
def test_selection_keeps_the_k_largest_on_adversarial_rows(
    implementation, width, dtype
):
    generator = torch.Generator().manual_seed(width)
    rows = [make(generator, width) for make in ADVERSARIAL_ROWS.values()]
    pre = torch.stack([*rows, *(torch.randn(16, width, generator=generator))])
    pre = pre.to(dtype)
    assert not torch.isnan(pre).any()
    for k in (1, 8, 32):
        kept_set_matches_topk(pre, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [256, 4096, 4099])
def test_a_nan_is_kept_as_the_largest_value(implementation, width, dtype):
    """torch.topk ranks NaN above every number; so does the selection, so
    that a NaN pre-activation reaches the codes and is seen, not dropped."""
    pre = gaussian(6, width)
    pre[0, 3] = math.nan  # in the grouped columns
    pre[1, width - 1] = math.nan  # in the ragged end where there is one
    pre[2, :] = math.nan
    # A NaN with its sign bit set, as x86 arithmetic makes them.
    pre[3, 100] = -torch.tensor(math.nan)
    assert torch.signbit(pre[3, 100])
    pre[4, 5::7] = math.nan  # more NaNs than k
    pre = pre.to(dtype)
    for k in (1, 8):
        kept_set_matches_topk(pre, k)
        values, _ = largest_k(pre, k)
        assert torch.isnan(values[:5]).any(dim=1).all()
        assert not torch.isnan(values[5]).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selection_matches_topk_on_drawn_rows(implementation, dtype):
    """Property: on any rows of any width and k, the same kept set."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=60, deadline=None)
    @given(
        st.integers(1, 40).flatmap(
            lambda k: st.tuples(
                st.just(k),
                st.sampled_from([32, 41, 64, 256, 1000, 1024])
                .filter(lambda w: w > k)
                .flatmap(
                    lambda w: arrays(
                        "float32",
                        (3, w),
                        elements=st.one_of(
                            st.floats(-1e6, 1e6, width=32),
                            st.sampled_from([0.0, -0.0, 1.0, -1.0]),
                            st.sampled_from([math.inf, -math.inf, math.nan]),
                        ),
                    )
                ),
            )
        )
    )
    def check(case):
        k, rows = case
        kept_set_matches_topk(torch.from_numpy(rows).to(dtype), k)

    check()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cpu_selects_float32_and_bfloat16_with_the_compiled_kernel(
    monkeypatch, kernel_calls, dtype
):
    """No torch.topk runs on NaN-free float32 or bfloat16 rows: the compiled
    kernel selects them, over every row once."""
    monkeypatch.setattr(torch, "topk", None)
    torch.set_num_threads(1)  # restored by torch_threads
    largest_k(gaussian(300, 4096, dtype), 32)
    assert [call[:2] for call in kernel_calls] == [(0, 300)]


def test_float64_rows_are_selected_in_groups(monkeypatch, kernel_calls):
    lengths = []
    original = torch.topk

    def topk(input, *args, **kwargs):
        lengths.append(input.shape[-1])
        return original(input, *args, **kwargs)

    monkeypatch.setattr(torch, "topk", topk)
    largest_k(gaussian(64, 4096, torch.float64), 32)
    assert kernel_calls == []
    assert lengths and max(lengths) <= 4096 // 8  # the group maxima


def test_torch_threads_share_the_rows(kernel_calls):
    """With two torch threads, two threads select contiguous halves of the
    rows, and the codes are those of one thread."""
    pre = gaussian(301, 4096)
    torch.set_num_threads(1)
    alone = largest_k(pre, 32)
    kernel_calls.clear()
    torch.set_num_threads(2)  # restored by torch_threads
    shared = largest_k(pre, 32)
    assert sorted(call[:2] for call in kernel_calls) == [(0, 150), (150, 301)]
    assert len({call[2] for call in kernel_calls}) == 2
    assert torch.equal(alone[0], shared[0]) and torch.equal(alone[1], shared[1])


def test_few_rows_stay_on_one_thread(kernel_calls):
    torch.set_num_threads(2)  # restored by torch_threads
    largest_k(gaussian(2 * topk_module.ROWS_PER_THREAD - 1, 4096), 32)
    assert len(kernel_calls) == 1


def test_a_failing_share_raises_once_every_share_is_done():
    torch.set_num_threads(2)  # restored by torch_threads
    done = []

    def kernel(out, start, stop):
        if start > 0:
            raise ValueError("second share")
        out[start:stop] = 1
        done.append(start)

    out = np.zeros(1000)
    with pytest.raises(ValueError, match="second share"):
        _share_rows(kernel, (out,), 1000)
    assert done == [0] and out[:500].all() and not out[500:].any()


def test_a_forked_process_gets_its_own_threads(monkeypatch):
    first = topk_module._threads()
    assert topk_module._threads() is first
    monkeypatch.setattr(topk_module.os, "getpid", lambda: -1)
    assert topk_module._threads() is not first


def test_without_numba_the_selection_warns_and_falls_back(monkeypatch):
    # As where numba is missing or cannot load: the import fails.
    monkeypatch.setitem(sys.modules, "skae._engine.compiled", None)
    monkeypatch.delattr(skae._engine, "compiled")
    with pytest.warns(UserWarning, match="compiled top-k selection is unavailable"):
        assert topk_module._compiled_kernels.__wrapped__(torch.float32) is None


def test_a_kernel_that_fails_to_compile_or_cache_falls_back(monkeypatch):
    # numba raises at the first call where it cannot compile (an older
    # release) or at import where no folder takes its cache.
    def fails(*args):
        raise RuntimeError("cannot cache function: no locator available")

    monkeypatch.setattr(compiled, "select_rows", fails)
    with pytest.warns(UserWarning, match="NUMBA_CACHE_DIR") as caught:
        assert topk_module._compiled_kernels.__wrapped__(torch.bfloat16) is None
    assert "no locator available" in str(caught[0].message)


def test_a_kernel_that_keeps_other_entries_is_not_used(monkeypatch):
    def wrong(pre, group_size, k, values, indices, has_nan, start, stop):
        indices[start:stop] = np.arange(k)  # the first k columns
        has_nan[start:stop] = False

    monkeypatch.setattr(compiled, "select_rows", wrong)
    with pytest.warns(UserWarning, match="kept other entries than torch.topk"):
        assert topk_module._compiled_kernels.__wrapped__(torch.float32) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_flow_through_the_kept_values(dtype):
    pre = gaussian(50, 1024, dtype).requires_grad_()
    codes = topk_relu(pre, 16)
    codes.sum().backward()
    assert torch.equal(pre.grad, (codes > 0).to(dtype))


@pytest.mark.parametrize(
    ("width", "k", "expected"),
    [(4096, 32, 16), (16384, 32, 32), (65536, 32, 32), (256, 32, 1), (1024, 8, 16)],
)
def test_compiled_groups_leave_eight_k_groups_or_more(width, k, expected):
    assert _compiled_group_size(width, k) == expected
    assert width // expected >= min(width, 8 * k)
