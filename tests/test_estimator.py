import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import vaedetect
from vaedetect import VAEDetector

from .conftest import TINY


@pytest.fixture(scope="module")
def fitted_tabular():
    X = np.random.RandomState(0).normal(size=(120, 5))
    return VAEDetector(**TINY).fit(X), X


@pytest.fixture(scope="module")
def fitted_images():
    rng = np.random.RandomState(1)
    X = rng.randint(0, 256, size=(40, 10, 10, 3)).astype(np.uint8)
    return VAEDetector(**TINY).fit(X), X


# ------------------------------------------------------------------ layouts


@pytest.mark.parametrize(
    "shape, image_shape",
    [((40, 5), None), ((40, 64), (1, 8, 8)), ((40, 8, 8), None), ((40, 3, 8, 8), None), ((40, 8, 8, 3), None)],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_every_layout_round_trips_through_transform_and_inverse(shape, image_shape, dtype):
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=shape).astype(dtype)
    if dtype == np.float64:
        X = X / 255.0
    detector = VAEDetector(**TINY, image_shape=image_shape).fit(X)
    Z = detector.transform(X)
    assert Z.shape == (40, 2 * detector.n_estimators_)  # a table's members, side by side
    decoded = detector.inverse_transform(Z)
    assert decoded.shape == X.shape
    if image_shape is None and len(shape) == 2:
        return  # tabular: unbounded, standardised back to the data's scale
    assert decoded.dtype == (np.uint8 if dtype == np.uint8 else np.float32)
    assert decoded.min() >= 0 and decoded.max() <= (255 if dtype == np.uint8 else 1.0)


def test_tabular_inverse_transform_returns_the_feature_scale(fitted_tabular):
    detector, X = fitted_tabular
    X_shifted = X * 100 + 1000
    detector = clone(detector).fit(X_shifted)
    decoded = detector.inverse_transform(detector.transform(X_shifted))
    # decoded means sit near the data's centre, in its own units
    np.testing.assert_allclose(decoded.mean(0), X_shifted.mean(0), atol=60)


def test_spatial_latent_is_flattened_by_transform():
    X = np.random.RandomState(0).uniform(size=(20, 8, 8))
    detector = VAEDetector(**TINY, spatial_latent=True).fit(X)
    Z = detector.transform(X)
    assert Z.shape == (20, 2 * 2 * 2)  # latent_dim channels at 8 / 2**2 = 2 pixels per side
    assert detector.inverse_transform(Z).shape == X.shape


# ------------------------------------------------------------------ scores


def test_scores_are_finite_float_and_one_per_sample(fitted_images):
    detector, X = fitted_images
    scores = detector.score_samples(X)
    assert scores.shape == (40,) and scores.dtype == np.float64
    assert np.isfinite(scores).all()


def test_a_tables_members_score_a_row_alike_alone_or_in_any_batch(fitted_tabular):
    detector, X = fitted_tabular
    together = detector.score_samples(X)
    alone = np.array([detector.score_samples(X[i : i + 1])[0] for i in range(5)])
    np.testing.assert_allclose(alone, together[:5], rtol=1e-5)
    np.testing.assert_array_equal(detector.score_samples(X), together)


def test_scoring_is_deterministic_alone_or_in_any_batch(fitted_images):
    detector, X = fitted_images
    together = detector.score_samples(X)
    alone = np.array([detector.score_samples(X[i : i + 1])[0] for i in range(5)])
    # float32 convolutions sum in a batch-size-dependent order: bits_typicality, a distance of O(1)
    # between such sums, may differ by about 1e-5 in absolute terms
    np.testing.assert_allclose(alone, together[:5], rtol=1e-5, atol=5e-5)
    np.testing.assert_array_equal(detector.score_samples(X), together)


def test_decision_function_is_score_minus_offset(fitted_tabular):
    detector, X = fitted_tabular
    np.testing.assert_allclose(detector.decision_function(X), detector.score_samples(X) - detector.offset_)
    np.testing.assert_array_equal(detector.predict(X), np.where(detector.decision_function(X) >= 0, 1, -1))


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
    few, many = (copy.deepcopy(detector).set_params(score_method="iwae") for _ in range(2))
    few.n_samples_, many.n_samples_ = 4, 256
    assert many.score_samples(X).mean() > few.score_samples(X).mean()


@pytest.mark.parametrize("kind, members, draws", [("tabular", 1, 16), ("tabular", 5, 16), ("features", "auto", 16),
                                                  ("image", "auto", 1)])
def test_auto_draws_are_sixteen_per_row_and_one_per_image(kind, members, draws):
    from vaedetect.settings import resolve

    assert resolve(VAEDetector(n_samples="auto", n_estimators=members).get_params(), kind).n_samples == draws


def test_fit_resolves_auto_draws_once(fitted_tabular):
    detector = VAEDetector(**{**TINY, "n_samples": "auto"}).fit(fitted_tabular[1])
    assert detector.n_samples_ == 16 and detector.n_samples == "auto"


