"""The ``skae`` command."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

TRANSFORM_CHUNK_BYTES = 32 * 2**20
#: Folds of the demo's cross-validation: each refits the whole pipeline.
CV_FOLDS = 3


def _codes_l0(codes: np.ndarray) -> float:
    return float((codes != 0).sum(axis=1).mean())


def _explained_variance(X: np.ndarray, reconstruction: np.ndarray) -> float:
    return 1.0 - ((X - reconstruction) ** 2).sum() / ((X - X.mean(axis=0)) ** 2).sum()


def run_demo(
    random_state: int = 0, verbose: int = 0, report: Callable | None = None
) -> list[dict]:
    """Compare PCA and KSparseAutoencoder features on the digits data.

    Each model is fit on the 1797 8×8 digit images (scaled to [0, 1]); its
    codes feed KMeans (adjusted Rand index against the true digits) and a
    LogisticRegression (3-fold accuracy of the whole pipeline). Raw pixels are
    the reference row.

    Parameters
    ----------
    random_state : int, default=0
        Seed of every model.
    verbose : int, default=0
        Progress bars while the autoencoder trains.
    report : callable, default=None
        Called with each method's name before it runs, and with its row
        when it is done: ``report(name, None)``, then ``report(name, row)``.

    Returns
    -------
    rows : list of dict
        One dict per method with keys ``method``, ``explained_variance``,
        ``mean_l0``, ``dead_latents``, ``kmeans_ari``, ``cv_accuracy`` and
        ``fit_seconds``.

    Examples
    --------
    >>> from skae.cli import run_demo
    >>> rows = run_demo()  # doctest: +SKIP
    """
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import FunctionTransformer

    from skae import KSparseAutoencoder

    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    models = {
        "raw pixels": FunctionTransformer(),
        "PCA(16)": PCA(n_components=16, random_state=random_state),
        "KSparse(128, k=16)": KSparseAutoencoder(
            n_components=128, k=16, random_state=random_state, verbose=verbose
        ),
    }
    rows = []
    # The demo trains the default 100 epochs on purpose: no warning that the
    # loss was still improving.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, model in models.items():
            if report is not None:
                report(name, None)
            rows.append(_demo_row(name, model, X, y, random_state))
            if report is not None:
                report(name, rows[-1])
    return rows


def _demo(args) -> None:
    start = time.perf_counter()
    print(
        "skae demo: the digits (1797 x 64) coded by each method, into KMeans(10) "
        "and a cross-validated LogisticRegression",
        flush=True,
    )

    def report(name: str, row: dict | None) -> None:
        if row is None:
            print(f"  {name}: fit, cluster, cross-validate ...", end="", flush=True)
        else:
            print(f" {time.perf_counter() - began[0]:.1f} s", flush=True)
        began[0] = time.perf_counter()

    began = [start]
    rows = run_demo(args.random_state, args.verbose, report)
    print()
    print(format_table(rows))
    print(f"total {time.perf_counter() - start:.1f} s")
    print(
        "next: fit your own data with 'skae fit X.npy -p k=16 -o model.skae' "
        "(skae fit --help), or see the gallery of examples in the documentation"
    )


def _demo_row(name, model, X, y, random_state) -> dict:
    """One row of :func:`run_demo`: ``model`` fit on X and judged."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    start = time.perf_counter()
    codes = model.fit_transform(X)
    fit_seconds = time.perf_counter() - start
    reconstruction = model.inverse_transform(codes)
    dead = getattr(model, "activation_frequency_", None)
    labels = KMeans(n_clusters=10, n_init=10, random_state=random_state).fit_predict(
        codes
    )
    classifier = make_pipeline(model, LogisticRegression(max_iter=2000))
    return {
        "method": name,
        "explained_variance": _explained_variance(X, reconstruction),
        "mean_l0": _codes_l0(codes),
        "dead_latents": None if dead is None else int((dead == 0).sum()),
        "kmeans_ari": adjusted_rand_score(y, labels),
        "cv_accuracy": cross_val_score(classifier, X, y, cv=CV_FOLDS).mean(),
        "fit_seconds": fit_seconds,
    }


