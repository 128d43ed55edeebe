"""Losses as plain functions: likelihoods, KL, the ELBO and IWAE bounds, and the tutorial's sharp loss.

Conventions: ``x`` is the data as the network sees it (images in ``[-1, 1]``, tabular standardised),
``logits`` the decoder's raw output, and every per-sample quantity is summed over data dimensions (nats
per sample), so that the ELBO is a proper lower bound on ``log p(x)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .settings import KL_SCHEDULES, LIKELIHOODS


# Keeps the learned scale away from 0, where the Gaussian density of a perfectly reconstructed
# pixel would grow without bound (Rybkin et al., 2021, "soft-clip" the scale the same way).
_MIN_LOG_SCALE = -6.0


def _sum_per_sample(t: torch.Tensor, sample_dims: int) -> torch.Tensor:
    return t.flatten(sample_dims).sum(-1)


def elementwise_log_likelihood(
    x: torch.Tensor,
    logits: torch.Tensor,
    log_scale: torch.Tensor,
    likelihood: str = "gaussian",
    bounded: bool = True,
) -> torch.Tensor:
    """``log p(x | z)`` of every data element, shaped like ``logits``.

    Parameters
    ----------
    x : Tensor of shape (B, ...)
        Data; images in ``[-1, 1]``.
    logits : Tensor of shape (..., B, ...)
        Decoder output; leading axes (e.g. importance samples) broadcast against ``x``.
    log_scale : Tensor
        Log standard deviation (Gaussian) or log scale (Laplace), broadcast over samples.
    likelihood : {"gaussian", "bernoulli", "laplace"}
    bounded : bool
        True for images: the decoder mean is ``tanh(logits)`` and Bernoulli targets are ``(x + 1) / 2``.
    """
    if likelihood == "bernoulli":
        if not bounded:
            raise ValueError("likelihood='bernoulli' needs image data in [0, 1]; use it for images only.")
        target = ((x + 1.0) / 2.0).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(2.0 * logits, target, reduction="none")
    mean = torch.tanh(logits) if bounded else logits
    log_scale = log_scale.clamp(min=_MIN_LOG_SCALE)
    if likelihood == "gaussian":
        return -0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
    if likelihood == "laplace":
        return -(x - mean).abs() * torch.exp(-log_scale) - log_scale - math.log(2.0)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {likelihood!r}.")


def log_scale_floor(resolution: np.ndarray, likelihood: str) -> torch.Tensor:
    """The smallest log-scale the decoder may learn for features of ``resolution`` (in network units).

    Values that differ by less than their resolution are the same value, so a feature's density may not
    exceed ``1 / resolution`` anywhere: its probability of one value stays at most 1, and a feature that
    the training rows hold (nearly) constant cannot claim ever more nats by shrinking its scale. The
    peak of a Laplace density of scale ``b`` is ``1 / (2 b)``, of a Gaussian ``1 / (sqrt(2 pi) b)``;
    hence ``b >= resolution / 2`` and ``b >= resolution / sqrt(2 pi)``. A column with one value (NaN
    resolution) gets the floor of a resolution of one network unit; no floor is below ``_MIN_LOG_SCALE``.
    """
    resolution = np.where(np.isfinite(resolution), resolution, 1.0)
    peak = 2.0 if likelihood == "laplace" else math.sqrt(2 * math.pi)
    with np.errstate(divide="ignore"):
        floor = np.log(resolution / peak)
    return torch.from_numpy(np.maximum(floor, _MIN_LOG_SCALE)).float()


def log_likelihood(x, logits, log_scale, likelihood="gaussian", bounded=True) -> torch.Tensor:
    """``log p(x | z)`` per sample, summed over all data dimensions (arguments as
    :func:`elementwise_log_likelihood`); shape ``logits.shape[:-x.ndim + 1]``."""
    sample_dims = logits.ndim - x.ndim + 1
    return _sum_per_sample(elementwise_log_likelihood(x, logits, log_scale, likelihood, bounded), sample_dims)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per sample, in nats, summed over latent dimensions."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(-1)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; mean, exp(logvar))`` summed over latent dimensions (leading sample axes allowed)."""
    log_p = -0.5 * ((z - mean) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
    return log_p.flatten(z.ndim - mean.ndim + 1).sum(-1)


def negative_elbo(x, logits, mean, logvar, log_scale, likelihood="gaussian", bounded=True, kl_weight=1.0,
                  trim_fraction=0.0):
    """The training objective ``-(log p(x|z) - kl_weight * KL)``, averaged over the batch.

    With ``trim_fraction`` the average leaves out the samples whose objective lies above its
    ``1 - trim_fraction`` quantile in the batch (a trimmed likelihood: the worst-explained samples; at
    least one is kept). Returns a dict of scalar tensors: ``loss`` (to minimise), ``reconstruction``
    (``-log p(x|z)``) and ``kl``, all in nats per sample, over the samples kept.
    """
    nll = -log_likelihood(x, logits, log_scale, likelihood, bounded)
    kl = kl_divergence(mean, logvar)
    if trim_fraction > 0:
        per_sample = (nll + kl_weight * kl).detach()
        kept = per_sample <= per_sample.quantile(1.0 - trim_fraction)
        nll, kl = nll[kept], kl[kept]
    nll, kl = nll.mean(), kl.mean()
    return {"loss": nll + kl_weight * kl, "reconstruction": nll, "kl": kl}


def iwae_bound(x, logits, z, mean, logvar, log_scale, likelihood="gaussian", bounded=True):
    """Importance-weighted bound (Burda et al., 2016, https://arxiv.org/abs/1509.00519) per sample.

    ``logits`` and ``z`` carry a leading axis of ``K`` draws from q(z|x); with ``K = 1`` the bound is
    the single-sample ELBO estimate.
    """
    log_px_z = log_likelihood(x, logits, log_scale, likelihood, bounded)  # (K, B)
    log_pz = gaussian_log_density(z, torch.zeros_like(mean), torch.zeros_like(logvar))
    log_qz_x = gaussian_log_density(z, mean, logvar)
    log_w = log_px_z + log_pz - log_qz_x  # (K, B)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def kl_weight(schedule: str, epoch: int, epochs: int) -> float:
    """KL weight at ``epoch`` (0-based).

    ``"cyclical"`` is the tutorial's ``max(0.2, 0.5 * (1 + sin(2 pi epoch / 20)))``; ``"warmup"``
    ramps linearly to 1 over the first quarter of training (Bowman et al., 2016); ``"constant"`` is 1.
    """
    if schedule == "cyclical":
        return max(0.2, 0.5 * (1.0 + math.sin(2.0 * math.pi * epoch / 20.0)))
    if schedule == "warmup":
        return min(1.0, (epoch + 1) / max(1, epochs // 4))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"kl_schedule must be one of {KL_SCHEDULES}; got {schedule!r}.")


def sharp_loss(x, logits, mean, logvar, kl_weight=1.0, perceptual=None, perceptual_weight=0.3):
    """The tutorial's mixed loss: ``MSE + 0.7 L1 + perceptual_weight * VGG + kl_weight * KL / D``.

    ``D`` is the number of data dimensions, so that the KL is on the same per-element footing as the
    mean pixel errors. ``perceptual`` is a :class:`PerceptualLoss` or None (term left out).
    Returns a dict of scalar tensors with ``loss`` and its terms.
    """
    recon = torch.tanh(logits) if x.ndim == 4 else logits
    mse = F.mse_loss(recon, x)
    l1 = F.l1_loss(recon, x)
    kl = kl_divergence(mean, logvar).mean()
    kl_per_element = kl / x[0].numel()
    terms = {"mse": mse, "l1": l1, "kl": kl}
    loss = mse + 0.7 * l1 + kl_weight * kl_per_element
    if perceptual is not None and perceptual_weight > 0 and x.ndim == 4:
        terms["perceptual"] = perceptual(recon, x)
        loss = loss + perceptual_weight * terms["perceptual"]
    terms["loss"] = loss
    return terms


class PerceptualLoss(nn.Module):
    """Mean squared distance between VGG16 feature maps (``features[:31]``) of two image batches.

    Parameters
    ----------
    weights : {"imagenet", None}
        ``"imagenet"`` loads torchvision's ImageNet weights (downloaded once into ``TORCH_HOME``);
        None keeps a random initialisation (for tests).
    """

    def __init__(self, weights: str | None = "imagenet"):
        super().__init__()
        self.features = vgg16_features(weights).eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = (images + 1.0) / 2.0  # [-1, 1] -> [0, 1], ImageNet statistics assume the latter
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if min(images.shape[-2:]) < 32:
            # features[:31] ends in five 2x2 max-pools, which need at least 32 pixels per side
            images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        return (images - self.mean) / self.std

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.features(self._prepare(reconstruction)), self.features(self._prepare(target)))


def vgg16_features(weights: str | None = "imagenet") -> nn.Sequential:
    """VGG16's convolutional part up to ``features[:31]``, built without its 100M-parameter classifier."""
    from torchvision.models import VGG16_Weights
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)[:31]
    if weights is None:
        return features
    if weights != "imagenet":
        raise ValueError(f"weights must be 'imagenet' or None; got {weights!r}.")
    try:
        state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise RuntimeError(
            "The perceptual loss needs torchvision's VGG16 ImageNet weights, which could not be "
            f"loaded ({error}). Download them once where there is network access (they are cached "
            "in $TORCH_HOME/hub/checkpoints/vgg16-397923af.pth, TORCH_HOME defaults to "
            "~/.cache/torch), copy that file to the same place on this machine, or train with "
            "perceptual_weight=0."
        ) from error
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    return features