@pytest.mark.parametrize("data, likelihood", [("fitted_tabular", "laplace"), ("fitted_images", "gaussian")])
def test_auto_likelihood_is_laplace_for_rows_and_gaussian_for_images(data, likelihood, request):
    detector, X = request.getfixturevalue(data)
    assert detector.likelihood == "auto"
    explicit = clone(detector).set_params(likelihood=likelihood).fit(X)
    np.testing.assert_array_equal(detector.score_samples(X), explicit.score_samples(X))


def test_auto_epochs_train_within_the_optimiser_step_budget(monkeypatch):
    monkeypatch.setattr(vaedetect.settings, "AUTO_MAX_STEPS", 12)
    X = np.random.RandomState(0).normal(size=(120, 5))
    detector = VAEDetector(**{**TINY, "epochs": "auto", "batch_size": 32, "early_stopping": False}).fit(X)
    # 96 training rows after 12 validation and 12 calibration rows are 3 batches of 32: 4 epochs fill the 12 steps
    assert detector.training_summary_["epochs"] == 4
    assert len(detector.history_) == 4


def test_auto_epochs_cut_one_epoch_short_where_it_alone_exceeds_the_budget(monkeypatch):
    import vaedetect.training

    monkeypatch.setattr(vaedetect.settings, "AUTO_MAX_STEPS", 2)
    taken, batches = [], vaedetect.training._batches

    def counted(*args):
        for index in batches(*args):
            taken.append(index)
            yield index

    monkeypatch.setattr(vaedetect.training, "_batches", counted)
    X = np.random.RandomState(0).normal(size=(120, 5))
    detector = VAEDetector(**{**TINY, "epochs": "auto", "batch_size": 32, "early_stopping": False}).fit(X)
    # 96 training rows are 3 batches of 32, over the budget of 2 steps: one epoch of 2 steps
    assert detector.training_summary_["epochs"] == 1 and len(taken) == 2


def test_iwae_bound_is_at_least_the_elbo_on_average(fitted_images):
    detector, X = fitted_images
    more_draws = copy.deepcopy(detector)
    more_draws.n_samples_ = 32
    table = more_draws.score_table(X, methods=["elbo", "iwae"])
    assert table["iwae"].mean() > table["elbo"].mean()


def test_kl_score_is_minus_the_closed_form_kl(fitted_tabular):
    detector, X = fitted_tabular
    mean, logvar, _ = detector.model_.encode(torch.from_numpy(detector._to_tensor(X).numpy()))
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
            return residuals(detector._network(), detector._to_tensor(rows)).double().numpy()

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
        residual = scoring.residuals(detector._network(), detector._to_tensor(X[train[:20]])).double().numpy()
    np.testing.assert_allclose(detector.reference_.residual_precision.numpy(), LedoitWolf().fit(residual).precision_,
                               rtol=1e-3, atol=1e-3)


def test_too_many_features_for_the_residual_score_is_said_when_it_is_asked_for(monkeypatch):
    from vaedetect import scoring

    monkeypatch.setattr(scoring, "MAX_RESIDUAL_FEATURES", 3)
    X = np.random.RandomState(4).normal(size=(60, 5))
    detector = VAEDetector(**TINY).fit(X)
    assert detector.reference_.residual_precision is None
    with pytest.raises(ValueError, match="needs a detector fitted on tabular data of at most 3 features"):
        detector.score_table(X, methods=["residual"])


def test_residual_score_survives_save_and_load(fitted_tabular, tmp_path):
    detector, X = fitted_tabular
    detector.save(tmp_path / "t.vae")
    table = vaedetect.load(tmp_path / "t.vae").score_table(X, methods=["residual"])
    np.testing.assert_array_equal(table["residual"], detector.score_table(X, methods=["residual"])["residual"])


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
    elbo = detector.score_samples(X)
    reference = detector.reference_
    assert reference.elbo_center == pytest.approx(np.median(elbo), rel=1e-5)
    above = elbo[elbo > reference.elbo_center] - reference.elbo_center
    assert reference.elbo_spread_above == pytest.approx(np.median(above), rel=1e-4)
    # half of the training data lies within one typical spread on either side
    typicality = detector.score_table(X, methods=["typicality"])["typicality"]
    assert np.mean(typicality >= -1) == pytest.approx(0.5, abs=0.02)


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


def test_one_digit_detector_ranks_other_digits_as_anomalous():
    X, y = load_digits(return_X_y=True)
    images = (X / 16.0).reshape(-1, 8, 8)
    train, test = np.arange(len(X)) % 2 == 0, np.arange(len(X)) % 2 == 1
    detector = VAEDetector(latent_dim=8, base_channels=8, n_stages=2, epochs=30, random_state=0)
    detector.fit(images[train & (y == 0)])
    auc = roc_auc_score(y[test] != 0, -detector.score_samples(images[test]))
    assert auc >= 0.9


# ------------------------------------------------------------------ persistence


def test_save_and_load_give_identical_scores(fitted_images, tmp_path):
    detector, X = fitted_images
    path = tmp_path / "model.vae"
    detector.save(path)
    loaded = vaedetect.load(path)
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))
    methods = ["latent", "typicality"]  # these also need the reference statistics
    assert loaded.score_table(X, methods=methods).equals(detector.score_table(X, methods=methods))
    np.testing.assert_array_equal(loaded.predict(X), detector.predict(X))
    assert loaded.get_params() == detector.get_params()
    assert loaded.offset_ == detector.offset_
    assert loaded.history_.equals(detector.history_)


