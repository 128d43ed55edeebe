"""Which network should be the default? Accuracy and CPU time of candidate architectures.

Each candidate is trained with otherwise default settings on the hardest normal classes of one-class
MNIST (the protocol of :mod:`benchmarks.one_class`) and scored with the default score. Reported: ROC AUC
per class, its mean, the mean training seconds and the scoring seconds for the 5,000 evaluation images.

Usage::

    python -m benchmarks.architecture [--data-dir DIR] [--digits 2 3 8] [--seed 0] [--out FILE.json]
        [--markdown FILE.md]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ._data import load_mnist
from ._provenance import benchmark_parser, describe_run, write_results
from ._tables import evaluation

CANDIDATES = {
    "base 16, 3 stages": {"base_channels": 16, "n_stages": 3},
    "base 32, 2 stages": {"base_channels": 32, "n_stages": 2},
    "base 32, 3 stages (default)": {"base_channels": 32, "n_stages": 3},
    "base 32, 3 stages, no residual": {"base_channels": 32, "n_stages": 3, "residual": False},
    "base 64, 3 stages": {"base_channels": 64, "n_stages": 3},
}


def run(images, labels, digits, seed: int, candidates=CANDIDATES, log=print) -> dict:
    from vaedetect import VAEDetector

    pool, pool_labels, test, test_labels = images[:5000], labels[:5000], images[5000:], labels[5000:]
    results = {}
    for name, params in candidates.items():
        rows = []
        for digit in digits:
            started = time.perf_counter()
            detector = VAEDetector(random_state=seed, **params).fit(pool[pool_labels == digit])
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            scores = detector.score_samples(test)
            rows.append(evaluation(test_labels != digit, scores, digit=digit, fit_seconds=fit_seconds,
                                   score_seconds=time.perf_counter() - started))
            log(f"{name}, digit {digit}: ROC AUC {rows[-1]['roc_auc']:.3f} in {fit_seconds:.0f} s")
        results[name] = {"params": params, "runs": rows}
    return results


def markdown(results: dict) -> str:
    digits = [r["digit"] for r in next(iter(results.values()))["runs"]]
    lines = ["| network | " + " | ".join(f"digit {d}" for d in digits) + " | mean | fit s | score s |",
             "|---|" + "---|" * (len(digits) + 3)]
    for name, entry in results.items():
        runs = entry["runs"]
        lines.append(f"| {name} | " + " | ".join(f"{r['roc_auc']:.3f}" for r in runs)
                     + f" | {np.mean([r['roc_auc'] for r in runs]):.3f}"
                     + f" | {np.mean([r['fit_seconds'] for r in runs]):.0f}"
                     + f" | {np.mean([r['score_seconds'] for r in runs]):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "mnist/")
    parser.add_argument("--digits", type=int, nargs="+", default=[2, 3, 8])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        images, labels = load_mnist(args.data_dir)
    except FileNotFoundError as error:
        print(f"skipped: {error}", file=sys.stderr)
        return 0
    results = run(images, labels, args.digits, args.seed)
    table = markdown(results)
    print(table)
    saved = {**describe_run("python -m benchmarks.architecture", argv), "results": results}
    write_results(saved, args.out, args.markdown, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
