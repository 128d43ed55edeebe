"""VAEDetector as a scikit-learn estimator: layouts, fitting, settings resolved once, parameters, members."""

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import vaedetect
from vaedetect import VAEDetector

from .conftest import TINY


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


@pytest.mark.parametrize("kind, members, draws", [("tabular", 1, 16), ("tabular", 5, 16), ("features", "auto", 16),
                                                  ("image", "auto", 1)])
def test_auto_draws_are_sixteen_per_row_and_one_per_image(kind, members, draws):
    from vaedetect.settings import resolve

    params = VAEDetector(n_samples="auto", n_estimators=members).get_params()
    assert resolve(params, kind, n_train=100, n_features=10).n_samples == draws


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
    monkeypatch.setattr(vaedetect.settings, "TABULAR_MAX_STEPS", 12)
    X = np.random.RandomState(0).normal(size=(120, 5))
    detector = VAEDetector(**{**TINY, "epochs": "auto", "batch_size": 32, "early_stopping": False}).fit(X)
    # 96 training rows after 12 validation and 12 calibration rows are 3 batches of 32: 4 epochs fill the 12 steps
    assert detector.training_summary_["epochs"] == 4
    assert len(detector.history_) == 4


def test_a_table_at_auto_batch_size_trains_16_epochs_of_16_steps():
    X = np.random.RandomState(0).normal(size=(1000, 3))
    detector = VAEDetector(**{**TINY, "batch_size": "auto", "epochs": "auto", "early_stopping": False}).fit(X)
    # 800 training rows after 100 validation and 100 calibration rows: batches of 50
    assert (detector.settings_.batch_size, detector.settings_.epochs) == (50, 16)
    assert len(detector.history_) == 16


def test_auto_epochs_cut_one_epoch_short_where_it_alone_exceeds_the_budget(monkeypatch):
    import vaedetect.training

    monkeypatch.setattr(vaedetect.settings, "TABULAR_MAX_STEPS", 2)
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


def _resolved(params, kind):
    from vaedetect.settings import resolve

    return resolve(params, kind, n_train=100, n_features=5)


def test_tables_train_at_the_faster_learning_rate(fitted_tabular, fitted_images):
    assert _resolved(fitted_tabular[0].get_params(), "tabular").learning_rate == 2e-3
    assert _resolved(fitted_images[0].get_params(), "image").learning_rate == 5e-4
    assert _resolved({**fitted_images[0].get_params(), "learning_rate": 0.01}, "image").learning_rate == 0.01
    assert fitted_tabular[0].history_["lr"].iloc[0] == pytest.approx(2e-3)
    assert fitted_tabular[0].settings_.learning_rate == 2e-3  # what fit resolved, kept


def test_tables_train_on_trimmed_batches_and_images_on_whole_ones(fitted_tabular, fitted_images):
    assert _resolved(fitted_tabular[0].get_params(), "tabular").trim_fraction == 0.1
    assert _resolved(fitted_images[0].get_params(), "image").trim_fraction == 0.0
    assert _resolved(fitted_tabular[0].get_params(), "features").trim_fraction == 0.0
    assert _resolved({**fitted_images[0].get_params(), "trim_fraction": 0.2}, "image").trim_fraction == 0.2
    assert (fitted_tabular[0].settings_.trim_fraction, fitted_images[0].settings_.trim_fraction) == (0.1, 0.0)


def test_trim_fraction_must_leave_most_of_a_batch(tabular):
    with pytest.raises(ValueError, match="trim_fraction"):
        VAEDetector(**TINY, trim_fraction=0.5).fit(tabular)


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


N_CALIBRATION, N_SEEDS, N_FRESH = 399, 20, 5000


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


def test_members_that_stop_early_train_on_rows_of_their_own():
    from vaedetect.estimator import member_rows

    train_index, val_index = np.arange(0, 80), np.arange(80, 90)
    trains, vals = member_rows(train_index, val_index, members=3, early_stopping=True, seed=0)
    assert trains[0] is train_index and vals[0] is val_index
    # the further members validate on disjoint folds of the first one's training rows
    assert len(np.intersect1d(vals[1], vals[2])) == 0 and set(vals[1]) | set(vals[2]) <= set(train_index)
    for rows, fold in zip(trains, vals):
        assert len(rows) == 80 and len(np.intersect1d(rows, fold)) == 0 and set(rows) | set(fold) == set(range(90))


def test_members_share_the_split_without_early_stopping():
    from vaedetect.estimator import member_rows

    trains, vals = member_rows(np.arange(80), np.arange(80, 90), members=3, early_stopping=False, seed=0)
    assert all(rows is trains[0] for rows in trains) and all(rows is vals[0] for rows in vals)
