import copy

import numpy as np
import pytest

from vaedetect import VAEDetector
from vaedetect.registry import ScoreMethod, ScoreMethodChoices, get_score, register_score, score_names, unregister_score

from .conftest import TINY


def minus_norm(model, x, noise, likelihood):
    """A toy score: minus the length of the input in network space."""
    return -x.flatten(1).norm(dim=1)


@pytest.fixture
def toy_score():
    register_score(ScoreMethod("minus_norm", minus_norm))
    yield "minus_norm"
    unregister_score("minus_norm")


@pytest.fixture(scope="module")
def fitted_tabular():
    X = np.random.RandomState(0).normal(size=(120, 5))
    return VAEDetector(**TINY).fit(X), X


@pytest.fixture
def toy_detector(fitted_tabular, toy_score):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    detector.set_params(score_method=toy_score).calibrate(np.random.RandomState(3).normal(size=(200, X.shape[1])))
    # tabular rows reach the network standardised
    expected = -np.linalg.norm((X - detector.feature_mean_) / detector.feature_scale_, axis=1)
    return detector, X, expected


def test_a_registered_score_is_what_score_samples_returns(toy_detector):
    detector, X, expected = toy_detector
    np.testing.assert_allclose(detector.score_samples(X), expected, rtol=1e-5)


def test_a_registered_score_is_a_column_of_the_score_table(toy_detector):
    detector, X, expected = toy_detector
    table = detector.score_table(X, methods=["kl", "minus_norm"])
    assert list(table.columns) == ["kl", "minus_norm"]
    np.testing.assert_allclose(table["minus_norm"], expected, rtol=1e-5)
    assert "minus_norm" in detector.score_table(X).columns  # all applicable methods by default


def test_p_values_of_a_registered_score_count_its_calibration_scores(toy_detector):
    from vaedetect.conformal import conformal_p_values

    detector, X, expected = toy_detector
    np.testing.assert_allclose(detector.p_values(X), conformal_p_values(detector.calibration_.scores, expected),
                               atol=1e-12)


def test_a_registered_score_is_a_choice_of_the_command_line(toy_score):
    from click.testing import CliRunner

    from vaedetect.cli import main

    option = next(param for param in main.commands["fit"].params if param.name == "score_method")
    assert option.type.convert(toy_score, option, None) == toy_score
    assert toy_score in CliRunner().invoke(main, ["fit", "--help"]).output


def test_an_unregistered_score_is_refused_by_name():
    with pytest.raises(ValueError, match="Unknown score method 'nope'; choose one of"):
        get_score("nope")
    assert "nope" not in ScoreMethodChoices() and "auto" in ScoreMethodChoices()


def test_scores_are_offered_for_the_data_they_are_defined_for():
    assert set(score_names()) - set(score_names(pixels=False)) == {"complexity", "bits_typicality"}
    assert set(score_names()) - set(score_names(pixels=True)) == {"residual", "min_evidence"}