def test_tabular_model_file_keeps_standardisation_and_feature_names(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(np.random.RandomState(0).normal(size=(50, 3)) * 5 + 2, columns=["a", "b", "c"])
    detector = VAEDetector(**TINY).fit(frame)
    detector.save(tmp_path / "t.vae")
    loaded = VAEDetector.load(tmp_path / "t.vae")
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(loaded.score_samples(frame), detector.score_samples(frame))


def test_pickle_round_trip_gives_identical_scores(fitted_tabular):
    detector, X = fitted_tabular
    restored = pickle.loads(pickle.dumps(detector))
    np.testing.assert_array_equal(restored.score_samples(X), detector.score_samples(X))


def test_clone_keeps_parameters_and_drops_fitted_state(fitted_tabular):
    detector, _ = fitted_tabular
    fresh = clone(detector)
    assert fresh.get_params() == detector.get_params()
    assert not hasattr(fresh, "model_")


def test_set_params_after_fit_leaves_the_fitted_models_scores_unchanged(fitted_tabular):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    before = detector.score_samples(X)
    # the decoder was trained as a Laplace with 2 draws per score: new parameters wait for the next fit
    detector.set_params(likelihood="gaussian", n_samples=5, augment=True)
    np.testing.assert_array_equal(detector.score_samples(X), before)
    assert (detector.likelihood_, detector.n_samples_) == ("laplace", 2)


def test_a_model_file_without_resolved_settings_resolves_them_from_its_parameters(fitted_tabular, tmp_path):
    from tests.hostile import _rewrite

    detector, X = fitted_tabular
    detector.save(tmp_path / "new.vae")

    def written_before_resolution(header):
        del header["fitted"]["likelihood_"], header["fitted"]["n_samples_"]

    _rewrite(tmp_path / "new.vae", tmp_path / "old.vae", edit_header=written_before_resolution)
    old = vaedetect.load(tmp_path / "old.vae")
    assert (old.likelihood_, old.n_samples_) == ("laplace", 2)
    np.testing.assert_array_equal(old.score_samples(X), detector.score_samples(X))


def test_tables_get_five_member_networks_and_images_one(fitted_tabular, fitted_images):
    assert fitted_tabular[0].n_estimators_ == 5
    assert fitted_images[0].n_estimators_ == 1


def test_the_members_codes_come_side_by_side_and_decode_to_their_mean(fitted_tabular):
    detector, X = fitted_tabular
    Z = detector.transform(X[:4])
    assert Z.shape == (4, 2 * 5) and len(detector.get_feature_names_out()) == 10
    np.testing.assert_allclose(detector.inverse_transform(Z), detector.reconstruct(X[:4]), rtol=1e-5, atol=1e-6)
    assert detector.inverse_transform(Z).shape == (4, 5)


def test_one_member_is_a_plain_network(tabular):
    detector = VAEDetector(**TINY, n_estimators=1).fit(tabular)
    assert detector.n_estimators_ == 1 and detector.model_.latent_shape == (2,)
    assert not any(hasattr(module, "groups") for module in detector.model_.modules())


def test_members_are_refused_for_images(gray_images):
    with pytest.raises(ValueError, match="n_estimators=2.*tables"):
        VAEDetector(**TINY, n_estimators=2).fit(gray_images)


def test_tables_train_at_the_faster_learning_rate(fitted_tabular, fitted_images):
    from vaedetect.settings import resolve

    assert resolve(fitted_tabular[0].get_params(), "tabular").learning_rate == 1e-3
    assert resolve(fitted_images[0].get_params(), "image").learning_rate == 5e-4
    assert resolve({**fitted_images[0].get_params(), "learning_rate": 0.01}, "image").learning_rate == 0.01
    assert fitted_tabular[0].history_["lr"].iloc[0] == pytest.approx(1e-3)


def test_tables_train_on_trimmed_batches_and_images_on_whole_ones(fitted_tabular, fitted_images):
    from vaedetect.settings import resolve

    assert resolve(fitted_tabular[0].get_params(), "tabular").trim_fraction == 0.1
    assert resolve(fitted_images[0].get_params(), "image").trim_fraction == 0.0
    assert resolve(fitted_tabular[0].get_params(), "features").trim_fraction == 0.0
    assert resolve({**fitted_images[0].get_params(), "trim_fraction": 0.2}, "image").trim_fraction == 0.2


def test_trim_fraction_must_leave_most_of_a_batch(tabular):
    with pytest.raises(ValueError, match="trim_fraction"):
        VAEDetector(**TINY, trim_fraction=0.5).fit(tabular)


def test_a_model_file_from_before_members_loads_as_one_network(tabular, tmp_path):
    from tests.hostile import _rewrite

    detector = VAEDetector(**TINY, n_estimators=1, learning_rate=5e-4).fit(tabular)
    detector.save(tmp_path / "new.vae")

    def written_before_members(header):
        del header["fitted"]["n_estimators_"], header["params"]["n_estimators"]

    _rewrite(tmp_path / "new.vae", tmp_path / "old.vae", edit_header=written_before_members)
    old = vaedetect.load(tmp_path / "old.vae")
    assert old.n_estimators_ == 1 and old.n_estimators == "auto"
    np.testing.assert_array_equal(old.score_samples(tabular), detector.score_samples(tabular))


def test_the_reconstruction_probability_is_the_elbo_without_its_kl(fitted_tabular):
    detector, X = fitted_tabular
    table = detector.score_table(X[:20], methods=["reconstruction_probability", "elbo", "kl"])
    # the kl score is minus the KL divergence: ELBO = E_q[log p(x|z)] - KL
    np.testing.assert_allclose(table["elbo"], table["reconstruction_probability"] + table["kl"], rtol=1e-5, atol=1e-5)
    assert (table["kl"] < 0).all()
    chosen = copy.deepcopy(detector).set_params(score_method="reconstruction_probability")
    np.testing.assert_allclose(chosen.score_samples(X[:20]), table["reconstruction_probability"], rtol=1e-6)


def test_loading_a_truncated_file_names_it(fitted_tabular, tmp_path):
    detector, _ = fitted_tabular
    path = tmp_path / "model.vae"
    detector.save(path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="model.vae.*not a readable vaedetect model"):
        vaedetect.load(path)


def test_loading_another_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a vaedetect model"):
        vaedetect.load(path)


def test_loading_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.vae"

    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"header": Exploit()}, path)
    with pytest.raises(ValueError, match="not a readable vaedetect model"):
        vaedetect.load(path)


