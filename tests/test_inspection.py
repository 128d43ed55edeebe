"""Looking inside a fitted detector: sampling, reconstruction, interpolation, latent PCA, plots."""

import warnings

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from vaedetect import VAEDetector, plotting
from vaedetect.inspection import slerp

from .conftest import TINY

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def rgb_detector():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=(40, 8, 8, 3)).astype(np.uint8)
    return VAEDetector(**TINY).fit(X), X


@pytest.fixture(scope="module")
def gray_float_detector():
    X = np.random.RandomState(1).uniform(size=(40, 8, 8))
    return VAEDetector(**TINY).fit(X), X


# ------------------------------------------------------------------ sample


def test_samples_come_in_the_training_layout_and_range(rgb_detector, gray_float_detector):
    samples = rgb_detector[0].sample(6, random_state=0)
    assert samples.shape == (6, 8, 8, 3) and samples.dtype == np.uint8
    gray = gray_float_detector[0].sample(4, random_state=0)
    assert gray.shape == (4, 8, 8) and gray.dtype == np.float32
    assert gray.min() >= 0.0 and gray.max() <= 1.0


def test_samples_are_reproducible_with_a_seed(rgb_detector):
    detector = rgb_detector[0]
    np.testing.assert_array_equal(detector.sample(5, random_state=3), detector.sample(5, random_state=3))
    assert not np.array_equal(detector.sample(5, random_state=3), detector.sample(5, random_state=4))


def test_zero_temperature_limit_decodes_the_prior_mean(gray_float_detector):
    detector = gray_float_detector[0]
    cold = detector.sample(3, temperature=1e-9, random_state=0)
    at_origin = detector.inverse_transform(np.zeros((1, 2)))
    np.testing.assert_allclose(cold, np.repeat(at_origin, 3, axis=0), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [({"n": 0}, "n must be"), ({"temperature": 0.0}, "temperature must")])
def test_bad_sample_arguments_are_named(rgb_detector, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rgb_detector[0].sample(**kwargs)


# ------------------------------------------------------------------ reconstruct and interpolate


def test_reconstruct_decodes_the_latent_means(rgb_detector):
    detector, X = rgb_detector
    reconstructions = detector.reconstruct(X[:5])
    assert reconstructions.shape == X[:5].shape and reconstructions.dtype == np.uint8
    np.testing.assert_array_equal(reconstructions, detector.inverse_transform(detector.transform(X[:5])))


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_interpolation_ends_at_the_reconstructions_of_both_inputs(rgb_detector, method):
    detector, X = rgb_detector
    path = detector.interpolate(X[0], X[1], steps=7, method=method)
    assert path.shape == (7, 8, 8, 3) and path.dtype == np.uint8
    ends = detector.reconstruct(X[:2])
    np.testing.assert_array_equal(path[0], ends[0])
    np.testing.assert_array_equal(path[-1], ends[1])


def test_interpolation_accepts_a_batch_of_one_and_is_deterministic(gray_float_detector):
    detector, X = gray_float_detector
    np.testing.assert_array_equal(detector.interpolate(X[:1], X[1:2]), detector.interpolate(X[0], X[1]))


def test_linear_interpolation_midpoint_decodes_the_mean_code(gray_float_detector):
    detector, X = gray_float_detector
    codes = detector.transform(X[:2])
    middle = detector.interpolate(X[0], X[1], steps=3, method="lerp")[1]
    np.testing.assert_allclose(middle, detector.inverse_transform(codes.mean(0, keepdims=True))[0], atol=1e-5)


def test_slerp_keeps_the_norm_of_equal_norm_codes():
    start, end = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 3.0]])
    path = slerp(start, end, torch.linspace(0, 1, 9).view(-1, 1))
    np.testing.assert_allclose(path.norm(dim=1).numpy(), 3.0, rtol=1e-5)
    np.testing.assert_allclose(path[4].numpy(), [3 / np.sqrt(2), 0.0, 3 / np.sqrt(2)], rtol=1e-5)
    # parallel codes fall back to a straight line
    np.testing.assert_allclose(slerp(start, 2 * start, torch.tensor([[0.5]])).numpy(), [[4.5, 0.0, 0.0]])


def test_interpolation_refuses_more_than_one_sample(rgb_detector):
    detector, X = rgb_detector
    with pytest.raises(ValueError, match="a must be one sample .* shape \\(2, 8, 8, 3\\)"):
        detector.interpolate(X[:2], X[2])


# ------------------------------------------------------------------ latent PCA


def test_latent_pca_projects_the_latent_means(rgb_detector):
    detector, X = rgb_detector
    pca, coordinates = detector.latent_pca(X, n_components=2)
    assert coordinates.shape == (40, 2)
    np.testing.assert_allclose(coordinates, pca.transform(detector.transform(X)))
    # principal components come in order of explained variance
    assert coordinates[:, 0].var() >= coordinates[:, 1].var()


