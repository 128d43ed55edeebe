"""Thresholds, p-values and calibration: the false-positive rate holds on new normal data."""

import copy

import numpy as np
import pytest

from vaedetect import VAEDetector
from vaedetect.calibration import Calibration

from .conftest import TINY, write_squares


def test_decision_function_is_score_minus_offset(fitted_tabular):
    detector, X = fitted_tabular
    np.testing.assert_allclose(detector.decision_function(X), detector.score_samples(X) - detector.offset_)
    np.testing.assert_array_equal(detector.predict(X), np.where(detector.decision_function(X) >= 0, 1, -1))


def test_predict_flags_about_contamination_of_new_normal_data():
    rng = np.random.RandomState(0)
    X_train, X_new = rng.normal(size=(1000, 4)), rng.normal(size=(2000, 4))
    detector = VAEDetector(**{**TINY, "epochs": 5}, contamination=0.1, calibration_fraction=0.3).fit(X_train)
    assert np.mean(detector.predict(X_new) == -1) == pytest.approx(0.1, abs=0.04)
    # training data the network saw is flagged at about the same rate, no more
    assert 0.03 < np.mean(detector.predict(X_train) == -1) <= 0.14


def test_auto_contamination_flags_about_one_percent():
    rng = np.random.RandomState(0)
    # 1000 held-out samples pin the 1% quantile to within about +-0.3% (binomial standard error)
    detector = VAEDetector(**TINY, calibration_fraction=0.5).fit(rng.normal(size=(2000, 4)))
    assert np.mean(detector.predict(rng.normal(size=(10000, 4))) == -1) == pytest.approx(0.01, abs=0.006)


def test_threshold_from_training_data_is_announced():
    with pytest.warns(UserWarning, match="No data held out"):
        VAEDetector(**TINY, validation_fraction=0.0, calibration_fraction=0.0).fit(np.random.RandomState(0).normal(size=(30, 3)))


def test_set_threshold_moves_offset_without_refitting(fitted_tabular):
    detector = copy.deepcopy(fitted_tabular[0])
    detector.set_threshold(contamination=0.5)
    assert detector.offset_ == pytest.approx(np.median(detector.calibration_.scores))
    detector.set_threshold(threshold=-3.0)
    assert detector.offset_ == -3.0
    with pytest.raises(ValueError, match=r"exactly one of contamination, fpr, threshold and \(X, y\)"):
        detector.set_threshold(threshold=1.0, contamination=0.1)
    with pytest.raises(ValueError, match=r"contamination.*float in the range \(0.0, 0.5\]. Got 0.9"):
        detector.set_threshold(contamination=0.9)


def test_p_values_count_held_out_scores_at_or_below():
    from vaedetect.conformal import conformal_p_values, conformal_threshold

    calibration = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(conformal_p_values(calibration, [0.5, 2.0, 9.0]), [1 / 5, 3 / 5, 5 / 5])
    # fpr * (n + 1) = 2 -> the 2nd smallest; only scores below it have p <= 0.4
    assert conformal_threshold(calibration, 0.4) == 2.0
    assert conformal_threshold(calibration, 0.1) == -np.inf


N_CALIBRATION, N_SEEDS, N_FRESH = 399, 20, 5000


@pytest.fixture(scope="module")
def false_alarm_rates():
    """Share of fresh normal rows flagged at fpr 0.05 and 0.01, one per seed, by detectors trained
    with early stopping choosing the epoch on a validation split and calibrated on 399 other rows."""
    rates = {0.05: [], 0.01: []}
    for seed in range(N_SEEDS):
        rng = np.random.RandomState(seed)
        detector = VAEDetector(**{**TINY, "random_state": seed, "epochs": 4}, n_iter_no_change=1,
                               calibration_fraction=N_CALIBRATION / 800).fit(rng.normal(size=(800, 3)))
        assert detector.training_summary_["n_calibration"] == N_CALIBRATION
        p_values = detector.p_values(rng.normal(size=(N_FRESH, 3)))
        for fpr in rates:
            rates[fpr].append(np.mean(p_values <= fpr))
    return {fpr: np.array(observed) for fpr, observed in rates.items()}


