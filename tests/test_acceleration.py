"""Speed-ups change how the network runs, never what it computes."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import TINY
from vaedetect import VAEDetector
from vaedetect.acceleration import inference_network, use_channels_last
from vaedetect.networks import VAE, NetworkConfig
from vaedetect.scoring import score_batches


def _trained_like(model, x):
    """Give every batch norm non-trivial running statistics and affine weights."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.5, 0.5, generator=generator)
        model.train()
        model(x, torch.zeros((len(x), *model.latent_shape)))
    return model.eval()


@pytest.mark.parametrize("shape, members", [((3, 16, 16), 1), ((1, 13, 11), 1), ((7,), 1), ((7,), 3)])
def test_folded_network_gives_the_same_outputs(shape, members):
    torch.manual_seed(0)
    x = torch.rand((6, *shape)) * 2 - 1
    model = _trained_like(VAE(shape, NetworkConfig(latent_dim=3, base_channels=4, n_stages=2, members=members)), x)
    eps = torch.randn((6, *model.latent_shape))
    folded = inference_network(model)
    with torch.inference_mode():
        expected, got = model(x, eps), folded(x, eps)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)


def test_folding_removes_every_batch_norm_and_leaves_the_original_alone():
    model = VAE((3, 16, 16), NetworkConfig(base_channels=4, n_stages=2))
    folded = inference_network(model)
    norms = [m for m in folded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms == []
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_network_shares_the_decoder_scale():
    model = VAE((3, 16, 16), NetworkConfig(base_channels=4, n_stages=2))
    folded = inference_network(model)
    with torch.no_grad():
        model.log_scale.fill_(-1.5)
    assert folded.log_scale is model.log_scale


def test_channels_last_for_image_networks_only():
    image = use_channels_last(VAE((3, 16, 16), NetworkConfig(base_channels=4, n_stages=2)), "cpu")
    tabular = use_channels_last(VAE((5,), NetworkConfig(base_channels=4, n_stages=2)), "cpu")
    conv = image.encoder.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(p.is_contiguous() for p in tabular.parameters())


def test_channels_last_training_matches_the_usual_layout(gray_images):
    # Same seed, same data: only the memory format of the weights differs between the two fits.
    fast = VAEDetector(**TINY).fit(gray_images)
    plain_model = VAE(fast.layout_.shape, fast.model_.config)
    assert fast.model_.encoder.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain_model.load_state_dict(fast.model_.state_dict())
    x = fast.modality_.to_network(gray_images)
    eps = torch.zeros((len(x), *fast.model_.latent_shape))
    with torch.inference_mode():
        torch.testing.assert_close(plain_model.eval()(x, eps)[0], fast.model_(x, eps)[0], rtol=1e-4, atol=1e-5)


def test_detector_scores_equal_the_unfolded_network(gray_images):
    detector = VAEDetector(**TINY, score_method="elbo").fit(gray_images)
    x = detector.modality_.to_network(gray_images)
    unfolded = score_batches(detector.model_, x, "elbo", detector._latent_noise(), detector.likelihood_, 16, "cpu")
    np.testing.assert_allclose(detector.score_samples(gray_images), unfolded, rtol=1e-5)


def test_refitting_replaces_the_inference_copy(gray_images):
    detector = VAEDetector(**TINY, score_method="elbo").fit(gray_images)
    first = detector.score_samples(gray_images)
    detector.set_params(random_state=1).fit(gray_images)
    x = detector.modality_.to_network(gray_images)
    unfolded = score_batches(detector.model_, x, "elbo", detector._latent_noise(), detector.likelihood_, 16, "cpu")
    second = detector.score_samples(gray_images)
    np.testing.assert_allclose(second, unfolded, rtol=1e-5)
    assert not np.allclose(first, second)


def test_pickles_leave_the_inference_copy_out(gray_images):
    detector = VAEDetector(**TINY).fit(gray_images)
    expected = detector.score_samples(gray_images)
    assert "_inference_cache" in detector.__dict__
    restored = pickle.loads(pickle.dumps(detector))
    assert "_inference_cache" not in restored.__dict__
    np.testing.assert_allclose(restored.score_samples(gray_images), expected, rtol=1e-6)
