"""One-class MNIST: every VAEDetector score, default settings, against a PCA reconstruction-error baseline.

Protocol (``../shared/data/README.md``): images 0-4999 of the MNIST test split are the training pool,
of which only the normal digit is used; images 5000-9999 are the evaluation set, the normal digit
against all others. Reported: ROC AUC per normal digit for each method, and the same broken down by
the other digit (normal digit vs that digit alone), all from one run.

Usage::

    python -m benchmarks.mnist_one_class [--data-dir DIR] [--digits 2 8] [--seed 0] [--methods elbo regret]
        [--out FILE.json] [--markdown FILE.md]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from ._data import load_mnist
from ._provenance import benchmark_parser, describe_run, generated_by, write_results


def pca_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Negative squared reconstruction error under ``PCA(n_components=0.9)`` (higher = more normal)."""
    pca = PCA(n_components=0.9, random_state=0).fit(train)
    reconstruction = pca.inverse_transform(pca.transform(test))
    return -((test - reconstruction) ** 2).sum(axis=1)


def auc_by_other_digit(normal: int, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC of the normal digit against each other digit alone (anomaly = positive class)."""
    result = {}
    for other in range(10):
        if other == normal:
            continue
        keep = (labels == normal) | (labels == other)
        result[str(other)] = float(roc_auc_score(labels[keep] == other, -scores[keep]))
    return result


def run_digit(digit: int, images, labels, seed: int, methods: list[str]) -> dict:
    from vaedetect import VAEDetector

    pool, pool_labels = images[:5000], labels[:5000]
    test, test_labels = images[5000:], labels[5000:]
    train = pool[pool_labels == digit]
    is_anomaly = test_labels != digit

    started = time.perf_counter()
    detector = VAEDetector(random_state=seed).fit(train)
    fit_seconds = time.perf_counter() - started
    method_scores, score_seconds = {}, {}
    for method in methods:
        started = time.perf_counter()
        method_scores[method] = detector.score_table(test, methods=[method])[method].to_numpy()
        score_seconds[method] = time.perf_counter() - started

    flat_train = train.reshape(len(train), -1) / 255.0
    method_scores["pca"] = pca_scores(flat_train, test.reshape(len(test), -1) / 255.0)

    return {
        "digit": digit,
        "n_train": int(len(train)),
        "epochs_run": int(len(detector.history_)),
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "roc_auc": {m: float(roc_auc_score(is_anomaly, -s)) for m, s in method_scores.items()},
        "roc_auc_by_other_digit": {m: auc_by_other_digit(digit, test_labels, s) for m, s in method_scores.items()},
    }


def markdown(results: dict, focus: str = "elbo") -> str:
    methods = list(results["digits"][0]["roc_auc"])
    lines = [
        "| normal digit | n train | " + " | ".join(methods) + " | fit s |",
        "|---|---|" + "---|" * len(methods) + "---|",
    ]
    for row in results["digits"]:
        aucs = " | ".join(f"{row['roc_auc'][m]:.3f}" for m in methods)
        lines.append(f"| {row['digit']} | {row['n_train']} | {aucs} | {row['fit_seconds']:.0f} |")
    means = " | ".join(f"{np.mean([r['roc_auc'][m] for r in results['digits']]):.3f}" for m in methods)
    lines.append(f"| mean | | {means} | |")
    scored = [m for m in methods if m != "pca"]
    seconds = " | ".join(f"{np.mean([r['score_seconds'][m] for r in results['digits']]):.1f}" for m in scored)
    lines.append(f"| score s (5,000 images) | | {seconds} | | |")
    lines += ["", f"ROC AUC of the normal digit against each other digit alone ({focus} / pca):", ""]
    lines.append("| normal \\ other | " + " | ".join(str(d) for d in range(10)) + " |")
    lines.append("|---|" + "---|" * 10)
    for row in results["digits"]:
        cells = []
        for other in range(10):
            if other == row["digit"]:
                cells.append("-")
            else:
                by = row["roc_auc_by_other_digit"]
                cells.append(f"{by[focus][str(other)]:.2f} / {by['pca'][str(other)]:.2f}")
        lines.append(f"| {row['digit']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_page(results: dict) -> str:
    return (
        "# One-class MNIST: every VAEDetector score vs PCA reconstruction error\n\n"
        + generated_by(results) + "\n\n"
        "Train `VAEDetector(random_state=0)` (default settings) on one digit of MNIST test images 0-4999,\n"
        "evaluate on images 5000-9999 (that digit against all others); ROC AUC with the other digits as the\n"
        "positive class. Each VAE column is one score method of the same network (`score_table`); `pca` is\n"
        "`PCA(n_components=0.9)` reconstruction error. Score seconds are for the 5,000 evaluation images.\n\n"
        + markdown(results, results.get("focus", "elbo")) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "mnist/")
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=None,
                        help="score methods (default: all but regret, which costs ~40x the ELBO)")
    parser.add_argument("--focus", default="typicality", help="method broken down by other digit")
    args = parser.parse_args(argv)
    try:
        images, labels = load_mnist(args.data_dir)
    except FileNotFoundError as error:
        print(f"skipped: {error}", file=sys.stderr)
        return 0

    results = {
        "benchmark": "mnist_one_class",
        **describe_run("python -m benchmarks.mnist_one_class", argv),
        "focus": args.focus,
        "digits": [],
    }
    from vaedetect.registry import score_names

    methods = args.methods or [m for m in score_names() if m != "regret"]
    for digit in args.digits:
        row = run_digit(digit, images, labels, args.seed, methods)
        results["digits"].append(row)
        print(f"digit {digit}: " + ", ".join(f"{m} {a:.3f}" for m, a in row["roc_auc"].items())
              + f" (fit {row['fit_seconds']:.0f}s)", flush=True)
    print(markdown(results, args.focus))
    write_results(results, args.out, args.markdown, markdown_page(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
