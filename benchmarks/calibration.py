"""Do thresholds keep their false-positive rate on fresh normal data? Calibration splits compared.

For each normal digit of MNIST and each split setting, train ``VAEDetector`` (default settings otherwise)
on part of that digit's images and compare, on the rest of them (fresh normal data), the share flagged at a
target false-positive rate with what split-conformal theory predicts for calibration scores exchangeable
with new data: ``k / (n + 1)``, ``k = floor(fpr (n + 1))``, exactly ``fpr`` when ``fpr (n + 1)`` is an
integer. The ROC AUC against the other digits shows what holding out more data costs the ranking.

Two protocols: ``random`` draws the fresh images at random from all of the digit's images (60% to fit,
40% fresh), so they are exchangeable with the calibration split; ``halves`` is the one-class MNIST
protocol (fit on test images 0-4999, fresh = 5000-9999), whose halves were written by different people
(MNIST's documentation: the first 5,000 test images are cleaner and easier), a shift no calibration
can undo.

    python -m benchmarks.calibration --out benchmarks/results/calibration.json --markdown docs/benchmarks/calibration.md
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np

from ._data import load_mnist
from ._provenance import benchmark_parser, describe_run, generated_by, write_results
from ._tables import roc_auc_against

TARGETS = (0.01, 0.05, 0.1)
PROTOCOLS = {
    "random": "Each digit's images (about 1,000) are shuffled: 60% to fit, 40% fresh normal data, exchangeable\n"
              "with the calibration split.",
    "halves": "Fit on the digit among test images 0-4999, fresh normal data: the digit among images 5000-9999.\n"
              "MNIST's halves come from different writers (the first 5,000 are the cleaner, easier ones): fresh\n"
              "data that is *not* exchangeable with the training data, which no calibration split can correct.",
}


def expected_rate(fpr: float, n: int) -> float:
    """The mean false-positive rate of a split-conformal threshold from ``n`` exchangeable scores."""
    return math.floor(fpr * (n + 1) + 1e-9) / (n + 1)


def run_variance(fpr: float, n: int, m: int) -> float:
    """Variance of the share of ``m`` fresh normal samples flagged, over calibration sets of ``n``: the
    threshold's true rate is Beta(k, n + 1 - k) distributed, and the ``m`` samples add binomial error."""
    k = math.floor(fpr * (n + 1) + 1e-9)
    beta = k * (n + 1 - k) / ((n + 1) ** 2 * (n + 2))
    return beta + fpr * (1 - fpr) / m


def digit_split(digit: int, images, labels, protocol: str, seed: int, n_others: int):
    """``(fit, fresh, others)``: images of ``digit`` to fit on and fresh ones, and images of other digits."""
    rng = np.random.RandomState(seed)
    others = images[labels != digit]
    others = others[rng.permutation(len(others))[:n_others]]
    if protocol == "halves":
        first = np.arange(len(images)) < 5000
        return images[first & (labels == digit)], images[~first & (labels == digit)], others
    own = images[labels == digit][rng.permutation(int(np.sum(labels == digit)))]
    n_fit = int(round(0.6 * len(own)))
    return own[:n_fit], own[n_fit:], others


def run_split(digit: int, images, labels, protocol: str, seed: int, validation: float, calibration: float,
              n_others: int) -> dict:
    from vaedetect import VAEDetector
    from vaedetect.conformal import conformal_p_values

    fit, fresh, others = digit_split(digit, images, labels, protocol, seed, n_others)

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # calibration_fraction=0 announces the optimistic split
        detector = VAEDetector(random_state=seed, validation_fraction=validation,
                               calibration_fraction=calibration).fit(fit)
    fit_seconds = time.perf_counter() - started
    fresh_scores, other_scores = detector.score_samples(fresh), detector.score_samples(others)
    p_values = conformal_p_values(detector.calibration_.scores, fresh_scores)
    n, m = len(detector.calibration_.scores), len(fresh)
    return {
        "digit": digit,
        "validation_fraction": validation,
        "calibration_fraction": calibration,
        **{key: detector.training_summary_[key] for key in ("n_train", "n_validation", "n_calibration",
                                                            "calibrated_on", "epochs_run")},
        "n_fresh": m,
        "fit_seconds": fit_seconds,
        "roc_auc": roc_auc_against(fresh_scores, other_scores),
        "flagged": {str(fpr): float(np.mean(p_values <= fpr)) for fpr in TARGETS},
        "expected": {str(fpr): expected_rate(fpr, n) for fpr in TARGETS},
        "variance": {str(fpr): run_variance(fpr, n, m) for fpr in TARGETS},
    }