def test_loading_a_newer_format_asks_for_an_upgrade(fitted_tabular, tmp_path, monkeypatch):
    from vaedetect import persistence

    detector, _ = fitted_tabular
    current = persistence.FORMAT_VERSION
    monkeypatch.setattr(persistence, "FORMAT_VERSION", 99)
    detector.save(tmp_path / "future.vae")
    monkeypatch.setattr(persistence, "FORMAT_VERSION", current)
    with pytest.raises(ValueError, match="format 99.*Upgrade vaedetect"):
        vaedetect.load(tmp_path / "future.vae")


def test_loading_a_format_without_reference_statistics_asks_for_a_refit(fitted_tabular, tmp_path, monkeypatch):
    from vaedetect import persistence

    monkeypatch.setattr(persistence, "FORMAT_VERSION", 1)
    fitted_tabular[0].save(tmp_path / "old.vae")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="format 1, which lacks .* fit the model again"):
        vaedetect.load(tmp_path / "old.vae")


def test_loading_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.vae"):
        vaedetect.load(tmp_path / "nothing.vae")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "X, message",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), "infinity"),
        (np.zeros((3, 2, 2, 2, 2)), "5 dimension"),
        (np.full((3, 4, 4), 2.0), r"must lie in \[0, 1\]"),
        (np.zeros((1, 4)), "n_samples=1"),
    ],
    ids=["nan", "inf", "ndim", "float-range", "one-sample"],
)
def test_bad_input_gets_a_clear_error(X, message):
    with pytest.raises(ValueError, match=message):
        VAEDetector(**TINY).fit(X)


def test_wrong_number_of_features_at_predict(fitted_tabular):
    detector, X = fitted_tabular
    with pytest.raises(ValueError, match="X has 4 features, but VAEDetector is expecting 5"):
        detector.predict(X[:, :4])


def test_wrong_image_size_at_predict(fitted_images):
    detector, X = fitted_images
    with pytest.raises(ValueError, match=r"fitted on arrays of shape \(n, 10, 10, 3\)"):
        detector.score_samples(X[:, :8, :8])


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(latent_dim=0), "'latent_dim' parameter"),
        (dict(loss="mse"), "'loss' parameter"),
        (dict(contamination=0.7), "'contamination' parameter"),
        (dict(kl_schedule="linear"), "'kl_schedule' parameter"),
        (dict(augment=True), "augment=True applies to images only"),
        (dict(likelihood="bernoulli"), "likelihood='bernoulli' needs images"),
        (dict(mixed_precision="fp16"), "'mixed_precision' parameter"),
    ],
)
def test_bad_parameters_are_named_in_fit(params, message):
    with pytest.raises(ValueError, match=message):
        VAEDetector(**{**TINY, **params}).fit(np.zeros((10, 3)))


def test_inverse_transform_checks_latent_width(fitted_tabular):
    detector, _ = fitted_tabular
    with pytest.raises(ValueError, match=r"shape \(n_samples, 10\) with n_samples >= 1; got \(3, 5\)"):
        detector.inverse_transform(np.zeros((3, 5)))


# ------------------------------------------------------------------ behaviour


def test_fit_returns_self_and_leaves_parameters_untouched():
    detector = VAEDetector(**TINY, image_shape=[8, 8])
    assert detector.fit(np.random.RandomState(0).uniform(size=(10, 64))) is detector
    assert detector.image_shape == [8, 8]


def test_same_random_state_gives_identical_scores(fitted_tabular):
    detector, X = fitted_tabular
    again = clone(detector).fit(X)
    np.testing.assert_array_equal(again.score_samples(X), detector.score_samples(X))


