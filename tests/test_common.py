"""scikit-learn's own estimator checks on every skae estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

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

# Small models and few epochs: the checks fit hundreds of times on tiny data.
# Several checks force n_components=1, so k=1 keeps k <= n_components valid
# (sklearn's own suite sets such dependent parameters the same way).
ESTIMATORS = [
    KSparseAutoencoder(n_components=8, k=1, max_iter=5),
    # The top-k variants; a Matryoshka prefix of 1 fits any n_components.
    KSparseAutoencoder(n_components=8, k=1, k_mode="batch", max_iter=5),
    KSparseAutoencoder(n_components=8, k=1, encoder="mp", max_iter=5),
    KSparseAutoencoder(n_components=8, k=1, encoder="omp", max_iter=5),
    KSparseAutoencoder(n_components=8, k=1, matryoshka_sizes=(1,), max_iter=5),
    KSparseAutoencoder(n_components=8, k=1, sparse_output=True, max_iter=5),
    L1SparseAutoencoder(n_components=8, max_iter=5),
    L2SparseAutoencoder(n_components=8, max_iter=5),
    # Atoms in the relaxed hull of training rows.
    KSparseAutoencoder(n_components=8, k=1, dictionary="archetypal", max_iter=5),
    L1SparseAutoencoder(n_components=8, dictionary="archetypal", max_iter=5),
    # Products in bfloat16.
    KSparseAutoencoder(n_components=8, k=1, max_iter=5, precision="bfloat16"),
    L1SparseAutoencoder(n_components=8, max_iter=5, precision="bfloat16"),
    # The checks' rows vary by less than 1: at the default weight (1 per
    # active latent) no latent is worth its cost there, and a fit that ends
    # with every latent dead raises TrainingDivergedError.
    JumpReLUSparseAutoencoder(n_components=8, sparsity_weight=0.01, max_iter=5),
    KLSparseAutoencoder(n_components=8, max_iter=5),
    StackedSparseAutoencoder(hidden_layer_sizes=(8, 4), max_iter=3),
    StackedSparseAutoencoder(
        hidden_layer_sizes=(8, 4), sparsity="topk", k=(2, 1), max_iter=3
    ),
    # image_shape=None: the checks' rows become 1-D signals (or square images).
    # Seeded, in batches of 16: a few steps can leave every winner-take-all
    # map below its lifetime cut on the checks' sparse rows, and a fit with
    # every latent dead is an error (issue 15 revisits the conv defaults).
    ConvSparseAutoencoder(
        n_components=4, kernel_size=3, max_iter=3, batch_size=16, random_state=0
    ),
    ConvSparseAutoencoder(
        n_components=4,
        kernel_size=3,
        sparsity="kl",
        max_iter=3,
        batch_size=16,
        random_state=0,
    ),
]


# The checks fit a few steps on a few dozen rows, far from a trained model:
# that it then reconstructs worse than the mean is true, and not what they check.
@pytest.mark.filterwarnings("ignore:.*explained variance:RuntimeWarning")
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "estimator_class",
    sorted({type(e) for e in ESTIMATORS} | {SparseAutoencoderOutlierDetector}, key=str),
    ids=lambda cls: cls.__name__,
)
def test_every_parameter_is_documented(estimator_class):
    from numpydoc.docscrape import ClassDoc

    documented = {p.name for p in ClassDoc(estimator_class)["Parameters"]}
    assert set(estimator_class().get_params(deep=False)) <= documented
