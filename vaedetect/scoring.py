"""Score functions: one value per sample, higher means more normal.

Each score is a plain function of a fitted :class:`~vaedetect.networks.VAE` and a batch. Latent draws
use *common random numbers*: one fixed set of standard-normal draws, made from the detector's seed and
shared by every input, so that a sample's score depends on that sample alone, whatever batch it is in.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf, MinCovDet

from . import codecs, settings
from .codecs import bits_per_dim
from .losses import elementwise_log_likelihood, iwae_bound, kl_divergence, log_likelihood
from .registry import get_score

# The residual score's covariance (of at most MAX_RESIDUAL_FEATURES features) is estimated from at most
# this many training rows, so that every tabular fit pays a bounded price for it (at most 160 MB and
# seconds on 2 CPU cores).
MAX_RESIDUAL_ROWS = 10_000
# The other reference statistics (medians and spreads of the training ELBOs, the latent codes' Gaussian)
# are as well estimated from this many training samples as from millions.
MAX_REFERENCE_ROWS = 100_000
# The min_evidence score measures distances to the codes of at most this many training rows (a random sample),
# so that scoring a row costs a bounded number of distances whatever the training set's size, and compares
# with the mean distance to the NEIGHBOURS nearest of them (PyOD's kNN default).
MAX_NEIGHBOUR_ROWS = 4096
NEIGHBOURS = 5
# The evidence min_evidence weighs, each standardised by its training rows' median and interquartile range.
EVIDENCE = ("elbo", "reconstruction", "neighbours")


def latent_noise(latent_shape, n_samples: int, seed: int, device) -> torch.Tensor:
    """The fixed draws ``eps`` of shape ``(n_samples, 1, *latent_shape)`` used by every score call."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n_samples, 1, *latent_shape), generator=generator).to(device)


def _decode_posterior(model, mean, logvar, features, noise):
    """Decode ``K`` draws from q(z|x) per input: ``logits (K, B, *data)`` and ``z (K, B, *latent)``."""
    n_draws = noise.shape[0]
    z = model.reparameterize(mean, logvar, noise)  # (K, B, *latent)
    if features:  # U-Net skips: every draw sees the same encoder maps
        features = [f.repeat(n_draws, *([1] * (f.ndim - 1))) for f in features]
    logits = model.decode(z.flatten(0, 1), features).unflatten(0, (n_draws, mean.shape[0]))  # (K, B, *data)
    return logits, z


def elbo_score(model, x, noise, likelihood="gaussian") -> torch.Tensor:
    """Per-sample evidence lower bound ``E_q[log p(x|z)] - KL(q(z|x) || p(z))`` in nats.

    The expectation is averaged over the ``K`` draws in ``noise``; the KL is in closed form.
    """
    mean, logvar, features = model.encode(x)
    return _elbo_given_posterior(model, x, mean, logvar, features, noise, likelihood)


def _elbo_given_posterior(model, x, mean, logvar, features, noise, likelihood):
    kl = kl_divergence(mean.double(), logvar.double())
    return _expected_log_likelihood(model, x, mean, logvar, features, noise, likelihood) - kl


def _in_float64(model, x, logits):
    """The data, the decoder's outputs and its scale in float64, where scores are computed: the squared distance
    of a row far outside the training data overflows float32 long before float64."""
    return model.decoder_target(x).double(), logits.double(), model.log_scale.double()


def _expected_log_likelihood(model, x, mean, logvar, features, noise, likelihood):
    logits, _ = _decode_posterior(model, mean, logvar, features, noise)
    return log_likelihood(*_in_float64(model, x, logits), likelihood, model.bounded).mean(0)


