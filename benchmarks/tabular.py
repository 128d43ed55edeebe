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
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from ._tables import evaluation, log_means, markdown, summary  # noqa: F401 (re-exported for the runner)

QUICK_EPOCHS = 15  # the full run trains with the estimator's default


def load_adbench(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (X, y)}`` for every ``*.npz`` in ``folder`` (y = 1 anomaly); names without the number."""
    sets = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as data:
            sets[path.stem.split("_", 1)[-1]] = (data["X"].astype(np.float64), data["y"].astype(int))
    if not sets:
        raise FileNotFoundError(f"no ADBench .npz files in {folder}; pass --data-dir or set VAEDETECT_DATA.")
    return sets


def pca_detector(seed, standardise: bool = True):
    """PCA(0.9) reconstruction error, on standardised features unless ``standardise`` is False, as an
    estimator with ``score_samples``."""
    from sklearn.base import BaseEstimator
    from sklearn.decomposition import PCA

    class PCAReconstruction(BaseEstimator):
        def fit(self, X):
            self.scaler_ = StandardScaler(with_mean=standardise, with_std=standardise).fit(X)
            self.pca_ = PCA(n_components=0.9, random_state=seed).fit(self.scaler_.transform(X))
            return self

        def score_samples(self, X):
            Z = self.scaler_.transform(X)
            return -((Z - self.pca_.inverse_transform(self.pca_.transform(Z))) ** 2).sum(axis=1)

    return PCAReconstruction()


def knn_detector(standardise: bool = True, n_neighbors: int = 5):
    """Distance to the ``n_neighbors``-th nearest training row (PyOD's KNN default, "largest"), on
    standardised features unless ``standardise`` is False, as an estimator with ``score_samples``."""
    from sklearn.base import BaseEstimator
    from sklearn.neighbors import NearestNeighbors

    class KthNeighbour(BaseEstimator):
        def fit(self, X):
            self.scaler_ = StandardScaler(with_mean=standardise, with_std=standardise).fit(X)
            self.index_ = NearestNeighbors(n_neighbors=min(n_neighbors, len(X))).fit(self.scaler_.transform(X))
            return self

        def score_samples(self, X):
            return -self.index_.kneighbors(self.scaler_.transform(X))[0][:, -1]

    return KthNeighbour()


def peers(with_pyod: bool = True, standardise: bool = True) -> dict[str, callable]:
    """The other detectors, ``{name: make(seed) -> unfitted detector}``; deterministic ones ignore
    the seed. PCA and LOF see standardised features unless ``standardise`` is False (pixels, whose
    common scale carries meaning). PyOD's VAE joins when ``pyod`` is installed (extra ``bench``) and
    ``with_pyod``."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.pipeline import make_pipeline

    scaler = StandardScaler(with_mean=standardise, with_std=standardise)
    makers = {
        "isolation_forest": lambda seed: IsolationForest(random_state=seed),
        "pca": lambda seed: pca_detector(seed, standardise),
        "lof": lambda seed: make_pipeline(clone(scaler), LocalOutlierFactor(novelty=True)),
    }
    if with_pyod:
        try:
            from pyod.models.vae import VAE as PyODVAE

            makers["pyod_vae"] = lambda seed: _PyODScores(PyODVAE(random_state=seed, verbose=0))
        except ImportError:
            pass
    return makers


def methods(quick: bool) -> dict[str, callable]:
    """vaedetect and its peers, ``{name: make(seed) -> unfitted detector}``."""
    from vaedetect import VAEDetector

    settings = {"epochs": QUICK_EPOCHS} if quick else {}
    return {"vaedetect": lambda seed: VAEDetector(random_state=seed, **settings), **peers(),
            "knn": lambda seed: knn_detector()}


class _PyODScores:
    """PyOD's detectors score higher = more anomalous with ``decision_function``; flip it."""

    def __init__(self, model):
        self.model = model

    def fit(self, X):
        self.model.fit(X)
        return self

    def score_samples(self, X):
        return -self.model.decision_function(X)


# The reported sets: the four of adbench/ and the 17 of adbench_dev/ (../shared/data/README.md). Settings are
# chosen on adbench_dev/ and on toy tasks (benchmarks.tabular_selection), and reported on both alike.
FOLDERS = ("adbench", "adbench_dev")


def run(data_dir: Path, seeds: list[int], quick: bool, log=print) -> dict:
    """ROC AUC, average precision and seconds per ADBench data set and method, one entry per seed, on
    the sets of ``FOLDERS`` (``adbench/`` must be there; the others join where they are)."""
    sets = load_adbench(data_dir / FOLDERS[0])
    for folder in FOLDERS[1:]:
        if (data_dir / folder).is_dir():
            sets |= load_adbench(data_dir / folder)
    return evaluate(sets, methods(quick), seeds, log)


def evaluate(sets: dict, makers: dict, seeds: list[int], log=print, prefix: str = "tabular") -> dict:
    """The suite's protocol on ``sets`` (``{name: (X, y)}``, y = 1 anomaly) for the detectors
    ``makers`` (``{name: make(seed)}``): one entry per data set, one run per seed and method."""
    results = {}
    for name, (X, y) in sets.items():
        X_train, X_test, _, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        results[name] = {"n_train": len(X_train), "n_test": len(X_test), "anomaly_share": float(y.mean()),
                         "methods": {}}
        for method, make in makers.items():
            for seed in seeds:
                started = time.perf_counter()
                detector = make(seed).fit(X_train)
                fit_seconds = time.perf_counter() - started
                for column, (scores, score_seconds) in _scores(method, detector, X_test).items():
                    results[name]["methods"].setdefault(column, []).append(
                        evaluation(y_test, scores, seed=seed, fit_seconds=fit_seconds, score_seconds=score_seconds))
        log_means(f"{prefix} {name}", results[name], log)
    return results


# Other scores of the same fitted VAE, reported beside its default (the ELBO for tabular data).
VAE_ALTERNATIVES = ("reconstruction", "reconstruction_probability", "latent", "typicality")


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