def format_table(rows: list[dict]) -> str:
    """Render demo rows as an aligned text table.

    Parameters
    ----------
    rows : list of dict
        Rows as returned by :func:`run_demo`.

    Returns
    -------
    table : str
        A header, a rule and one line per row.

    Examples
    --------
    >>> from skae.cli import format_table
    >>> row = dict(method="PCA(2)", explained_variance=0.5, mean_l0=2.0,
    ...            dead_latents=None, kmeans_ari=0.25, cv_accuracy=0.75,
    ...            fit_seconds=0.01)
    >>> print(format_table([row]).splitlines()[2])
    PCA(2)      0.500      2.0     -       0.250       0.750   0.01
    """
    header = [
        "method",
        "expl. var",
        "mean L0",
        "dead",
        "KMeans ARI",
        f"{CV_FOLDS}-fold acc",
        "fit s",
    ]
    lines = [header]
    for row in rows:
        dead = "-" if row["dead_latents"] is None else str(row["dead_latents"])
        lines.append(
            [
                row["method"],
                f"{row['explained_variance']:.3f}",
                f"{row['mean_l0']:.1f}",
                dead,
                f"{row['kmeans_ari']:.3f}",
                f"{row['cv_accuracy']:.3f}",
                f"{row['fit_seconds']:.2f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


MODELS = {
    "ksparse": "KSparseAutoencoder",
    "l1": "L1SparseAutoencoder",
    "l2": "L2SparseAutoencoder",
    "kl": "KLSparseAutoencoder",
    "stacked": "StackedSparseAutoencoder",
    "conv": "ConvSparseAutoencoder",
    "jumprelu": "JumpReLUSparseAutoencoder",
}


class CommandError(Exception):
    """A problem to report on one line, exiting with status 1."""


def load_data(path: str):
    """Rows of a .npy (memory-mapped), .npz (its only array), .csv or .parquet file.

    Parameters
    ----------
    path : str
        The file. A CSV may have one header line of column names; if its
        first name is empty, as in what ``pandas.DataFrame.to_csv`` writes by
        default, that first column is the row index and is dropped. Every
        row must have one cell under each name of the header: a CSV whose
        rows are wider or narrower than it raises an error.

    Returns
    -------
    X : ndarray, numpy.memmap or pandas.DataFrame of shape (n_samples, n_features)
        A DataFrame (whose column names the model keeps as
        ``feature_names_in_``) for a CSV with a header, read with pandas when
        it is installed, and for a .parquet file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from skae.cli import load_data
    >>> path = os.path.join(tempfile.mkdtemp(), "X.npy")
    >>> np.save(path, np.ones((3, 2)))
    >>> load_data(path).shape
    (3, 2)
    """
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"no such file: {path}")
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(file, mmap_mode="r")
        if suffix == ".npz":
            with np.load(file) as archive:
                if len(archive.files) != 1:
                    raise CommandError(
                        f"{path} holds {len(archive.files)} arrays "
                        f"({', '.join(archive.files)}); save exactly one"
                    )
                return archive[archive.files[0]]
        if suffix == ".csv":
            return _load_csv(file)
        if suffix == ".parquet":
            return _numeric(_pandas(".parquet", "pandas pyarrow").read_parquet(file))
    except (OSError, ValueError, MemoryError) as exc:
        raise CommandError(f"cannot read {path}: {str(exc).strip()}") from exc
    raise CommandError(
        f"{path}: unknown file type {suffix or '(none)'}; "
        "use .npy, .npz, .csv or .parquet"
    )


def _pandas(what: str, packages: str):
    try:
        import pandas as pd
    except ImportError:
        raise CommandError(
            f"{what} files need {packages}: pip install {packages}"
        ) from None
    return pd


def _load_csv(file: Path):
    """A headerless CSV as an array; one with a header as a DataFrame (an
    array without pandas), its index column dropped. Every row must have as
    many cells as the header names: a wider row is refused, never cut."""
    with open(file, newline="") as handle:
        lines = csv.reader(line for line in handle if line.strip())
        header = next(lines, None)
        rows = next(lines, None) is not None
    if header is None:
        raise ValueError("it is empty")
    try:
        [float(cell) for cell in header]
    except ValueError:
        pass
    else:
        return np.loadtxt(file, delimiter=",", ndmin=2)
    if not rows:
        raise ValueError("it has a header and no rows")
    index = header[0].strip() == ""  # pandas' to_csv and R's row names
    try:
        import pandas as pd
    except ImportError:
        # Row names, quoted as R writes them, are never parsed as numbers.
        names = {0: lambda cell: 0.0} if index else None
        try:
            data = np.loadtxt(
                file, delimiter=",", skiprows=1, ndmin=2, converters=names
            )
        except ValueError as exc:  # numpy's advice (usecols) is not the user's
            raise ValueError(str(exc).partition("; use `usecols`")[0]) from None
        return _as_wide_as(header, data)[:, 1 if index else 0 :]
    # Read without the header, so that pandas never takes the extra cells of
    # rows wider than it for row names.
    data = _as_wide_as(header, pd.read_csv(file, header=None, skiprows=1))
    data.columns = pd.read_csv(file, nrows=0, index_col=False).columns
    return _numeric(data.iloc[:, 1 if index else 0 :])


def _as_wide_as(header: list, data):
    """The data, after a check that its rows have a cell under each name."""
    if data.shape[1] != len(header):
        raise ValueError(
            f"the header names {len(header)} columns but the rows hold "
            f"{data.shape[1]} cells"
        )
    return data


def _numeric(frame):
    """The frame, after a check that every column holds numbers."""
    text = [str(name) for name, kind in frame.dtypes.items() if kind.kind not in "fiub"]
    if text:
        raise ValueError(f"columns that are not numbers: {', '.join(text[:5])}")
    return frame


def _parse_params(pairs: list[str]) -> dict:
    import ast

    params = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"-p {pair!r}: write NAME=VALUE, e.g. -p k=16")
        try:
            params[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[name] = text  # a bare string such as device=cpu
    return params


# What a bad parameter, bad data, a diverged fit, too little memory or a full
# disk raise; the command reports them on one line (TrainingDivergedError is a
# ValueError).
_REPORTED_ERRORS = (ValueError, TypeError, MemoryError, OSError, ImportError)

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


@contextlib.contextmanager
def _reported(context: str = "") -> Iterator[None]:
    """Turn the errors of a step into a one-line :class:`CommandError`."""
    try:
        yield
    except _REPORTED_ERRORS as exc:
        lines = str(exc).strip().splitlines()
        message = lines[0] if lines else type(exc).__name__
        if isinstance(exc, MemoryError):
            message = f"out of memory: {message}"
        raise CommandError(f"{context}{message}") from exc


def check_output_file(output: str, inputs: list[str], overwrite: bool) -> None:
    """Refuse, before any work, an output that would lose or overwrite a file.

    Parameters
    ----------
    output : str
        The file a command is to write.
    inputs : list of str
        The files it reads; the output may never be one of them, whatever
        name or link leads to it.
    overwrite : bool
        Whether an existing output (not an input) may be replaced.

    Raises
    ------
    CommandError
        If the output is an input, exists without ``overwrite``, or cannot be
        created in its folder.

    Examples
    --------
    >>> import os, tempfile
    >>> from skae.cli import check_output_file
    >>> path = os.path.join(tempfile.mkdtemp(), "codes.npy")
    >>> check_output_file(path, [], overwrite=False)
    >>> open(path, "wb").close()
    >>> check_output_file(path, [], overwrite=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skae.cli.CommandError: ...codes.npy exists; pass --overwrite to replace it or ...
    >>> check_output_file(path, [path], overwrite=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skae.cli.CommandError: the output ...codes.npy is the input ...
    """
    from skae._engine.files import check_writable_folder

    if os.path.exists(output):
        for path in inputs:
            # samefile sees hard links and symlinks, which resolved names miss.
            if os.path.exists(path) and os.path.samefile(output, path):
                raise CommandError(
                    f"the output {output} is the input {path}: it would be "
                    "overwritten while it is read; choose another name"
                )
    with _reported():
        check_writable_folder(output, "--output")
    if os.path.lexists(output) and not overwrite:
        raise CommandError(
            f"{output} exists; pass --overwrite to replace it or choose another name"
        )


def _fit(args) -> None:
    import skae

    estimator_class = getattr(skae, MODELS[args.model])
    params = _parse_params(args.param)
    unknown = sorted(set(params) - set(estimator_class().get_params()))
    if unknown:
        raise CommandError(
            f"{MODELS[args.model]} has no parameter {', '.join(unknown)}; see "
            f"help(skae.{MODELS[args.model]})"
        )
    check_output_file(args.output, [args.data], args.overwrite)
    as_pickle = Path(args.output).suffix.lower() in PICKLE_SUFFIXES
    if not as_pickle and os.path.lexists(args.output):
        # skae.save replaces only skae model files: say so now, not after
        # training.
        from skae._persistence import _is_model_file

        if not _is_model_file(args.output):
            raise CommandError(
                f"{args.output} exists and is not a skae model file, which skae "
                "fit never replaces; delete it or choose another name"
            )
    with _reported():
        watching = _watching(args.watch, args.tensorboard)
    with watching:
        X = load_data(args.data)
        estimator = estimator_class(**params | {"verbose": args.verbose})
        with _reported():
            estimator.fit(X)
    estimator.set_params(verbose=0)
    with _reported(f"cannot save {args.output}: "):
        if as_pickle:
            _dump_pickle(estimator, args.output)
        else:
            skae.save(estimator, args.output)
    print(
        f"fit {MODELS[args.model]} on {X.shape[0]} x {X.shape[1]} in "
        f"{estimator.n_iter_} epoch{'' if estimator.n_iter_ == 1 else 's'}; saved "
        f"to {args.output}"
    )


def _watching(every: int | None, tensorboard: str | None):
    """:func:`skae.monitor.watch` as ``--watch`` and ``--tensorboard`` ask,
    entered now so that a missing tensorboard fails before any work."""
    if every is None and tensorboard is None:
        return contextlib.nullcontext()
    from skae.monitor import watch

    receiver = _print_metrics if every is not None else None
    watching = watch(receiver, every=every or WATCH_STEPS, tensorboard=tensorboard)
    stack = contextlib.ExitStack()
    stack.enter_context(watching)
    return stack


#: Steps between reports of ``skae fit --tensorboard`` without ``--watch``.
WATCH_STEPS = 100


def _print_metrics(metrics) -> None:
    print(
        f"step {metrics.step} (epoch {metrics.epoch}): loss {metrics.loss:.4g}, "
        f"L0 {metrics.l0:.3g}, FVU {metrics.fvu:.4f}, "
        f"dead {100 * metrics.dead_fraction:.2f}%",
        file=sys.stderr,  # line-buffered: each report shows as it is made
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of steps >= 1"
        )
    return value


def _dump_pickle(estimator, path: str) -> None:
    import joblib

    from skae._engine.files import atomic_output

    with atomic_output(path) as file:
        joblib.dump(estimator, file)


def _load_model(path: str, allow_pickle: bool):
    """The estimator in a skae model file, or in a joblib/pickle file when
    ``allow_pickle``; never unpickles otherwise."""
    import skae
    from skae import BaseSparseAutoencoder
    from skae._engine.serialize import is_safetensors

    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    # By content, not by name: a pickle renamed .skae is still a pickle.
    if is_safetensors(path):
        with _reported():
            model = skae.load(path)
    elif allow_pickle:
        model = _load_pickle(path)
    else:
        raise CommandError(
            f"{path} is not a skae model file; if it is a joblib/pickle file you "
            "trust, pass --allow-pickle to load it (loading a pickle runs any "
            "code it holds)"
        )
    if not isinstance(model, BaseSparseAutoencoder):
        raise CommandError(
            f"{path} holds a {type(model).__name__}, not one of skae's "
            "autoencoders (KSparseAutoencoder, ...)"
        )
    if not hasattr(model, "module_"):
        raise CommandError(f"{path} holds an unfitted {type(model).__name__}")
    return model


def _load_pickle(path: str):
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise CommandError(f"{path} is not a joblib file that loads: {exc}") from exc


#: What ``skae transform`` writes, by the output's extension.
CODE_FORMATS = {
    ".npy": "a numpy array",
    ".npz": "a scipy.sparse CSR matrix (scipy.sparse.load_npz)",
    ".csv": "text, with a header of the codes' names",
    ".parquet": "a table with the codes' names (needs pandas and pyarrow)",
}


def _transform(args) -> None:
    from skae._engine.files import atomic_output

    suffix = Path(args.output).suffix.lower()
    if suffix not in CODE_FORMATS:
        raise CommandError(
            f"the output {args.output} must end in "
            f"{', '.join(CODE_FORMATS)}: its extension says how the codes are saved"
        )
    if suffix == ".parquet":
        _parquet_engine()
    check_output_file(args.output, [args.model, args.data], args.overwrite)
    model = _load_model(args.model, args.allow_pickle)
    X = load_data(args.data)
    if X.ndim != 2:
        raise CommandError(
            f"{args.data} holds a {X.ndim}-D array; expected 2-D rows x features"
        )
    writer = {
        ".npy": _write_npy,
        ".npz": _write_npz,
        ".csv": _write_csv,
        ".parquet": _write_parquet,
    }[suffix]
    # Whatever stops it, Ctrl-C included, leaves no half-written codes and
    # any previous file of that name as it was.
    with _reported(), atomic_output(args.output) as file:
        shape = writer(model, _code_chunks(model, X, args.verbose), file)
    print(f"codes {shape[0]} x {shape[1]} saved to {args.output}")


def _parquet_engine() -> None:
    _pandas(".parquet", "pandas pyarrow")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        try:
            import fastparquet  # noqa: F401
        except ImportError:
            raise CommandError(
                ".parquet files need pyarrow: pip install pyarrow"
            ) from None


def _code_chunks(model, X, verbose: int) -> Iterator[tuple[int, object]]:
    """``model.transform(X)`` as (row count, codes) by chunks of about 32 MiB
    of input, so a memory-mapped file of any size streams through; codes
    are dense arrays or, with ``sparse_output``, CSR matrices."""
    from tqdm.auto import tqdm

    n_rows, n_features = X.shape
    chunk_rows = max(256, TRANSFORM_CHUNK_BYTES // max(1, 8 * n_features))
    rows = X.iloc if hasattr(X, "iloc") else X
    with tqdm(total=n_rows, unit="row", desc="transform", disable=not verbose) as bar:
        for start in range(0, max(n_rows, 1), chunk_rows):
            codes = model.transform(rows[start : start + chunk_rows])
            yield n_rows, codes
            bar.update(codes.shape[0])


def _dense(codes) -> np.ndarray:
    return codes.toarray() if hasattr(codes, "toarray") else np.asarray(codes)


def _write_npy(model, chunks, file: BinaryIO) -> tuple[int, int]:
    """The codes as a .npy, each chunk written into a memory-mapped file."""
    array = shape = None
    start = 0
    try:
        for n_rows, codes in chunks:
            if array is None:
                shape = (n_rows, codes.shape[1])
                array = _npy_memmap(file, codes.dtype, shape)
            array[start : start + codes.shape[0]] = _dense(codes)
            start += codes.shape[0]
        array.flush()  # _code_chunks gives one chunk at least
    finally:
        del array  # unmapped before the file is renamed or removed
    return shape


def _write_npz(model, chunks, file: BinaryIO) -> tuple[int, int]:
    """The codes as a scipy.sparse CSR matrix in a .npz."""
    import scipy.sparse

    parts = [scipy.sparse.csr_matrix(codes) for _, codes in chunks]
    codes = scipy.sparse.vstack(parts, format="csr")
    scipy.sparse.save_npz(file, codes)
    return codes.shape


def _write_csv(model, chunks, file: BinaryIO) -> tuple[int, int]:
    """The codes as CSV text under a header of their names, chunk by chunk."""
    names = model.get_feature_names_out()
    file.write((",".join(names) + "\n").encode())
    written = 0
    for _, codes in chunks:
        dense = _dense(codes)
        # Enough digits that the numbers read back exactly.
        digits = 9 if dense.dtype == np.float32 else 17
        np.savetxt(file, dense, delimiter=",", fmt=f"%.{digits}g")
        written += len(dense)
    return written, len(names)


def _write_parquet(model, chunks, file: BinaryIO) -> tuple[int, int]:
    """The codes as a table whose columns are named like the codes."""
    import pandas as pd

    names = model.get_feature_names_out()
    parts = [_dense(codes) for _, codes in chunks]
    frame = pd.DataFrame(np.concatenate(parts), columns=names)
    frame.to_parquet(file)
    return frame.shape


def _npy_memmap(file: BinaryIO, dtype: np.dtype, shape: tuple[int, int]):
    """A .npy header in ``file``, then its data memory-mapped for writing."""
    from numpy.lib import format as npy

    header = {
        "descr": npy.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": shape,
    }
    npy.write_array_header_1_0(file, header)
    file.flush()
    # r+ grows the file to hold the data (numpy writes its last byte).
    return np.memmap(file, dtype=dtype, mode="r+", offset=file.tell(), shape=shape)


def _info(args) -> None:
    model = _load_model(args.model, args.allow_pickle)
    frequency = model.activation_frequency_
    lines = [
        f"{type(model).__name__}: {model.n_features_in_} features -> "
        f"{model.components_.shape[0]} latents",
        f"epochs: {model.n_iter_}",
    ]
    if model.loss_curve_:
        lines.append(
            f"training loss: first {model.loss_curve_[0]:.4g}, "
            f"last {model.loss_curve_[-1]:.4g}"
        )
    if hasattr(model, "validation_scores_"):
        lines.append(
            f"best validation explained variance: {model.best_validation_score_:.4f}"
        )
    lines += [
        f"mean L0 (active latents per training row): {frequency.sum():.2f}",
        f"dead latents: {int((frequency == 0).sum())} of {frequency.size}",
        "parameters:",
        *[
            f"  {name} = {value!r}"
            for name, value in sorted(model.get_params().items())
        ],
    ]
    print("\n".join(lines))


def _add_overwrite(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output if it exists (an input is never replaced)",
    )


def _add_allow_pickle(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load MODEL with joblib if it is not a skae model file; only for "
        "files you trust: loading a pickle runs any code it holds",
    )


DATA_HELP = (
    ".npy (memory-mapped, so larger than memory is fine), .npz (one array), "
    ".csv (an optional header of column names; an unnamed first column, as "
    "pandas writes, is the row index) or .parquet"
)


def _parser() -> argparse.ArgumentParser:
    """The ``skae`` command line: its subcommands and their arguments.

    Building it imports neither torch nor scikit-learn, so ``--help`` and
    ``--version`` answer at once."""
    from skae import __version__

    parser = argparse.ArgumentParser(
        prog="skae",
        description="Sparse autoencoders as scikit-learn estimators.",
        epilog="Run 'skae COMMAND --help' for a command's options; the gallery "
        "and the user guide are in the documentation.",
    )
    parser.add_argument("--version", action="version", version=f"skae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="compare PCA and KSparseAutoencoder features on the digits data"
    )
    demo.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    demo.add_argument(
        "-v", "--verbose", action="count", default=0, help="progress bars"
    )
    fit = commands.add_parser(
        "fit",
        help="fit a model to .npy/.npz/.csv/.parquet data and save it",
        description="Fit an estimator to a data file and save the fitted model.",
        epilog="Example: skae fit X.npy --model ksparse -p n_components=256 "
        "-p k=16 -o model.skae",
    )
    fit.add_argument("data", help=f"training data: {DATA_HELP}")
    models = ", ".join(f"{key} ({name})" for key, name in MODELS.items())
    fit.add_argument(
        "--model",
        choices=list(MODELS),
        default="ksparse",
        metavar="MODEL",
        help=f"the estimator, at its defaults but for -p: {models}; default: ksparse",
    )
    fit.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an estimator parameter, as a Python literal or a bare string: "
        "-p n_components=256 -p k=32 -p device=cuda (repeatable); "
        "help(skae.KSparseAutoencoder) lists them and their defaults",
    )
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        help="where to save: a .skae file (safe, default) or .joblib (a pickle; "
        "also .pkl, .pickle)",
    )
    _add_overwrite(fit)
    fit.add_argument("-v", "--verbose", action="count", default=0, help="progress bar")
    fit.add_argument(
        "--watch",
        type=_positive_int,
        metavar="STEPS",
        help="print the loss, L0, FVU and dead share every STEPS optimizer steps "
        "(to stderr)",
    )
    fit.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write those figures as TensorBoard scalars, a new run under DIR "
        f"(needs the tensorboard package); every --watch steps, default {WATCH_STEPS}",
    )
    formats = "; ".join(f"{suffix}: {what}" for suffix, what in CODE_FORMATS.items())
    transform = commands.add_parser(
        "transform",
        help="encode data with a saved model",
        description="Encode a data file with a saved model and save the codes.",
    )
    transform.add_argument("model", help="a model saved by skae fit or skae.save")
    transform.add_argument("data", help=f"data to encode: {DATA_HELP}")
    transform.add_argument(
        "-o",
        "--output",
        required=True,
        help=f"where to save the codes, in the format its extension names: {formats}",
    )
    _add_overwrite(transform)
    _add_allow_pickle(transform)
    transform.add_argument(
        "-v", "--verbose", action="count", default=0, help="progress bar"
    )
    info = commands.add_parser("info", help="describe a saved model")
    info.add_argument("model", help="a model saved by skae fit or skae.save")
    _add_allow_pickle(info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``skae`` command; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments without the program name; ``sys.argv[1:]``
        when None.

    Returns
    -------
    code : int
        0 on success; 1 (with a one-line message on stderr) when a file, its
        data or a parameter is wrong, training fails or memory runs short, or
        the output would overwrite an input or an existing file, and when the
        reader of the output goes away (a closed pipe); usage errors exit
        with code 2. Warnings print as one line each on stderr.

    Notes
    -----
    ``skae fit`` saves with :func:`skae.save` (a safetensors file, by
    convention ``.skae``) unless the output ends in ``.joblib``, ``.pkl`` or
    ``.pickle``. ``skae transform`` and ``skae info`` load a model with
    :func:`skae.load`, which runs nothing from the file; a joblib or pickle
    file, which can run any code when loaded, is read only with
    ``--allow-pickle``. Outputs are checked before any work and written to a
    temporary that replaces the output only when complete.

    Examples
    --------
    >>> from skae.cli import main
    >>> main(["demo"])  # doctest: +SKIP
    """
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            _run(args)
    except CommandError as exc:
        print(f"skae {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (skae info m.skae | head): stop quietly, and
        # keep Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


def _run(args) -> None:
    if args.command == "demo":
        _demo(args)
    else:
        {"fit": _fit, "transform": _transform, "info": _info}[args.command](args)


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` that prints the first line of a warning's
    message, prefixed like the command's errors, and not where it came from."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        lines = str(message).strip().splitlines() or [category.__name__]
        print(f"skae {command}: warning: {lines[0]}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