def test_mixed_precision_auto_is_float32_training_on_the_cpu(fitted_tabular):
    detector, X = fitted_tabular
    assert detector.mixed_precision == "auto" and detector.device_ == "cpu"
    forced = clone(detector).set_params(mixed_precision=True).fit(X)
    off = clone(detector).set_params(mixed_precision=False).fit(X)
    assert off.history_["loss"].tolist() == detector.history_["loss"].tolist()
    assert forced.history_["loss"].tolist() != detector.history_["loss"].tolist()


def test_fit_leaves_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    VAEDetector(**TINY).fit(np.random.RandomState(0).normal(size=(30, 3)))
    assert torch.equal(torch.rand(3), expected)


def test_skip_connections_warn_and_refuse_to_decode_codes():
    X = np.random.RandomState(0).uniform(size=(20, 8, 8))
    with pytest.warns(UserWarning, match="bypass the latent code"):
        detector = VAEDetector(**TINY, skip_connections=True).fit(X)
    assert np.isfinite(detector.score_samples(X)).all()
    with pytest.raises(ValueError, match="skip_connections=True"):
        detector.inverse_transform(detector.transform(X))


def test_no_warning_without_skip_connections():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VAEDetector(**TINY).fit(np.random.RandomState(0).uniform(size=(20, 8, 8)))


def test_sharp_loss_without_perceptual_term_calibrates_the_scale():
    X = np.random.RandomState(0).uniform(size=(30, 8, 8))
    detector = VAEDetector(**TINY, loss="sharp", perceptual_weight=0.0, kl_schedule="cyclical").fit(X)
    assert {"mse", "l1", "kl"} <= set(detector.history_.columns)
    # the scale left its initial value of 1 for the maximum-likelihood one
    assert detector.model_.log_scale.item() != 0.0
    assert np.isfinite(detector.score_samples(X)).all()


def test_works_inside_a_pipeline():
    X = np.random.RandomState(0).normal(size=(60, 4))
    pipeline = make_pipeline(FunctionTransformer(), VAEDetector(**TINY)).fit(X)
    assert set(np.unique(pipeline.predict(X))) <= {-1, 1}
    assert pipeline.score_samples(X).shape == (60,)


def test_fit_predict_labels_training_data(fitted_tabular):
    _, X = fitted_tabular
    labels = VAEDetector(**TINY, contamination=0.2).fit_predict(X)
    np.testing.assert_array_equal(labels, VAEDetector(**TINY, contamination=0.2).fit(X).predict(X))
    # the threshold comes from the calibration rows' 20% quantile: about that share of the rest is flagged
    assert 0.1 <= np.mean(labels == -1) <= 0.35


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, vaedetect; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_threshold_from_training_data_is_announced():
    with pytest.warns(UserWarning, match="No data held out"):
        VAEDetector(**TINY, validation_fraction=0.0, calibration_fraction=0.0).fit(np.random.RandomState(0).normal(size=(30, 3)))


def test_joblib_round_trip_gives_identical_scores(fitted_tabular, tmp_path):
    joblib = pytest.importorskip("joblib")
    detector, X = fitted_tabular
    joblib.dump(detector, tmp_path / "detector.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "detector.joblib").score_samples(X), detector.score_samples(X))


def test_verbose_shows_a_progress_bar_with_the_loss(capsys):
    VAEDetector(**{**TINY, "verbose": 1}).fit(np.random.RandomState(0).normal(size=(30, 3)))
    err = capsys.readouterr().err
    assert "training" in err and "loss=" in err


def test_fit_paths_refuses_a_training_set_too_large_for_memory(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), 10 * i).save(tmp_path / f"{i}.png")
    with pytest.raises(ValueError, match="Training on 3 images of 64x64x3 needs"):
        VAEDetector(**TINY).fit_paths(tmp_path, max_memory_bytes=1000)


def test_set_threshold_moves_offset_without_refitting(fitted_tabular):
    detector = copy.deepcopy(fitted_tabular[0])
    detector.set_threshold(contamination=0.5)
    assert detector.offset_ == pytest.approx(np.median(detector.validation_scores_))
    detector.set_threshold(threshold=-3.0)
    assert detector.offset_ == -3.0
    with pytest.raises(ValueError, match=r"exactly one of contamination, fpr, threshold and \(X, y\)"):
        detector.set_threshold(threshold=1.0, contamination=0.1)
    with pytest.raises(ValueError, match=r"float in \(0, 0.5\]"):
        detector.set_threshold(contamination=0.9)


def test_p_values_count_held_out_scores_at_or_below():
    from vaedetect.scoring import conformal_p_values, conformal_threshold

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
    assert summary["calibrated_on"] == "held-out"
    _, (train, validation, calibration) = detector._seeds_and_splits(len(X))
    assert sorted(np.r_[train, validation, calibration]) == list(range(100))
    # the calibration scores are exactly those of the rows neither trained on nor watched by early stopping
    np.testing.assert_allclose(detector.validation_scores_, detector.score_samples(X[calibration]), rtol=1e-6)


def test_without_early_stopping_the_validation_split_joins_the_calibration_data():
    X = np.random.RandomState(0).normal(size=(100, 3))
    detector = VAEDetector(**TINY, validation_fraction=0.2, calibration_fraction=0.3, early_stopping=False).fit(X)
    assert len(detector.validation_scores_) == detector.training_summary_["n_calibration"] == 50


