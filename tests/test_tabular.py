"""Tables as they are: discrete, near-constant and heavy-tailed columns, and which columns made a row anomalous."""

import numpy as np
import pandas as pd
import pytest

from vaedetect import VAEDetector
from vaedetect.settings import TABULAR_MEMBERS

from .conftest import TINY


@pytest.fixture(scope="module")
def correlated():
    """A detector fitted on 400 rows of three correlated columns a, b, c (b = a + small noise)."""
    rng = np.random.RandomState(0)
    a = rng.normal(size=400)
    X = pd.DataFrame({"a": a, "b": a + 0.1 * rng.normal(size=400), "c": rng.normal(size=400)})
    return VAEDetector(latent_dim=2, epochs=20, random_state=0).fit(X), X


def _grown_by_a_far_c(detector, X):
    """How each column's contribution grows when the first row moves twelve standard deviations out in c alone."""
    row = X.iloc[[0]].copy()
    row["c"] += 12.0
    contributions = detector.feature_contributions(row)
    assert contributions.idxmax(axis=1).tolist() == ["c"]
    return contributions - detector.feature_contributions(X.iloc[[0]])


def test_contributions_name_the_one_column_that_made_a_row_anomalous(correlated):
    grown = _grown_by_a_far_c(*correlated)
    # c's contribution grows by tens of nats; a and b, which the row's code carries along, by a few percent of it
    # (their scales, fitted on trimmed batches, are tight: about 1.2 nats here)
    assert grown.loc[0, "c"] > 8.0 and grown.loc[0, ["a", "b"]].abs().max() < grown.loc[0, "c"] / 20


def test_contributions_of_untrimmed_training_leave_the_other_columns_within_a_nat(correlated):
    _, X = correlated
    grown = _grown_by_a_far_c(VAEDetector(latent_dim=2, epochs=20, trim_fraction=0.0, random_state=0).fit(X), X)
    assert grown.loc[0, "c"] > 8.0 and grown.loc[0, ["a", "b"]].abs().max() < 1.0


def test_contributions_break_the_score_down_exactly(correlated):
    detector, X = correlated
    rows = X.iloc[:50]
    # the reconstruction probability (the ELBO less its KL term) is minus the features' negative log-likelihoods
    reconstruction = detector.score_table(rows, methods=["reconstruction_probability"])["reconstruction_probability"]
    rest = -reconstruction.to_numpy() - detector.feature_contributions(rows).sum(axis=1).to_numpy()
    # what the contributions leave out is one constant of the model: the Laplace normaliser of each
    # feature's learned scale, sum(log(2 b_j)), the same for every row
    scale = np.exp(detector.model_.log_scale.detach().numpy().astype(np.float64))
    np.testing.assert_allclose(rest, np.log(2 * scale).sum(), atol=1e-3)


def test_contributions_are_never_negative_and_keep_the_index(correlated):
    detector, X = correlated
    rows = X.iloc[10:13]
    contributions = detector.feature_contributions(rows)
    assert list(contributions.columns) == ["a", "b", "c"] and list(contributions.index) == [10, 11, 12]
    assert (contributions.to_numpy() >= 0).all()


def test_contributions_of_an_array_name_the_columns_by_position(tabular):
    detector = VAEDetector(latent_dim=2, epochs=2, random_state=0).fit(tabular)
    assert list(detector.feature_contributions(tabular[:2]).columns) == ["x0", "x1", "x2", "x3", "x4"]


def test_contributions_refuse_an_image_model(gray_images):
    detector = VAEDetector(**TINY).fit(gray_images)
    assert not hasattr(detector, "feature_contributions") and hasattr(detector, "anomaly_map")
    with pytest.raises(AttributeError, match="has no attribute 'feature_contributions'") as raised:
        detector.feature_contributions(gray_images[:2])
    assert "breaks a table row's score down by its columns" in str(raised.value.__cause__)


def test_resolution_is_the_smallest_gap_between_distinct_values():
    from vaedetect.data import feature_resolution

    X = np.array([[0.0, 3.0, 7.0, 0.10], [2.0, 3.0, 5.0, 0.25], [0.5, 3.0, 7.0, 0.13], [0.5, 3.0, 9.0, 0.10]])
    np.testing.assert_allclose(feature_resolution(X), [0.5, np.nan, 2.0, 0.03])


