"""PyOD's vocabulary on both detectors: decision_scores_, threshold_, labels_, predict_proba, predict_confidence."""

import copy

import numpy as np
import pytest

from vaedetect import VAEDetector

from tests.conftest import TINY

pyod_base = pytest.importorskip("pyod.models.base", reason="PyOD, in the test extra: pip install pyod")


def _rows(n, seed):
    return np.random.RandomState(seed).normal(size=(n, 5))


def _new_rows():
    """Ordinary rows and two far out, so that both verdicts and both tails of the probabilities occur."""
    return np.vstack([_rows(30, 7), np.full((2, 5), 6.0)])


def test_decision_scores_are_the_outlier_scores_of_every_sample_fitted_on_in_their_order(fitted_tabular):
    detector, X = fitted_tabular
    assert detector.decision_scores_.shape == (len(X),)
    np.testing.assert_allclose(detector.decision_scores_, -detector.score_samples(X), rtol=1e-6)


def test_threshold_and_labels_are_offset_and_predict_in_pyods_signs(fitted_tabular):
    detector, X = fitted_tabular
    assert detector.threshold_ == -detector.offset_
    np.testing.assert_array_equal(detector.labels_, (detector.predict(X) == -1).astype(int))


def test_labels_follow_a_threshold_moved_after_fit(fitted_tabular):
    detector, _ = fitted_tabular
    moved = copy.deepcopy(detector).set_threshold(threshold=np.median(-detector.decision_scores_))
    assert moved.labels_.sum() == pytest.approx(len(moved.labels_) / 2, abs=1)


class _PyODView(pyod_base.BaseDetector):
    """A PyOD detector whose outlier scores are a fitted vaedetect detector's: PyOD's own predict_proba and
    predict_confidence, run on the same numbers, are what ours must return."""

    class _Thresholder:
        """What PyOD takes for a threshold not drawn from a contamination (a PyThresh object)."""

        def __init__(self, threshold):
            self.threshold = threshold

        def predict(self, scores):
            return (scores > self.threshold).astype(int)

    def __init__(self, detector):
        self.detector = detector
        # not a number: PyOD takes the rate of flagging from labels_, and the verdicts from the thresholder
        self.contamination = self._Thresholder(detector.threshold_)
        self._classes = 2
        self.decision_scores_, self.threshold_, self.labels_ = (detector.decision_scores_, detector.threshold_,
                                                                detector.labels_)
        self._mu, self._sigma = np.mean(self.decision_scores_), np.std(self.decision_scores_)

    def fit(self, X, y=None):
        return self

    def decision_function(self, X):
        return -self.detector.score_samples(X)


@pytest.mark.parametrize("method", ["linear", "unify"])
def test_predict_proba_is_pyods_on_the_same_scores(fitted_tabular, method):
    detector, _ = fitted_tabular
    ours = detector.predict_proba(_new_rows(), method=method)
    np.testing.assert_allclose(ours, _PyODView(detector).predict_proba(_new_rows(), method=method), atol=1e-12)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0)
    assert ours[-2:, 1].min() >= ours[:-2, 1].max()  # the far rows are the likeliest outliers (linear clips at 1)


def test_predict_confidence_is_pyods_on_the_same_scores(fitted_tabular):
    detector, _ = fitted_tabular
    ours = detector.predict_confidence(_new_rows())
    np.testing.assert_allclose(ours, _PyODView(detector).predict_confidence(_new_rows()), atol=1e-12)
    assert ((ours >= 0) & (ours <= 1)).all()
    assert (ours[-2:] > 0.99).all()  # flagged far beyond every training score: no doubt
    probabilities, confidence = detector.predict_proba(_new_rows(), return_confidence=True)
    np.testing.assert_array_equal(confidence, ours)


def test_an_unknown_probability_method_is_refused_by_name(fitted_tabular):
    with pytest.raises(ValueError, match="'linear' or 'unify'"):
        fitted_tabular[0].predict_proba(_rows(3, 0), method="softmax")


def test_a_tool_written_for_pyod_reads_vaedetector_as_it_reads_a_pyod_detector():
    from pyod.models.iforest import IForest

    def pyod_consumer(detector, X_train, X_new):
        """What code written for PyOD does: fit, read the training verdicts, rank new data by probability."""
        detector.fit(X_train)
        flagged = np.flatnonzero(detector.labels_ == 1)
        assert detector.decision_scores_.shape == (len(X_train),)
        assert set(np.unique(detector.labels_)) <= {0, 1}
        assert np.all(detector.decision_scores_[flagged] > detector.threshold_)
        probability = detector.predict_proba(X_new)[:, 1]
        return np.argsort(-probability)[:2]

    X_train = np.vstack([_rows(200, 0), np.full((4, 5), 5.0)])
    for detector in (IForest(random_state=0), VAEDetector(**TINY)):
        assert set(pyod_consumer(detector, X_train, _new_rows())) == {30, 31}


def test_decision_scores_survive_a_model_file_and_a_file_without_them_still_loads(fitted_tabular, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    detector, _ = fitted_tabular
    detector.save(tmp_path / "model.vaedetect")
    loaded = VAEDetector.load(tmp_path / "model.vaedetect")
    np.testing.assert_allclose(loaded.decision_scores_, detector.decision_scores_)
    np.testing.assert_array_equal(loaded.labels_, detector.labels_)

    with safe_open(tmp_path / "model.vaedetect", framework="pt") as file:
        metadata = file.metadata()
    tensors = load_file(tmp_path / "model.vaedetect")
    del tensors["training.decision_scores"]  # as files written before they were kept
    save_file(tensors, tmp_path / "older.vaedetect", metadata=metadata)
    older = VAEDetector.load(tmp_path / "older.vaedetect")
    assert not hasattr(older, "decision_scores_")
    np.testing.assert_allclose(older.score_samples(_rows(3, 0)), detector.score_samples(_rows(3, 0)))


def test_a_model_file_with_decision_scores_of_another_length_is_refused(fitted_tabular, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    detector, _ = fitted_tabular
    detector.save(tmp_path / "model.vaedetect")
    with safe_open(tmp_path / "model.vaedetect", framework="pt") as file:
        metadata = file.metadata()
    tensors = load_file(tmp_path / "model.vaedetect")
    tensors["training.decision_scores"] = torch.zeros(3, dtype=torch.float64)
    save_file(tensors, tmp_path / "forged.vaedetect", metadata=metadata)
    with pytest.raises(ValueError, match="forged.vaedetect.*training.decision_scores.*one score per sample"):
        VAEDetector.load(tmp_path / "forged.vaedetect")
