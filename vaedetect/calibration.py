"""Calibration: the scores of normal data that played no part in fitting, the threshold a rule draws from
them, and split-conformal p-values against them.

A :class:`Calibration` is owned by every fitted detector (``calibration_``: :class:`~vaedetect.VAEDetector`
and :class:`~vaedetect.CombinedDetector` alike); :class:`CalibratedMixin` gives both the methods that only
read it and ``score_samples``: ``offset_``, ``set_threshold``, ``p_values``, ``decision_function`` and
``predict``.

Conformal guarantees hold for calibration data exchangeable with new normal data: data that played no
part in training or in choosing the model (Vovk et al., "Algorithmic Learning in a Random World", 2005;
for outlier detection Bates et al., "Testing for outliers with conformal p-values", Annals of Statistics,
2023).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from numbers import Real

import numpy as np
from sklearn.metrics import precision_recall_curve
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from .conformal import conformal_threshold, flagged_among, p_values_keeping_nan, verdict_columns
from .settings import resolve_contamination

# The constraint of every detector's ``contamination`` parameter (and of ``set_threshold``'s).
CONTAMINATION = [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")]

# What ``Calibration.source`` says of the calibration scores.
SOURCES = {
    "held-out": " held out from training and early stopping",
    "early-stopping": " of the split early stopping chose the epoch on (optimistic)",
    "training": " of the training data (optimistic)",
    "calibrate(X)": " given to calibrate",
}


def check_contamination(contamination) -> float:
    """``contamination`` validated (``"auto"`` or a float in (0, 0.5]) and resolved to a number."""
    validate_parameter_constraints({"contamination": CONTAMINATION}, {"contamination": contamination},
                                   caller_name="set_threshold")
    return resolve_contamination(contamination)


def anomaly_labels(y) -> np.ndarray:
    """Boolean "is anomaly" from labels in {0, 1} (1 = anomaly), booleans, or {-1, +1} (-1 = anomaly)."""
    y = np.asarray(y).ravel()
    values = set(np.unique(y).tolist())
    if y.dtype == bool or values <= {0, 1}:
        return y.astype(bool)
    if values <= {-1, 1}:
        return y == -1
    raise ValueError(f"y must hold 0/1 (1 = anomaly), booleans, or -1/+1 (-1 = anomaly); got values {sorted(values)}.")


def threshold_override(*, threshold=None, fpr=None, contamination=None) -> dict:
    """The way of moving a stored threshold a caller gave, as :meth:`Calibration.set_threshold`'s keywords
    (empty when none was given); a ValueError when more than one was."""
    given = {name: value for name, value in (("threshold", threshold), ("fpr", fpr), ("contamination", contamination))
             if value is not None}
    if len(given) > 1:
        raise ValueError(f"Give at most one of threshold, fpr and contamination; got {', '.join(given)}.")
    return given


@dataclass
class Calibration:
    """Scores of normal data a detector's threshold and p-values are calibrated on, and the threshold.

    Attributes
    ----------
    scores : ndarray of shape (n_calibration,)
        Scores of normal data that played no part in fitting (see ``source``).
    score_method : str
        The score method they are scores of, which the detector scores with: ``"combined"`` for a
        :class:`~vaedetect.CombinedDetector`.
    source : str
        Where they come from: ``"held-out"`` (held out from training and early stopping),
        ``"early-stopping"`` or ``"training"`` (optimistic: nothing else was held out), ``"calibrate(X)"``.
    rule : dict
        How ``offset`` was drawn from them, as :meth:`set_threshold`'s keyword: ``{"contamination": c}``,
        ``{"fpr": f}`` or ``{"threshold": t}``; ``{"labels": n}`` for the threshold that best separates
        ``n`` labelled examples.
    offset : float
        The threshold: samples scoring below it are outliers.
    """

    scores: np.ndarray
    score_method: str
    source: str
    rule: dict = field(default_factory=lambda: {"contamination": resolve_contamination("auto")})
    offset: float = math.nan

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if math.isnan(self.offset):
            self.set_threshold(**self.rule)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def restore(cls, scores, *, score_method: str, source: str, rule: dict, offset: float) -> Calibration:
        """The calibration a model file records. A threshold drawn from the scores (by contamination or false-
        positive rate) is drawn again, so that a recorded offset that does not belong to them cannot make a gate
        pass; one set by hand or from labels is the recorded one, as ``rule`` says."""
        (name, _), = rule.items()
        if name not in ("contamination", "fpr"):
            return cls(scores, score_method, source, rule, offset)
        with warnings.catch_warnings():  # an unreachable rate was said when it was set
            warnings.simplefilter("ignore", UserWarning)
            return cls(scores, score_method, source, rule)

    @property
    def smallest_rate(self) -> float:
        """The smallest reachable false-positive rate (and p-value), ``1 / (n + 1)``."""
        return 1.0 / (len(self) + 1)

    def reachable(self, fpr: float) -> bool:
        """Whether ``fpr`` can be reached: the threshold of a smaller rate flags nothing."""
        return flagged_among(len(self), fpr) >= 1

    def set_threshold(self, *, contamination=None, fpr=None, threshold=None, labels=None) -> None:
        """Draw ``offset`` by one rule: the ``contamination`` quantile of the scores, the target
        false-positive rate ``fpr`` (:func:`~vaedetect.conformal.conformal_threshold`), a ``threshold`` given, or ``labels``: the
        threshold a detector found on that many labelled examples (given as ``threshold`` too)."""
        if labels is not None:
            self.offset, self.rule = float(threshold), {"labels": int(labels)}
        elif threshold is not None:
            if not isinstance(threshold, Real) or not np.isfinite(threshold):
                raise ValueError(f"threshold must be a finite number; got {threshold!r}.")
            self.offset, self.rule = float(threshold), {"threshold": float(threshold)}
        elif fpr is not None:
            if not isinstance(fpr, Real) or not 0 < fpr < 1:
                raise ValueError(f"fpr must be a float in (0, 1); got {fpr!r}.")
            if not self.reachable(fpr):
                warnings.warn(f"fpr={fpr} needs at least {math.ceil(1 / fpr - 1e-9) - 1} calibration scores, and there "
                              f"are {len(self)}; nothing will be flagged. Add normal data with calibrate(X), or fit on "
                              "more data or with a larger calibration_fraction.", UserWarning, stacklevel=4)
            self.offset, self.rule = conformal_threshold(self.scores, fpr), {"fpr": float(fpr)}
        else:
            value = check_contamination(contamination)
            self.offset, self.rule = float(np.quantile(self.scores, value)), {"contamination": value}

    def p_values(self, scores) -> np.ndarray:
        """Split-conformal p-values of ``scores`` (:func:`~vaedetect.conformal.conformal_p_values`); NaN stays NaN."""
        return p_values_keeping_nan(self.scores, scores)

    def verdicts(self, scores) -> dict:
        """The verdict columns of a score table: ``p_value`` and ``is_outlier`` (NaN scores, entries that
        could not be scored, get no p-value and are not outliers)."""
        return verdict_columns(self.scores, self.offset, scores)

    def describe_rule(self) -> str:
        """How ``offset`` was drawn, in words."""
        (name, value), = self.rule.items()
        return {"contamination": f"contamination {value:g}, the {value:g} quantile of the calibration scores",
                "fpr": f"target false-positive rate {value:g}",
                "threshold": "set by hand",
                "labels": f"the best F1 score on {value} labelled examples"}[name]

    def describe(self) -> str:
        """One line on the calibration: how many scores, where from, the smallest reachable rate."""
        n = len(self)
        return (f"{n} scores of normal data{SOURCES.get(self.source, '')}; the smallest reachable false-positive "
                f"rate (and p-value) is 1/{n + 1} = {self.smallest_rate:.3g}")

    def state(self) -> tuple[dict, dict]:
        """``(JSON fields, arrays)`` for a model file; ``Calibration(**fields, **arrays)`` reads them back."""
        # an unreachable rate flags nothing (offset -inf), which a header's finite number cannot hold; that rule is
        # drawn again at load (:meth:`restore`), so the lowest score stands in for it in the file
        offset = self.offset if math.isfinite(self.offset) else float(self.scores.min())
        fields = {"score_method": self.score_method, "source": self.source, "rule": self.rule, "offset": offset}
        return fields, {"scores": self.scores}


def held_out(x_train, x_val, x_cal, *, early_stopping: bool, fractions: str):
    """The samples a threshold is calibrated on, and their ``source``.

    Conformal guarantees hold for calibration data exchangeable with new data. A validation split that early
    stopping chose the epoch on does not qualify (its loss was minimised over epochs, which can make its tail
    optimistic); one that only recorded ``val_loss`` does, and joins the calibration split. Without either,
    the warning names ``fractions`` (the parameters that held out nothing).
    """
    import torch

    chose_epoch = x_val is not None and early_stopping
    if x_val is not None and not chose_epoch:
        x_cal = torch.cat([x_cal, x_val])
    if len(x_cal):
        return x_cal, "held-out"
    if chose_epoch:
        warnings.warn(
            f"{fractions}: offset_ and p-values are calibrated on the validation split early stopping chose the epoch "
            "on, whose scores are optimistic; expect more than `contamination` (or `fpr`) of new normal data flagged. "
            "Hold out calibration data, or add normal data later with calibrate(X).",
            UserWarning,
            stacklevel=4,
        )
        return x_val, "early-stopping"
    warnings.warn(
        f"No data held out ({fractions}, n_samples={len(x_train)}): offset_ is set from the scores of the data the "
        "network was fit on, which are optimistic; expect more than `contamination` of new normal data flagged. Add "
        "normal data with calibrate(X).",
        UserWarning,
        stacklevel=4,
    )
    return x_train, "training"


class CalibratedMixin:
    """Thresholds, p-values and verdicts of a detector with a ``calibration_`` and ``score_samples``."""

    @property
    def offset_(self) -> float:
        """Threshold on ``score_samples``: samples scoring below it are outliers (``calibration_.offset``)."""
        return self.calibration_.offset

    @offset_.setter
    def offset_(self, value):
        self.calibration_.set_threshold(threshold=value)

    @property
    def validation_scores_(self) -> np.ndarray:
        """Deprecated name of ``calibration_.scores``."""
        warnings.warn("validation_scores_ was renamed: read calibration_.scores (the scores are calibration "
                      "scores, held out from early stopping).", FutureWarning, stacklevel=2)
        return self.calibration_.scores

    @property
    def calibrated_score_(self) -> str:
        """Deprecated name of ``calibration_.score_method``."""
        warnings.warn("calibrated_score_ was renamed: read calibration_.score_method.", FutureWarning, stacklevel=2)
        return self.calibration_.score_method

    def set_threshold(self, *, contamination=None, fpr=None, threshold=None, X=None, y=None):
        """Move the outlier threshold ``offset_`` of a fitted detector; give exactly one way.

        Parameters
        ----------
        contamination : "auto" or float in (0, 0.5], optional
            Set ``offset_`` to this quantile of the calibration scores (``calibration_.scores``).
        fpr : float in (0, 1), optional
            Target false-positive rate: flag exactly the samples whose conformal p-value
            (:meth:`p_values`) is at most ``fpr``, so that at most ``fpr`` of new normal data is
            flagged, up to sampling error. Warns when there are too few calibration scores for that rate.
        threshold : float, optional
            Set ``offset_`` to this score directly.
        X, y : array-like, optional
            A few labelled examples, given together: the threshold that maximises the F1 score of
            flagging the anomalies among them. ``y`` is 1 (or True) for anomalies and 0 for normal
            samples, or sklearn's ``predict`` convention, -1 for anomalies and +1 for normal ones.
            Without both kinds among the labels no threshold is better than another: the threshold is
            left as it was, with a warning.

        Returns
        -------
        self : estimator

        Examples
        --------
        >>> import numpy as np
        >>> from vaedetect import VAEDetector
        >>> X = np.random.RandomState(0).normal(size=(300, 2))
        >>> detector = VAEDetector(latent_dim=1, epochs=3, random_state=0).fit(X)
        >>> labelled = np.vstack([X[:20], [[6.0, 6.0], [-6.0, 6.0]]])
        >>> detector.set_threshold(X=labelled, y=[0] * 20 + [1, 1]).predict(labelled)[-2:]
        array([-1, -1])
        """
        check_is_fitted(self)
        labelled = None if X is None and y is None else (X, y)
        if sum(arg is not None for arg in (contamination, fpr, threshold, labelled)) != 1:
            raise ValueError("Give exactly one of contamination, fpr, threshold and (X, y).")
        if labelled is None:
            self.calibration_.set_threshold(contamination=contamination, fpr=fpr, threshold=threshold)
            return self
        if X is None or y is None:
            raise ValueError("Labelled examples need both X and y.")
        is_anomaly, scores = anomaly_labels(y), self.score_samples(X)
        if len(is_anomaly) != len(scores):
            raise ValueError(f"X has {len(scores)} samples but y has {len(is_anomaly)} labels.")
        if is_anomaly.all() or not is_anomaly.any():
            kind = "anomalies" if is_anomaly.all() else "normal samples"
            warnings.warn(f"The {len(is_anomaly)} labelled examples are all {kind}, so no threshold separates them; "
                          f"offset_ stays at {self.offset_:.6g}. Label at least one anomaly and one normal sample.",
                          UserWarning, stacklevel=2)
            return self
        self.calibration_.set_threshold(threshold=_best_f1_threshold(is_anomaly, scores), labels=len(scores))
        return self

    def p_values(self, X):
        """Split-conformal p-values against the calibration scores (``calibration_.scores``).

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        p_values : ndarray of shape (n_samples,)
            In ``(0, 1]``; small for anomalies. For new data like the training data,
            ``P(p <= alpha) <= alpha`` for every ``alpha``.
        """
        return self.calibration_.p_values(self.score_samples(X))

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Label each sample +1 (inlier) or -1 (outlier).

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)

    # PyOD's names, for tools written for PyOD's detectors: outlier scores (higher = more abnormal), labels 1 for
    # outliers and 0 for inliers. They read the same threshold as ``offset_``, drawn from the calibration scores.

    @property
    def threshold_(self) -> float:
        """PyOD's threshold on outlier scores, ``-offset_``: ``decision_scores_`` above it are outliers."""
        return -self.offset_

    @property
    def labels_(self) -> np.ndarray:
        """PyOD's labels of the training samples: 1 where ``decision_scores_`` is above ``threshold_``, else 0."""
        return (self.decision_scores_ > self.threshold_).astype(int)

    def predict_proba(self, X, method="linear", return_confidence=False):
        """PyOD's outlier probability of each sample, from where its outlier score ``-score_samples`` lies among
        the training samples' (``decision_scores_``).

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.
        method : {"linear", "unify"}, default="linear"
            "linear": the outlier score min-max scaled by the training scores' range, clipped to [0, 1];
            "unify": ``erf((s - mean) / (std * sqrt(2)))`` of the training scores' mean and standard deviation,
            clipped to [0, 1] (Kriegel et al., "Interpreting and Unifying Outlier Scores", SDM 2011).
        return_confidence : bool, default=False
            Also return :meth:`predict_confidence`.

        Returns
        -------
        probabilities : ndarray of shape (n_samples, 2)
            Columns: inlier, outlier probability. These rank as the scores do but are not calibrated
            probabilities; for a rate that holds on new data use :meth:`p_values`.
        confidence : ndarray of shape (n_samples,)
            With ``return_confidence``.
        """
        check_is_fitted(self)
        if method not in ("linear", "unify"):
            raise ValueError(f"method must be 'linear' or 'unify', got {method!r}.")
        training = self._training_outlier_scores()
        outlier = -self.score_samples(X)
        if method == "linear":
            low, high = training.min(), training.max()
            with np.errstate(invalid="ignore"):  # an infinite score is the most abnormal: probability 1
                probability = np.where(np.isposinf(outlier), 1.0, (outlier - low) / ((high - low) or 1.0))
        else:
            from scipy.special import erf

            probability = erf((outlier - training.mean()) / ((training.std() or 1.0) * math.sqrt(2.0)))
        probability = np.clip(probability, 0.0, 1.0)
        probabilities = np.column_stack([1.0 - probability, probability])
        return (probabilities, self._confidence(outlier)) if return_confidence else probabilities

    def predict_confidence(self, X):
        """PyOD's confidence in each verdict of :meth:`predict`, in [0, 1] (ExCeeD: Perini et al., "Quantifying
        the confidence of anomaly detectors in their example-wise predictions", ECML PKDD 2020).

        A sample's outlier probability is estimated from how many training samples (``decision_scores_``) score
        at most as abnormal, with a uniform prior; the confidence is the probability that the sample would be
        flagged among the training samples at the rate they are flagged (``labels_``, as PyOD takes the rate
        of a threshold not drawn from its ``contamination``), or of not being flagged for an inlier.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        confidence : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self._confidence(-self.score_samples(X))

    def _confidence(self, outlier: np.ndarray) -> np.ndarray:
        from scipy.stats import binom

        training = np.sort(self.decision_scores_)
        n = len(training)
        at_most = np.searchsorted(training, outlier, side="right")
        probability = (1.0 + at_most) / (2.0 + n)
        rate = float(np.mean(training > self.threshold_))
        confidence = 1.0 - binom.cdf(n - int(n * rate), n, probability)
        return np.where(outlier > self.threshold_, confidence, 1.0 - confidence)

    def _training_outlier_scores(self) -> np.ndarray:
        """The finite ``decision_scores_`` (an infinite one is an input the model could not evaluate)."""
        training = self.decision_scores_
        return training[np.isfinite(training)] if np.isfinite(training).any() else np.zeros(1)


def _best_f1_threshold(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """The threshold whose flags (scores below it) have the best F1 score on the labelled ``scores``."""
    # anomalies are the positive class and low scores are anomalous: rank by -score
    precision, recall, cutoffs = precision_recall_curve(is_anomaly, -scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, np.finfo(float).tiny)
    best = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no cutoff
    # flagged when -score >= cutoff, i.e. score <= -cutoff; predict flags score < offset_
    return float(np.nextafter(-cutoffs[best], np.inf))
