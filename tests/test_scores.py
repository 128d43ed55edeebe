"""The score methods: each one's mathematics on fitted detectors, tables of several scores, determinism."""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from vaedetect import VAEDetector

from .conftest import TINY, scoring_by, with_draws


def test_scores_are_finite_float_and_one_per_sample(fitted_images):
    detector, X = fitted_images
    scores = detector.score_samples(X)
    assert scores.shape == (40,) and scores.dtype == np.float64
    assert np.isfinite(scores).all()


def test_a_tables_members_score_a_row_alike_alone_or_in_any_batch(fitted_tabular):
    detector, X = fitted_tabular
    together = detector.score_samples(X)
    alone = np.array([detector.score_samples(X[i : i + 1])[0] for i in range(5)])
    # scores standardised on the training rows lie near 0, where only an absolute tolerance means anything
    np.testing.assert_allclose(alone, together[:5], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(detector.score_samples(X), together)


def test_scoring_is_deterministic_alone_or_in_any_batch(fitted_images):
    detector, X = fitted_images
    together = detector.score_samples(X)
    alone = np.array([detector.score_samples(X[i : i + 1])[0] for i in range(5)])
    # float32 convolutions sum in a batch-size-dependent order: bits_typicality, a distance of O(1)
    # between such sums, may differ by about 1e-5 in absolute terms
    np.testing.assert_allclose(alone, together[:5], rtol=1e-5, atol=5e-5)
    np.testing.assert_array_equal(detector.score_samples(X), together)


def test_reconstruction_score_is_negative_mean_squared_error(fitted_tabular):
    detector, X = fitted_tabular
    detector = clone(detector).set_params(score_method="reconstruction").fit(X)
    scores = detector.score_samples(X)
    assert (scores <= 0).all()
    # standardised space: the error of a far-away point is large
    far = np.full((1, 5), 10.0)
    assert detector.score_samples(far)[0] < scores.min()


def test_iwae_with_more_draws_is_a_tighter_bound(fitted_images):
    detector, X = fitted_images
    # the draws only matter at scoring time, so fitted copies can be given other numbers of them;
    # a one-draw bound is a noisy estimate: compare two bounds with enough draws to be stable
    few, many = (with_draws(scoring_by(detector, "iwae", X), n) for n in (4, 256))
    assert many.score_samples(X).mean() > few.score_samples(X).mean()


def test_iwae_bound_is_at_least_the_elbo_on_average(fitted_images):
    detector, X = fitted_images
    more_draws = with_draws(detector, 32)
    table = more_draws.score_table(X, methods=["elbo", "iwae"])
    assert table["iwae"].mean() > table["elbo"].mean()


def test_kl_score_is_minus_the_closed_form_kl(fitted_tabular):
    detector, X = fitted_tabular
    mean, logvar, _ = detector.model_.encode(torch.from_numpy(detector.modality_.to_network(X).numpy()))
    expected = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1)
    kl = detector.score_table(X, methods=["kl"])["kl"]
    np.testing.assert_allclose(kl, -expected.detach().numpy(), rtol=1e-5)
    assert (kl <= 0).all()


def test_latent_score_is_minus_the_mahalanobis_distance_to_the_training_codes(fitted_tabular):
    detector, X = fitted_tabular
    reference = detector.reference_
    centred = detector.transform(X) - reference.latent_location.double().numpy()
    distance = np.einsum("bi,ij,bj->b", centred, reference.latent_precision.double().numpy(), centred)
    np.testing.assert_allclose(detector.score_table(X, methods=["latent"])["latent"], -distance, rtol=1e-4)


@pytest.fixture(scope="module")
def fitted_on_all():
    """A tabular detector without a validation split, so that its reference is fitted on exactly X."""
    X = np.random.RandomState(0).normal(size=(200, 4))
    detector = VAEDetector(**TINY, validation_fraction=0.0, calibration_fraction=0.0)
    with pytest.warns(UserWarning, match="No data held out"):
        detector.fit(X)
    return detector, X


def test_latent_reference_is_the_mean_and_shrunk_covariance_of_training_codes(fitted_on_all):
    from sklearn.covariance import LedoitWolf

    detector, X = fitted_on_all
    codes = detector.transform(X)
    np.testing.assert_allclose(detector.reference_.latent_location, codes.mean(0), atol=1e-5)
    np.testing.assert_allclose(detector.reference_.latent_precision, LedoitWolf().fit(codes).precision_, rtol=1e-3)


def test_residual_score_is_the_mahalanobis_distance_of_the_residual_from_the_training_residuals(fitted_tabular):
    from sklearn.covariance import LedoitWolf

    from vaedetect.scoring import residuals

    detector, X = fitted_tabular
    _, (train, _, _) = detector._seeds_and_splits(len(X))

    def residual_of(rows):
        with torch.no_grad():
            return residuals(detector._network(), detector.modality_.to_network(rows)).double().numpy()

    expected = -LedoitWolf().fit(residual_of(X[train])).mahalanobis(residual_of(X))
    np.testing.assert_allclose(detector.score_table(X, methods=["residual"])["residual"], expected, rtol=1e-3)


