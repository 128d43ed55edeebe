"""What ``VAEDetector``'s parameters may be, and what "auto" means for images and for tables.

Torch-free, so that the command line builds its options from it without loading torch. Every choice
that differs between images and tabular data is made here, once, by :func:`resolve`; ``fit`` stores
the result in fitted attributes, and later calls read those rather than the live parameters (which
``set_params`` may change after fitting).
"""

from __future__ import annotations

from dataclasses import dataclass

LIKELIHOODS = ("gaussian", "bernoulli", "laplace")
KL_SCHEDULES = ("cyclical", "warmup", "constant")
LOSSES = ("elbo", "sharp")
ACTIVATIONS = ("leaky_relu", "relu")
CODECS = ("png", "webp")
SCALINGS = ("standard", "common")
# The score methods are in vaedetect.registry, one entry each.

# The share of calibration data flagged when contamination="auto".
AUTO_CONTAMINATION = 0.01
# Latent draws per row when n_samples="auto" on tabular data: a one-draw ELBO of a few features is a
# noisy score (docs/tabular_draws.md), and decoding a row costs next to nothing. Each member of a table
# draws as many: sharing them (4 each of 5 members) measured 0.002 lower (docs/tabular_members_draws.md).
TABULAR_DRAWS = 16
# Tables: n_estimators="auto" trains this many member VAEs side by side, and learning_rate="auto" is
# TABULAR_LEARNING_RATE rather than LEARNING_RATE (images, backbone features). On the development
# sets the faster rate alone raised the mean but let single seeds collapse; members of different
# initialisations average such a seed away (docs/tabular_dev_ensemble.md, docs/tabular_members.md).
TABULAR_MEMBERS = 5
# Tables: trim_fraction="auto" leaves this share of each batch's worst-explained rows out of the loss, so
# that the anomalies among unlabelled training rows pull the fit less (docs/tabular_trimmed.md).
TABULAR_TRIM = 0.1
LEARNING_RATE = 5e-4
TABULAR_LEARNING_RATE = 1e-3
# epochs="auto": this many epochs, fewer where they would take more optimiser steps than the budget
# (docs/auto_epochs.md); where one epoch alone would, it ends at the budget, on a random share of the
# rows, so that fit time stops growing with rows (docs/tabular_scale.md).
AUTO_MAX_EPOCHS = 25
AUTO_MAX_STEPS = 2500
# The residual score keeps a d x d precision matrix of the reconstruction residuals: up to this many
# features (16 MiB of float32, in memory and in the model file).
MAX_RESIDUAL_FEATURES = 2048

# Named settings for VAEDetector.from_preset. "sharp" is the tutorial's full-size SharpVAE and its
# training recipe (64 -> 512 channels over 4 stages, spatial latent at 1/16 resolution, MSE + L1 +
# VGG16 perceptual loss, cyclical KL weight, augmentation); its measured cost is in docs/benchmarks.md.
# Its U-Net skips stay off: they would let the decoder copy the input past the latent code.
PRESETS = {
    "default": {},
    "sharp": {"base_channels": 64, "n_stages": 4, "spatial_latent": True, "loss": "sharp",
              "kl_schedule": "cyclical", "augment": True},
}


@dataclass(frozen=True)
class Resolved:
    """The parameters whose "auto" depends on the data, resolved for one kind of data."""

    likelihood: str
    n_samples: int
    augment: bool
    scaling: str
    n_estimators: int
    learning_rate: float
    trim_fraction: float


def resolve(params: dict, kind: str) -> Resolved:
    """Resolve ``params`` (``VAEDetector.get_params()``) for ``kind``: "image", "tabular", or "features"
    (the embeddings of a pretrained backbone, modelled by the tabular network).

    Images get a Gaussian decoder, one latent draw per score and augmentation when ``augment="auto"``;
    tables a Laplace decoder (anomalies among the training rows pull it less), ``TABULAR_DRAWS`` draws,
    no augmentation, each feature scaled to unit variance and ``TABULAR_MEMBERS`` member VAEs trained at
    ``TABULAR_LEARNING_RATE`` on batch losses trimmed of their ``TABULAR_TRIM`` worst rows; features the
    same as tables but a Gaussian decoder, one scale common to all features (docs/features_one_class.md)
    and one network at ``LEARNING_RATE`` on whole batches, as images. The score method is resolved by
    :func:`resolve_score`, apart: unlike these it may change after ``fit`` (through ``calibrate``). The
    reasons and measurements are in the parameters' documentation (``VAEDetector``).
    """
    image, table = kind == "image", kind == "tabular"
    auto_likelihood = "laplace" if kind == "tabular" else "gaussian"
    return Resolved(
        likelihood=params["likelihood"] if params["likelihood"] != "auto" else auto_likelihood,
        n_samples=_auto(params["n_samples"], 1 if image else TABULAR_DRAWS),
        augment=image if params["augment"] == "auto" else bool(params["augment"]),
        scaling=params.get("scaling", "auto") if params.get("scaling", "auto") != "auto" else
        ("common" if kind == "features" else "standard"),
        n_estimators=_auto(params["n_estimators"], TABULAR_MEMBERS if table else 1),
        learning_rate=_auto(params["learning_rate"], TABULAR_LEARNING_RATE if table else LEARNING_RATE),
        trim_fraction=_auto(params["trim_fraction"], TABULAR_TRIM if table else 0.0),
    )


def _auto(value, resolved):
    return resolved if value == "auto" else value


def resolve_score(score_method: str, kind: str, n_features: int = 0) -> str:
    """``score_method`` with "auto" resolved: ``bits_typicality`` for images, the ELBO for tables, and
    ``residual`` for the ``n_features`` features of a backbone where it is defined (at most
    ``MAX_RESIDUAL_FEATURES``), the ELBO beyond (docs/features_one_class.md)."""
    if score_method != "auto":
        return score_method
    if kind == "features":
        return "residual" if n_features <= MAX_RESIDUAL_FEATURES else "elbo"
    return "bits_typicality" if kind == "image" else "elbo"
