"""Saving and loading: pickle and joblib round trips, and skae's safe format."""

import copy
import json
import math
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

import skae
import skae._engine.serialize
import skae._persistence
from skae import (
    ConvSparseAutoencoder,
    JumpReLUSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    L1SparseAutoencoder,
    L2SparseAutoencoder,
    SparseAutoencoderOutlierDetector,
    StackedSparseAutoencoder,
)


@pytest.fixture(scope="module")
def fitted(sparse_data):
    return KSparseAutoencoder(n_components=32, k=4, max_iter=5, random_state=0).fit(
        sparse_data
    )


def test_pickle_round_trip_gives_identical_results(fitted, sparse_data):
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        loaded.transform(sparse_data), fitted.transform(sparse_data)
    )
    np.testing.assert_array_equal(
        loaded.score_samples(sparse_data), fitted.score_samples(sparse_data)
    )
    np.testing.assert_array_equal(loaded.components_, fitted.components_)


def test_joblib_round_trip_gives_identical_results(fitted, sparse_data, tmp_path):
    joblib.dump(fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(
        loaded.transform(sparse_data), fitted.transform(sparse_data)
    )


def test_partial_fit_continues_after_loading(sparse_data):
    sae = KSparseAutoencoder(n_components=32, k=4, random_state=0)
    sae.partial_fit(sparse_data)
    loaded = pickle.loads(pickle.dumps(sae))
    sae.partial_fit(sparse_data)
    loaded.partial_fit(sparse_data)
    # The optimizer's moments travel with the model: continuing is identical.
    np.testing.assert_array_equal(loaded.components_, sae.components_)


def test_model_saved_for_cuda_transforms_on_a_machine_without_it(
    fitted, sparse_data, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(pickle.dumps(fitted))
    loaded.set_params(device="cuda")
    with pytest.warns(RuntimeWarning, match="using the CPU instead"):
        codes = loaded.transform(sparse_data)
    np.testing.assert_array_equal(codes, fitted.transform(sparse_data))
    with pytest.raises(ValueError, match="device='cuda' was requested"):
        loaded.fit(sparse_data)


def test_cpu_copy_copies_every_tensor_to_host(fitted):
    from skae._engine.device import cpu_copy

    module = fitted.module_
    copied = cpu_copy(module)
    assert type(copied) is type(module)
    for name, tensor in module.state_dict().items():
        twin = copied.state_dict()[name]
        assert twin.device.type == "cpu"
        # NaN marks what a mode never set (a row-mode model's threshold).
        torch.testing.assert_close(twin, tensor, rtol=0, atol=0, equal_nan=True)
        assert twin.data_ptr() != tensor.data_ptr()
    assert all(p.requires_grad for p in copied.parameters())
    assert copied.rule is not module.rule and copied.rule.k == module.rule.k


def test_pickling_leaves_the_live_estimator_untouched(sparse_data):
    sae = KSparseAutoencoder(n_components=8, k=2, max_iter=2).fit(sparse_data)
    module, optimizer_state = sae.module_, sae._optimizer_state
    assert sae.__getstate__() is not sae.__dict__
    pickle.dumps(sae)
    assert sae.module_ is module
    assert sae._optimizer_state is optimizer_state


# ------------------------------------------------------ the safe format

ESTIMATORS = [
    KSparseAutoencoder(32, k=4),
    KSparseAutoencoder(32, k=4, k_mode="batch"),
    KSparseAutoencoder(32, k=4, encoder="omp", matryoshka_sizes=(8, 16)),
    KSparseAutoencoder(128, k=4, aux_k=8, normalize_input=True, sparse_output=True),
    L1SparseAutoencoder(16),
    L2SparseAutoencoder(16, alpha=0.5),
    KSparseAutoencoder(16, k=2, dictionary="archetypal", relaxation=0.2),
    KLSparseAutoencoder(16, early_stopping=True),
    JumpReLUSparseAutoencoder(16, sparsity_weight=0.1),
    StackedSparseAutoencoder((12, 6)),
    StackedSparseAutoencoder((12, 6), sparsity="topk", k=3),
    ConvSparseAutoencoder(n_components=4, image_shape=(4, 8)),
    SparseAutoencoderOutlierDetector(L1SparseAutoencoder(8, max_iter=2)),
]


def fitted_copy(estimator, X):
    estimator = clone(estimator)
    if "random_state" in estimator.get_params(deep=False):
        estimator.set_params(random_state=0, max_iter=3)
    return estimator.fit(X)


def assert_same_state(a, b):
    """Every attribute equal, tensors and arrays bit for bit."""
    assert type(a) is type(b)
    assert sorted(vars(a)) == sorted(vars(b))
    for name, value in vars(a).items():
        other = vars(b)[name]
        if isinstance(value, torch.nn.Module):
            for key, tensor in value.state_dict().items():
                torch.testing.assert_close(
                    other.state_dict()[key], tensor, rtol=0, atol=0, equal_nan=True
                )
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(other, value)
        elif isinstance(value, np.random.RandomState):
            assert repr(value.get_state()) == repr(other.get_state())
        elif name == "_optimizer_state":
            assert repr(other) == repr(value)
        elif hasattr(value, "get_params"):
            assert_same_state(value, other)
        else:
            assert repr(other) == repr(value), name


@pytest.mark.filterwarnings("ignore:.*explained variance")  # 3 epochs of a KL stack
# One-line ids: a node id with a line break cannot be selected again
# (mutmut selects tests by id).
@pytest.mark.parametrize(
    "estimator", ESTIMATORS, ids=lambda e: " ".join(repr(e).split())
)
def test_save_and_load_give_the_same_fitted_estimator(estimator, tmp_path, sparse_data):
    X = sparse_data[:300]
    fitted = fitted_copy(estimator, X)
    path = tmp_path / "model.skae"
    skae.save(fitted, path)
    loaded = skae.load(path)
    assert_same_state(fitted, loaded)
    np.testing.assert_array_equal(loaded.score_samples(X), fitted.score_samples(X))
    if hasattr(fitted, "partial_fit"):
        # The optimizer's moments and the random stream travel too.
        fitted.partial_fit(X)
        loaded.partial_fit(X)
        np.testing.assert_array_equal(loaded.components_, fitted.components_)


def test_an_unfitted_estimator_and_feature_names_round_trip(tmp_path):
    unfitted = KSparseAutoencoder(64, k=8, random_state=np.random.RandomState(3))
    skae.save(unfitted, tmp_path / "unfitted.skae")
    assert_same_state(unfitted, skae.load(tmp_path / "unfitted.skae"))
    frame = pd.DataFrame(np.random.RandomState(0).randn(50, 3), columns=["a", "b", "c"])
    fitted = KSparseAutoencoder(8, k=2, max_iter=2, random_state=0).fit(frame)
    skae.save(fitted, tmp_path / "named.skae")
    loaded = skae.load(tmp_path / "named.skae")
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    # An object array, as scikit-learn makes it, and not fixed-width text.
    assert loaded.feature_names_in_.dtype == fitted.feature_names_in_.dtype == object
    assert list(loaded.get_feature_names_out()) == list(fitted.get_feature_names_out())


def test_the_file_is_plain_safetensors_with_json_metadata(fitted, tmp_path):
    from safetensors import safe_open

    path = tmp_path / "model.skae"
    skae.save(fitted, path)
    with safe_open(str(path), framework="numpy") as file:
        metadata = file.metadata()
        atoms = file.get_tensor("module.tensors.W_dec")
    assert metadata["format"] == "skae.estimator" and metadata["format_version"] == "1"
    assert metadata["estimator_class"] == "KSparseAutoencoder"
    assert json.loads(metadata["estimator"])["__record__"] == "StoredEstimator"
    # Which versions wrote it, for the bug reports of later ones.
    assert metadata["skae_version"] == skae.__version__
    assert metadata["torch_version"] == torch.__version__
    np.testing.assert_array_equal(atoms, fitted.module_.W_dec.detach().numpy())


FIXTURES = sorted(Path(__file__).parent.glob("data/format1-*.skae"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_files_of_format_1_still_load_and_give_the_same_outputs(path):
    # Frozen files written by skae 0.1.0.dev0 (tests/data/make_format_fixtures.py).
    expected = np.load(path.with_suffix(".npz"))
    loaded = skae.load(path)
    X = expected["X"]
    np.testing.assert_allclose(loaded.score_samples(X), expected["score_samples"])
    if "transform" in expected:
        np.testing.assert_allclose(loaded.transform(X), expected["transform"])


def test_there_is_a_fixture_for_every_estimator():
    named = {_metadata(p)["estimator_class"] for p in FIXTURES}
    assert named == set(skae._persistence.ESTIMATORS)


def _metadata(path):
    from skae._engine.serialize import read_file

    return read_file(path)[1]


def test_a_model_saved_for_cuda_loads_and_predicts_without_it(
    fitted, tmp_path, monkeypatch
):
    on_gpu = copy.deepcopy(fitted).set_params(device="cuda")
    skae.save(on_gpu, tmp_path / "gpu.skae")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = skae.load(tmp_path / "gpu.skae")
    X = np.random.RandomState(1).randn(20, fitted.n_features_in_)
    with pytest.warns(RuntimeWarning, match="using the CPU instead"):
        np.testing.assert_array_equal(loaded.transform(X), fitted.transform(X))


class _Payload:
    """Unpickling this touches ``marker``: proof that a load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("name", ["model.joblib", "model.skae", "model.pkl"])
def test_load_never_unpickles(tmp_path, name):
    path, marker = tmp_path / name, tmp_path / "code-ran"
    joblib.dump(_Payload(marker), path)
    with pytest.raises(ValueError, match="not a skae model file"):
        skae.load(path)
    assert not marker.exists()


def forge(path, tree, **metadata):
    from skae._engine.serialize import write_file

    base = {"format": "skae.estimator", "format_version": "1"}
    write_file(path, {}, base | metadata | {"estimator": json.dumps(tree)})


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {
                "__record__": "StoredEstimator",
                "fields": {"name": "system", "state": {}, "module": None},
            },
            "unknown estimator, 'system'",
        ),
        ({"__record__": "Popen", "fields": {}}, "unknown stored type 'Popen'"),
        ({"name": "KSparseAutoencoder"}, "that loads: it holds no estimator$"),
    ],
)
def test_a_forged_file_builds_nothing_but_skae_estimators(tmp_path, tree, message):
    forge(tmp_path / "forged.skae", tree)
    with pytest.raises(ValueError, match=message):
        skae.load(tmp_path / "forged.skae")


@pytest.mark.parametrize(
    "attribute",
    [
        "encode",  # a method
        "b_enc",  # a parameter: the file's tensors are the only weights
        "rows_since_fired",  # a buffer
        "_parameters",  # torch's own bookkeeping
    ],
)
def test_a_file_cannot_replace_a_modules_methods_or_parts(fitted, tmp_path, attribute):
    from skae._engine.serialize import read_file, write_file

    path = tmp_path / "model.skae"
    skae.save(fitted, path)
    tensors, metadata = read_file(path)
    tree = json.loads(metadata["estimator"])
    tree["fields"]["module"]["attributes"][""][attribute] = "not a method"
    write_file(path, tensors, metadata | {"estimator": json.dumps(tree)})
    with pytest.raises(ValueError, match=f"attribute '{attribute}' cannot be set"):
        skae.load(path)


def test_a_file_from_a_newer_format_asks_for_an_upgrade(tmp_path):
    forge(tmp_path / "new.skae", {}, format_version="2", skae_version="9.0")
    with pytest.raises(
        ValueError, match=r"skae 9\.0 in skae.estimator format 2.*upgrade skae"
    ):
        skae.load(tmp_path / "new.skae")
    forge(tmp_path / "unsigned.skae", {}, format_version="3")  # no skae_version
    with pytest.raises(ValueError) as error:
        skae.load(tmp_path / "unsigned.skae")
    assert str(error.value).endswith(
        ": it was written by skae (newer) in skae.estimator format 3; this skae "
        "reads formats up to 1: upgrade skae"
    )


def test_save_replaces_a_model_file_but_never_another_file(fitted, tmp_path):
    data = tmp_path / "X.npy"
    np.save(data, np.ones((3, 3)))
    before = data.read_bytes()
    with pytest.raises(FileExistsError) as error:
        skae.save(fitted, data)
    assert str(error.value) == (
        f"{str(data)!r} exists and is not a skae model file; skae.save replaces "
        "only its own files. Delete it or choose another path."
    )
    assert data.read_bytes() == before
    # A damaged safetensors file is not known to be a model either: kept.
    damaged = tmp_path / "damaged.safetensors"
    header = b'{"__metadata__": {"format": "skae.estimator"'  # cut short
    damaged.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(FileExistsError, match="is not a skae model file"):
        skae.save(fitted, damaged)
    with pytest.raises(ValueError) as error:
        skae.load(damaged)
    assert str(error.value).startswith(
        f"{str(damaged)!r} is not a skae model file that loads: damaged "
        "safetensors file ("
    )
    damaged.unlink()
    model_file = tmp_path / "model.skae"
    skae.save(KSparseAutoencoder(4, k=1), model_file)
    skae.save(fitted, model_file)
    assert skae.load(model_file).n_iter_ == fitted.n_iter_
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy", "model.skae"]


def test_save_refuses_what_it_cannot_store_without_pickle(tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    class Custom(KSparseAutoencoder):
        pass

    detector = SparseAutoencoderOutlierDetector(
        make_pipeline(StandardScaler(), KSparseAutoencoder(4, k=1))
    )
    for estimator, name in [
        (make_pipeline(KSparseAutoencoder(4, k=1)), "Pipeline"),
        (Custom(4, k=1), "Custom"),
        (detector, "Pipeline"),
    ]:
        with pytest.raises(TypeError, match=f"not a {name}.*joblib"):
            skae.save(estimator, tmp_path / "model.skae")
    assert list(tmp_path.iterdir()) == []


def _forge_state(path, fitted, edit):
    """Save ``fitted``, let ``edit`` change its JSON tree, write it back."""
    from skae._engine.serialize import read_file, write_file

    skae.save(fitted, path)
    tensors, metadata = read_file(path)
    tree = json.loads(metadata["estimator"])
    edit(tree)
    write_file(path, tensors, metadata | {"estimator": json.dumps(tree)})


def test_a_file_claiming_a_huge_model_allocates_nothing(fitted, tmp_path):
    # 1e5 x 1e5 weights would take 80 GB: the model is built on the meta
    # device, and the stored weights' shapes are checked before any memory.
    def huge(tree):
        state = tree["fields"]["state"]
        state["n_features_in_"] = state["n_components"] = 100_000
        state["_fitted_architecture"]["n_components"] = 100_000

    _forge_state(tmp_path / "huge.skae", fitted, huge)
    with pytest.raises(ValueError, match="weights do not fit the model"):
        skae.load(tmp_path / "huge.skae")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["fields"]["state"].update(transform=1), "'transform' cannot be"),
        (lambda t: t["fields"]["state"].update(_secret=1), "'_secret' cannot be set"),
        (lambda t: t["fields"]["state"].update(_secret_=1), "'_secret_' cannot be"),
        (lambda t: t["fields"]["state"].update(note=1), "'note' cannot be set"),
        (lambda t: t["fields"]["state"].update(module_=1), "'module_' cannot be"),
        (lambda t: t["fields"].update(state=[1, 2]), "loads: its estimator's state is"),
        (lambda t: t["fields"]["state"].update(device={"__device__": "x"}), "Runtime"),
    ],
)
def test_a_file_sets_only_parameters_and_fitted_attributes(
    fitted, tmp_path, edit, message
):
    _forge_state(tmp_path / "forged.skae", fitted, edit)
    with pytest.raises(ValueError, match=message):
        skae.load(tmp_path / "forged.skae")


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    from skae._engine.serialize import write_file

    deep = "[" * 50_000 + "]" * 50_000
    metadata = {"format": "skae.estimator", "format_version": "1", "estimator": deep}
    write_file(tmp_path / "deep.skae", {}, metadata)
    with pytest.raises(ValueError, match="not a skae model file that loads"):
        skae.load(tmp_path / "deep.skae")


def test_a_header_too_large_to_read_back_is_refused_before_writing(
    fitted, tmp_path, monkeypatch
):
    from skae._engine.serialize import write_file

    monkeypatch.setattr(skae._engine.serialize, "MAX_HEADER_BYTES", 1000)
    with pytest.raises(ValueError, match="header would take"):
        skae.save(fitted, tmp_path / "model.skae")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(skae._engine.serialize, "MAX_HEADER_BYTES", 2_000_000)
    with pytest.raises(ValueError) as error:
        write_file(tmp_path / "big.safetensors", {}, {"notes": "a" * 2_700_000})
    assert str(error.value) == (
        "the file's header would take 3 MB, more than the 2 MB safetensors reads "
        "(very many feature names?)"
    )
    # safetensors reads a header of exactly its limit, so one is written.
    write_file(tmp_path / "small.safetensors", {}, {"notes": ""})
    length = int.from_bytes((tmp_path / "small.safetensors").read_bytes()[:8], "little")
    monkeypatch.setattr(skae._engine.serialize, "MAX_HEADER_BYTES", length)
    write_file(tmp_path / "exact.safetensors", {}, {"notes": ""})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exact.safetensors",
        "small.safetensors",
    ]


def test_loading_a_named_pipe_never_blocks(tmp_path):
    fifo = tmp_path / "model.skae"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        skae.load(fifo)


@pytest.mark.parametrize("change", ["another format", "no estimator"])
def test_a_file_of_another_kind_or_without_its_estimator_is_refused(
    fitted, tmp_path, change
):
    # Either alone is enough: a checkpoint that happens to hold an
    # "estimator" entry is still not a model file.
    from skae._engine.serialize import read_file, write_file

    path = tmp_path / "model.skae"
    skae.save(fitted, path)
    tensors, metadata = read_file(path)
    if change == "another format":
        metadata = metadata | {"format": "skae.checkpoint"}
    else:
        metadata = {k: v for k, v in metadata.items() if k != "estimator"}
    write_file(path, tensors, metadata)
    with pytest.raises(ValueError, match=r"that loads: it holds no skae\.estimator$"):
        skae.load(path)


def test_a_path_parameter_loads_as_a_path(tmp_path):
    X = np.random.RandomState(0).randn(50, 4)
    folder = tmp_path / "runs"
    sae = KSparseAutoencoder(8, k=2, max_iter=1, checkpoint_path=folder).fit(X)
    skae.save(sae, tmp_path / "model.skae")
    loaded = skae.load(tmp_path / "model.skae")
    assert isinstance(loaded.checkpoint_path, Path)
    assert loaded.checkpoint_path == folder


def _header(length: int, body: bytes) -> bytes:
    return length.to_bytes(8, "little") + body


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"tiny", r"not a safetensors file$"),
        (_header(20, b"[" + b" " * 40), r"not a safetensors file$"),
        # A header said to run past the end of the file, by a little or by
        # a length whose top bit is set (negative if misread as signed).
        (_header(40, b"{" + b" " * 35), r"its header is cut short\)$"),
        (_header(2**63 + 5, b"{" + b" " * 40), r"its header is cut short\)$"),
    ],
)
def test_what_is_not_a_safetensors_file_is_named(tmp_path, content, reason):
    path = tmp_path / "model.skae"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        skae.load(path)


def test_a_folder_is_not_a_model_file(tmp_path):
    with pytest.raises(ValueError, match=r"not a regular file$"):
        skae.load(tmp_path)


# ------------------------------------------- the tree format's refusals and edges


@pytest.mark.parametrize(
    ("tree", "error", "message"),
    [
        (object(), TypeError, r"^cannot store a object \(at top\)$"),
        ({"a": [1, {1j}]}, TypeError, r"^cannot store a set \(at a\.1\)$"),
        (
            {"a": np.array([None, 1])},
            TypeError,
            r"^cannot store an array of dtype object \(at a\)$",
        ),
        ({"a": np.ones(2, complex)}, TypeError, "array of dtype complex128"),
    ],
)
def test_what_the_format_cannot_store_is_refused_by_where_it_is(tree, error, message):
    from skae._engine.serialize import encode

    with pytest.raises(error, match=message):
        encode(tree)


def test_a_tensor_of_a_dtype_safetensors_lacks_is_refused_and_nothing_written(
    tmp_path,
):
    from skae._engine.serialize import write_file

    path = tmp_path / "t.safetensors"
    with pytest.raises(TypeError, match=r"tensor of dtype torch\.complex64$"):
        write_file(path, {"z": torch.ones(2, dtype=torch.complex64)}, {})
    assert list(tmp_path.iterdir()) == []


def test_values_of_every_stored_kind_come_back_as_they_were(tmp_path):
    from skae._engine.serialize import load_tree, save_tree

    first, second = torch.arange(3.0), torch.full((2,), 7.0)
    tree = {
        # Two tensors whose paths spell alike ("a" then "0", and "a.0"):
        # each keeps its own name in the file.
        "a": [first],
        "a.0": second,
        "empty": torch.zeros(0, 3),
        "device": torch.device("cpu"),
        "folder": Path("runs") / "one",
        "numbers": (1, 2.5, float("inf")),
        "names": np.array([["x", "y"]]),
    }
    path = tmp_path / "tree.safetensors"
    save_tree(path, tree, ("test.tree", "tree"), 1)
    back = load_tree(path, ("test.tree", "tree"), 1)
    assert torch.equal(back["a"][0], first) and torch.equal(back["a.0"], second)
    assert back["empty"].shape == (0, 3)
    assert back["device"] == torch.device("cpu")
    assert back["folder"] == Path("runs") / "one"
    assert back["numbers"] == (1, 2.5, float("inf"))
    np.testing.assert_array_equal(back["names"], tree["names"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"__tensor__": "weights"}, r"^the tensor 'weights' is missing$"),
        ({"__ndarray__": "weights"}, r"^the tensor 'weights' is missing$"),
        ({"__code__": "print(1)"}, r"^unknown stored value \['__code__'\]$"),
        ({"a": 1, "__reduce__": []}, r"unknown stored value \['__reduce__', 'a'\]"),
    ],
)
def test_a_tree_naming_what_the_file_lacks_or_an_unknown_tag_is_refused(data, message):
    from skae._engine.serialize import FileFormatError, decode

    with pytest.raises(FileFormatError, match=message):
        decode(data, {})


def test_saving_on_a_big_endian_machine_is_refused_before_writing(
    tmp_path, monkeypatch
):
    from skae._engine.serialize import write_file

    monkeypatch.setattr(skae._engine.serialize.sys, "byteorder", "big")
    with pytest.raises(OSError) as error:
        write_file(tmp_path / "t.safetensors", {"w": torch.ones(2)}, {})
    assert str(error.value) == "saving skae files needs a little-endian machine"
    assert list(tmp_path.iterdir()) == []


def _without_state(tree):
    tree["fields"]["state"] = {}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # Attributes for a part of the module that the model does not have.
        (
            lambda tree: tree["fields"]["module"]["attributes"].update(decoder={}),
            r"the model has no part 'decoder'$",
        ),
        # A torch module under an estimator that has none.
        (
            lambda tree: (
                _without_state(tree),
                tree["fields"].update(name="SparseAutoencoderOutlierDetector"),
            ),
            r"a SparseAutoencoderOutlierDetector has no torch module$",
        ),
        # An architecture that names no parameter of the estimator.
        (
            lambda tree: tree["fields"]["state"].update(
                _fitted_architecture={"n_wheels": 3}
            ),
            r"its model cannot be rebuilt \(.*n_wheels.*\)$",
        ),
    ],
)
def test_a_module_that_does_not_fit_its_estimator_is_refused(
    fitted, tmp_path, edit, message
):
    path = tmp_path / "model.skae"
    _forge_state(path, fitted, edit)
    with pytest.raises(ValueError, match=message):
        skae.load(path)


def test_weights_that_do_not_fit_are_each_named_with_their_shapes():
    from skae._engine.serialize import FileFormatError, restore_module

    with torch.device("meta"):
        module = torch.nn.Linear(3, 2)
    tensors = {"weight": torch.zeros(3, 2), "scale": torch.ones(1)}  # no bias
    with pytest.raises(FileFormatError) as error:
        restore_module(module, {"tensors": tensors, "attributes": {}})
    assert str(error.value) == (
        "its weights do not fit the model (weight: (3, 2) stored, (2, 3) "
        "expected; bias: missing stored, (2,) expected; scale: not expected)"
    )


def test_tensors_are_named_by_their_place_in_the_tree():
    from skae._engine.serialize import decode, encode
    from skae._engine.training import PartialEpoch

    t = torch.zeros(2)
    tree = {
        "w": t,
        "seq": [t, t],
        "pair": (np.zeros(3),),
        "rng": np.random.RandomState(0),  # its state's key array is item 1
        # Three values at one place: a key that is not a name, and the
        # name it reads as, twice.
        "m": {1: t, "1": t},
        "m.1": t,
        "partial": PartialEpoch(steps=3, loss_sum=t, rows=5, rng_state=None),
    }
    data, tensors = encode(tree)
    assert list(tensors) == [
        "w", "seq.0", "seq.1", "pair.0", "rng.1", "m.1", "m.1#2", "m.1#3",
        "partial.loss_sum",  # a record's fields
    ]  # fmt: skip
    assert list(encode(t)[1]) == ["tensor"]  # a tensor alone
    back = decode(json.loads(json.dumps(data)), tensors)
    assert back["m"] == {1: tensors["m.1"], "1": tensors["m.1#2"]}
    assert back["m.1"] is tensors["m.1#3"]


def test_the_header_is_standard_json_and_keys_that_look_like_tags_stay_keys():
    from skae._engine.serialize import decode, encode

    def refuse(constant):
        raise ValueError(f"{constant} is not standard JSON")

    floats = {"finite": 0.5, "nan": float("nan"), "inf": -float("inf")}
    tags = {"__tensor__": "w", "__float__": 1}  # a user's keys, not tags
    data, tensors = encode({"floats": floats, "tags": tags})
    assert data["floats"]["finite"] == 0.5  # a plain JSON number
    text = json.dumps(data)
    back = decode(json.loads(text, parse_constant=refuse), tensors)
    assert back["floats"]["finite"] == 0.5 and math.isnan(back["floats"]["nan"])
    assert back["floats"]["inf"] == -math.inf and back["tags"] == tags


def test_a_fortran_ordered_array_round_trips(tmp_path):
    from skae._engine.serialize import load_tree, save_tree

    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    save_tree(tmp_path / "tree", {"a": array}, ("test", "tree"), 1)
    back = load_tree(tmp_path / "tree", ("test", "tree"), 1)["a"]
    np.testing.assert_array_equal(back, array)


def test_a_file_without_a_format_version_reads_as_the_first_format(fitted, tmp_path):
    from skae._engine.serialize import read_file, write_file

    path = tmp_path / "model.skae"
    skae.save(fitted, path)
    tensors, metadata = read_file(path)
    del metadata["format_version"]
    write_file(path, tensors, metadata)
    np.testing.assert_array_equal(skae.load(path).components_, fitted.components_)


def test_every_tensor_starts_aligned_to_its_element_size(tmp_path):
    # Memory-mapping readers need it; safetensors' own writer does the same.
    from skae._engine.serialize import write_file

    tensors = {
        "a_bytes": torch.ones(3, dtype=torch.uint8),
        "b_halves": torch.ones(3, dtype=torch.float16),
        "c_doubles": torch.ones(3, dtype=torch.float64),
        "d_singles": torch.ones(3, dtype=torch.float32),
    }
    for name in ("x", "xy"):  # header lengths that need padding
        path = tmp_path / f"{name}.safetensors"
        write_file(path, tensors, {"name": name})
        raw = path.read_bytes()
        length = int.from_bytes(raw[:8], "little")
        assert (8 + length) % 8 == 0
        header = json.loads(raw[8 : 8 + length])
        for key, tensor in tensors.items():
            start = 8 + length + header[key]["data_offsets"][0]
            assert start % tensor.element_size() == 0, key
