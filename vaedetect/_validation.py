"""Input checks shared by the estimator's methods, with messages that name the argument and the value."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_array, validate_data

from .data import check_layout_matches, check_value_range, infer_layout


def check_X(estimator, X, *, reset: bool):
    """Validate ``X`` for ``estimator``: finite numbers, a known layout, images in range.

    2-D input goes through scikit-learn's ``validate_data`` (feature names, ``n_features_in_``);
    image arrays of 3 or 4 dimensions through ``check_array(allow_nd=True)``. On ``reset`` the layout
    is inferred and returned; otherwise ``X`` must match the layout the fitted estimator takes
    (``modality_.input_layout``: the images, for a detector with a backbone, else ``layout_``).

    Returns
    -------
    X : ndarray
    layout : InputLayout
    """
    # scikit-learn's own checks give the standard messages (feature names, "Reshape your data")
    ndim = X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim
    if ndim <= 2:
        X = validate_data(estimator, X, reset=reset, dtype="numeric")
    else:
        X = check_array(X, allow_nd=True, ensure_2d=False, dtype="numeric", input_name="X")
        if reset:  # images have no column names; a previous fit's must not linger
            estimator.__dict__.pop("feature_names_in_", None)
    if reset:
        layout = infer_layout(X, estimator.image_shape)
        estimator.n_features_in_ = layout.n_features
    else:
        layout = estimator.modality_.input_layout
        check_layout_matches(X, layout)
    check_value_range(X, layout)
    return X, layout


def holdout_sizes(n_samples: int, validation_fraction: float, calibration_fraction: float) -> tuple[int, int]:
    """How many samples ``fit`` holds out for early stopping and for calibration, or raise if too few
    remain to train on (batch norm needs at least two samples per training batch).

    A positive fraction holds out at least one sample as long as two remain to train on.
    """
    n_val = int(round(validation_fraction * n_samples))
    if validation_fraction > 0 and n_val == 0 and n_samples >= 3:
        n_val = 1
    n_cal = int(round(calibration_fraction * n_samples))
    if calibration_fraction > 0 and n_cal == 0 and n_samples - n_val >= 3:
        n_cal = 1
    if n_samples - n_val - n_cal < 2:
        raise ValueError(
            f"VAEDetector needs at least 2 training samples after holding out "
            f"validation_fraction={validation_fraction} and calibration_fraction={calibration_fraction}; "
            f"got n_samples={n_samples}."
        )
    return n_val, n_cal


def holdout_split(n_samples: int, n_validation: int, n_calibration: int, rng) -> tuple:
    """Random indices of the training, validation and calibration splits of ``n_samples`` samples,
    drawn with one permutation from ``rng`` (a ``numpy.random.RandomState``)."""
    order = rng.permutation(n_samples)
    end_of_calibration = n_validation + n_calibration
    return order[end_of_calibration:], order[:n_validation], order[n_validation:end_of_calibration]