def test_the_floor_caps_each_density_at_one_over_the_resolution():
    from vaedetect.losses import _MIN_LOG_SCALE, log_scale_floor

    resolution = np.array([1.0, np.nan, 1e-9, 0.2])
    laplace = log_scale_floor(resolution, "laplace").numpy()
    np.testing.assert_allclose(laplace, [np.log(0.5), np.log(0.5), _MIN_LOG_SCALE, np.log(0.1)], rtol=1e-6)
    gaussian = log_scale_floor(resolution[:1], "gaussian").numpy()
    np.testing.assert_allclose(gaussian, [-0.5 * np.log(2 * np.pi)], rtol=1e-6)


@pytest.fixture(scope="module")
def awkward():
    """A detector fitted on 600 rows: a normal column, a count that is 0 in 98% of rows, a constant
    column and a heavy-tailed (Cauchy) column."""
    rng = np.random.RandomState(0)
    X = pd.DataFrame({"normal": rng.normal(size=600), "count": (rng.uniform(size=600) < 0.02).astype(float),
                      "constant": np.full(600, 5.0), "heavy": rng.standard_cauchy(size=600)})
    return VAEDetector(latent_dim=2, epochs=30, random_state=0).fit(X), X


def _member_scales(detector):
    """The decoder's scales, one row per member, one column per feature."""
    return np.exp(detector.model_.log_scale.detach().numpy()).reshape(detector.n_estimators_, -1)


def test_a_near_constant_count_keeps_a_scale_of_half_its_step(awkward):
    detector, X = awkward
    assert detector.n_estimators_ == TABULAR_MEMBERS  # the tabular default: the floor holds in every member
    step = 1.0 / detector.feature_scale_[1]  # one count, in standardised units (about 7)
    assert (_member_scales(detector)[:, 1] >= step / 2 * (1 - 1e-6)).all()
    # so one count more than usual costs each member at most two nats, however rare counts were in training
    row = X.iloc[[0]].copy()
    row["count"] = X["count"].mode()[0] + 1
    assert detector.feature_contributions(row).loc[0, "count"] <= 2.0 * TABULAR_MEMBERS + 1e-4


def test_a_constant_column_counts_deviations_in_its_standardisation_unit(awkward):
    detector, X = awkward
    assert detector.feature_scale_[2] == 1.0  # what StandardScaler gives a column without spread
    assert (_member_scales(detector)[:, 2] >= 0.5 * (1 - 1e-6)).all()
    row = X.iloc[[0]].copy()
    row["constant"] += 3.0
    # 3 units at a scale of at least 0.5: at most 6 nats more than the row itself, in each member
    more = detector.feature_contributions(row).loc[0, "constant"] - detector.feature_contributions(X.iloc[[0]]).loc[0, "constant"]
    assert 0 < more <= 6.0 * TABULAR_MEMBERS + 1e-4


def test_continuous_columns_keep_the_global_floor(awkward):
    from vaedetect.losses import _MIN_LOG_SCALE

    detector, X = awkward
    floor = detector.modality_.log_scale_floor(X.to_numpy(), detector.likelihood_, members=1).numpy()
    # a normal and a Cauchy column: their values are as fine as the floats that hold them
    assert floor[0] == floor[3] == pytest.approx(_MIN_LOG_SCALE)
    assert floor[1] == pytest.approx(np.log(0.5 / detector.feature_scale_[1]))


@pytest.mark.parametrize("method", ["elbo", "reconstruction_probability", "min_evidence", "latent"])
def test_contributions_with_scores_give_the_scores_of_score_samples(tabular, method):
    detector = VAEDetector(**TINY, score_method=method).fit(tabular)
    contributions, scores = detector.feature_contributions(tabular[:20], return_scores=True)
    # min_evidence's ELBO is summed in another order from the same draws; standardised, its scores lie near 0
    np.testing.assert_allclose(scores, detector.score_samples(tabular[:20]), rtol=1e-9, atol=1e-9)
    pd.testing.assert_frame_equal(contributions, detector.feature_contributions(tabular[:20]), rtol=1e-9)
