import math
import urllib.error

import pytest
import torch
from torch.distributions import Bernoulli, Laplace, Normal

from vaedetect import losses
from vaedetect.losses import (
    PerceptualLoss,
    iwae_bound,
    kl_divergence,
    kl_weight,
    log_likelihood,
    negative_elbo,
    sharp_loss,
)


def test_kl_of_standard_normal_against_prior_is_zero():
    assert kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)).tolist() == [0.0, 0.0, 0.0]


def test_kl_matches_closed_form_by_hand():
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (1 + 4 - 1 - log 4)
    kl = kl_divergence(torch.tensor([[1.0]]), torch.log(torch.tensor([[4.0]])))
    assert kl.item() == pytest.approx(0.5 * (4.0 - math.log(4.0)))


def test_kl_sums_over_spatial_latents():
    kl = kl_divergence(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    assert kl.tolist() == [24.0, 24.0]  # 0.5 * 1 per dimension, 48 dimensions


def test_gaussian_likelihood_matches_torch_distributions():
    x, logits = torch.randn(4, 6), torch.randn(4, 6)
    log_scale = torch.randn(6)
    expected = Normal(logits, log_scale.exp()).log_prob(x).sum(-1)
    assert torch.allclose(log_likelihood(x, logits, log_scale, "gaussian", bounded=False), expected, atol=1e-5)


def test_bounded_gaussian_uses_tanh_mean():
    x, logits, log_scale = torch.rand(2, 1, 3, 3) * 2 - 1, torch.randn(2, 1, 3, 3), torch.zeros(1, 1, 1)
    expected = Normal(torch.tanh(logits), 1.0).log_prob(x).flatten(1).sum(-1)
    assert torch.allclose(log_likelihood(x, logits, log_scale, "gaussian", bounded=True), expected, atol=1e-5)


def test_laplace_likelihood_matches_torch_distributions():
    x, logits, log_scale = torch.randn(4, 6), torch.randn(4, 6), torch.randn(6)
    expected = Laplace(logits, log_scale.exp()).log_prob(x).sum(-1)
    assert torch.allclose(log_likelihood(x, logits, log_scale, "laplace", bounded=False), expected, atol=1e-5)


def test_bernoulli_likelihood_reads_images_as_probabilities():
    x = torch.tensor([[[[-1.0, 1.0]]]])  # black and white pixels -> targets 0 and 1
    logits = torch.tensor([[[[0.3, -0.2]]]])
    expected = Bernoulli(logits=2 * logits).log_prob(torch.tensor([[[[0.0, 1.0]]]])).sum()
    assert log_likelihood(x, logits, torch.zeros(1), "bernoulli").item() == pytest.approx(expected.item(), abs=1e-6)


def test_bernoulli_is_refused_for_tabular_data():
    with pytest.raises(ValueError, match="bernoulli"):
        log_likelihood(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), "bernoulli", bounded=False)


def test_elbo_matches_hand_computation_on_a_toy_case():
    # one 1-d sample x = 0.5, reconstruction 0 with unit scale, posterior N(1, 1)
    x, logits = torch.tensor([[0.5]]), torch.tensor([[0.0]])
    mean, logvar, log_scale = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.zeros(1)
    terms = negative_elbo(x, logits, mean, logvar, log_scale, "gaussian", bounded=False)
    nll = 0.5 * 0.25 + 0.5 * math.log(2 * math.pi)
    assert terms["reconstruction"].item() == pytest.approx(nll)
    assert terms["kl"].item() == pytest.approx(0.5)
    assert terms["loss"].item() == pytest.approx(nll + 0.5)