@pytest.mark.parametrize("call", [
    lambda d, X: d.sample(2),
    lambda d, X: d.reconstruct(X[:2]),
    lambda d, X: d.interpolate(X[0], X[1]),
    lambda d, X: d.latent_pca(X),
])
def test_skip_connections_refuse_to_look_inside(call):
    X = np.random.RandomState(0).uniform(size=(30, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        detector = VAEDetector(**TINY, skip_connections=True).fit(X)
    with pytest.raises(ValueError, match="not available with skip_connections=True"):
        call(detector, X)


# ------------------------------------------------------------------ plots


def _saved_png_size(ax, tmp_path):
    ax.figure.savefig(tmp_path / "plot.png", dpi=50)
    with Image.open(tmp_path / "plot.png") as image:
        return image.size


def _fresh_axes(figsize=(4, 3)):
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=figsize)
    return ax


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_mosaic_tiles_images_row_by_row():
    images = np.zeros((5, 2, 3), dtype=np.uint8)
    images[4] = 255
    canvas = plotting.mosaic(images, ncols=2, padding=1)
    assert canvas.shape == (3 * 3 - 1, 2 * 4 - 1, 3)
    # the fifth image is the first of the third row; padding stays white
    np.testing.assert_array_equal(canvas[6:8, 0:3], 1.0)
    np.testing.assert_array_equal(canvas[0:2, 0:3], 0.0)
    np.testing.assert_array_equal(canvas[2], 1.0)


def test_images_in_channels_first_layout_are_read_as_such():
    first = np.zeros((2, 3, 4, 5), dtype=np.uint8)
    first[:, 0] = 255  # red
    hwc = plotting.as_hwc_float(first)
    assert hwc.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(hwc[0, 0, 0], [1.0, 0.0, 0.0])


PLOTS = {
    "image_grid": lambda ax: plotting.image_grid(np.zeros((6, 8, 8, 3), np.uint8), ax=ax),
    "reconstruction_grid": lambda ax: plotting.reconstruction_grid(np.zeros((5, 8, 8)), np.ones((5, 8, 8)), ncols=3,
                                                                   ax=ax),
    "interpolation_strip": lambda ax: plotting.interpolation_strip(np.zeros((7, 8, 8)), ax=ax),
    "latent_scatter_labels": lambda ax: plotting.latent_scatter(np.random.RandomState(0).normal(size=(20, 2)),
                                                                labels=["a", "b"] * 10, outliers=[True] + [False] * 19,
                                                                ax=ax),
    "latent_scatter_scores": lambda ax: plotting.latent_scatter(np.random.RandomState(0).normal(size=(20, 2)),
                                                                scores=np.arange(20), ax=ax),
    "training_curves": lambda ax: plotting.training_curves(
        {"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.5], "val_loss": [3.1, 2.2, 1.9]}, ax=ax),
    "score_histogram": lambda ax: plotting.score_histogram(np.random.RandomState(0).normal(size=200), threshold=-2.0,
                                                           ax=ax),
    "roc_curve": lambda ax: plotting.roc_curve([0, 0, 1, 1], [3.0, 2.0, 1.0, 2.5], ax=ax),
    "anomaly_overlays": lambda ax: plotting.anomaly_overlays(np.zeros((3, 8, 8)), np.ones((3, 8, 8)), ax=ax),
}


@pytest.mark.parametrize("name", PLOTS)
def test_each_plot_draws_on_the_given_axes_and_saves_a_png(name, tmp_path):
    ax = _fresh_axes(figsize=(4, 3))
    assert PLOTS[name](ax) is ax
    assert ax.images or ax.lines or ax.collections or ax.patches
    assert _saved_png_size(ax, tmp_path) == (200, 150)


def test_score_histogram_marks_the_threshold():
    ax = plotting.score_histogram([1.0, 2.0, 3.0, 4.0], threshold=2.5)
    assert [line.get_xdata()[0] for line in ax.lines] == [2.5]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["threshold 2.5"]


def test_roc_curve_reports_the_area_under_it():
    ax = plotting.roc_curve([0, 0, 1, 1], [3.0, 2.0, 1.0, 2.5])
    assert ax.get_legend().get_texts()[0].get_text() == "ROC AUC 0.750"


def test_plots_need_no_axes():
    first, second = plotting.image_grid(np.zeros((4, 8, 8))), plotting.image_grid(np.ones((4, 8, 8)))
    # each call draws on a figure of its own, of the default size
    assert first.figure is not second.figure
    assert tuple(first.figure.get_size_inches()) == (6.0, 6.0)
    np.testing.assert_array_equal(second.images[0].get_array(), plotting.mosaic(np.ones((4, 8, 8))))


def test_score_histogram_keeps_the_bulk_readable_despite_a_long_tail():
    scores = np.r_[np.random.RandomState(0).normal(size=990), np.full(10, -1000.0)]
    ax = plotting.score_histogram(scores, threshold=-2.5)
    # bins span the 1st percentile (here the tail itself starts above it) to the maximum, threshold included
    assert ax.get_xlim()[0] > -1000
    assert ax.texts[0].get_text() == "10 lower scores off the left edge"


@pytest.mark.parametrize("threshold, edge", [(-1e9, 0.0), (1e9, 1.0)])
def test_score_histogram_keeps_the_scores_readable_beside_a_far_threshold(threshold, edge):
    scores = np.random.RandomState(0).normal(size=500)
    ax = plotting.score_histogram(scores, threshold=threshold)
    # the axis spans the scores, not the threshold: an arrow at that edge names it instead of a line
    low, high = ax.get_xlim()
    assert -5 < low and high < 5
    assert not ax.lines
    (arrow,) = [text for text in ax.texts if text.get_text().startswith("threshold")]
    assert arrow.xy == (edge, 0.8) and f"threshold {threshold:.4g}, off this edge" in arrow.get_text()
    assert f"({0 if threshold < 0 else 500} of 500 scores below it)" in arrow.get_text()


def test_outlier_rings_share_no_colour_with_the_classes():
    from matplotlib.colors import to_rgba

    coordinates = np.random.RandomState(0).normal(size=(40, 2))
    labels = [f"class{i % 12}" for i in range(40)]  # more than tab10's colours: tab20
    ax = plotting.latent_scatter(coordinates, labels=labels, outliers=np.arange(40) < 5)
    points, rings = ax.collections
    ring_colour = tuple(rings.get_edgecolor()[0])
    assert ring_colour == to_rgba("black")
    assert all(tuple(colour[:3]) != ring_colour[:3] for colour in points.get_facecolor())