def summarise(runs: list[dict]) -> dict:
    """Per split setting: mean ROC AUC, and per target the mean share flagged, the mean predicted share,
    their difference and its standard error (runs are independent)."""
    settings = {}
    for run in runs:
        settings.setdefault((run["validation_fraction"], run["calibration_fraction"]), []).append(run)
    summary = []
    for (validation, calibration), group in settings.items():
        row = {"validation_fraction": validation, "calibration_fraction": calibration, "runs": len(group),
               "calibrated_on": group[0]["calibrated_on"],
               "n_calibration": float(np.mean([r["n_calibration"] for r in group])),
               "roc_auc": float(np.mean([r["roc_auc"] for r in group])),
               "fit_seconds": float(np.mean([r["fit_seconds"] for r in group]))}
        for fpr in map(str, TARGETS):
            flagged = float(np.mean([r["flagged"][fpr] for r in group]))
            expected = float(np.mean([r["expected"][fpr] for r in group]))
            error = math.sqrt(sum(r["variance"][fpr] for r in group)) / len(group)
            row[fpr] = {"flagged": flagged, "expected": expected, "excess": flagged - expected,
                        "standard_error": error}
        summary.append(row)
    return summary


def markdown(results: dict) -> str:
    lines = [
        "| validation / calibration | calibrated on | n calibration (mean) | ROC AUC | fit s | "
        + " | ".join(f"flagged at {fpr} (predicted)" for fpr in TARGETS) + " | "
        + " | ".join(f"excess at {fpr} (± s.e.)" for fpr in TARGETS) + " |",
        "|---|---|---|---|---|" + "---|" * (2 * len(TARGETS)),
    ]
    for row in results["summary"]:
        cells = [f"{row[str(f)]['flagged']:.4f} ({row[str(f)]['expected']:.4f})" for f in TARGETS]
        cells += [f"{row[str(f)]['excess']:+.4f} ± {row[str(f)]['standard_error']:.4f}" for f in TARGETS]
        lines.append(f"| {row['validation_fraction']} / {row['calibration_fraction']} | {row['calibrated_on']} | "
                     f"{row['n_calibration']:.0f} | {row['roc_auc']:.3f} | {row['fit_seconds']:.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_page(results: dict) -> str:
    return (
        "# Calibration: does the false-positive rate hold on fresh normal data?\n\n"
        + generated_by(results) + "\n\n"
        f"MNIST test split, digits {', '.join(str(d) for d in results['digits'])}, seed {results['seed']}, "
        f"protocol `{results['protocol']}`: "
        "`VAEDetector(validation_fraction=v, calibration_fraction=c)`, default settings otherwise (early\n"
        "stopping on). " + PROTOCOLS[results["protocol"]]
        + "\n*Flagged*: mean share of the fresh images with conformal p-value <= fpr;\n"
        "*predicted*: the mean of `k / (n + 1)`, `k = floor(fpr (n + 1))`, what split-conformal theory gives\n"
        "for calibration scores exchangeable with new data (a target out of reach of `n` scores is\n"
        "predicted 0); *excess* = flagged - predicted, with its standard error over the runs (each run's\n"
        "variance: Beta for the threshold plus binomial for the fresh digits). ROC AUC: the digit against\n"
        f"{results['n_others']} images of the other digits, `bits_typicality` (the default score).\n"
        "Setting `c = 0` calibrates on the validation split early stopping chose the epoch on (vaedetect\n"
        "before `calibration_fraction` existed).\n\n"
        + markdown(results) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "mnist/")
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="random",
                        help="random: fresh images drawn from the same pool; halves: fit 0-4999, fresh 5000-9999")
    parser.add_argument("--splits", nargs="+", default=["0.1:0.0", "0.1:0.1", "0.1:0.2"],
                        help="validation_fraction:calibration_fraction settings to compare")
    parser.add_argument("--n-others", type=int, default=2000, help="images of other digits for the ROC AUC")
    args = parser.parse_args(argv)
    try:
        images, labels = load_mnist(args.data_dir)
    except FileNotFoundError as error:
        print(f"skipped: {error}", file=sys.stderr)
        return 0
    splits = [tuple(float(v) for v in split.split(":")) for split in args.splits]
    results = {"benchmark": "calibration", **describe_run("python -m benchmarks.calibration", argv),
               "digits": args.digits, "seed": args.seed, "protocol": args.protocol, "n_others": args.n_others,
               "runs": []}
    for digit in args.digits:
        for validation, calibration in splits:
            run = run_split(digit, images, labels, args.protocol, args.seed, validation, calibration, args.n_others)
            results["runs"].append(run)
            print(f"digit {digit} {validation}/{calibration}: n_cal {run['n_calibration']}, AUC {run['roc_auc']:.3f}, "
                  f"flagged {run['flagged']} predicted {run['expected']} ({run['fit_seconds']:.0f}s)", flush=True)
    results["summary"] = summarise(results["runs"])
    print(markdown(results))
    write_results(results, args.out, args.markdown, markdown_page(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