def test_kl_weight_scales_only_the_kl_term():
    args = (torch.tensor([[0.5]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.zeros(1))
    full = negative_elbo(*args, bounded=False, kl_weight=1.0)["loss"]
    fifth = negative_elbo(*args, bounded=False, kl_weight=0.2)["loss"]
    assert (full - fifth).item() == pytest.approx(0.8 * 0.5)


def test_a_trimmed_loss_leaves_out_the_worst_explained_sample():
    # ten 1-d samples reconstructed as 0 with unit scale and a standard-normal posterior (no KL); one is far out
    x = torch.tensor([[0.1], [0.2], [-0.1], [0.0], [0.3], [-0.2], [0.1], [0.0], [-0.3], [9.0]])
    zeros, log_scale = torch.zeros_like(x), torch.zeros(1)
    trimmed = negative_elbo(x, zeros, zeros, zeros, log_scale, "gaussian", bounded=False, trim_fraction=0.1)
    inliers = negative_elbo(x[:9], zeros[:9], zeros[:9], zeros[:9], log_scale, "gaussian", bounded=False)
    assert trimmed["loss"].item() == pytest.approx(inliers["loss"].item())
    assert trimmed["reconstruction"].item() == pytest.approx(0.5 * (x[:9] ** 2).mean().item() + 0.5 * math.log(2 * math.pi))
    untrimmed = negative_elbo(x, zeros, zeros, zeros, log_scale, "gaussian", bounded=False)
    assert untrimmed["loss"].item() > trimmed["loss"].item() + 4.0  # the far sample alone adds 81 / 2 / 10


def test_iwae_with_posterior_equal_to_prior_is_the_average_likelihood():
    # q(z|x) = p(z): the weights reduce to p(x|z_k), so the bound is log mean_k p(x|z_k)
    x = torch.zeros(1, 2)
    logits = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])  # K=2 draws
    z = torch.randn(2, 1, 3)
    bound = iwae_bound(x, logits, z, torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(2), bounded=False)
    log_p = Normal(logits, 1.0).log_prob(x).sum(-1)[:, 0]
    assert bound.item() == pytest.approx(torch.logsumexp(log_p, 0).item() - math.log(2), abs=1e-5)


def test_iwae_bound_is_at_least_the_average_elbo():
    torch.manual_seed(0)
    x, logits, z = torch.randn(3, 4), torch.randn(5, 3, 4), torch.randn(5, 3, 2)
    mean, logvar = torch.randn(3, 2), torch.randn(3, 2) * 0.1
    per_draw = [iwae_bound(x, logits[k : k + 1], z[k : k + 1], mean, logvar, torch.zeros(4), bounded=False) for k in range(5)]
    assert torch.all(iwae_bound(x, logits, z, mean, logvar, torch.zeros(4), bounded=False) >= torch.stack(per_draw).mean(0))


def test_cyclical_schedule_is_the_tutorials():
    assert kl_weight("cyclical", 0, 100) == pytest.approx(0.5)
    assert kl_weight("cyclical", 5, 100) == pytest.approx(1.0)
    assert kl_weight("cyclical", 15, 100) == pytest.approx(0.2)  # 0.5 * (1 + sin(3 pi / 2)) = 0 -> floor


def test_warmup_schedule_reaches_one_after_a_quarter_of_training():
    weights = [kl_weight("warmup", e, 20) for e in range(20)]
    assert weights[0] == pytest.approx(0.2)
    assert weights[4:] == [1.0] * 16
    assert kl_weight("constant", 3, 20) == 1.0


def test_sharp_loss_is_mse_plus_weighted_l1_plus_per_element_kl():
    x = torch.zeros(2, 1, 4, 4)
    logits = torch.full((2, 1, 4, 4), math.atanh(0.5))  # reconstruction 0.5 everywhere
    mean, logvar = torch.ones(2, 3), torch.zeros(2, 3)  # KL = 1.5 per sample
    terms = sharp_loss(x, logits, mean, logvar, kl_weight=0.5)
    assert terms["mse"].item() == pytest.approx(0.25)
    assert terms["l1"].item() == pytest.approx(0.5)
    assert terms["loss"].item() == pytest.approx(0.25 + 0.7 * 0.5 + 0.5 * 1.5 / 16)


def test_perceptual_loss_with_random_vgg_is_zero_for_identical_images_only():
    perceptual = PerceptualLoss(weights=None)
    x = torch.rand(2, 1, 8, 8) * 2 - 1  # small and grayscale: resized and repeated to RGB
    assert perceptual(x, x).item() == 0.0
    assert perceptual(x, -x).item() > 0.0
    terms = sharp_loss(x, torch.zeros_like(x), torch.zeros(2, 3), torch.zeros(2, 3), perceptual=perceptual)
    assert terms["perceptual"].item() > 0.0


def test_vgg_features_are_frozen():
    assert not any(p.requires_grad for p in PerceptualLoss(weights=None).parameters())


def test_offline_vgg_download_says_how_to_fix_it(monkeypatch):
    from torchvision.models import VGG16_Weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"vgg16-397923af\.pth.*perceptual_weight=0"):
        losses.vgg16_features("imagenet")


def test_vgg_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    # Stand in for the downloaded file: a feature-only state dict where torchvision caches it.
    reference = losses.vgg16_features(weights=None)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()}, checkpoints / "vgg16-397923af.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    loaded = losses.vgg16_features("imagenet")
    assert torch.equal(loaded[0].weight, reference[0].weight)
    assert torch.equal(loaded[28].bias, reference[28].bias)