def test_residual_statistics_come_from_a_bounded_sample_of_the_training_rows(monkeypatch):
    from sklearn.covariance import LedoitWolf

    from vaedetect import scoring

    monkeypatch.setattr(scoring, "MAX_RESIDUAL_ROWS", 20)
    X = np.random.RandomState(4).normal(size=(120, 5))
    detector = VAEDetector(**TINY).fit(X)
    _, (train, _, _) = detector._seeds_and_splits(len(X))
    with torch.no_grad():
        residual = scoring.residuals(detector._network(), detector.modality_.to_network(X[train[:20]])).double().numpy()
    np.testing.assert_allclose(detector.reference_.residual_precision.numpy(), LedoitWolf().fit(residual).precision_,
                               rtol=1e-3, atol=1e-3)


def test_too_many_features_for_the_residual_score_is_said_when_it_is_asked_for(monkeypatch):
    from vaedetect import settings

    monkeypatch.setattr(settings, "MAX_RESIDUAL_FEATURES", 3)
    X = np.random.RandomState(4).normal(size=(60, 5))
    detector = VAEDetector(**TINY).fit(X)
    assert detector.reference_.residual_precision is None
    with pytest.raises(ValueError, match="needs a detector fitted on tabular data of at most 3 features"):
        detector.score_table(X, methods=["residual"])


def _mean_distance_to_nearest(reference, rows, k=5, skip_self=False):
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=k + skip_self).fit(reference).kneighbors(rows)
    return distances[:, int(skip_self):].mean(1)