@pytest.mark.parametrize("fpr", [0.05, 0.01])
def test_false_alarm_rate_on_fresh_normal_data_is_the_target_across_seeds(false_alarm_rates, fpr):
    # With n calibration scores exchangeable with new data, the false-alarm rate of one calibration set
    # is Beta(k, n + 1 - k) distributed, k = floor(fpr (n + 1)): mean k / (n + 1), which n = 399 makes
    # exactly fpr. Each run adds the binomial error of N_FRESH rows; the mean over N_SEEDS runs must lie
    # within 3 of its standard errors (0.0076 at 0.05, 0.0035 at 0.01).
    n = N_CALIBRATION
    k = np.floor(fpr * (n + 1))
    assert k / (n + 1) == pytest.approx(fpr)
    variance_of_one_run = k * (n + 1 - k) / ((n + 1) ** 2 * (n + 2)) + fpr * (1 - fpr) / N_FRESH
    tolerance = 3 * np.sqrt(variance_of_one_run / N_SEEDS)
    assert abs(false_alarm_rates[fpr].mean() - fpr) <= tolerance


def test_predict_at_a_target_fpr_flags_exactly_the_small_p_values(fitted_tabular):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    detector.set_threshold(fpr=0.2)
    np.testing.assert_array_equal(detector.predict(X) == -1, detector.p_values(X) <= 0.2)


def test_calibration_split_is_disjoint_from_the_early_stopping_split():
    X = np.random.RandomState(0).normal(size=(100, 3))
    detector = VAEDetector(**TINY, validation_fraction=0.2, calibration_fraction=0.3).fit(X)
    summary = detector.training_summary_
    assert (summary["n_train"], summary["n_validation"], summary["n_calibration"]) == (50, 20, 30)
    assert detector.calibration_.source == "held-out"
    _, (train, validation, calibration) = detector._seeds_and_splits(len(X))
    assert sorted(np.r_[train, validation, calibration]) == list(range(100))
    # the calibration scores are exactly those of the rows neither trained on nor watched by early stopping
    np.testing.assert_allclose(detector.calibration_.scores, detector.score_samples(X[calibration]), rtol=1e-6)


def test_without_early_stopping_the_validation_split_joins_the_calibration_data():
    X = np.random.RandomState(0).normal(size=(100, 3))
    detector = VAEDetector(**TINY, validation_fraction=0.2, calibration_fraction=0.3, early_stopping=False).fit(X)
    assert len(detector.calibration_.scores) == detector.training_summary_["n_calibration"] == 50


def test_calibrating_on_the_split_that_chose_the_epoch_is_announced():
    with pytest.warns(UserWarning, match="validation split early stopping chose the epoch on"):
        detector = VAEDetector(**TINY, n_estimators=1, calibration_fraction=0.0).fit(
            np.random.RandomState(0).normal(size=(100, 3)))
    assert detector.calibration_.source == "early-stopping"


def test_members_never_calibrate_on_validation_rows_other_members_trained_on():
    with pytest.warns(UserWarning, match="No data held out"):
        detector = VAEDetector(**TINY, calibration_fraction=0.0).fit(np.random.RandomState(0).normal(size=(100, 3)))
    assert detector.n_estimators_ == 5 and detector.calibration_.source == "training"


def test_a_score_method_set_after_fit_takes_effect_when_calibrate_recalibrates(fitted_tabular):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    before, offset = detector.score_samples(X), detector.offset_
    detector.set_params(score_method="latent")
    # as for every parameter, the fitted detector is unchanged: it scores and thresholds what "auto" was at fit
    np.testing.assert_array_equal(detector.score_samples(X), before)
    assert detector.score_method_ == "min_evidence" and detector.offset_ == offset
    X_normal = np.random.RandomState(5).normal(size=(300, 5))
    detector.calibrate(X_normal)
    assert detector.score_method_ == detector.calibration_.score_method == "latent"
    np.testing.assert_array_equal(detector.calibration_.scores, detector.score_samples(X_normal))
    np.testing.assert_allclose(detector.score_samples(X), detector.score_table(X, methods=["latent"])["latent"])
    # contamination="auto": 1% of the calibration data lies below the threshold
    assert np.mean(detector.predict(X_normal) == -1) == pytest.approx(0.01, abs=0.004)