def test_calibrating_on_the_split_that_chose_the_epoch_is_announced():
    with pytest.warns(UserWarning, match="validation split early stopping chose the epoch on"):
        detector = VAEDetector(**TINY, n_estimators=1, calibration_fraction=0.0).fit(
            np.random.RandomState(0).normal(size=(100, 3)))
    assert detector.training_summary_["calibrated_on"] == "early-stopping"


def test_members_never_calibrate_on_validation_rows_other_members_trained_on():
    with pytest.warns(UserWarning, match="No data held out"):
        detector = VAEDetector(**TINY, calibration_fraction=0.0).fit(np.random.RandomState(0).normal(size=(100, 3)))
    assert detector.n_estimators_ == 5 and detector.training_summary_["calibrated_on"] == "training"


def test_changing_the_score_after_fit_needs_a_new_calibration(fitted_tabular):
    detector, X = copy.deepcopy(fitted_tabular[0]), fitted_tabular[1]
    detector.set_params(score_method="latent")
    with pytest.raises(ValueError, match="calibrated for score_method='elbo', but score_method='latent' now.*calibrate"):
        detector.predict(X)
    X_normal = np.random.RandomState(5).normal(size=(300, 5))
    detector.calibrate(X_normal)
    assert detector.calibrated_score_ == "latent"
    np.testing.assert_array_equal(detector.validation_scores_, detector.score_samples(X_normal))
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


def test_bits_per_dim_of_a_unit_density_is_the_bin_count():
    from vaedetect.scoring import bits_per_dim

    # density 1 on [-1, 1] per dimension: each of the 255 bins of width 2/255 has probability 2/255
    assert bits_per_dim(np.zeros(1), 1)[0] == pytest.approx(np.log2(127.5))
    assert bits_per_dim(np.zeros(1), 10)[0] == pytest.approx(np.log2(127.5))


@pytest.mark.parametrize("codec", ["png", "webp"])
@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (1, 1, 28, 28)])
def test_lossless_complexity_of_constant_and_noise_images(shape, codec):
    from vaedetect.scoring import lossless_bits_per_dim

    constant = torch.full(shape, 0.3)
    noise = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert lossless_bits_per_dim(constant, codec).item() < 0.1
    assert 7.8 < lossless_bits_per_dim(noise, codec).item() < 8.5


def test_webp_compresses_a_smooth_image_tighter_than_png():
    from vaedetect.scoring import lossless_bits_per_dim

    ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    wavy = (ramp + 0.2 * torch.sin(torch.arange(32.0) * 0.7).view(1, 1, 32, 1)).clamp(-1, 1)
    assert lossless_bits_per_dim(wavy, "webp").item() < lossless_bits_per_dim(wavy, "png").item()


def test_complexity_codec_names_its_column(fitted_images):
    detector, X = fitted_images
    webp = copy.deepcopy(detector).set_params(complexity_codec="webp")
    table = webp.score_table(X[:3], methods=["complexity"])
    assert list(table.columns) == ["webp_bits_per_dim", "complexity"]
    np.testing.assert_allclose(table["complexity"], webp.set_params(score_method="complexity").score_samples(X[:3]), rtol=1e-6)


def test_score_table_has_every_method_and_matches_score_samples(fitted_images):
    detector, X = fitted_images
    table = detector.score_table(X[:7])
    assert list(table.columns) == ["elbo", "elbo_bits_per_dim", "iwae", "iwae_bits_per_dim", "kl", "reconstruction",
                                   "reconstruction_probability", "latent", "typicality", "png_bits_per_dim",
                                   "complexity", "bits_typicality", "regret"]
    from vaedetect.registry import score_names

    for method in score_names("image"):
        other = copy.deepcopy(detector).set_params(score_method=method)
        np.testing.assert_allclose(table[method], other.score_samples(X[:7]), rtol=1e-5, atol=2e-5, err_msg=method)
    np.testing.assert_allclose(table["complexity"], table["png_bits_per_dim"] - table["elbo_bits_per_dim"])


def test_score_table_of_tabular_data_leaves_out_image_scores(fitted_tabular):
    detector, X = fitted_tabular
    table = detector.score_table(X[:5])
    assert "complexity" not in table and "elbo_bits_per_dim" not in table
    assert list(table.columns) == ["elbo", "iwae", "kl", "reconstruction", "reconstruction_probability", "latent",
                                   "typicality", "regret", "residual"]
    with pytest.raises(ValueError, match="methods must be .* got \\['complexity'\\]"):
        detector.score_table(X[:5], methods=["complexity"])


def test_complexity_corrects_the_preference_for_simple_images():
    # trained on textured noise images, the plain ELBO still prefers a flat image; the complexity
    # score, which charges the flat image's low PNG cost against it, does not
    rng = np.random.RandomState(0)
    X = rng.randint(60, 200, size=(120, 16, 16)).astype(np.uint8)
    detector = VAEDetector(**{**TINY, "epochs": 10}, score_method="complexity").fit(X)
    flat = np.full((1, 16, 16), 128, dtype=np.uint8)
    table = detector.score_table(np.concatenate([X[:20], flat]), methods=["elbo", "complexity", "typicality"])
    assert table["elbo"].iloc[-1] > table["elbo"].iloc[:-1].median()
    assert table["complexity"].iloc[-1] < table["complexity"].iloc[:-1].min()
    # typicality flags it from the other side: far more likely than typical training images
    assert table["typicality"].iloc[-1] < table["typicality"].iloc[:-1].min()