def reconstruction_probability_score(model, x, noise, likelihood="gaussian") -> torch.Tensor:
    """The ELBO's reconstruction term ``E_q[log p(x|z)]`` in nats, without its KL term: the
    "reconstruction probability" of An and Cho (2015), averaged over the ``K`` draws in ``noise``.

    It asks how well the codes the encoder gives ``x`` explain ``x`` under the decoder's learned scales, not
    how far those codes lie from the prior. http://dm.snu.ac.kr/static/docs/TR/SNUDM-TR-2015-03.pdf
    """
    mean, logvar, features = model.encode(x)
    return _expected_log_likelihood(model, x, mean, logvar, features, noise, likelihood)


def iwae_score(model, x, noise, likelihood="gaussian") -> torch.Tensor:
    """Importance-weighted bound on ``log p(x)`` (Burda et al., 2016) from the ``K`` draws, in nats.

    At least the ELBO for every ``K`` and tighter as ``K`` grows; with ``K = 1`` it is a one-draw
    estimate of the ELBO (KL estimated from the draw too). https://arxiv.org/abs/1509.00519
    """
    mean, logvar, features = model.encode(x)
    logits, z = _decode_posterior(model, mean, logvar, features, noise)
    target, logits, log_scale = _in_float64(model, x, logits)
    return iwae_bound(target, logits, z.double(), mean.double(), logvar.double(), log_scale, likelihood, model.bounded)


def kl_score(model, x, noise=None, likelihood=None) -> torch.Tensor:
    """Minus the rate ``KL(q(z|x) || p(z))`` in nats: how many nats the code of ``x`` carries."""
    mean, logvar, _ = model.encode(x)
    return -kl_divergence(mean.double(), logvar.double())


def anomaly_map(model, x, noise, likelihood="gaussian") -> torch.Tensor:
    """Per-element negative log-likelihood ``-log p(x|z)`` in nats, averaged over the latent draws.

    Shaped like ``x``: higher where the model explains the input worse. Summed over every element it is
    the expected reconstruction term of the ELBO.
    """
    mean, logvar, features = model.encode(x)
    logits, _ = _decode_posterior(model, mean, logvar, features, noise)
    return -elementwise_log_likelihood(*_in_float64(model, x, logits), likelihood, model.bounded).mean(0)


def anomaly_map_and_kl(model, x, noise, likelihood="gaussian") -> torch.Tensor:
    """:func:`anomaly_map` of rows ``x`` flattened, with the KL divergence of each row's posterior as a last column,
    from one encoder and decoder pass: the ELBO is minus the sum of all of it (``(B, values + 1)``)."""
    mean, logvar, features = model.encode(x)
    logits, _ = _decode_posterior(model, mean, logvar, features, noise)
    nll = -elementwise_log_likelihood(*_in_float64(model, x, logits), likelihood, model.bounded).mean(0)
    return torch.cat([nll.flatten(1), kl_divergence(mean.double(), logvar.double())[:, None]], dim=1)


def residuals(model, x) -> torch.Tensor:
    """``x`` minus its reconstruction decoded from the latent mean, in network space (one residual per member
    for a network of several)."""
    mean, _, features = model.encode(x)
    return _residuals_given_posterior(model, x, mean, features)


def _residuals_given_posterior(model, x, mean, features) -> torch.Tensor:
    return model.decoder_target(x).double() - model.output_mean(model.decode(mean, features)).double()


def reconstruction_score(model, x, noise=None, likelihood=None) -> torch.Tensor:
    """Negative mean squared error between ``x`` and the reconstruction decoded from the latent mean."""
    return -residuals(model, x).pow(2).flatten(1).mean(-1)


