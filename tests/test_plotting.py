"""skae.plotting: each Display renders with Agg and carries its artists."""

import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from skae import ConvSparseAutoencoder, KSparseAutoencoder
from skae.plotting import (
    ActivationFrequencyDisplay,
    DictionaryDisplay,
    LossCurveDisplay,
)


@pytest.fixture(scope="module")
def fitted(digits):
    X, _ = digits
    return KSparseAutoencoder(
        n_components=20, k=4, max_iter=8, early_stopping=True, random_state=0
    ).fit(X)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def renders(display, tmp_path):
    path = tmp_path / "plot.png"
    display.figure_.savefig(path)
    return path.stat().st_size > 1000


def test_dictionary_as_image_tiles(fitted, tmp_path):
    display = DictionaryDisplay.from_estimator(fitted, image_shape=(8, 8), n_atoms=9)
    mosaic = display.image_.get_array()
    assert mosaic.shape == (3 * 9 + 1, 3 * 9 + 1)  # 3 x 3 tiles, 1-pixel gaps
    most_active = np.argmax(fitted.activation_frequency_)
    tile = np.asarray(mosaic[1:9, 1:9])
    atom = fitted.components_[most_active].reshape(8, 8)
    np.testing.assert_allclose(tile, atom / np.abs(atom).max(), rtol=1e-5)
    assert renders(display, tmp_path)


def test_dictionary_as_heat_map_rows(fitted, tmp_path):
    _, ax = plt.subplots()
    display = DictionaryDisplay.from_estimator(fitted, ax=ax)
    assert display.ax_ is ax
    assert display.image_.get_array().shape == fitted.components_.shape
    assert renders(display, tmp_path)


def test_colour_filters_of_a_conv_model(tmp_path):
    X = np.random.RandomState(0).rand(40, 6 * 6 * 3)
    sae = ConvSparseAutoencoder((6, 6, 3), n_components=4, kernel_size=3, max_iter=2)
    display = DictionaryDisplay.from_estimator(sae.fit(X), image_shape=(3, 3, 3))
    assert display.image_.get_array().shape == (2 * 4 + 1, 2 * 4 + 1, 3)
    assert renders(display, tmp_path)


def test_loss_curve_with_validation(fitted, tmp_path):
    display = LossCurveDisplay.from_estimator(fitted)
    assert display.line_.get_ydata().tolist() == fitted.loss_curve_
    assert display.validation_line_.get_ydata().tolist() == fitted.validation_scores_
    assert renders(display, tmp_path)
    assert LossCurveDisplay([1.0, 0.5]).plot().validation_line_ is None


def test_activation_frequency_histogram(fitted, tmp_path):
    frequencies = np.r_[np.zeros(3), fitted.activation_frequency_]
    display = ActivationFrequencyDisplay(frequencies, bins=10).plot()
    assert display.n_dead_ == 3 + int((fitted.activation_frequency_ == 0).sum())
    heights = [bar.get_height() for bar in display.bars_]
    assert sum(heights) == len(frequencies) - display.n_dead_
    assert f"{display.n_dead_} dead" in display.ax_.get_title()
    assert renders(ActivationFrequencyDisplay.from_estimator(fitted), tmp_path)


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install matplotlib"):
        LossCurveDisplay([1.0]).plot()