def test_min_evidence_is_the_least_of_three_pieces_of_evidence_standardised_on_the_training_rows(fitted_on_all):
    detector, X = fitted_on_all
    codes = detector.transform(X)
    table = detector.score_table(X, methods=["elbo", "reconstruction"])
    # on the training rows, each row's own code is left out of its neighbours
    training = np.column_stack([table["elbo"], table["reconstruction"],
                                -_mean_distance_to_nearest(codes, codes, skip_self=True)])
    q25, median, q75 = np.percentile(training, [25, 50, 75], axis=0)
    np.testing.assert_allclose(detector.reference_.evidence_location, median, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(detector.reference_.evidence_scale, q75 - q25, rtol=1e-4, atol=1e-5)

    new = np.random.RandomState(9).normal(size=(30, 4)) * [1, 1, 3, 1]
    new_table = detector.score_table(new, methods=["elbo", "reconstruction", "min_evidence"])
    evidence = np.column_stack([new_table["elbo"], new_table["reconstruction"],
                                -_mean_distance_to_nearest(codes, detector.transform(new))])
    expected = ((evidence - median) / (q75 - q25)).min(axis=1)
    np.testing.assert_allclose(new_table["min_evidence"], expected, rtol=1e-4, atol=1e-4)


def test_min_evidence_measures_distances_to_a_bounded_sample_of_the_training_codes(monkeypatch):
    from vaedetect import scoring

    monkeypatch.setattr(scoring, "MAX_NEIGHBOUR_ROWS", 20)
    X = np.random.RandomState(4).normal(size=(120, 5))
    detector = VAEDetector(**TINY).fit(X)
    _, (train, _, _) = detector._seeds_and_splits(len(X))
    np.testing.assert_allclose(detector.reference_.neighbour_codes, detector.transform(X[train[:20]]), atol=1e-5)


def test_a_tabular_score_is_refused_for_images():
    with pytest.raises(ValueError, match="'residual' is defined for tabular data and backbone features only; X holds images"):
        VAEDetector(**TINY, score_method="residual").fit(np.zeros((20, 8, 8), dtype=np.uint8))


def test_typicality_is_the_two_sided_scaled_distance_from_the_typical_elbo():
    from vaedetect.scoring import Reference, typicality_from_elbo

    reference = Reference(torch.zeros(1), torch.eye(1), elbo_center=10.0, elbo_spread_below=2.0, elbo_spread_above=0.5)
    elbo = np.array([10.0, 6.0, 11.0, 12.0])
    # below: 4 / 2 = 2 spreads; above: 1 / 0.5 = 2 and 2 / 0.5 = 4 spreads
    np.testing.assert_allclose(typicality_from_elbo(elbo, reference), [0.0, -2.0, -2.0, -4.0])
    np.testing.assert_allclose(typicality_from_elbo(torch.tensor(elbo), reference).numpy(), [0.0, -2.0, -2.0, -4.0])


def test_typicality_reference_centres_on_the_median_training_elbo(fitted_on_all):
    detector, X = fitted_on_all
    elbo = detector.score_table(X, methods=["elbo"])["elbo"].to_numpy()
    reference = detector.reference_
    assert reference.elbo_center == pytest.approx(np.median(elbo), rel=1e-5)
    above = elbo[elbo > reference.elbo_center] - reference.elbo_center
    assert reference.elbo_spread_above == pytest.approx(np.median(above), rel=1e-4)
    # half of the training data lies within one typical spread on either side
    typicality = detector.score_table(X, methods=["typicality"])["typicality"]
    assert np.mean(typicality >= -1) == pytest.approx(0.5, abs=0.02)


def test_one_digit_detector_ranks_other_digits_as_anomalous():
    X, y = load_digits(return_X_y=True)
    images = (X / 16.0).reshape(-1, 8, 8)
    train, test = np.arange(len(X)) % 2 == 0, np.arange(len(X)) % 2 == 1
    detector = VAEDetector(latent_dim=8, base_channels=8, n_stages=2, epochs=30, random_state=0)
    detector.fit(images[train & (y == 0)])
    auc = roc_auc_score(y[test] != 0, -detector.score_samples(images[test]))
    assert auc >= 0.9


def test_the_reconstruction_probability_is_the_elbo_without_its_kl(fitted_tabular):
    detector, X = fitted_tabular
    table = detector.score_table(X[:20], methods=["reconstruction_probability", "elbo", "kl"])
    # the kl score is minus the KL divergence: ELBO = E_q[log p(x|z)] - KL
    np.testing.assert_allclose(table["elbo"], table["reconstruction_probability"] + table["kl"], rtol=1e-5, atol=1e-5)
    assert (table["kl"] < 0).all()
    chosen = scoring_by(detector, "reconstruction_probability", X)
    np.testing.assert_allclose(chosen.score_samples(X[:20]), table["reconstruction_probability"], rtol=1e-6)


def test_score_table_has_every_method_and_matches_score_samples(fitted_images):
    detector, X = fitted_images
    table = detector.score_table(X[:7])
    assert list(table.columns) == ["elbo", "elbo_bits_per_dim", "iwae", "iwae_bits_per_dim", "kl", "reconstruction",
                                   "reconstruction_probability", "latent", "typicality", "png_bits_per_dim",
                                   "complexity", "bits_typicality", "regret"]
    from vaedetect.registry import score_names

    for method in score_names(pixels=True):
        other = scoring_by(detector, method, X[7:])
        np.testing.assert_allclose(table[method], other.score_samples(X[:7]), rtol=1e-5, atol=2e-5, err_msg=method)
    np.testing.assert_allclose(table["complexity"], table["png_bits_per_dim"] - table["elbo_bits_per_dim"])


def test_score_table_of_tabular_data_leaves_out_image_scores(fitted_tabular):
    detector, X = fitted_tabular
    table = detector.score_table(X[:5])
    assert "complexity" not in table and "elbo_bits_per_dim" not in table
    assert list(table.columns) == ["elbo", "iwae", "kl", "reconstruction", "reconstruction_probability", "latent",
                                   "typicality", "regret", "residual", "min_evidence"]
    with pytest.raises(ValueError, match="methods must be .* got \\['complexity'\\]"):
        detector.score_table(X[:5], methods=["complexity"])


def test_auto_score_is_bits_typicality_for_images_and_min_evidence_for_tables(fitted_images, fitted_tabular):
    assert fitted_images[0].score_method == "auto" and fitted_images[0].score_method_ == "bits_typicality"
    assert fitted_tabular[0].score_method_ == "min_evidence"
    detector, X = fitted_images
    explicit = clone(detector).set_params(score_method="bits_typicality").fit(X)
    np.testing.assert_array_equal(detector.score_samples(X), explicit.score_samples(X))


def test_likelihood_regret_is_non_negative_and_grows_with_steps(dark_detector):
    detector, X = dark_detector
    odd = X[:5].copy()
    odd[:, 4:8, 4:8] = 255
    batch = np.concatenate([X[:5], odd])
    regret = copy.deepcopy(detector).set_params(regret_steps=3)
    few = regret.score_table(batch, methods=["regret"])["regret"].to_numpy()
    many = regret.set_params(regret_steps=30).score_table(batch, methods=["regret"])["regret"].to_numpy()
    # the score is minus the regret: regret >= 0, and more steps only find better posteriors
    assert (few <= 0).all() and (many <= few + 1e-9).all()
    assert (many < 0).all()
    # the decoder was not touched and collected no gradients
    assert all(p.grad is None for p in regret.model_.parameters())


def test_regret_is_the_same_alone_or_in_a_batch(dark_detector):
    detector, X = dark_detector
    regret = scoring_by(detector.set_params(regret_steps=5), "regret", X[:10])
    together = regret.score_samples(X[:6])
    alone = np.array([regret.score_samples(X[i : i + 1])[0] for i in range(6)])
    np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-4)
