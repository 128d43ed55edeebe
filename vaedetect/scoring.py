"""Score functions: one value per sample, higher means more normal.

Each score is a plain function of a fitted :class:`~vaedetect.networks.VAE` and a batch. Latent draws
use *common random numbers*: one fixed set of standard-normal draws, made from the detector's seed and
shared by every input, so that a sample's score depends on that sample alone, whatever batch it is in.
"""

from __future__ import annotations

import numpy as np
import torch

from .losses import iwae_bound, kl_divergence, log_likelihood

SCORES = ("elbo", "reconstruction")


def latent_noise(latent_shape, n_samples: int, seed: int, device) -> torch.Tensor:
    """The fixed draws ``eps`` of shape ``(n_samples, 1, *latent_shape)`` used by every score call."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n_samples, 1, *latent_shape), generator=generator).to(device)


def elbo_score(model, x, noise, likelihood="gaussian") -> torch.Tensor:
    """Per-sample evidence lower bound in nats.

    With one draw it is ``log p(x|z) - KL(q(z|x) || p(z))`` with the KL in closed form; with ``K > 1``
    draws it is the importance-weighted bound (IWAE), which is tighter and tends to ``log p(x)``.
    """
    mean, logvar, features = model.encode(x)
    n_draws = noise.shape[0]
    z = model.reparameterize(mean, logvar, noise)  # (K, B, *latent)
    flat_z = z.flatten(0, 1)  # (K * B, *latent)
    if features:
        features = [f.repeat(n_draws, *([1] * (f.ndim - 1))) for f in features]
    logits = model.decode(flat_z, features).unflatten(0, (n_draws, len(x)))  # (K, B, *data)
    if n_draws == 1:
        return log_likelihood(x, logits[0], model.log_scale, likelihood, model.is_image) - kl_divergence(mean, logvar)
    return iwae_bound(x, logits, z, mean, logvar, model.log_scale, likelihood, model.is_image)


def residuals(model, x) -> torch.Tensor:
    """``x`` minus its reconstruction decoded from the latent mean, in network space."""
    mean, _, features = model.encode(x)
    return x - model.output_mean(model.decode(mean, features))


def reconstruction_score(model, x, noise=None, likelihood=None) -> torch.Tensor:
    """Negative mean squared error between ``x`` and the reconstruction decoded from the latent mean."""
    return -residuals(model, x).pow(2).flatten(1).mean(-1)


_SCORE_FUNCTIONS = {"elbo": elbo_score, "reconstruction": reconstruction_score}


def map_batches(function, model, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """``function(model, batch)`` over ``x`` in evaluation mode, batch by batch; results on the CPU."""
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunks.append(function(model, x[start : start + batch_size].to(device)).cpu())
    return torch.cat(chunks)


def score_batches(model, x: torch.Tensor, score: str, noise, likelihood, batch_size: int, device) -> np.ndarray:
    """Apply the score named ``score`` to ``x`` (on any device) in batches; float64 numpy out."""
    function = _SCORE_FUNCTIONS[score]
    scores = map_batches(lambda m, batch: function(m, batch, noise, likelihood), model, x, batch_size, device)
    return scores.double().numpy()


# ------------------------------------------------------------------ split-conformal calibration
# Vovk et al., "Algorithmic Learning in a Random World", 2005; for outlier detection see
# Bates et al., "Testing for outliers with conformal p-values", Annals of Statistics, 2023.


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``p(x) = (1 + #{calibration scores <= score(x)}) / (n + 1)``, one per score.

    For data exchangeable with the held-out calibration data, ``P(p <= alpha) <= alpha``: flagging
    ``p <= fpr`` raises a false alarm on at most ``fpr`` of normal data, in expectation over
    calibration sets. Low scores (anomalous) get small p-values.
    """
    calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    at_or_below = np.searchsorted(calibration, np.asarray(scores, dtype=np.float64), side="right")
    return (1.0 + at_or_below) / (len(calibration) + 1.0)


def conformal_threshold(calibration_scores: np.ndarray, fpr: float) -> float:
    """The score below which exactly the samples with conformal p-value ``<= fpr`` fall.

    That is the ``k``-th smallest calibration score with ``k = floor(fpr * (n + 1))``; ``-inf`` (flag
    nothing) when ``k = 0``, i.e. when the calibration set is too small for that rate.
    """
    calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    k = int(np.floor(fpr * (len(calibration) + 1) + 1e-9))
    return float(calibration[k - 1]) if k >= 1 else -np.inf
