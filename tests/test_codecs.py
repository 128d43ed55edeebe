"""Scores that use an image codec: bits per dimension, lossless complexity, bits typicality."""

import copy

import numpy as np
import pytest
import torch

from vaedetect import VAEDetector

from .conftest import TINY, scoring_by


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
    np.testing.assert_allclose(table["complexity"], scoring_by(webp, "complexity", X).score_samples(X[:3]), rtol=1e-6)


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
