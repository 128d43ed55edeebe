"""Scorers for choosing a detector's settings on labelled validation data.

scikit-learn's model selection (``GridSearchCV``, ``cross_val_score``, ``validation_curve``) ranks settings
by a scorer ``scorer(estimator, X, y)``, higher is better. An outlier detector has no ``score(X, y)``, and
``scoring="roc_auc"`` would read ``decision_function`` with scikit-learn's convention that larger means the
positive class, which for a detector is the *normal* one. These scorers take the labels the rest of
vaedetect takes (1 or True for an anomaly, or scikit-learn's -1 for an outlier and +1 for an inlier) and
rank by ``score_samples``, lower meaning more anomalous, so that no sign is left to get wrong.

Labels used to choose settings chose something: calibrate the chosen detector's threshold on normal data
that played no part in the search (``detector.calibrate(X_normal)``), never on the validation folds.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .calibration import anomaly_labels

__all__ = ["anomaly_average_precision", "anomaly_roc_auc"]


def _anomaly_ranking(estimator, X, y) -> tuple[np.ndarray, np.ndarray]:
    """Boolean "is anomaly" of ``y`` and the anomaly score ``-score_samples(X)``; a ValueError naming what
    is wrong when the labels cannot rank anything."""
    is_anomaly = anomaly_labels(y)
    if is_anomaly.all() or not is_anomaly.any():
        kind = "anomalies" if is_anomaly.all() else "normal samples"
        raise ValueError(f"The {len(is_anomaly)} labelled samples are all {kind}: a ranking needs both; "
                         "use a stratified split (StratifiedKFold) so that every fold holds anomalies.")
    anomaly_score = -np.asarray(estimator.score_samples(X), dtype=np.float64)
    if len(anomaly_score) != len(is_anomaly):
        raise ValueError(f"X has {len(anomaly_score)} samples but y has {len(is_anomaly)} labels.")
    return is_anomaly, anomaly_score


def anomaly_roc_auc(estimator, X, y) -> float:
    """ROC AUC of a fitted detector's ranking of labelled samples: the chance that an anomaly scores
    lower (less normal) than a normal sample.

    A scorer in scikit-learn's sense: pass it as ``scoring=`` to ``GridSearchCV`` or ``cross_val_score``.

    Parameters
    ----------
    estimator : VAEDetector, CombinedDetector or any detector with ``score_samples``
        Fitted; ``score_samples`` is higher for more normal samples.
    X : array-like
        The labelled validation samples.
    y : array-like of shape (n_samples,)
        1 or True for an anomaly, 0 or False for a normal sample; or -1 (anomaly) and +1 (normal), the
        labels of ``predict``.

    Returns
    -------
    roc_auc : float
        In [0, 1]; 0.5 is a random ranking, 1 puts every anomaly below every normal sample.

    Raises
    ------
    ValueError
        When ``y`` holds one kind of label only, or other values than those above.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV, StratifiedKFold
    >>> from vaedetect import VAEDetector
    >>> from vaedetect.metrics import anomaly_roc_auc
    >>> search = GridSearchCV(VAEDetector(epochs=5), {"latent_dim": [4, 16]}, scoring=anomaly_roc_auc,
    ...                       cv=StratifiedKFold(3))  # doctest: +SKIP
    >>> search.fit(X_labelled, y_labelled).best_params_  # doctest: +SKIP
    """
    return float(roc_auc_score(*_anomaly_ranking(estimator, X, y)))


def anomaly_average_precision(estimator, X, y) -> float:
    """Average precision of a fitted detector's ranking of labelled samples, anomalies as the positive class.

    Where anomalies are rare it says more than the ROC AUC about the top of the ranking, the part a person
    reviews. A scorer in scikit-learn's sense, like :func:`anomaly_roc_auc`.

    Parameters
    ----------
    estimator : VAEDetector, CombinedDetector or any detector with ``score_samples``
        Fitted; ``score_samples`` is higher for more normal samples.
    X : array-like
        The labelled validation samples.
    y : array-like of shape (n_samples,)
        1 or True for an anomaly, 0 or False for a normal sample; or -1 (anomaly) and +1 (normal).

    Returns
    -------
    average_precision : float
        In [0, 1]; a random ranking scores the share of anomalies among the samples.

    Raises
    ------
    ValueError
        When ``y`` holds one kind of label only, or other values than those above.
    """
    return float(average_precision_score(*_anomaly_ranking(estimator, X, y)))
