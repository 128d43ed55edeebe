"""Thresholds and p-values of a fitted detector: ``offset_`` from a contamination, a target false-positive
rate, a score or labelled examples, and split-conformal p-values against the calibration scores.

:class:`ThresholdMixin` gives ``VAEDetector`` these methods; the arithmetic is in
:func:`vaedetect.scoring.conformal_p_values` and :func:`vaedetect.scoring.conformal_threshold`.
"""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .settings import AUTO_CONTAMINATION


# What ``training_summary_["calibrated_on"]`` says of the calibration scores (absent in older files).
_CALIBRATION_SOURCES = {
    "held-out": " held out from training and early stopping",
    "early-stopping": " of the split early stopping chose the epoch on (optimistic)",
    "training": " of the training data (optimistic)",
    "calibrate(X)": " given to calibrate",
}


def _anomaly_labels(y) -> np.ndarray:
    """Boolean "is anomaly" from labels in {0, 1} (1 = anomaly), booleans, or {-1, +1} (-1 = anomaly)."""
    y = np.asarray(y).ravel()
    values = set(np.unique(y).tolist())
    if y.dtype == bool or values <= {0, 1}:
        return y.astype(bool)
    if values <= {-1, 1}:
        return y == -1
    raise ValueError(f"y must hold 0/1 (1 = anomaly), booleans, or -1/+1 (-1 = anomaly); got values {sorted(values)}.")


def threshold_override(*, threshold=None, fpr=None, contamination=None) -> dict:
    """The way of moving a stored threshold a caller gave, as :meth:`ThresholdMixin.set_threshold`'s
    keywords (empty when none was given); a ValueError when more than one was."""
    given = {name: value for name, value in (("threshold", threshold), ("fpr", fpr), ("contamination", contamination))
             if value is not None}
    if len(given) > 1:
        raise ValueError(f"Give at most one of threshold, fpr and contamination; got {', '.join(given)}.")
    return given


