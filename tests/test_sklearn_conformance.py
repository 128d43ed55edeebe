"""scikit-learn's generic estimator checks, on tabular data with a tiny, fast network."""


import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from vaedetect import VAEDetector

FAST = dict(latent_dim=2, base_channels=4, n_stages=1, epochs=2, n_samples=2, batch_size=16)

# offset_ is the contamination quantile of *held-out* validation scores, so that new normal data is
# flagged at that rate; the training data, which the network was fit on, scores higher and is
# flagged less often than `contamination`, while these checks expect the exact share.
_OFFSET_FROM_HELD_OUT = "offset_ comes from held-out scores, so the training set is not flagged at exactly contamination"

# check_methods_subset_invariance (scores equal to 1e-7 whether a row is scored in one batch or another) failed
# while scores were summed in float32; summed in float64 since issue 34, it passes (12 seeds of 12 checked).
EXPECTED_FAILED_CHECKS = {
    "check_outliers_train": _OFFSET_FROM_HELD_OUT,
    "check_outliers_fit_predict": _OFFSET_FROM_HELD_OUT,
}


@parametrize_with_checks([VAEDetector(**FAST)], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator, grid", [(IsolationForest(n_estimators=10, random_state=0), {"max_samples": [8, 16]}),
                                             (VAEDetector(**FAST), {"latent_dim": [1, 2]})])
def test_a_search_without_scoring_fails_loudly_as_for_isolation_forest(estimator, grid, tabular):
    with pytest.raises(TypeError, match="should have a 'score' method"):
        GridSearchCV(estimator, grid, cv=2).fit(tabular)
    with pytest.raises(TypeError, match="should have a 'score' method"):
        cross_val_score(estimator, tabular, cv=2)


def test_a_pipeline_with_pandas_output_gets_named_latent_columns(tabular):
    pipe = make_pipeline(StandardScaler(), VAEDetector(**FAST, random_state=0)).set_output(transform="pandas")
    latent = pipe.fit(tabular).transform(tabular)
    # a table's five members, two latent dimensions each
    assert list(latent.columns) == [f"vaedetector{i}" for i in range(10)]
    np.testing.assert_allclose(latent.to_numpy(), pipe[-1].set_output(transform="default").transform(
        pipe[0].transform(tabular)))