def _best_f1(is_anomaly, scores):
    from sklearn.metrics import f1_score

    return max(f1_score(is_anomaly, scores < cut) for cut in np.append(np.unique(scores), np.inf))


@pytest.mark.parametrize("labels", ["zero_one", "predict_convention"])
def test_threshold_from_labelled_examples_maximises_f1(fitted_tabular, labels):
    from sklearn.metrics import f1_score

    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    rng = np.random.RandomState(3)
    X_labelled = np.vstack([X[:30], rng.normal(scale=4.0, size=(10, 5))])
    is_anomaly = np.r_[np.zeros(30, bool), np.ones(10, bool)]
    y = is_anomaly.astype(int) if labels == "zero_one" else np.where(is_anomaly, -1, 1)
    detector.set_threshold(X=X_labelled, y=y)
    flagged = detector.predict(X_labelled) == -1
    best = _best_f1(is_anomaly, detector.score_samples(X_labelled))
    assert f1_score(is_anomaly, flagged) == pytest.approx(best)
    assert best > 0.5


def test_labelled_examples_without_anomalies_warn_and_keep_the_threshold(fitted_tabular):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    before = detector.offset_
    with pytest.warns(UserWarning, match="all normal samples, so no threshold separates them"):
        detector.set_threshold(X=X[:10], y=np.zeros(10))
    assert detector.offset_ == before


def test_labels_of_unknown_coding_are_refused(fitted_tabular):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    with pytest.raises(ValueError, match="y must hold 0/1"):
        detector.set_threshold(X=X[:3], y=[0, 1, 2])
    with pytest.raises(ValueError, match="both X and y"):
        detector.set_threshold(y=[0, 1, 1])


def test_fpr_too_small_for_the_held_out_set_warns_and_flags_nothing(fitted_tabular):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    with pytest.warns(UserWarning, match="nothing will be flagged"):
        detector.set_threshold(fpr=0.001)
    assert (detector.predict(X) == 1).all()


def test_calibrating_on_image_files_reads_them_as_scoring_does_and_reports_the_unreadable(tmp_path):
    write_squares(tmp_path / "train", 30, seed=0)
    write_squares(tmp_path / "normal", 12, seed=1)
    (tmp_path / "normal" / "broken.png").write_bytes(b"not a png")
    detector = VAEDetector(**TINY, image_size=12, channels=1).fit_paths(tmp_path / "train")
    assert detector.calibrate_paths(tmp_path / "normal") is detector
    assert [s.path.endswith("broken.png") for s in detector.skipped_files_] == [True]
    assert len(detector.calibration_) == 12 and detector.calibration_.source == "calibrate(X)"
    table = detector.score_paths(tmp_path / "normal")
    np.testing.assert_allclose(np.sort(detector.calibration_.scores), np.sort(table["score"].dropna()), rtol=1e-5)


def test_the_calibration_object_keeps_its_rule_and_says_what_it_reaches():
    calibration = Calibration(np.arange(1.0, 20.0), "elbo", "held-out")
    assert calibration.rule == {"contamination": 0.01} and calibration.offset == pytest.approx(np.quantile(
        np.arange(1.0, 20.0), 0.01))
    assert calibration.smallest_rate == 1 / 20 and calibration.reachable(0.05) and not calibration.reachable(0.04)
    calibration.set_threshold(fpr=0.1)  # floor(0.1 * 20) = 2: the second smallest score
    assert (calibration.offset, calibration.rule) == (2.0, {"fpr": 0.1})
    verdicts = calibration.verdicts([1.5, np.nan, 30.0])
    np.testing.assert_allclose(verdicts["p_value"], [2 / 20, np.nan, 1.0])
    assert verdicts["is_outlier"].tolist() == [True, False, False]
    assert "19 scores of normal data held out" in calibration.describe()
    assert calibration.describe_rule() == "target false-positive rate 0.1"
    calibration.set_threshold(threshold=-1.0)
    assert calibration.describe_rule() == "set by hand" and calibration.rule == {"threshold": -1.0}
