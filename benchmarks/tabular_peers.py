"""Where vaedetect ranks among PyOD's detectors on the tabular suite's sets and splits.

The protocol of ``benchmarks.tabular`` (70/30 stratified split, ``random_state=0``, fit on the training part
without labels, ROC AUC and average precision on the test part) on every set of ``adbench/`` and
``adbench_dev/``, for ``VAEDetector`` with its defaults and PyOD's ECOD, COPOD, HBOS, KNN, LOF,
IsolationForest, OCSVM, CBLOF, MCD, PCA, AutoEncoder, VAE and DeepSVDD with theirs (the ``bench`` extra).
A detector that fails on a set is recorded with its error, and one whose fit would take too long here
(``TOO_COSTLY``: MCD above 500 features, OCSVM above 20,000 training rows) is recorded as skipped; each is
ranked without those sets. One seed: the ranking, not the spread, is the question here.

    python -m benchmarks.tabular_peers --out benchmarks/results/tabular_peers.json \
        --markdown docs/benchmarks/tabular_peers.md
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ._data import data_dir
from ._provenance import benchmark_parser, generated_by, run_benchmark
from ._tables import evaluation
from .tabular import FOLDERS, _PyODScores, load_adbench

PYOD = {"ecod": ("pyod.models.ecod", "ECOD"), "copod": ("pyod.models.copod", "COPOD"),
        "hbos": ("pyod.models.hbos", "HBOS"), "knn": ("pyod.models.knn", "KNN"), "lof": ("pyod.models.lof", "LOF"),
        "iforest": ("pyod.models.iforest", "IForest"), "ocsvm": ("pyod.models.ocsvm", "OCSVM"),
        "cblof": ("pyod.models.cblof", "CBLOF"), "mcd": ("pyod.models.mcd", "MCD"), "pca": ("pyod.models.pca", "PCA"),
        "autoencoder": ("pyod.models.auto_encoder", "AutoEncoder"), "vae": ("pyod.models.vae", "VAE"),
        "deepsvdd": ("pyod.models.deep_svdd", "DeepSVDD")}
SEEDED = ("iforest", "cblof", "mcd", "autoencoder", "vae", "deepsvdd")
# Fits whose cost grows too fast to run here, skipped and recorded as such: MCD's C-steps invert a d x d
# covariance many times (InternetAds' 1,555 features ran for over five minutes before it was stopped), and
# OCSVM's kernel is quadratic in the training rows.
TOO_COSTLY = {"pyod_mcd": lambda n, d: d > 500, "pyod_ocsvm": lambda n, d: n > 20_000}


def makers(seed: int, n_features: int) -> dict:
    """``{name: make() -> unfitted detector}``: vaedetect and PyOD's detectors with their defaults (DeepSVDD
    needs the number of features, which it has no default for)."""
    import importlib
    import inspect

    from vaedetect import VAEDetector

    out = {"vaedetect": lambda: VAEDetector(random_state=seed)}
    for name, (module, cls) in PYOD.items():
        detector = getattr(importlib.import_module(module), cls)
        parameters = inspect.signature(detector).parameters
        options = {"random_state": seed} if name in SEEDED and "random_state" in parameters else {}
        options |= {"verbose": 0} if "verbose" in parameters else {}
        options |= {"n_features": n_features} if "n_features" in parameters else {}
        out[f"pyod_{name}"] = lambda detector=detector, options=options: _PyODScores(detector(**options))
    return out


def run(args) -> dict:
    folder = data_dir(args.data_dir)
    sets = load_adbench(folder / FOLDERS[0])
    for name in FOLDERS[1:]:
        if (folder / name).is_dir():
            sets |= load_adbench(folder / name)
    sets = {name: data for name, data in sets.items() if not args.sets or name in args.sets}
    from sklearn.model_selection import train_test_split

    results = {}
    for name, (X, y) in sets.items():
        X_train, X_test, _, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        results[name] = {"n_train": len(X_train), "n_test": len(X_test), "n_features": int(X.shape[1]), "methods": {},
                         "errors": {}}
        for method, make in makers(args.seed, X.shape[1]).items():
            if TOO_COSTLY.get(method, lambda n, d: False)(*X_train.shape):
                results[name]["errors"][method] = (f"skipped: {X_train.shape[0]:,} training rows of {X_train.shape[1]:,} "
                                                   "features, beyond what it fits in minutes here")
                continue
            try:
                detector = make()
                started = time.perf_counter()
                detector.fit(X_train)
                fit_seconds = time.perf_counter() - started
                started = time.perf_counter()
                scores = detector.score_samples(X_test)
                score_seconds = time.perf_counter() - started
                if not np.isfinite(scores).all():
                    raise ValueError("non-finite scores")
            except Exception as error:  # a peer's failure on one set is a result, not the end of the run
                results[name]["errors"][method] = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                continue
            results[name]["methods"][method] = [evaluation(y_test, scores, seed=args.seed, fit_seconds=fit_seconds,
                                                           score_seconds=score_seconds)]
        print(name, {m: round(r[0]["roc_auc"], 3) for m, r in results[name]["methods"].items()},
              results[name]["errors"] or "", flush=True)
    return {"seed": args.seed, "sets": results}


def ranking(results: dict) -> list[dict]:
    """Per method: mean ROC AUC and average precision over the sets it ran on, the worst set, the mean rank
    (1 = best ROC AUC on a set, among the methods that ran on it), mean fit + score seconds, failures."""
    sets = results["sets"]
    methods = sorted({method for entry in sets.values() for method in [*entry["methods"], *entry["errors"]]})
    ranks = {method: [] for method in methods}
    for entry in sets.values():
        aucs = {method: runs[0]["roc_auc"] for method, runs in entry["methods"].items()}
        order = sorted(aucs, key=aucs.get, reverse=True)
        for method in aucs:
            ranks[method].append(1 + sum(aucs[other] > aucs[method] for other in order))
    rows = []
    for method in methods:
        ran = {name: entry["methods"][method][0] for name, entry in sets.items() if method in entry["methods"]}
        if not ran:
            continue
        worst = min(ran, key=lambda name: ran[name]["roc_auc"])
        rows.append({"method": method, "n_sets": len(ran), "failed": len(sets) - len(ran),
                     "roc_auc": float(np.mean([r["roc_auc"] for r in ran.values()])),
                     "average_precision": float(np.mean([r["average_precision"] for r in ran.values()])),
                     "worst_set": worst, "worst_roc_auc": ran[worst]["roc_auc"],
                     "mean_rank": float(np.mean(ranks[method])),
                     "seconds": float(np.mean([r["fit_seconds"] + r["score_seconds"] for r in ran.values()]))})
    return sorted(rows, key=lambda row: row["mean_rank"])


def markdown_page(results: dict) -> str:
    rows = ranking(results)
    lines = ["| rank | method | mean ROC AUC | mean average precision | worst set (ROC AUC) | mean rank | "
             "fit + score s per set | sets failed |", "|---|---|---|---|---|---|---|---|"]
    for position, row in enumerate(rows, 1):
        name = f"**{row['method']}**" if row["method"] == "vaedetect" else row["method"]
        lines.append(f"| {position} | {name} | {row['roc_auc']:.3f} | {row['average_precision']:.3f} | "
                     f"{row['worst_set']} ({row['worst_roc_auc']:.3f}) | {row['mean_rank']:.1f} | {row['seconds']:.1f} | "
                     f"{row['failed']} |")
    errors = [f"- `{method}` on {name}: {error}" for name, entry in results["sets"].items()
              for method, error in entry["errors"].items()]
    return (
        "# vaedetect among PyOD's detectors\n\n" + generated_by(results) + "\n\n"
        f"The {len(results['sets'])} sets of `adbench/` and `adbench_dev/` run, the tabular suite's 70/30 stratified "
        f"split (random_state=0), seed {results['seed']}; every detector with its defaults (`VAEDetector`'s "
        "were chosen on these sets: first on the 17 of `adbench_dev/` and toy tasks, since 2026-12-05 on all 21 by "
        "leaving each out in turn; PyOD's are its own). Mean over the "
        "sets each method ran on; the rank of a method on a set is 1 plus the number of methods with a higher ROC "
        "AUC there; methods are ordered by mean rank. MCD above 500 features and OCSVM above 20,000 training rows are "
        "skipped (their fits would take too long here); they and any failure are listed under the table and the "
        "method is ranked on the other sets.\n\n" + "\n".join(lines) + "\n"
        + ("\nSkipped and failed:\n\n" + "\n".join(errors) + "\n" if errors else "")
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "adbench/ and adbench_dev/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=None, help="only these data sets (default: all)")
    args = parser.parse_args(argv)
    return run_benchmark("tabular_peers", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
