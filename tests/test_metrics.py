"""The scorers of vaedetect.metrics: labelled validation data ranks a detector's settings."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from vaedetect import VAEDetector
from vaedetect.metrics import anomaly_average_precision, anomaly_roc_auc

from .conftest import TINY


class FixedScores:
    """A fitted detector whose score of each sample is the sample itself."""

    def score_samples(self, X):
        return np.asarray(X, dtype=float).ravel()


def test_roc_auc_counts_anomalies_that_score_lower_as_ranked_right():
    scores = np.array([[5.0], [4.0], [1.0], [3.0]])  # the anomaly scoring 3 sits above the normal 1
    assert anomaly_roc_auc(FixedScores(), scores, [0, 0, 0, 1]) == pytest.approx(2 / 3)
    assert anomaly_roc_auc(FixedScores(), scores, [0, 0, 1, 1]) == pytest.approx(1.0)


def test_sklearn_outlier_labels_mean_the_same_as_ones_for_anomalies():
    scores = np.array([[5.0], [4.0], [1.0], [3.0]])
    assert anomaly_roc_auc(FixedScores(), scores, [1, 1, 1, -1]) == anomaly_roc_auc(FixedScores(), scores, [0, 0, 0, 1])


def test_average_precision_puts_anomalies_first():
    scores = np.array([[5.0], [4.0], [1.0], [3.0]])
    # ranked by anomaly: 1 (normal), 3 (anomaly): precision 1/2 at the only anomaly
    assert anomaly_average_precision(FixedScores(), scores, [0, 0, 0, 1]) == pytest.approx(0.5)


def test_labels_of_one_kind_are_refused_with_the_remedy():
    with pytest.raises(ValueError, match="all normal samples.*StratifiedKFold"):
        anomaly_roc_auc(FixedScores(), np.ones((3, 1)), [0, 0, 0])


def test_grid_search_ranks_settings_by_how_they_separate_labelled_anomalies():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(120, 4)) @ rng.normal(size=(4, 4))
    anomalies = rng.normal(loc=6.0, size=(12, 4))
    X, y = np.vstack([normal, anomalies]), np.r_[np.zeros(120), np.ones(12)]
    search = GridSearchCV(VAEDetector(**{**TINY, "epochs": 2}), {"latent_dim": [1, 2]}, scoring=anomaly_roc_auc,
                          cv=StratifiedKFold(2, shuffle=True, random_state=0)).fit(X, y)
    assert search.cv_results_["mean_test_score"].min() > 0.8  # far anomalies: every setting finds them
    assert search.best_score_ == search.cv_results_["mean_test_score"].max()
    assert anomaly_roc_auc(search.best_estimator_, X, y) > 0.9  # refitted on every row with the best setting
