"""skae.plotting: each Display renders with Agg and carries its artists."""

import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skae import (
    ConvSparseAutoencoder,
    KLSparseAutoencoder,
    KSparseAutoencoder,
    SparseAutoencoderOutlierDetector,
)
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
    assert f"{display.n_dead_} never fire" in display.ax_.get_title()
    assert "share of rows on which a latent fires" in display.ax_.get_xlabel()
    assert renders(ActivationFrequencyDisplay.from_estimator(fitted), tmp_path)


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install matplotlib"):
        LossCurveDisplay([1.0]).plot()


def test_dictionary_title_says_what_is_drawn_and_how_it_is_sorted(fitted):
    display = DictionaryDisplay.from_estimator(fitted, image_shape=(8, 8), n_atoms=9)
    title = display.ax_.get_title()
    assert (
        title == "KSparseAutoencoder: the 9 most active of 20 atoms, most active first"
    )
    every = DictionaryDisplay.from_estimator(fitted, image_shape=(8, 8))
    assert every.ax_.get_title().endswith(": 20 atoms, most active first")


def test_dictionary_tiles_get_a_figure_that_grows_with_them(fitted):
    atoms = np.random.RandomState(0).randn(144, 64)
    small = DictionaryDisplay(atoms[:9], image_shape=(8, 8)).plot()
    large = DictionaryDisplay(atoms, image_shape=(8, 8)).plot()
    assert small.figure_.get_size_inches()[0] == 4.0
    assert large.figure_.get_size_inches()[0] == pytest.approx(0.6 * 12 + 1)
    assert large.image_.get_array().shape == (12 * 9 + 1, 12 * 9 + 1)


def test_loss_curve_names_both_curves_and_marks_the_best_epoch(fitted):
    display = LossCurveDisplay.from_estimator(fitted)
    labels = [text.get_text() for text in display.legend_.get_texts()]
    best = int(np.argmax(fitted.validation_scores_)) + 1
    assert labels == [
        "training loss (left)",
        "validation explained variance (right)",
        f"best epoch ({best})",
    ]
    alone = LossCurveDisplay([1.0, 0.5]).plot()
    assert [t.get_text() for t in alone.legend_.get_texts()] == ["training loss (left)"]


def test_smooth_codes_are_drawn_as_mean_activations(digits):
    X, _ = digits
    kl = KLSparseAutoencoder(n_components=12, max_iter=2, random_state=0).fit(X)
    display = ActivationFrequencyDisplay.from_estimator(kl)
    assert display.statistic == "mean activation" and display.n_dead_ is None
    assert "mean activation" in display.ax_.get_xlabel()
    assert "never exactly off" in display.ax_.get_title()
    assert "dead" not in display.ax_.get_title()
    with pytest.raises(ValueError, match="statistic must be"):
        ActivationFrequencyDisplay([0.1], statistic="rate").plot()


@pytest.mark.parametrize(
    "display", [DictionaryDisplay, LossCurveDisplay, ActivationFrequencyDisplay]
)
def test_every_display_reads_a_pipeline_or_a_detector(fitted, digits, display):
    X, _ = digits
    pipeline = make_pipeline(StandardScaler(), fitted, PCA(2))
    pipeline.steps[1] = ("sae", fitted)  # fitted already; the others fit here
    pipeline[0].fit(X)
    from_pipeline = display.from_estimator(pipeline)
    from_model = display.from_estimator(fitted)
    assert from_pipeline.ax_.get_title() == from_model.ax_.get_title()
    detector = SparseAutoencoderOutlierDetector(
        KSparseAutoencoder(n_components=20, k=4, max_iter=1, random_state=0)
    ).fit(X)
    assert display.from_estimator(detector).ax_ is not None


def test_a_display_of_something_else_is_a_clear_error(digits):
    X, _ = digits
    with pytest.raises(TypeError, match="not a skae autoencoder, a Pipeline"):
        DictionaryDisplay.from_estimator(PCA(2).fit(X))
