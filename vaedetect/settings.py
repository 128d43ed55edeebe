"""What ``VAEDetector``'s parameters may be, and what "auto" means for images and for tables.

Torch-free, so that the command line builds its options from it without loading torch. Every choice
that differs between images and tabular data is made here, once, by :func:`resolve`; ``fit`` stores
the result in fitted attributes, and later calls read those rather than the live parameters (which
``set_params`` may change after fitting).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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
# noisy score (docs/experiments/tabular_draws.md), and decoding a row costs next to nothing. Each member of a table
# draws as many: sharing them (4 each of 5 members) measured lower (docs/experiments/tabular_members_draws.md).
TABULAR_DRAWS = 16
# Tables: n_estimators="auto" trains this many member VAEs side by side, and learning_rate="auto" is
# TABULAR_LEARNING_RATE rather than LEARNING_RATE (images, backbone features). On the development
# sets the faster rate alone raised the mean but let single seeds collapse; members of different
# initialisations average such a seed away (docs/experiments/tabular_dev_ensemble.md, docs/experiments/tabular_members.md).
TABULAR_MEMBERS = 5
# Tables: trim_fraction="auto" leaves this share of each batch's worst-explained rows out of the loss, so
# that the anomalies among unlabelled training rows pull the fit less (docs/experiments/tabular_trimmed.md).
TABULAR_TRIM = 0.1
LEARNING_RATE = 5e-4
TABULAR_LEARNING_RATE = 2e-3
# epochs="auto": this many epochs, fewer where they would take more optimiser steps than the budget
# (docs/experiments/auto_epochs.md); where one epoch alone would, it ends at the budget, on a random share of the
# rows, so that fit time stops growing with rows (docs/benchmarks/tabular_scale.md).
AUTO_MAX_EPOCHS = 25
AUTO_MAX_STEPS = 2500
# Tables: epochs="auto" plans at most TABULAR_MAX_EPOCHS epochs within TABULAR_MAX_STEPS steps: with epochs of
# 16 steps at TABULAR_LEARNING_RATE, as good on the development sets as 25 epochs of batches of 32 at 1e-3
# (docs/experiments/tabular_batch_size.md), in about half the time.
TABULAR_MAX_EPOCHS = 16
TABULAR_MAX_STEPS = AUTO_MAX_STEPS
# batch_size="auto": BATCH_SIZE for images and backbone features. Tables take a batch that makes an epoch
# TABULAR_EPOCH_STEPS optimiser steps, between BATCH_SIZE and TABULAR_MAX_BATCH rows: a small network's step on a
# CPU is mostly the fixed cost of its operator calls, so that fewer, larger steps train a table of a few thousand
# rows in a quarter of the time (docs/benchmarks/tabular_fit_speed.md). Beyond 4,096 training rows the batch
# stays at TABULAR_MAX_BATCH and epochs grow longer (the step budget takes over above about 40,000), since fewer,
# larger steps lost quality there (docs/experiments/tabular_batch_size_first.md).
BATCH_SIZE = 32
TABULAR_EPOCH_STEPS = 16
TABULAR_MAX_BATCH = 256
# Tables: score_method="auto". The least normal of the standardised ELBO, reconstruction score and distance to
# the nearest training codes ranked anomalies better than the ELBO alone on ADBench sets held out from the choice
# and on toy tasks that chose nothing, and as well on the large sets (docs/design/min_evidence.md).
TABULAR_SCORE = "min_evidence"
# The residual score keeps a d x d precision matrix of the reconstruction residuals: up to this many
# features (16 MiB of float32, in memory and in the model file).
MAX_RESIDUAL_FEATURES = 2048

# Named settings for VAEDetector.from_preset. "sharp" is the tutorial's full-size SharpVAE and its
# training recipe (64 -> 512 channels over 4 stages, spatial latent at 1/16 resolution, MSE + L1 +
# VGG16 perceptual loss, cyclical KL weight, augmentation); its measured cost is in docs/benchmarks/summary.md.
# Its U-Net skips stay off: they would let the decoder copy the input past the latent code.
PRESETS = {
    "default": {},
    "sharp": {"base_channels": 64, "n_stages": 4, "spatial_latent": True, "loss": "sharp",
              "kl_schedule": "cyclical", "augment": True},
}


@dataclass(frozen=True)
class Resolved:
    """Every parameter whose "auto" depends on the data, resolved by :func:`resolve` for one fit.

    ``VAEDetector`` stores it as ``settings_``: later calls read it, never the live parameters, so that
    ``set_params`` after ``fit`` changes nothing until the next ``fit``.
    """

    likelihood: str
    batch_size: int
    n_samples: int
    augment: bool
    scaling: str
    n_estimators: int
    learning_rate: float
    trim_fraction: float
    # epochs planned, and the optimiser steps after which one epoch ends (None: after every batch)
    epochs: int
    max_steps_per_epoch: int | None
    mixed_precision: bool
    contamination: float
    score_method: str

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(params: dict, kind: str, *, n_train: int, n_features: int, fast_bfloat16: bool = False) -> Resolved:
    """Resolve ``params`` (``VAEDetector.get_params()``) for ``kind``: "image", "tabular", or "features"
    (the embeddings of a pretrained backbone, modelled by the tabular network), ``n_train`` training samples
    of ``n_features`` values each, on a device that runs bfloat16 fast (``fast_bfloat16``: CUDA GPUs of the
    Ampere generation and later).

    Images get a Gaussian decoder, one latent draw per score and augmentation when ``augment="auto"``;
    tables a Laplace decoder (anomalies among the training rows pull it less), ``TABULAR_DRAWS`` draws,
    no augmentation, each feature scaled to unit variance and ``TABULAR_MEMBERS`` member VAEs trained at
    ``TABULAR_LEARNING_RATE`` on batch losses trimmed of their ``TABULAR_TRIM`` worst rows; features the
    same as tables but a Gaussian decoder, one scale common to all features (docs/benchmarks/features_one_class.md)
    and one network at ``LEARNING_RATE`` on whole batches, as images. The batch size, epochs, mixed
    precision, the contamination and the score method follow the rules of :func:`resolve_batch_size`,
    :func:`epoch_budget`, :func:`epochs_within_budget` and :func:`resolve_calibration`. The reasons and
    measurements are in the parameters' documentation (``VAEDetector``).
    """
    image, table = kind == "image", kind == "tabular"
    auto_likelihood = "laplace" if kind == "tabular" else "gaussian"
    score_method, contamination = resolve_calibration(params, kind, n_features)
    budget = params["epochs"] == "auto"
    batch_size = resolve_batch_size(params["batch_size"], kind, n_train)
    return Resolved(
        likelihood=params["likelihood"] if params["likelihood"] != "auto" else auto_likelihood,
        batch_size=batch_size,
        n_samples=_auto(params["n_samples"], 1 if image else TABULAR_DRAWS),
        augment=image if params["augment"] == "auto" else bool(params["augment"]),
        scaling=params.get("scaling", "auto") if params.get("scaling", "auto") != "auto" else
        ("common" if kind == "features" else "standard"),
        n_estimators=_auto(params["n_estimators"], TABULAR_MEMBERS if table else 1),
        learning_rate=_auto(params["learning_rate"], TABULAR_LEARNING_RATE if table else LEARNING_RATE),
        trim_fraction=_auto(params["trim_fraction"], TABULAR_TRIM if table else 0.0),
        epochs=epochs_within_budget(n_train, batch_size, *epoch_budget(kind)) if budget else params["epochs"],
        max_steps_per_epoch=epoch_budget(kind)[1] if budget else None,
        mixed_precision=fast_bfloat16 if params["mixed_precision"] == "auto" else bool(params["mixed_precision"]),
        contamination=contamination,
        score_method=score_method,
    )


def epoch_budget(kind: str) -> tuple[int, int]:
    """``(epochs, optimiser steps)`` that ``epochs="auto"`` plans at most for ``kind``."""
    return (TABULAR_MAX_EPOCHS, TABULAR_MAX_STEPS) if kind == "tabular" else (AUTO_MAX_EPOCHS, AUTO_MAX_STEPS)


def resolve_batch_size(batch_size, kind: str, n_train: int) -> int:
    """``batch_size`` for ``n_train`` training samples of ``kind``: "auto" is ``BATCH_SIZE`` for images and
    backbone features, and for tables the batch that makes an epoch ``TABULAR_EPOCH_STEPS`` steps, at least
    ``BATCH_SIZE`` and at most ``TABULAR_MAX_BATCH`` rows."""
    if batch_size != "auto":
        return batch_size
    if kind != "tabular":
        return BATCH_SIZE
    return min(TABULAR_MAX_BATCH, max(BATCH_SIZE, math.ceil(n_train / TABULAR_EPOCH_STEPS)))


def _auto(value, resolved):
    return resolved if value == "auto" else value


def resolve_calibration(params: dict, kind: str, n_features: int) -> tuple[str, float]:
    """What calibration uses of ``params``: the score method and the contamination, "auto" resolved.

    Fitting resolves them (:func:`resolve`), and so does ``calibrate``, which re-calibrates a fitted
    detector under the parameters as they are then. "auto" is ``bits_typicality`` for images, ``TABULAR_SCORE``
    for tables, and ``residual`` for the ``n_features`` features of a backbone where it is defined (at
    most ``MAX_RESIDUAL_FEATURES``), the ELBO beyond (docs/benchmarks/features_one_class.md); a contamination of
    ``AUTO_CONTAMINATION``.
    """
    score_method = params["score_method"]
    if score_method == "auto" and kind == "features":
        score_method = "residual" if n_features <= MAX_RESIDUAL_FEATURES else "elbo"
    elif score_method == "auto":
        score_method = "bits_typicality" if kind == "image" else TABULAR_SCORE
    return score_method, resolve_contamination(params["contamination"])


def resolve_contamination(contamination) -> float:
    """``contamination`` as a number: "auto" is ``AUTO_CONTAMINATION``."""
    return AUTO_CONTAMINATION if contamination == "auto" else float(contamination)


def epochs_within_budget(n_train: int, batch_size: int, max_epochs: int, max_steps: int) -> int:
    """``max_epochs``, or fewer so that training takes at most ``max_steps`` optimiser steps (at least
    one epoch, which ``TrainConfig.max_steps_per_epoch`` cuts short where it alone would take more).

    Convergence follows the number of updates more than the number of passes: a large training set
    gets as many updates in fewer epochs, and its training time stops growing with its size.
    """
    steps_per_epoch = math.ceil(n_train / batch_size)
    return max(1, min(max_epochs, max_steps // steps_per_epoch))
