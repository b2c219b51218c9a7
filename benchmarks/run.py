"""skae's benchmark suite: ``python benchmarks/run.py --quick|--full``.

Sections, each measured side by side with its baselines in one run, medians
over repeats:

* ``frontier``   reconstruction error against L0 for KSparse, L1 and KL vs
  PCA and MiniBatchDictionaryLearning + OMP (image patches, synthetic data);
* ``time``       time to reach a stated explained variance, skae vs
  MiniBatchDictionaryLearning;
* ``defaults``   time to quality of KSparseAutoencoder's defaults (each
  encoder, BatchTopK) vs MiniBatchDictionaryLearning + OMP and, when
  installed, ``overcomplete``'s SAEs; dictionary recovery at the defaults;
* ``recovery``   dictionary recovery on synthetic data with known atoms;
* ``anomaly``    novelty-detection ROC AUC of SparseAutoencoderOutlierDetector
  vs IsolationForest, PCA reconstruction error and LocalOutlierFactor
  (digits, breast cancer);
* ``variants``   BatchTopK, matching pursuit and Matryoshka dictionaries
  beside the plain top-k and MiniBatchDictionaryLearning + OMP;
* ``precision``  held-out error of every estimator with its products in
  float32 and in bfloat16 (``precision='bfloat16'``);
* ``throughput`` training rows/s and its fraction of the machine's bound;
* ``transform``  transform rows/s vs PCA.transform and OMP;
* ``kernels``    the CPU choices of the top-k kernels (rows per chunk of the
  encoder's product, the decoder's weight gradient), side by side;
* ``memory``     peak RSS of a streamed memmap fit vs an in-RAM fit;
* ``gpu``        the CUDA section (skipped without a GPU).

Every section writes ``benchmarks/results/<section>.md`` and ``.json`` (and
PNG plots where it draws any); ``summary.md`` gathers the tables. ``--only``
runs some sections.
"""

from __future__ import annotations

import argparse
import time
import warnings

from _common import RESULTS, write_results
from bench_defaults import defaults
from sklearn.exceptions import ConvergenceWarning
from suite_precision import precision
from suite_quality import anomaly, frontier, recovery, time_to_quality
from suite_speed import gpu, kernels, memory, throughput, transform_speed
from suite_variants import variants

SECTIONS = {
    "frontier": frontier,
    "time": time_to_quality,
    "defaults": defaults,
    "recovery": recovery,
    "anomaly": anomaly,
    "variants": variants,
    "precision": precision,
    "throughput": throughput,
    "transform": transform_speed,
    "kernels": kernels,
    "memory": memory,
    "gpu": gpu,
}


def main() -> None:
    # Every section trains the epochs it states.
    warnings.simplefilter("ignore", ConvergenceWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (default)")
    size.add_argument("--full", action="store_true", help="the sizes quoted in notes")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=None)
    args = parser.parse_args()
    quick = not args.full
    reports = []
    for name in args.only or list(SECTIONS):
        start = time.perf_counter()
        report, data = SECTIONS[name](quick=quick)
        seconds = time.perf_counter() - start
        report = (
            f"## {name} ({'quick' if quick else 'full'}, {seconds:.0f} s)\n\n{report}"
        )
        write_results(name, report, data)
        reports.append(report)
    (RESULTS / "summary.md").write_text("\n\n".join(reports) + "\n")
    print(f"\nwrote {RESULTS / 'summary.md'}")


if __name__ == "__main__":
    main()