@pytest.mark.parametrize("score", ["complexity", "bits_typicality"])
def test_codec_scores_are_for_images_only(score):
    with pytest.raises(ValueError, match="images only"):
        VAEDetector(**TINY, score_method=score).fit(np.zeros((10, 3)))


def test_auto_score_is_bits_typicality_for_images_and_elbo_for_tables(fitted_images, fitted_tabular):
    assert fitted_images[0].score_method == "auto" and fitted_images[0].calibrated_score_ == "bits_typicality"
    assert fitted_tabular[0].calibrated_score_ == "elbo"
    detector, X = fitted_images
    explicit = copy.deepcopy(detector).set_params(score_method="bits_typicality")
    np.testing.assert_array_equal(detector.score_samples(X), explicit.score_samples(X))


def test_bits_typicality_flags_images_simpler_or_more_complex_than_the_training_images():
    rng = np.random.RandomState(0)
    X = rng.randint(60, 200, size=(150, 16, 16)).astype(np.uint8)  # mid-range texture, ~7 PNG bits/dim
    detector = VAEDetector(**{**TINY, "epochs": 10}, score_method="bits_typicality").fit(X)
    flat = np.full((1, 16, 16), 128, dtype=np.uint8)
    full_range = rng.randint(0, 256, size=(1, 16, 16)).astype(np.uint8)
    table = detector.score_table(np.concatenate([X[:30], flat, full_range]), methods=["elbo", "bits_typicality"])
    typical = table["bits_typicality"].iloc[:30]
    assert table["bits_typicality"].iloc[30] < typical.min()  # far simpler: flagged, though its ELBO is high
    assert table["elbo"].iloc[30] > table["elbo"].iloc[:30].median()
    assert table["bits_typicality"].iloc[31] < typical.min()  # more complex than any training image


def test_bits_reference_is_centred_on_the_training_pairs():
    from vaedetect.scoring import bits_per_dim

    X = np.random.RandomState(0).randint(60, 200, size=(100, 8, 8)).astype(np.uint8)
    detector = VAEDetector(**TINY, validation_fraction=0.0, calibration_fraction=0.0)
    with pytest.warns(UserWarning, match="No data held out"):
        detector.fit(X)
    table = detector.score_table(X, methods=["elbo", "complexity"])
    pairs = np.c_[bits_per_dim(table["elbo"].to_numpy(), 64), table["png_bits_per_dim"]]
    assert detector.reference_.codec == "png"
    # a robust centre: within the middle half of the training pairs on both axes
    low, high = np.percentile(pairs, [25, 75], axis=0)
    assert np.all((low <= detector.reference_.bits_location.numpy()) & (detector.reference_.bits_location.numpy() <= high))


def test_robust_gaussian_of_identical_points_stays_invertible():
    from vaedetect.scoring import _robust_gaussian

    location, precision = _robust_gaussian(np.ones((20, 2)))
    np.testing.assert_allclose(location, [1.0, 1.0])
    assert np.isfinite(precision).all()


@pytest.fixture(scope="module")
def dark_detector():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 30, size=(80, 12, 12)).astype(np.uint8)
    return VAEDetector(**{**TINY, "epochs": 15}, augment=False).fit(X), X


def test_anomaly_map_points_at_the_anomalous_patch(dark_detector):
    detector, X = dark_detector
    image = X[:1].copy()
    image[0, 6:9, 2:5] = 255
    heat = detector.anomaly_map(image)[0]
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert 6 <= row < 9 and 2 <= col < 5
    assert heat[6:9, 2:5].mean() > 2 * np.median(heat)  # a tiny, briefly trained model: scale still wide


@pytest.mark.parametrize("per_channel", [False, True])
def test_anomaly_map_shapes(fitted_images, per_channel):
    detector, X = fitted_images  # (n, 10, 10, 3) uint8
    maps = detector.anomaly_map(X[:4], per_channel=per_channel)
    assert maps.shape == ((4, 10, 10, 3) if per_channel else (4, 10, 10))
    if per_channel:
        np.testing.assert_allclose(maps.sum(-1), detector.anomaly_map(X[:4]), rtol=1e-5)


def test_anomaly_map_is_for_images_only(fitted_tabular):
    detector, X = fitted_tabular
    with pytest.raises(ValueError, match="fitted on images"):
        detector.anomaly_map(X)


def test_heatmap_overlay_is_enlarged_rgb_and_hot_where_the_map_peaks():
    from vaedetect.plotting import heatmap_overlay

    image = np.zeros((8, 8, 1), dtype=np.uint8)
    heat = np.zeros((8, 8))
    heat[2, 5] = 3.0
    overlay = heatmap_overlay(image, heat, min_side=32)
    assert overlay.shape == (32, 32, 3) and overlay.dtype == np.uint8
    hot, cold = overlay[2 * 4, 5 * 4], overlay[0, 0]
    assert hot.sum() > cold.sum() + 200


