"""Tabular suite: the ADBench data sets, vaedetect against scikit-learn's detectors on the same splits.

Protocol (``../shared/data/README.md``): a 70/30 stratified split (``random_state=0``); every method is
fit on the training part without labels and scored on the test part, where ROC AUC and average
precision are computed with the anomalies as the positive class. Methods that train with randomness
are run with each seed; scores are higher = more normal for every method, as ``score_samples``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


def load_adbench(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (X, y)}`` for every ``*.npz`` in ``folder`` (y = 1 anomaly); names without the number."""
    sets = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as data:
            sets[path.stem.split("_", 1)[-1]] = (data["X"].astype(np.float64), data["y"].astype(int))
    if not sets:
        raise FileNotFoundError(f"no ADBench .npz files in {folder}; pass --data-dir or set VAEDETECT_DATA.")
    return sets


def pca_detector(seed):
    """PCA reconstruction error on standardised features, as an estimator with ``score_samples``."""
    from sklearn.base import BaseEstimator
    from sklearn.decomposition import PCA

    class PCAReconstruction(BaseEstimator):
        def fit(self, X):
            self.scaler_ = StandardScaler().fit(X)
            self.pca_ = PCA(n_components=0.9, random_state=seed).fit(self.scaler_.transform(X))
            return self

        def score_samples(self, X):
            Z = self.scaler_.transform(X)
            return -((Z - self.pca_.inverse_transform(self.pca_.transform(Z))) ** 2).sum(axis=1)

    return PCAReconstruction()


def methods(quick: bool) -> dict[str, callable]:
    """``{name: make(seed) -> unfitted detector}``; deterministic methods ignore the seed."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.pipeline import make_pipeline

    from vaedetect import VAEDetector

    makers = {
        "vaedetect": lambda seed: VAEDetector(random_state=seed, epochs=30 if not quick else 15),
        "isolation_forest": lambda seed: IsolationForest(random_state=seed),
        "pca": pca_detector,
        "lof": lambda seed: make_pipeline(StandardScaler(), LocalOutlierFactor(novelty=True)),
    }
    try:
        from pyod.models.vae import VAE as PyODVAE

        makers["pyod_vae"] = lambda seed: _PyODScores(PyODVAE(random_state=seed, verbose=0))
    except ImportError:
        pass
    return makers


class _PyODScores:
    """PyOD's detectors score higher = more anomalous with ``decision_function``; flip it."""

    def __init__(self, model):
        self.model = model

    def fit(self, X):
        self.model.fit(X)
        return self

    def score_samples(self, X):
        return -self.model.decision_function(X)


def run(data_dir: Path, seeds: list[int], quick: bool, log=print) -> dict:
    """ROC AUC, average precision and seconds per data set and method, one entry per seed."""
    results = {}
    for name, (X, y) in load_adbench(data_dir / "adbench").items():
        X_train, X_test, _, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        results[name] = {"n_train": len(X_train), "n_test": len(X_test), "anomaly_share": float(y.mean()),
                         "methods": {}}
        for method, make in methods(quick).items():
            for seed in seeds:
                started = time.perf_counter()
                detector = make(seed).fit(X_train)
                fit_seconds = time.perf_counter() - started
                for column, (scores, score_seconds) in _scores(method, detector, X_test).items():
                    results[name]["methods"].setdefault(column, []).append({
                        "seed": seed, "roc_auc": float(roc_auc_score(y_test, -scores)),
                        "average_precision": float(average_precision_score(y_test, -scores)),
                        "fit_seconds": fit_seconds, "score_seconds": score_seconds})
        for column, runs in results[name]["methods"].items():
            aucs = [r["roc_auc"] for r in runs]
            log(f"tabular {name} {column}: ROC AUC {np.mean(aucs):.3f} ± {np.std(aucs):.3f}")
    return results


# Other scores of the same fitted VAE, reported beside its default (the ELBO for tabular data).
VAE_ALTERNATIVES = ("reconstruction", "latent", "typicality")


def _scores(method, detector, X) -> dict[str, tuple[np.ndarray, float]]:
    """``{column: (scores, seconds)}``: the detector's ``score_samples``, and for vaedetect also the
    alternative scores of the same network."""
    started = time.perf_counter()
    columns = {method: (detector.score_samples(X), time.perf_counter() - started)}
    if method == "vaedetect":
        for alternative in VAE_ALTERNATIVES:
            started = time.perf_counter()
            scores = detector.score_table(X, methods=[alternative])[alternative].to_numpy()
            columns[f"vaedetect_{alternative}"] = (scores, time.perf_counter() - started)
    return columns


def summary(results: dict) -> dict[str, dict[str, float]]:
    """Mean over seeds per data set and method, and the mean over data sets."""
    table = {}
    for name, entry in results.items():
        for method, runs in entry["methods"].items():
            row = table.setdefault(method, {})
            row[name] = float(np.mean([r["roc_auc"] for r in runs]))
    for row in table.values():
        row["mean"] = float(np.mean([row[name] for name in results]))
    return table


def markdown(results: dict) -> str:
    names = list(results)
    methods_ = list(next(iter(results.values()))["methods"])
    lines = [
        "| data set (n train / test, anomalies) | " + " | ".join(methods_) + " |",
        "|---|" + "---|" * len(methods_),
    ]
    for name in names:
        entry = results[name]
        cells = []
        for method in methods_:
            runs = entry["methods"][method]
            auc, ap = ([r[key] for r in runs] for key in ("roc_auc", "average_precision"))
            seconds = np.mean([r["fit_seconds"] + r["score_seconds"] for r in runs])
            spread = f" ± {np.std(auc):.3f}" if len(runs) > 1 and np.std(auc) >= 5e-4 else ""
            cells.append(f"{np.mean(auc):.3f}{spread} (AP {np.mean(ap):.3f}, {seconds:.1f} s)")
        lines.append(f"| {name} ({entry['n_train']} / {entry['n_test']}, {entry['anomaly_share']:.1%}) | "
                     + " | ".join(cells) + " |")
    means = summary(results)
    lines.append("| **mean ROC AUC** | " + " | ".join(f"**{means[m]['mean']:.3f}**" for m in methods_) + " |")
    return "\n".join(lines)