class ThresholdMixin:
    """Thresholds, calibration and verdicts of a fitted detector (mixed into ``VAEDetector``)."""

    def _calibration_data(self, x_train, x_val, x_cal):
        """The samples thresholds and p-values are calibrated on, and which they are.

        Conformal guarantees hold for calibration data exchangeable with new data: data that played
        no part in training or in choosing the model. A validation split that early stopping chose
        the epoch on does not qualify (its loss was minimised over epochs, which can make its tail
        optimistic); one that only recorded ``val_loss`` does, and joins the calibration split.
        """
        import torch

        chose_epoch = x_val is not None and self.early_stopping
        if x_val is not None and not chose_epoch:
            x_cal = torch.cat([x_cal, x_val])
        if len(x_cal):
            return x_cal, "held-out"
        if chose_epoch:
            warnings.warn(
                f"calibration_fraction={self.calibration_fraction}: offset_ and p-values are calibrated on the "
                "validation split early stopping chose the epoch on, whose scores are optimistic; expect more "
                "than `contamination` (or `fpr`) of new normal data flagged. Hold out calibration data, or "
                "add normal data later with calibrate(X).",
                UserWarning,
                stacklevel=3,
            )
            return x_val, "early-stopping"
        warnings.warn(
            f"No data held out (validation_fraction={self.validation_fraction}, calibration_fraction="
            f"{self.calibration_fraction}, n_samples={len(x_train)}): offset_ is set from the scores of the data "
            "the network was fit on, which are optimistic; expect more than `contamination` of new normal data "
            "flagged. Add normal data with calibrate(X).",
            UserWarning,
            stacklevel=3,
        )
        return x_train, "training"

    def _set_offset(self, x_held_out):
        # Kept so that the threshold can be moved later without the training data (set_threshold).
        self.validation_scores_ = self._score_tensor(x_held_out)
        self.calibrated_score_ = self._score_method()
        if self.layout_.kind == "image":
            self.map_baseline_, self.map_scale_ = self._map_reference(x_held_out)
        else:
            self.map_baseline_ = self.map_scale_ = None
        self.set_threshold(contamination=self.contamination)

    def _map_reference(self, x_held_out):
        """How anomaly-map pictures are drawn, from the calibration images the threshold comes from.

        A picture shows a pixel's cost above the mean cost at that place in the calibration images
        (places normal images always find costly, such as edges, stay dark), on one colour scale for
        every image: from no excess to the calibration images' 99.9th percentile of it.
        """
        costs = self._anomaly_map_tensor(x_held_out).sum(axis=1)
        baseline = costs.mean(axis=0)
        high = float(np.quantile(costs - baseline, 0.999))
        return baseline, [0.0, max(high, 1e-6)]

    def _map_pictures(self, maps):
        """Anomaly maps ``(n, H, W)`` as their pictures draw them: the excess over ``map_baseline_``."""
        baseline = getattr(self, "map_baseline_", None)
        return maps if baseline is None else maps - baseline

    def calibrate(self, X):
        """Re-calibrate the threshold and p-values on new data known to be normal.

        Replaces the held-out scores kept from ``fit`` by the scores of ``X`` under the current
        ``score_method`` parameter and sets ``offset_`` from ``contamination``; thresholds set later with
        :meth:`set_threshold` and :meth:`p_values` then refer to ``X``. Use it after changing
        ``score_method`` on a fitted detector, or to calibrate on more (or more recent) normal data than
        ``fit`` held out. ``X`` must not be data the network was trained on, whose scores are
        optimistic.

        Parameters
        ----------
        X : array-like
            Normal data in the layout given to ``fit``.

        Returns
        -------
        self : VAEDetector
        """
        X = self._check_input(X)
        self._set_offset(X)
        self.training_summary_ = {**getattr(self, "training_summary_", {}), "n_calibration": len(X),
                                  "calibrated_on": "calibrate(X)"}
        return self

    def _calibration_description(self):
        """One line on the calibration data: how many scores, where from, the smallest reachable rate."""
        n = len(self.validation_scores_)
        source = _CALIBRATION_SOURCES.get(getattr(self, "training_summary_", {}).get("calibrated_on"), "")
        return (f"{n} scores of normal data{source}; the smallest reachable false-positive rate "
                f"(and p-value) is 1/{n + 1} = {1 / (n + 1):.3g}")

    def _check_calibrated(self):
        check_is_fitted(self, "validation_scores_")
        if self.calibrated_score_ != self._score_method():
            raise ValueError(
                f"The threshold was calibrated for score_method={self.calibrated_score_!r}, but "
                f"score_method={self._score_method()!r} now. "
                "Call calibrate(X) with held-out normal data to calibrate it for the new score, or fit again."
            )

    def set_threshold(self, *, contamination=None, fpr=None, threshold=None, X=None, y=None):
        """Move the outlier threshold ``offset_`` of a fitted detector; give exactly one way.

        Parameters
        ----------
        contamination : "auto" or float in (0, 0.5], optional
            Set ``offset_`` to this quantile of the calibration scores kept from ``fit``.
        fpr : float in (0, 1), optional
            Target false-positive rate: flag exactly the samples whose conformal p-value
            (:meth:`p_values`) is at most ``fpr``, so that at most ``fpr`` of new normal data is
            flagged, up to sampling error. Warns when the held-out set is too small for that rate.
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
        self : VAEDetector

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
        from .scoring import conformal_threshold

        self._check_calibrated()
        labelled = None if X is None and y is None else (X, y)
        if sum(arg is not None for arg in (contamination, fpr, threshold, labelled)) != 1:
            raise ValueError("Give exactly one of contamination, fpr, threshold and (X, y).")
        if labelled is not None:
            self._set_threshold_from_labels(X, y)
        elif threshold is not None:
            if not isinstance(threshold, Real) or not np.isfinite(threshold):
                raise ValueError(f"threshold must be a finite number; got {threshold!r}.")
            self.offset_ = float(threshold)
        elif fpr is not None:
            if not isinstance(fpr, Real) or not 0 < fpr < 1:
                raise ValueError(f"fpr must be a float in (0, 1); got {fpr!r}.")
            self.offset_ = conformal_threshold(self.validation_scores_, fpr)
            if self.offset_ == -np.inf:
                warnings.warn(
                    f"fpr={fpr} needs at least {int(np.ceil(1 / fpr)) - 1} held-out samples, and fit kept "
                    f"{len(self.validation_scores_)}; nothing will be flagged. Add normal data with "
                    "calibrate(X), or fit on more data or with a larger calibration_fraction.",
                    UserWarning,
                    stacklevel=2,
                )
        else:
            if contamination == "auto":
                contamination = AUTO_CONTAMINATION
            if not isinstance(contamination, Real) or not 0 < contamination <= 0.5:
                raise ValueError(f"contamination must be 'auto' or a float in (0, 0.5]; got {contamination!r}.")
            self.offset_ = float(np.quantile(self.validation_scores_, contamination))
        return self

    def _set_threshold_from_labels(self, X, y):
        from sklearn.metrics import precision_recall_curve

        if X is None or y is None:
            raise ValueError("Labelled examples need both X and y.")
        is_anomaly = _anomaly_labels(y)
        scores = self.score_samples(X)
        if len(is_anomaly) != len(scores):
            raise ValueError(f"X has {len(scores)} samples but y has {len(is_anomaly)} labels.")
        if is_anomaly.all() or not is_anomaly.any():
            kind = "anomalies" if is_anomaly.all() else "normal samples"
            warnings.warn(
                f"The {len(is_anomaly)} labelled examples are all {kind}, so no threshold separates them; "
                f"offset_ stays at {self.offset_:.6g}. Label at least one anomaly and one normal sample.",
                UserWarning,
                stacklevel=3,
            )
            return
        # anomalies are the positive class and low scores are anomalous: rank by -score
        precision, recall, cutoffs = precision_recall_curve(is_anomaly, -scores)
        f1 = 2 * precision * recall / np.maximum(precision + recall, np.finfo(float).tiny)
        best = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no cutoff
        # flagged when -score >= cutoff, i.e. score <= -cutoff; predict flags score < offset_
        self.offset_ = float(np.nextafter(-cutoffs[best], np.inf))

    def p_values(self, X):
        """Split-conformal p-values against the calibration scores kept from ``fit`` (``validation_scores_``).

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
        from .scoring import conformal_p_values

        self._check_calibrated()
        return conformal_p_values(self.validation_scores_, self.score_samples(X))

    def _add_verdicts(self, table):
        """``table`` with ``p_value`` and ``is_outlier`` columns after its ``score`` column (NaN scores,
        entries that could not be scored, get no p-value and are not outliers)."""
        from .scoring import conformal_p_values

        scored = table["score"].notna().to_numpy()
        p_values = np.full(len(table), np.nan)
        p_values[scored] = conformal_p_values(self.validation_scores_, table["score"].to_numpy()[scored])
        table.insert(table.columns.get_loc("score") + 1, "p_value", p_values)
        table.insert(table.columns.get_loc("p_value") + 1, "is_outlier", table["score"] < self.offset_)
        return table

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
        self._check_calibrated()
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