def test_a_shared_map_scale_draws_a_cost_by_its_value_not_by_its_rank():
    from vaedetect.plotting import heatmap_overlay

    image = np.zeros((8, 8, 1), dtype=np.uint8)
    mild, strong = np.full((8, 8), 1.0), np.full((8, 8), 9.0)
    mild[0, 0] = strong[0, 0] = 0.0
    # scaled to themselves both maps look alike; on one scale the strong one is hotter everywhere
    assert np.array_equal(heatmap_overlay(image, mild, min_side=8), heatmap_overlay(image, strong, min_side=8))
    on_scale = [heatmap_overlay(image, heat, scale=(0.0, 10.0), min_side=8) for heat in (mild, strong)]
    assert on_scale[1][1:].astype(int).sum() > on_scale[0][1:].astype(int).sum() + 8 * 7 * 100
    with_bar = heatmap_overlay(image, mild, scale=(0.0, 10.0), min_side=32, colour_bar=True)
    assert with_bar.shape[0] == 32 and with_bar.shape[1] > 32


def test_map_pictures_show_the_excess_over_the_calibration_images_and_survive_saving(dark_detector, fitted_tabular,
                                                                                    tmp_path):
    detector, X = dark_detector
    low, high = detector.map_scale_
    assert detector.map_baseline_.shape == (12, 12) and low == 0.0 < high
    excess = detector._map_pictures(detector.anomaly_map(X))
    assert np.mean(excess <= high) > 0.99  # normal images: almost every pixel below the hottest colour
    patched = X[:1].copy()
    patched[0, 4:8, 4:8] = 255  # a bright patch where the training images are dark
    assert detector._map_pictures(detector.anomaly_map(patched))[0, 4:8, 4:8].min() > high
    detector.save(tmp_path / "m.vae")
    loaded = vaedetect.load(tmp_path / "m.vae")
    assert loaded.map_scale_ == [low, high]
    np.testing.assert_allclose(loaded.map_baseline_, detector.map_baseline_, rtol=1e-6)
    assert fitted_tabular[0].map_scale_ is None and fitted_tabular[0].map_baseline_ is None


def test_likelihood_regret_is_non_negative_and_grows_with_steps(dark_detector):
    detector, X = dark_detector
    odd = X[:5].copy()
    odd[:, 4:8, 4:8] = 255
    batch = np.concatenate([X[:5], odd])
    regret = copy.deepcopy(detector).set_params(score_method="regret", regret_steps=3)
    few = regret.score_samples(batch)
    many = regret.set_params(regret_steps=30).score_samples(batch)
    # the score is minus the regret: regret >= 0, and more steps only find better posteriors
    assert (few <= 0).all() and (many <= few + 1e-9).all()
    assert (many < 0).all()
    # the decoder was not touched and collected no gradients
    assert all(p.grad is None for p in regret.model_.parameters())


def test_regret_is_the_same_alone_or_in_a_batch(dark_detector):
    detector, X = dark_detector
    regret = copy.deepcopy(detector).set_params(score_method="regret", regret_steps=5)
    together = regret.score_samples(X[:6])
    alone = np.array([regret.score_samples(X[i : i + 1])[0] for i in range(6)])
    np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-4)


def test_sharp_preset_is_the_tutorials_full_size_network():
    detector = VAEDetector.from_preset("sharp", random_state=3)
    assert (detector.base_channels, detector.n_stages, detector.spatial_latent) == (64, 4, True)
    assert ((detector.loss, detector.kl_schedule, detector.augment, detector.skip_connections)
            == ("sharp", "cyclical", True, False))
    assert detector.random_state == 3
    assert clone(detector).get_params() == detector.get_params()


def test_preset_values_give_way_to_explicit_parameters():
    assert VAEDetector.from_preset("sharp", n_stages=2).n_stages == 2
    assert VAEDetector.from_preset("default").get_params() == VAEDetector().get_params()


def test_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"Unknown preset 'huge'; choose one of \['default', 'sharp'\]"):
        VAEDetector.from_preset("huge")


def test_members_that_stop_early_train_on_rows_of_their_own(tabular):
    detector = VAEDetector(**TINY)
    detector.n_estimators_ = 3
    train_index, val_index = np.arange(0, 80), np.arange(80, 90)
    trains, vals = detector._member_rows(train_index, val_index, seed=0)
    assert trains[0] is train_index and vals[0] is val_index
    # the further members validate on disjoint folds of the first one's training rows
    assert len(np.intersect1d(vals[1], vals[2])) == 0 and set(vals[1]) | set(vals[2]) <= set(train_index)
    for rows, fold in zip(trains, vals):
        assert len(rows) == 80 and len(np.intersect1d(rows, fold)) == 0 and set(rows) | set(fold) == set(range(90))


def test_members_share_the_split_without_early_stopping():
    detector = VAEDetector(**TINY, early_stopping=False)
    detector.n_estimators_ = 3
    trains, vals = detector._member_rows(np.arange(80), np.arange(80, 90), seed=0)
    assert all(rows is trains[0] for rows in trains) and all(rows is vals[0] for rows in vals)
