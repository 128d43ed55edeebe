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


def test_a_grouped_layer_is_one_linear_map_per_group():
    from vaedetect.networks import GroupedLinear

    torch.manual_seed(0)
    layer = GroupedLinear(4, 3, groups=2)
    x = torch.randn(2, 5, 4)  # member-major: (groups, B, in)
    expected = torch.stack([x[0] @ layer.weight[0] + layer.bias[0], x[1] @ layer.weight[1] + layer.bias[1]])
    torch.testing.assert_close(layer(x), expected)


def test_members_side_by_side_never_see_each_other():
    from vaedetect.networks import GroupedLinear

    torch.manual_seed(0)
    model = VAE((5,), NetworkConfig(**SMALL, members=3)).train()
    x = torch.randn(8, 5)
    logits, mean, logvar = model(x, torch.randn(8, *model.latent_shape))
    assert model.latent_shape == (9,) and logits.shape == (8, 15) and model.log_scale.shape == (15,)
    # the first member's output depends on no weight of the other two
    logits[:, :5].sum().backward()
    grouped = [m for m in model.modules() if isinstance(m, GroupedLinear)]
    assert grouped and all(m.weight.grad[1:].abs().max() == 0 for m in grouped)
    assert all(m.weight.grad[0].abs().max() > 0 for m in grouped)


def test_each_member_decodes_its_own_copy_of_the_row():
    model = VAE((5,), NetworkConfig(**SMALL, members=3))
    x = torch.randn(4, 5)
    target = model.decoder_target(x)
    assert target.shape == (4, 15)
    torch.testing.assert_close(target[:, 10:], x)
    torch.testing.assert_close(model.average_members(target), x)


def test_members_are_for_tables_only():
    with pytest.raises(ValueError, match="tabular"):
        VAE((1, 8, 8), NetworkConfig(**SMALL, members=2))


def _member(model, k):
    """Member ``k`` of a VAE of several, copied into a VAE of its own."""
    import dataclasses

    single = VAE(model.data_shape, dataclasses.replace(model.config, members=1))
    state = {}
    for name, value in model.state_dict().items():
        shape = single.state_dict()[name].shape
        if value.shape == shape:  # e.g. the batch norms' step counters
            state[name] = value
        elif value.ndim == 3:  # a grouped layer's (groups, in, out) weights
            state[name] = value[k].T
        elif value.shape[1:] == shape:  # its (groups, out) biases
            state[name] = value[k]
        else:  # every member's block of outputs, one after another
            state[name] = value.chunk(model.members, dim=0)[k]
    single.load_state_dict(state)
    return single.eval()


def test_the_elbo_of_members_side_by_side_is_the_sum_of_their_own():
    from vaedetect.scoring import elbo_score

    torch.manual_seed(0)
    model = VAE((5,), NetworkConfig(**SMALL, members=3))
    x = torch.randn(16, 5)
    model.train()
    model(x, torch.randn(16, 9))  # batch norms with running statistics of their own
    model.eval()
    noise = torch.randn(4, 1, 9)
    with torch.no_grad():
        together = elbo_score(model, x, noise, "laplace")
        alone = [elbo_score(_member(model, k), x, noise[..., 3 * k : 3 * k + 3], "laplace") for k in range(3)]
    torch.testing.assert_close(together, sum(alone), rtol=1e-5, atol=1e-4)
