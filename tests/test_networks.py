import pytest
import torch

from vaedetect.networks import VAE, NetworkConfig

SMALL = dict(latent_dim=3, base_channels=4, n_stages=2)


def _pass(model, x):
    eps = torch.zeros((len(x), *model.latent_shape))
    return model(x, eps)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 30, 20), (1, 7, 9)])
def test_conv_vae_returns_the_input_size_for_any_image_size(shape):
    model = VAE(shape, NetworkConfig(**SMALL)).eval()
    logits, mean, logvar = _pass(model, torch.zeros(2, *shape))
    assert logits.shape == (2, *shape)
    assert mean.shape == logvar.shape == (2, 3)


def test_tutorial_encoder_doubles_channels_from_64_to_512_and_reaches_one_sixteenth():
    config = NetworkConfig(latent_dim=8, base_channels=64, n_stages=4, spatial_latent=True)
    model = VAE((3, 64, 64), config).eval()
    _, _, features = model.encode(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [64, 64, 128, 256, 512]
    assert features[-1].shape[-2:] == (4, 4)
    assert model.latent_shape == (8, 4, 4)


def test_spatial_latent_keeps_positions():
    model = VAE((1, 16, 16), NetworkConfig(**SMALL, spatial_latent=True)).eval()
    logits, mean, _ = _pass(model, torch.zeros(2, 1, 16, 16))
    assert mean.shape == (2, 3, 4, 4)
    assert logits.shape == (2, 1, 16, 16)


def test_residual_blocks_can_be_switched_off():
    with_blocks = VAE((1, 16, 16), NetworkConfig(**SMALL, residual=True))
    without = VAE((1, 16, 16), NetworkConfig(**SMALL, residual=False))
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_blocks.parameters())


def test_skip_connections_feed_encoder_maps_to_the_decoder():
    model = VAE((3, 16, 16), NetworkConfig(**SMALL, skip_connections=True)).eval()
    x = torch.randn(2, 3, 16, 16)
    mean, logvar, features = model.encode(x)
    with torch.no_grad():
        same_code_other_image = model.decode(mean, model.encode(torch.randn(2, 3, 16, 16))[2])
        out = model.decode(mean, features)
    # the decoder output depends on the image, not only on the latent code
    assert not torch.allclose(out, same_code_other_image)
    assert not model.can_generate


def test_decoding_a_code_alone_is_refused_with_skip_connections():
    model = VAE((1, 16, 16), NetworkConfig(**SMALL, skip_connections=True))
    with pytest.raises(ValueError, match="skip_connections=True"):
        model.decode(torch.zeros(1, 3))


def test_mlp_vae_for_tabular_rows():
    model = VAE((7,), NetworkConfig(**SMALL)).eval()
    logits, mean, _ = _pass(model, torch.zeros(5, 7))
    assert logits.shape == (5, 7)
    assert mean.shape == (5, 3)
    assert model.log_scale.shape == (7,)
    # tabular outputs are unbounded: standardised data are not squashed by tanh
    assert torch.equal(model.output_mean(torch.tensor([5.0])), torch.tensor([5.0]))


def test_image_reconstruction_is_tanh_of_logits():
    model = VAE((1, 8, 8), NetworkConfig(**SMALL))
    assert torch.allclose(model.output_mean(torch.tensor([100.0, -100.0])), torch.tensor([1.0, -1.0]))


def test_reparameterize_uses_the_given_noise():
    mean, logvar = torch.tensor([[1.0, 2.0]]), torch.log(torch.tensor([[4.0, 9.0]]))
    z = VAE.reparameterize(mean, logvar, torch.tensor([[1.0, -1.0]]))
    assert torch.allclose(z, torch.tensor([[3.0, -1.0]]))
