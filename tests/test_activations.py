"""skae.activations.harvest: a layer's activations from any torch model, into
a growing .npy file that resumes after an interruption and fits streamed."""

import numpy as np
import pytest
import torch

from skae import KSparseAutoencoder
from skae import activations as harvesting
from skae.activations import harvest


def mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )


def batches(n=8, rows=32, seed=1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, 6, generator=generator) for _ in range(n)]


def hidden(model, inputs) -> np.ndarray:
    """What harvest should write for the ReLU of mlp(), computed directly."""
    with torch.no_grad():
        return np.concatenate([model[1](model[0](x)).numpy() for x in inputs])


class Calls:
    """Counts the model's forward passes."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        module.register_forward_pre_hook(lambda *_: self.count())

    def count(self) -> None:
        self.n += 1


def interrupted(inputs, after: int):
    """The inputs, until a Ctrl-C after ``after`` batches."""
    for number, batch in enumerate(inputs):
        if number == after:
            raise KeyboardInterrupt
        yield batch


def harvest_interrupted(model, inputs, path, after: int) -> None:
    """A harvest of layer '1' stopped by Ctrl-C after ``after`` batches."""
    with pytest.raises(KeyboardInterrupt):
        harvest(model, "1", interrupted(inputs, after=after), path)


def test_mlp_activations_are_written_row_for_row(tmp_path):
    model, inputs = mlp(), batches()
    X = harvest(model, "1", inputs, tmp_path / "a.npy")
    assert isinstance(X, np.memmap) and X.mode == "r" and X.dtype == np.float32
    np.testing.assert_array_equal(X, hidden(model, inputs))
    assert not (tmp_path / "a.npy.partial").exists()
    assert not (tmp_path / "a.npy.partial.json").exists()


def test_the_layers_after_the_harvested_one_do_not_run(tmp_path):
    model = mlp()
    after = Calls(model[2])
    harvest(model, "1", batches(), tmp_path / "a.npy")
    assert after.n == 0


def test_input_capture_is_what_the_layer_receives(tmp_path):
    model, inputs = mlp(), batches()
    X = harvest(model, "2", inputs, tmp_path / "a.npy", capture="input")
    np.testing.assert_array_equal(X, hidden(model, inputs))


def test_the_model_runs_in_eval_mode_and_gets_its_mode_back(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.5))
    inputs = batches(2)
    X = harvest(model, "1", inputs, tmp_path / "a.npy")
    with torch.no_grad():
        expected = np.concatenate([model[0](x).numpy() for x in inputs])
    np.testing.assert_array_equal(X, expected)  # no dropout
    assert model.training


def test_the_file_grows_by_chunks_and_holds_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(harvesting, "SAVE_BYTES", 16 * 16 * 4)  # 16 rows a chunk
    model, inputs = mlp(), batches(n=12, rows=7)
    X = harvest(model, "1", inputs, tmp_path / "a.npy")
    np.testing.assert_array_equal(X, hidden(model, inputs))
    assert (tmp_path / "a.npy").stat().st_size == X.offset + X.nbytes


def test_max_rows_cuts_the_harvest(tmp_path):
    model, inputs = mlp(), batches()
    calls = Calls(model)
    X = harvest(model, "1", inputs, tmp_path / "a.npy", max_rows=70)
    np.testing.assert_array_equal(X, hidden(model, inputs)[:70])
    assert calls.n == 3  # 32 + 32 + 6 rows: the other batches never run


def test_dicts_tuples_and_arrays_are_batches(tmp_path):
    model, inputs = mlp(), batches(3)
    expected = hidden(model, inputs)
    for name, shaped in {
        "tuple": [(x, torch.zeros(len(x))) for x in inputs],
        "array": [x.numpy() for x in inputs],
        "dict": [{"input": x} for x in inputs],
        "loader": torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.cat(inputs)), batch_size=32
        ),
    }.items():
        X = harvest(model, "1", shaped, tmp_path / f"{name}.npy")
        np.testing.assert_array_equal(X, expected, err_msg=name)


def test_float16_files(tmp_path):
    model, inputs = mlp(), batches(2)
    X = harvest(model, "1", inputs, tmp_path / "a.npy", dtype="float16")
    assert X.dtype == np.float16
    np.testing.assert_allclose(X, hidden(model, inputs), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------- transformer


def transformer() -> torch.nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=8, nhead=2, dim_feedforward=16, batch_first=True, dropout=0.0
    )
    return torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def padded_batches(n=4, rows=5, length=7, seed=0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(1, length + 1, (rows,), generator=generator)
        padding = torch.arange(length)[None, :] >= lengths[:, None]
        source = torch.randn(rows, length, 8, generator=generator)
        out.append({"src": source, "src_key_padding_mask": padding})
    return out


def test_sequences_are_flattened_and_padding_dropped_by_the_mask(tmp_path):
    model, inputs = transformer(), padded_batches()
    X = harvest(
        model,
        "layers.0",
        inputs,
        tmp_path / "a.npy",
        mask=lambda batch: ~batch["src_key_padding_mask"],
    )
    with torch.no_grad():
        expected = [
            model.layers[0](**batch)[~batch["src_key_padding_mask"]] for batch in inputs
        ]
    kept = sum(int((~b["src_key_padding_mask"]).sum()) for b in inputs)
    assert X.shape == (kept, 8) and kept < 4 * 5 * 7
    np.testing.assert_allclose(X, torch.cat(expected).numpy(), rtol=1e-5, atol=1e-6)


def test_without_a_mask_every_position_is_a_row_in_c_order(tmp_path):
    model, inputs = transformer(), padded_batches(n=2)
    X = harvest(model, "layers.1", inputs, tmp_path / "a.npy")
    with torch.no_grad():
        full = [model(**batch) for batch in inputs]
    assert X.shape == (2 * 5 * 7, 8)
    np.testing.assert_allclose(X[7 * 2 + 3], full[0][2, 3].numpy(), rtol=1e-5)
    np.testing.assert_allclose(X, torch.cat(full).reshape(-1, 8).numpy(), atol=1e-5)


def test_a_mask_key_names_a_field_of_dict_batches(tmp_path):
    model = mlp()
    inputs = [
        {"input": x, "attention_mask": torch.arange(len(x)) % 3 != 0}
        for x in batches(2)
    ]

    def run(model, batch):
        model(batch["input"])

    path = tmp_path / "a.npy"
    X = harvest(model, "1", inputs, path, mask="attention_mask", forward=run)
    expected = hidden(model, [b["input"] for b in inputs])
    keep = np.concatenate([b["attention_mask"].numpy() for b in inputs])
    np.testing.assert_array_equal(X, expected[keep])


def test_a_mask_of_the_wrong_shape_is_an_error(tmp_path):
    model, inputs = transformer(), padded_batches(n=1)
    with pytest.raises(ValueError, match=r"mask has shape \(5,\).*need \(5, 7\)"):
        harvest(
            model, "layers.0", inputs, tmp_path / "a.npy", mask=lambda b: torch.ones(5)
        )


# ------------------------------------------------------------------ resume


def test_an_interrupted_harvest_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(harvesting, "SAVE_BYTES", 1)  # save after every batch
    model, inputs = mlp(), batches(n=10)
    path = tmp_path / "a.npy"
    harvest_interrupted(model, inputs, path, after=4)
    assert not path.exists() and (tmp_path / "a.npy.partial").exists()
    calls = Calls(model)
    X = harvest(model, "1", inputs, path)
    # One pass checks the first batch; the six not yet saved run.
    assert calls.n == 1 + 6
    np.testing.assert_array_equal(X, hidden(model, inputs))


def test_a_harvest_killed_between_saves_resumes_from_the_last_save(tmp_path):
    model, inputs = mlp(), batches(n=6)
    path = tmp_path / "a.npy"
    harvest_interrupted(model, inputs, path, after=3)
    # A kill leaves rows past the record unsaved; the record says 3 batches,
    # so rewind it to 2 as if the last save came one batch earlier.
    record = tmp_path / "a.npy.partial.json"
    text = record.read_text().replace('"rows": 96', '"rows": 64')
    record.write_text(text.replace('"batches": 3', '"batches": 2'))
    X = harvest(model, "1", inputs, path)
    np.testing.assert_array_equal(X, hidden(model, inputs))


def test_resuming_with_another_model_or_other_inputs_is_refused(tmp_path):
    model, inputs = mlp(), batches(n=6)
    path = tmp_path / "a.npy"
    harvest_interrupted(model, inputs, path, after=3)
    with pytest.raises(ValueError, match="refusing to resume"):
        harvest(model, "1", batches(n=6, seed=2), path)
    with torch.no_grad():
        model[0].weight.add_(0.1)
    with pytest.raises(ValueError, match="refusing to resume"):
        harvest(model, "1", inputs, path)
    with pytest.raises(ValueError, match=r"was of .*'layer': '1'"):
        harvest(model, "0", inputs, path)
    assert not path.exists()


def test_a_partial_file_without_its_record_is_not_resumed(tmp_path):
    (tmp_path / "a.npy.partial").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="no readable progress record"):
        harvest(mlp(), "1", batches(), tmp_path / "a.npy")
    assert (tmp_path / "a.npy.partial").read_bytes() == b"not ours"


# ------------------------------------------------------------ bad arguments


def test_an_existing_file_is_never_overwritten_and_the_model_never_runs(tmp_path):
    path = tmp_path / "a.npy"
    path.write_bytes(b"precious")
    model = mlp()
    calls = Calls(model)
    with pytest.raises(FileExistsError, match="never overwrites"):
        harvest(model, "1", batches(), path)
    assert path.read_bytes() == b"precious" and calls.n == 0


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"layer": "layer.1"}, ValueError, "not a submodule"),
        ({"capture": "grad"}, ValueError, "capture must be"),
        ({"max_rows": 0}, ValueError, "max_rows must be"),
        ({"dtype": "int8"}, ValueError, "dtype must be"),
        ({"mask": 3}, TypeError, "mask must be"),
        ({"path": "/nonexistent/folder/a.npy"}, ValueError, "cannot be written"),
    ],
)
def test_bad_arguments_are_named_before_the_model_runs(
    tmp_path, arguments, error, message
):
    model = mlp()
    calls = Calls(model)
    kwargs = {"layer": "1", "path": tmp_path / "a.npy"} | arguments
    with pytest.raises(error, match=message):
        harvest(model, inputs=batches(), **kwargs)
    assert calls.n == 0


def test_a_misspelt_layer_gets_close_names():
    with pytest.raises(ValueError, match=r"Close names: \['layers.0'"):
        harvest(transformer(), "layers0", [], "unused.npy")


def test_activations_that_are_not_finite_are_an_error(tmp_path):
    model = mlp()
    inputs = batches(3)
    inputs[1][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity"):
        harvest(model, "1", inputs, tmp_path / "a.npy")
    assert not (tmp_path / "a.npy").exists()


def test_inputs_without_rows_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        harvest(mlp(), "1", [], tmp_path / "a.npy")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- fit


def test_ksparse_fits_the_harvested_file_streamed(tmp_path):
    model, inputs = mlp(), batches(n=16)
    X = harvest(model, "1", inputs, tmp_path / "a.npy")
    sae = KSparseAutoencoder(32, k=3, max_iter=3, batch_size=64, random_state=0)
    sae.fit(X)
    codes = sae.transform(X)
    assert np.count_nonzero(codes, axis=1).max() == 3
    assert sae.score(X) > 0.5