def lossless_bits_per_dim(x: torch.Tensor, codec: str = "png") -> torch.Tensor:
    """Length of each image's lossless encoding by ``codec`` ("png" at maximum compression, or "webp"
    lossless), in bits per dimension (:func:`vaedetect.codecs.lossless_bits_per_dim` of ``x``'s pixels).

    ``x`` is a (B, C, H, W) batch in ``[-1, 1]``, quantised back to 8 bits first.
    """
    pixels = torch.round((x.detach().cpu() + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    return torch.from_numpy(codecs.lossless_bits_per_dim(pixels.permute(0, 2, 3, 1).numpy(), codec))


def regret_score(model, x, noise, likelihood="gaussian", steps: int = 20, learning_rate: float = 0.1) -> torch.Tensor:
    """Minus the Likelihood Regret (Xiao, Yan and Amit, NeurIPS 2020), higher = more normal.

    The regret is how much each input's ELBO improves when its posterior is fitted to that input alone
    with the decoder frozen: an input like the training data gains little over what the shared
    encoder gives it, an out-of-distribution input gains much. Here the per-input posterior parameters
    ``(mean, logvar)`` are fitted with Adam for ``steps`` steps, which is vectorised over the batch
    (Adam acts element by element, so inputs do not interact) and costs ``steps + 1`` decoder forward
    and ``steps`` backward passes. The best ELBO seen along the way counts, so the regret is >= 0 and never shrinks with more
    steps. https://arxiv.org/abs/2003.02977
    """
    with torch.no_grad():
        mean, logvar, features = model.encode(x)
        features = [f.detach() for f in features]
    with torch.enable_grad():
        params = [mean.detach().clone().requires_grad_(True), logvar.detach().clone().requires_grad_(True)]
        optimizer = torch.optim.Adam(params, lr=learning_rate)
        start = best = None
        for step in range(steps + 1):
            elbo = _elbo_given_posterior(model, x, *params, features, noise, likelihood)
            start = elbo.detach() if start is None else start
            best = elbo.detach() if best is None else torch.maximum(best, elbo.detach())
            if step == steps:
                break
            # gradients of the inputs' own ELBOs only: nothing accumulates in the decoder's .grad
            grads = torch.autograd.grad(-elbo.sum(), params)
            for param, grad in zip(params, grads):
                param.grad = grad
            optimizer.step()
    return -(best - start)


def complexity_score(model, x, noise, likelihood="gaussian", codec="png") -> torch.Tensor:
    """Likelihood corrected by input complexity (Serra et al., ICLR 2020), higher = more normal.

    ``L(x) - NLL(x)``, both in bits per dimension: the bits a generic lossless codec needs minus the
    bits the model needs. Simple images are cheap for both, so their likelihood advantage cancels.
    https://arxiv.org/abs/1909.11480
    """
    nll = bits_per_dim(elbo_score(model, x, noise, likelihood).double(), x[0].numel())
    return lossless_bits_per_dim(x, codec).to(nll.device) - nll


@dataclass
class Reference:
    """Statistics of the training data that the ``latent``, ``typicality`` and ``bits_typicality``
    scores compare against.

    Attributes
    ----------
    latent_location : Tensor of shape (d,)
        Mean of the training data's latent means (flattened codes).
    latent_precision : Tensor of shape (d, d)
        Inverse of their Ledoit-Wolf shrunk covariance, well defined even for ``d`` near ``n``.
    elbo_center : float
        Median ELBO of the training data, in nats.
    elbo_spread_below, elbo_spread_above : float
        Median distance to ``elbo_center`` of the ELBOs below and above it: the typical set's width
        on each side, which differ because per-sample ELBOs have a long lower tail.
    codec : str or None
        Lossless codec of the bits statistics (images only).
    bits_location : Tensor of shape (2,) or None
        Robust (minimum covariance determinant) centre of the training images' pairs
        ``(model bits per dimension, codec bits per dimension)``.
    bits_precision : Tensor of shape (2, 2) or None
        Inverse of their robust covariance.
    residual_location : Tensor of shape (d,) or None
        Mean of the training rows' reconstruction residuals (tabular data of at most
        ``MAX_RESIDUAL_FEATURES`` features; from at most ``MAX_RESIDUAL_ROWS`` rows).
    residual_precision : Tensor of shape (d, d) or None
        Inverse of their Ledoit-Wolf shrunk covariance.
    neighbour_codes : Tensor of shape (m, d) or None
        Latent means of at most ``MAX_NEIGHBOUR_ROWS`` training rows (tables and features), which the
        ``min_evidence`` score measures distances to.
    evidence_location, evidence_scale : Tensor of shape (3,) or None
        Median and interquartile range over those training rows of each piece of ``min_evidence``'s evidence
        (``EVIDENCE``: the ELBO, the reconstruction score, minus the mean distance to the nearest codes).
    """

    latent_location: torch.Tensor
    latent_precision: torch.Tensor
    elbo_center: float
    elbo_spread_below: float
    elbo_spread_above: float
    codec: str | None = None
    bits_location: torch.Tensor | None = None
    bits_precision: torch.Tensor | None = None
    residual_location: torch.Tensor | None = None
    residual_precision: torch.Tensor | None = None
    neighbour_codes: torch.Tensor | None = None
    evidence_location: torch.Tensor | None = None
    evidence_scale: torch.Tensor | None = None


def fit_reference(model, x: torch.Tensor, noise, likelihood, batch_size: int, device, *, codec=None,
                  residuals_up_to: int = 0, evidence: bool = False) -> Reference:
    """Compute the :class:`Reference` statistics of data ``x`` (the training data, in network space).

    ``codec`` (images) also fits the statistics of ``bits_typicality``; ``residuals_up_to`` (tables and features:
    ``MAX_RESIDUAL_FEATURES``) those of the ``residual`` score, for networks of at most that many outputs;
    ``evidence`` (tables and features) those of ``min_evidence``. At most ``MAX_REFERENCE_ROWS`` samples count,
    so that the pass after training stops growing with the data.
    """
    x = x[:MAX_REFERENCE_ROWS]  # the training split, in random order: its first rows are a random sample

    codes = map_batches(lambda m, batch: m.encode(batch)[0].flatten(1), model, x, batch_size, device).double()
    covariance = LedoitWolf().fit(codes.numpy())
    elbo = map_batches(lambda m, batch: elbo_score(m, batch, noise, likelihood), model, x, batch_size, device)
    elbo = elbo.double().numpy()
    center = float(np.median(elbo))
    below, above = center - elbo[elbo < center], elbo[elbo > center] - center
    # a side without spread (all ELBOs equal) would divide by zero; any positive width keeps the ranking
    below, above = (float(np.median(side)) if len(side) and np.median(side) > 0 else 1.0 for side in (below, above))
    reference = Reference(
        latent_location=torch.from_numpy(covariance.location_).float(),
        latent_precision=torch.from_numpy(covariance.precision_).float(),
        elbo_center=center,
        elbo_spread_below=below,
        elbo_spread_above=above,
    )
    if codec is not None:
        location, precision = _robust_gaussian(bits_pairs(elbo, x, codec).numpy())
        reference.codec = codec
        reference.bits_location = torch.from_numpy(location)
        reference.bits_precision = torch.from_numpy(precision)
    if model.log_scale.numel() <= residuals_up_to:
        # x is the training split, in random order: its first rows are a random sample of it
        errors = map_batches(residuals, model, x[:MAX_RESIDUAL_ROWS], batch_size, device).double().numpy()
        residual = LedoitWolf().fit(errors)
        reference.residual_location = torch.from_numpy(residual.location_).float()
        reference.residual_precision = torch.from_numpy(residual.precision_).float()
    if evidence:
        _fit_evidence(reference, model, x, codes, elbo, batch_size, device)
    return reference


def _fit_evidence(reference: Reference, model, x, codes, elbo, batch_size: int, device) -> None:
    """``min_evidence``'s statistics from the first ``MAX_NEIGHBOUR_ROWS`` training rows (a random sample) and
    their latent means ``codes`` and ELBOs ``elbo``, computed already."""
    n = min(len(x), MAX_NEIGHBOUR_ROWS)
    neighbour_codes = codes[:n]
    reconstruction = map_batches(reconstruction_score, model, x[:n], batch_size, device).double()
    # a training row is its own nearest code: its distances leave it out, as a new row's would
    distances = torch.cat([_mean_neighbour_distance(block, neighbour_codes, skip_self=True)
                           for block in neighbour_codes.split(1024)])
    training = torch.stack([torch.from_numpy(elbo[:n]), reconstruction, -distances], dim=1)
    q25, median, q75 = torch.quantile(training, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
    reference.neighbour_codes = neighbour_codes.float()
    reference.evidence_location = median
    # evidence without spread (every row equal) would divide by zero; any positive width keeps the ranking
    reference.evidence_scale = torch.where(q75 > q25, q75 - q25, torch.ones_like(q75))


def _robust_gaussian(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Location and precision of a minimum-covariance-determinant Gaussian fit, so that a few odd
    training points do not widen it; a plain fit where that fails (e.g. few or identical points)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MinCovDet warns about near-singular subsets, handled below
        try:
            fit = MinCovDet(random_state=0).fit(points)
            location, covariance = fit.location_, fit.covariance_
        except (ValueError, np.linalg.LinAlgError):
            location, covariance = points.mean(0), np.atleast_2d(np.cov(points.T))
    if not np.isfinite(covariance).all():
        location, covariance = points.mean(0), np.atleast_2d(np.cov(points.T))
    # a direction without spread (every image equally compressible) must stay invertible
    covariance = np.nan_to_num(covariance) + 1e-6 * np.eye(len(covariance))
    return location, np.linalg.inv(covariance)


def bits_pairs(elbo, x: torch.Tensor, codec: str) -> torch.Tensor:
    """``(B, 2)`` float64: each image's model bits per dimension (from its ELBO in nats) and codec bits
    per dimension."""
    model_bits = bits_per_dim(torch.as_tensor(elbo, dtype=torch.float64).cpu(), x[0].numel())
    return torch.stack([model_bits, lossless_bits_per_dim(x, codec)], dim=1)


def bits_typicality_from_pairs(pairs: torch.Tensor, reference: Reference) -> torch.Tensor:
    """Minus the squared Mahalanobis distance of ``(model bits, codec bits)`` pairs from the training pairs."""
    if reference.bits_location is None:
        raise ValueError("bits_typicality needs a detector fitted on images.")
    return -squared_mahalanobis(pairs, reference.bits_location, reference.bits_precision)


def bits_typicality_score(model, x, noise, likelihood="gaussian", *, reference: Reference) -> torch.Tensor:
    """How typical an image's pair (model bits, codec bits) per dimension is of the training images.

    The two costs of describing an image, by the model and by a generic lossless codec, rise together
    on normal images. Serra et al.'s complexity score looks at their difference only, so an image far
    *more* complex than any training image (noise) can pass; the plain likelihood looks at the model's
    cost only, so a far *simpler* image (a digit, a flat colour) passes. This score is minus the
    squared Mahalanobis distance of the pair from a robust Gaussian fitted to the training pairs, so an
    image is normal only when both its complexity and the model's cost of it relative to that
    complexity are typical.
    """
    elbo = elbo_score(model, x, noise, likelihood)
    return bits_typicality_from_pairs(bits_pairs(elbo, x, reference.codec), reference).to(elbo.device)


def residual_score(model, x, noise=None, likelihood=None, *, reference: Reference) -> torch.Tensor:
    """Minus the squared Mahalanobis distance of the reconstruction residual from the training rows'.

    The decoder's own likelihood treats the features as independent given the code; this is the
    likelihood of a Gaussian decoder whose full covariance is the training residuals' (Ledoit-Wolf),
    up to constants: correlated features that break their usual relation are caught even when each
    alone looks normal (measured on image embeddings: docs/experiments/features_tried.md).
    """
    if reference.residual_precision is None:
        raise ValueError(f"The residual score needs a detector fitted on tabular data of at most "
                         f"{settings.MAX_RESIDUAL_FEATURES} features (features times members, n_estimators); model "
                         "files written before the score existed lack its statistics: fit again.")
    return -squared_mahalanobis(residuals(model, x).flatten(1), reference.residual_location,
                                reference.residual_precision)


def latent_score(model, x, noise=None, likelihood=None, *, reference: Reference) -> torch.Tensor:
    """Minus the squared Mahalanobis distance of the latent mean of ``x`` from the training latents.

    A density score in latent space (a Gaussian fitted to the training codes): high for codes where the
    training data's codes lie, whatever the decoder makes of them.
    """
    codes = model.encode(x)[0].flatten(1).double()
    return -squared_mahalanobis(codes, reference.latent_location, reference.latent_precision)


def min_evidence_score(model, x, noise, likelihood="gaussian", *, reference: Reference) -> torch.Tensor:
    """The least normal of three pieces of evidence, each standardised on the training rows.

    The ELBO (a density), the reconstruction score (how well the code explains the row) and minus the mean
    distance of the row's latent mean to the ``NEIGHBOURS`` nearest training codes (how crowded its
    neighbourhood is), each centred on its training median and divided by its interquartile range
    (``reference.evidence_location``, ``evidence_scale``); the score is their minimum. A row is as normal
    as its least normal evidence, so each catches what the others miss: the density misses an anomaly that
    is simpler than the normal rows, or unusual only among its near neighbours, and the distances miss an
    anomaly that sits in a crowd but breaks the relations between the columns. Chosen for tables on data
    sets that did not choose it (docs/experiments/tabular_evidence.md).
    """
    mean, logvar, features = model.encode(x)
    elbo = _elbo_given_posterior(model, x, mean, logvar, features, noise, likelihood).double()
    return _least_standardised_evidence(model, x, mean, features, elbo, reference)


def anomaly_map_and_min_evidence(model, x, noise, likelihood="gaussian", *, reference: Reference) -> torch.Tensor:
    """:func:`anomaly_map` of rows ``x`` flattened, with the ``min_evidence`` score as a last column, from one pass
    of latent draws (as :func:`anomaly_map_and_kl` for the ELBO): ``(B, values + 1)``."""
    mean, logvar, features = model.encode(x)
    logits, _ = _decode_posterior(model, mean, logvar, features, noise)
    nll = -elementwise_log_likelihood(*_in_float64(model, x, logits), likelihood, model.bounded).mean(0).flatten(1)
    elbo = -nll.sum(1) - kl_divergence(mean.double(), logvar.double())
    return torch.cat([nll, _least_standardised_evidence(model, x, mean, features, elbo, reference)[:, None]], dim=1)


def _least_standardised_evidence(model, x, mean, features, elbo, reference: Reference) -> torch.Tensor:
    """The least of the ELBO ``elbo``, the reconstruction score and minus the mean distance to the nearest codes,
    each standardised by ``reference``'s training statistics."""
    if reference.neighbour_codes is None:
        raise ValueError("The min_evidence score needs a detector fitted on tabular data or backbone features; "
                         "model files written before the score existed lack its statistics: fit again.")
    reconstruction = -_residuals_given_posterior(model, x, mean, features).pow(2).flatten(1).mean(-1)
    distances = _mean_neighbour_distance(mean.flatten(1).double(), reference.neighbour_codes)
    evidence = torch.stack([elbo, reconstruction, -distances], dim=1)
    return evidence.sub(reference.evidence_location.to(x.device)).div(reference.evidence_scale.to(x.device)).amin(dim=1)


def _mean_neighbour_distance(codes: torch.Tensor, neighbour_codes: torch.Tensor, skip_self: bool = False) -> torch.Tensor:
    """Mean Euclidean distance of each of ``codes`` to its ``NEIGHBOURS`` nearest ``neighbour_codes``; with
    ``skip_self`` (``codes`` are among the neighbour codes) its nearest, itself, left out. One batch of codes
    at a time: the distances are a ``(len(codes), len(neighbour_codes))`` matrix."""
    neighbour_codes = neighbour_codes.to(codes)
    k = min(NEIGHBOURS + skip_self, len(neighbour_codes))
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product, which an ONNX graph holds as it is, then updated in
    # place: one (len(codes), len(neighbour_codes)) matrix per batch, not five, for the allocator to reuse
    squared = codes @ neighbour_codes.T
    squared.mul_(-2).add_(codes.pow(2).sum(1, keepdim=True)).add_(neighbour_codes.pow(2).sum(1)).clamp_min_(0)
    nearest = torch.topk(squared, k, dim=1, largest=False).values.sqrt()
    return nearest[:, int(skip_self):].mean(1)


def squared_mahalanobis(points: torch.Tensor, location: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """``(p - location)^T precision (p - location)`` for each row ``p`` of ``points``."""
    centred = points - location.to(points)
    return torch.einsum("bi,ij,bj->b", centred, precision.to(points), centred)


def typicality_from_elbo(elbo, reference: Reference):
    """Two-sided distance of an ELBO from the training data's typical ELBO, negated (higher = more normal).

    ``-max((c - elbo) / w_below, (elbo - c) / w_above)`` with ``c`` the median training ELBO and ``w``
    the typical deviations below and above it. An input the model finds much *more* likely than the
    training data (a flat or much simpler image) is as atypical as one it finds much less likely.
    Works on tensors and numpy arrays alike.
    """
    below = (reference.elbo_center - elbo) / reference.elbo_spread_below
    above = (elbo - reference.elbo_center) / reference.elbo_spread_above
    return -(torch.maximum(below, above) if isinstance(below, torch.Tensor) else np.maximum(below, above))


def typicality_score(model, x, noise, likelihood="gaussian", *, reference: Reference) -> torch.Tensor:
    """The ELBO's two-sided typicality (:func:`typicality_from_elbo`), after Nalisnick et al., "Detecting
    Out-of-Distribution Inputs to Deep Generative Models Using Typicality", 2019, applied per input.
    https://arxiv.org/abs/1906.02994
    """
    return typicality_from_elbo(elbo_score(model, x, noise, likelihood), reference)


# ------------------------------------------------------------------ scores from one ELBO pass
# ``score_table`` computes the ELBO once and derives these from it (see ScoreMethod.from_elbo).


def typicality_columns(elbo: np.ndarray, x, *, reference: Reference) -> dict:
    return {"typicality": typicality_from_elbo(elbo, reference)}


def complexity_columns(elbo: np.ndarray, x, *, codec: str) -> dict:
    codec_bits = lossless_bits_per_dim(x, codec).numpy()
    return {f"{codec}_bits_per_dim": codec_bits, "complexity": codec_bits - bits_per_dim(elbo, x[0].numel())}


def bits_typicality_columns(elbo: np.ndarray, x, *, reference: Reference) -> dict:
    return {"bits_typicality": bits_typicality_from_pairs(bits_pairs(elbo, x, reference.codec), reference).numpy()}


def map_batches(function, model, x: torch.Tensor, batch_size: int, device, needs_grad=False) -> torch.Tensor:
    """``function(model, batch)`` over ``x`` in evaluation mode, batch by batch; results on the CPU.

    Runs under ``torch.inference_mode`` unless ``needs_grad`` (scores that optimise per input).
    """
    model.eval()
    chunks = []
    with torch.inference_mode(not needs_grad):
        for start in range(0, len(x), batch_size):
            chunks.append(function(model, x[start : start + batch_size].to(device)).cpu())
    return torch.cat(chunks)


def score_batches(model, x: torch.Tensor, score: str, noise, likelihood, batch_size: int, device,
                  **options) -> np.ndarray:
    """Apply the score method named ``score`` (see :mod:`vaedetect.registry`) to ``x`` (on any device) in
    batches; float64 numpy out.

    ``options`` go to the score function (e.g. ``steps`` of ``"regret"``).
    """
    method = get_score(score)
    function = method.load()
    scores = map_batches(lambda m, batch: function(m, batch, noise, likelihood, **options), model, x, batch_size,
                         device, needs_grad=method.needs_grad)
    return scores.detach().double().numpy()
