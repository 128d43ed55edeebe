"""``VAEDetector``: the scikit-learn estimator that composes networks, training loop and scores."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._validation import check_X, holdout_sizes, holdout_split
from .data import arrange_like, images_to_unit_range
from .folders import FolderMixin
from .inspection import InspectionMixin
from .registry import ScoreMethodChoices, get_score, score_names
from .settings import (
    ACTIVATIONS,
    CODECS,
    KL_SCHEDULES,
    LIKELIHOODS,
    LOSSES,
    PRESETS,
    resolve,
    resolve_score,
)
from .thresholds import ThresholdMixin

# Inference batches hold about this many input values (and at most _MAX_INFERENCE_BATCH samples).
# Measured on 2 CPU cores, scoring 1,000 JPEGs: at 64x64 RGB a batch of 32 ran at 115 images/s and
# 861 MB peak memory, one of 256 at 94 images/s and 1,741 MB; at 32x32, 64 and 256 gave 427 and 391
# images/s. Beyond the cache-friendly size, bigger batches only cost memory.
_INFERENCE_BATCH_VALUES = 2**18
_MAX_INFERENCE_BATCH = 256






def _fail_closed(scores, method) -> np.ndarray:
    """Scores with every non-finite value set to -inf, the most anomalous score, and a warning.

    A score overflows to NaN or infinity only for inputs far outside anything the model was fitted on
    (e.g. features a thousand orders of magnitude off): such an input must never pass as normal.
    """
    scores = np.asarray(scores, dtype=np.float64)
    broken = ~np.isfinite(scores)
    if broken.any():
        warnings.warn(
            f"The {method!r} score of {int(broken.sum())} of {len(scores)} samples is not finite (the input lies far "
            "outside what the model was fitted on, and its evaluation overflowed); it is set to -inf, the most "
            "anomalous score, so that these samples are flagged.",
            UserWarning,
            stacklevel=3,
        )
        scores = np.where(broken, -np.inf, scores)
    return scores














class VAEDetector(ThresholdMixin, FolderMixin, InspectionMixin, ClassNamePrefixFeaturesOutMixin, OutlierMixin,
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
    loss : {"elbo", "sharp"}, default="elbo"
        ``"elbo"`` trains the proper negative ELBO under ``likelihood``; ``"sharp"`` is the tutorial's
        MSE + 0.7 L1 + ``perceptual_weight`` VGG16 perceptual + KL loss (the decoder's scale is then
        fitted afterwards, so that ELBO scores remain available).
    likelihood : {"auto", "gaussian", "bernoulli", "laplace"}, default="auto"
        Decoder distribution; Gaussian and Laplace have a learned scale per channel (feature). "auto"
        is Gaussian for images and Laplace for tabular data: tabular training rows are fitted without
        labels, and under an absolute error the anomalies among them pull the fit less than under a
        squared one. Chosen on development tasks built from scikit-learn's
        bundled data sets (mean ROC AUC 0.722 against 0.708 over 17 tasks and 3 seeds), then confirmed
        once on the four ADBench sets (0.967 against 0.964; docs/tabular_likelihood.md).
    perceptual_weight : float, default=0.3
        Weight of the VGG16 perceptual term of ``loss="sharp"``; 0 avoids loading VGG16.
    kl_schedule : {"warmup", "cyclical", "constant"}, default="warmup"
        KL weight over epochs: linear warm-up over the first quarter, the tutorial's cyclical
        ``max(0.2, 0.5 (1 + sin(2 pi epoch / 20)))``, or constant 1.
    epochs : int or "auto", default="auto"
        Training epochs at most. "auto" is 25 epochs, or fewer so that training takes at most 2,500
        optimiser steps: unchanged up to 3,200 training samples at ``batch_size=32``, then a training
        time that stops growing with the data set until one epoch alone is 2,500 steps (80,000
        samples). A CIFAR-10 class of 5,000 photos gets 17 epochs: on 2 CPU cores its training took
        at most 464 s against up to 696 s for 25 epochs, at a mean one-class ROC AUC of 0.660 against
        0.663 (``docs/auto_epochs.md``; the tutorial's 30 epochs gave 0.663 too,
        ``docs/default_epochs.md``).
    batch_size : int, default=32
    learning_rate : float, default=5e-4
        AdamW learning rate, decayed to 1e-6 by a cosine schedule.
    weight_decay : float, default=1e-5
    augment : bool or "auto", default=False
        Random flips, small rotations and (RGB) colour jitter during training, as in the tutorial;
        "auto" turns it on for images and off for tabular data. Off by default because it teaches the
        model that mirrored, rotated and recoloured inputs are normal, which an anomaly detector may
        have to flag: on one-class MNIST it lowered the mean ROC AUC of the ELBO from 0.955 to 0.924
        (docs/scores.md).
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
        decoder passes per input. "auto" is 1 for images and 16 for tabular data. An image's
        reconstruction term already sums over thousands of pixels, so one draw estimates it well: on
        one-class MNIST the tutorial's 10-draw bound ranked anomalies no better than one draw (mean
        ROC AUC 0.919 vs 0.924) at ten times the cost (benchmarks/results/mnist_one_class_iwae10.json).
        A row of a few features is a noisy one-draw estimate, and decoding it is cheap: on the four
        ADBench sets over 3 seeds, 16 draws raised the ELBO's mean ROC AUC from 0.940 to 0.964 and its
        worst run from 0.845 to 0.893 (Gaussian decoder), for milliseconds more scoring
        (docs/tabular_draws.md).
    score_method : {"auto", "elbo", "iwae", "kl", "reconstruction", "latent", "typicality", "complexity", \
            "bits_typicality", "regret"}, default="auto"
        What ``score_samples`` returns, higher = more normal. "auto" is ``"bits_typicality"`` for
        images and ``"elbo"`` for tabular data, the best of the measured methods on out-of-distribution
        images and one-class MNIST (docs/scores.md) and on tabular development tasks
        (docs/tabular_scores.md):

        - ``"elbo"``: the evidence lower bound, in nats per sample;
        - ``"iwae"``: the importance-weighted bound with ``n_samples`` draws;
        - ``"kl"``: minus the KL divergence of the posterior from the prior (the rate);
        - ``"reconstruction"``: minus the mean squared error of the reconstruction from the latent mean;
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
          each input's posterior alone.

        ``score_table`` gives them all at once; docs/scores.md compares them. Formerly ``score``,
        renamed so that it no longer hides scikit-learn's ``score(X, y)`` (which a search without
        ``scoring`` would call); model files written with the old name load unchanged.
    regret_steps : int, default=20
        Optimiser steps per input for ``score_method="regret"``: ``regret_steps + 1`` decoder forward and
        ``regret_steps`` backward passes per input (about 55 times the one-draw ELBO at 20 steps).
    complexity_codec : {"png", "webp"}, default="png"
        Lossless codec whose length measures input complexity for ``score_method="complexity"``: PNG at
        maximum compression, or lossless WebP, which compresses CIFAR-10 photos about 30% smaller (a
        tighter complexity estimate) but is slower to encode.
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
        the convolutions (:func:`vaedetect.acceleration.inference_network`), made on first use; assign
        a new ``model_`` rather than editing its weights in place.
    offset_ : float
        Threshold on ``score_samples``: samples scoring below it are outliers.
    history_ : pandas.DataFrame
        Per-epoch loss terms, validation loss, KL weight, learning rate and seconds.
    layout_ : vaedetect.data.InputLayout
        How ``X`` maps to network tensors; outputs are returned in the same layout.
    n_features_in_ : int
        Number of values per sample (``C * H * W`` for images).
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    feature_mean_, feature_scale_ : ndarray of shape (n_features,)
        Standardisation of tabular data (None for images).
    device_ : str
        The device the model lives on.
    likelihood_ : str
        The decoder distribution, ``likelihood`` with "auto" resolved for the data ``fit`` saw.
    n_samples_ : int
        Latent draws per input when scoring, ``n_samples`` with "auto" resolved. Like ``likelihood_``
        it is fixed by ``fit``: changing the parameters afterwards leaves the fitted model's scores as
        they are until the next ``fit``.
    noise_seed_ : int
        Seed of the fixed latent draws used by every score call.
    reference_ : vaedetect.scoring.Reference
        Statistics of the training data's latent codes and ELBOs, used by the ``latent`` and
        ``typicality`` scores.
    validation_scores_ : ndarray of shape (n_calibration,)
        Scores of the calibration split (or of the data given to :meth:`calibrate`), which thresholds
        and p-values are calibrated on; the name is older than the calibration split.
    training_summary_ : dict
        Sample counts of the training, validation and calibration splits (``n_train``,
        ``n_validation``, ``n_calibration``), what the calibration scores are (``calibrated_on``:
        "held-out", "early-stopping", "training" or "calibrate(X)"), epochs planned and run, and
        for ``fit_paths`` the paths and file counts.
    calibrated_score_ : str
        The score method ``validation_scores_`` belong to.
    map_baseline_ : ndarray of shape (H, W) or None
        Mean per-pixel cost (``anomaly_map``) of the calibration images; anomaly-map pictures
        (``--maps``, the report) show the excess over it. None for tabular data.
    map_scale_ : list of float or None
        ``[low, high]``: the excess drawn coldest and hottest in every picture: none, and the 99.9th
        percentile of the calibration images' excess. None for tabular data.

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
        "base_channels": [Interval(Integral, 1, None, closed="left")],
        "n_stages": [Interval(Integral, 1, 8, closed="both")],
        "residual": ["boolean"],
        "spatial_latent": ["boolean"],
        "skip_connections": ["boolean"],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "loss": [StrOptions(set(LOSSES))],
        "likelihood": [StrOptions({"auto", *LIKELIHOODS})],
        "perceptual_weight": [Interval(Real, 0, None, closed="left")],
        "kl_schedule": [StrOptions(set(KL_SCHEDULES))],
        "epochs": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "augment": ["boolean", StrOptions({"auto"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "calibration_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "n_samples": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "score_method": [StrOptions(ScoreMethodChoices())],
        "regret_steps": [Interval(Integral, 1, None, closed="left")],
        "complexity_codec": [StrOptions(set(CODECS))],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "device": [str],
        "mixed_precision": ["boolean", StrOptions({"auto"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        latent_dim=16,
        image_shape=None,
        image_size=64,
        channels=3,
        base_channels=32,
        n_stages=3,
        residual=True,
        spatial_latent=False,
        skip_connections=False,
        activation="leaky_relu",
        loss="elbo",
        likelihood="auto",
        perceptual_weight=0.3,
        kl_schedule="warmup",
        epochs="auto",
        batch_size=32,
        learning_rate=5e-4,
        weight_decay=1e-5,
        augment=False,
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
        self.base_channels = base_channels
        self.n_stages = n_stages
        self.residual = residual
        self.spatial_latent = spatial_latent
        self.skip_connections = skip_connections
        self.activation = activation
        self.loss = loss
        self.likelihood = likelihood
        self.perceptual_weight = perceptual_weight
        self.kl_schedule = kl_schedule
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.augment = augment
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
            spatial_latent=True, loss="sharp", kl_schedule="cyclical", augment=True``. Measured at
            64x64 on 2 CPU cores (docs/benchmarks.md): 4.7 times the default network's forward FLOPs,
            7 times its training time (with the VGG16 loss) and 4 times its scoring time. Its
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
        import pandas as pd
        import torch

        from .acceleration import use_channels_last
        from .networks import VAE
        from .training import resolve_device, train

        self._validate_params()
        X, layout = check_X(self, X, reset=True)
        seeds, (train_index, val_index, cal_index) = self._seeds_and_splits(X.shape[0])
        self._check_param_combinations(layout)
        if self.skip_connections and layout.kind == "image":
            warnings.warn(
                "skip_connections=True: the decoder sees the encoder's feature maps, so reconstructions "
                "bypass the latent code; ELBO scores, latent interpolation and sampling are then not "
                "meaningful. Use it only to reproduce the tutorial.",
                UserWarning,
                stacklevel=2,
            )

        init_seed, train_seed, self.noise_seed_ = seeds
        self.layout_ = layout
        resolved = resolve(self.get_params(), layout.kind)
        self.likelihood_, self.n_samples_ = resolved.likelihood, resolved.n_samples
        self._set_standardisation(X)
        data = self._to_tensor(X)
        x_train, x_cal = data[train_index], data[cal_index]
        x_val = data[val_index] if len(val_index) else None

        device = resolve_device(device or self.device)
        self.device_ = str(device)
        # Module initialisation draws from torch's global RNG; fork it so that seeding for
        # reproducibility leaves the caller's global random state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.model_ = use_channels_last(VAE(layout.shape, self._network_config()).to(device), device)
        generator = torch.Generator(device=device).manual_seed(train_seed)
        perceptual = self._perceptual_loss(device)
        n_epochs = self._n_epochs(len(x_train))
        history = train(
            self.model_,
            x_train.to(device),
            None if x_val is None else x_val.to(device),
            self._train_config(device, n_epochs, resolved.augment),
            generator,
            perceptual,
            world,
        )
        self.history_ = pd.DataFrame(history)
        if self.loss == "sharp":
            self._say(f"fitting the decoder's scale on {len(x_train)} training samples")
            self._calibrate_scale(x_train)
        self._say(f"computing the reference statistics of {len(x_train)} training samples")
        self.reference_ = self._fit_reference(x_train)
        x_calibration, calibrated_on = self._calibration_data(x_train, x_val, x_cal)
        self._say(f"calibrating the threshold on {len(x_calibration)} {calibrated_on} samples")
        self._set_offset(x_calibration)
        self.training_summary_ = {"n_samples": len(data), "n_train": len(x_train), "n_validation": len(val_index),
                                  "n_calibration": len(x_calibration), "calibrated_on": calibrated_on,
                                  "epochs": n_epochs, "epochs_run": len(self.history_)}
        return self

    def _seeds_and_splits(self, n_samples):
        """What ``fit`` draws from ``random_state``: the seeds of weight initialisation, of training and
        of the scores' latent noise, then the indices of the training, validation and calibration
        splits of ``n_samples`` samples. Raises if too few samples remain to train on."""
        n_val, n_cal = holdout_sizes(n_samples, self.validation_fraction, self.calibration_fraction)
        rng = check_random_state(self.random_state)
        seeds = tuple(int(s) for s in rng.randint(np.iinfo(np.int32).max, size=3))
        return seeds, holdout_split(n_samples, n_val, n_cal, rng)

    def _calibration_data(self, x_train, x_val, x_cal):
        """The samples thresholds and p-values are calibrated on, and which they are.

        Conformal guarantees hold for calibration data exchangeable with new data: data that played
        no part in training or in choosing the model. A validation split that early stopping chose
        the epoch on does not qualify (its loss was minimised over epochs, which makes its tail
        optimistic); one that only recorded ``val_loss`` does, and joins the calibration split.
        """
        import torch

        chose_epoch = x_val is not None and self.early_stopping
        if x_val is not None and not chose_epoch:
            x_cal = torch.cat([x_cal, x_val])
        if len(x_cal):
            return x_cal, "held-out"
        if chose_epoch:
            warnings.warn(
                f"calibration_fraction={self.calibration_fraction}: offset_ and p-values are calibrated on the "
                "validation split early stopping chose the epoch on, whose scores are optimistic; expect more "
                "than `contamination` (or `fpr`) of new normal data flagged. Hold out calibration data, or "
                "add normal data later with calibrate(X).",
                UserWarning,
                stacklevel=3,
            )
            return x_val, "early-stopping"
        warnings.warn(
            f"No data held out (validation_fraction={self.validation_fraction}, calibration_fraction="
            f"{self.calibration_fraction}, n_samples={len(x_train)}): offset_ is set from the scores of the data "
            "the network was fit on, which are optimistic; expect more than `contamination` of new normal data "
            "flagged. Add normal data with calibrate(X).",
            UserWarning,
            stacklevel=3,
        )
        return x_train, "training"

    def _say(self, stage):
        """Name the stage ``fit`` is in once its progress bar has ended, when ``verbose``."""
        if self.verbose:
            import sys

            print(f"{stage}...", file=sys.stderr, flush=True)



    def _check_param_combinations(self, layout):
        if layout.kind == "tabular" and self.augment is True:
            raise ValueError("augment=True applies to images only; X is tabular. Use augment='auto' or False.")
        if layout.kind == "tabular" and self.score_method != "auto" and get_score(self.score_method).images_only:
            raise ValueError(f"score_method={self.score_method!r} is defined for images only; X is tabular.")
        if layout.kind == "tabular" and self.likelihood == "bernoulli":
            raise ValueError("likelihood='bernoulli' needs images in [0, 1]; X is tabular. Use 'auto'.")

    def _network_config(self):
        from .networks import NetworkConfig

        return NetworkConfig(
            latent_dim=self.latent_dim,
            base_channels=self.base_channels,
            n_stages=self.n_stages,
            residual=self.residual,
            spatial_latent=self.spatial_latent and self.layout_.kind == "image",
            skip_connections=self.skip_connections and self.layout_.kind == "image",
            activation=self.activation,
        )

    def _n_epochs(self, n_train):
        """``epochs`` with "auto" resolved for ``n_train`` training samples (see the parameter)."""
        from . import settings
        from .training import epochs_within_budget

        if self.epochs != "auto":
            return self.epochs
        return epochs_within_budget(n_train, self.batch_size, settings.AUTO_MAX_EPOCHS, settings.AUTO_MAX_STEPS)

    def _train_config(self, device, n_epochs, augment):
        import torch

        from .training import TrainConfig

        if self.mixed_precision == "auto":
            mixed_precision = device.type == "cuda" and torch.cuda.is_bf16_supported()
        else:
            mixed_precision = bool(self.mixed_precision)
        return TrainConfig(
            epochs=n_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            loss=self.loss,
            likelihood=self.likelihood_,
            perceptual_weight=self.perceptual_weight,
            kl_schedule=self.kl_schedule,
            augment=augment,
            early_stopping=self.early_stopping,
            n_iter_no_change=self.n_iter_no_change,
            mixed_precision=mixed_precision,
            verbose=self.verbose,
        )

    def _perceptual_loss(self, device):
        if self.loss != "sharp" or self.perceptual_weight == 0 or self.layout_.kind != "image":
            return None
        from .losses import PerceptualLoss

        return PerceptualLoss("imagenet").to(device)

    def _set_standardisation(self, X):
        if self.layout_.kind == "tabular":
            from sklearn.preprocessing import StandardScaler

            with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the overflow is reported below
                scaler = StandardScaler().fit(X)
            if not (np.isfinite(scaler.mean_).all() and np.isfinite(scaler.scale_).all()):
                raise ValueError(
                    f"X's features are too large to standardise (values up to {np.abs(X).max():.3g} overflow "
                    "float64 in their variance); rescale X, e.g. divide it by a power of ten."
                )
            self.feature_mean_, self.feature_scale_ = scaler.mean_, scaler.scale_
        else:
            self.feature_mean_ = self.feature_scale_ = None

    def _calibrate_scale(self, x_train):
        """After the sharp loss, set the decoder's scale to its maximum-likelihood value on the
        training data, so that ELBO scores are those of a calibrated decoder."""
        import torch

        from .scoring import map_batches, residuals

        errors = map_batches(residuals, self._network(), x_train, self._inference_batch_size(), self.device_)
        # one scale per channel (images) or per feature (tabular), as log_scale is shaped
        dims = (0, 2, 3) if self.model_.is_image else (0,)
        if self.likelihood_ == "laplace":
            scale = errors.abs().mean(dim=dims)
        else:
            scale = errors.pow(2).mean(dim=dims).sqrt()
        with torch.no_grad():
            self.model_.log_scale.copy_(scale.clamp_min(1e-6).log().view_as(self.model_.log_scale))

    def _fit_reference(self, x_train):
        from .scoring import fit_reference

        codec = self.complexity_codec if self.layout_.kind == "image" else None
        return fit_reference(self._network(), x_train, self._latent_noise(), self.likelihood_,
                             self._inference_batch_size(), self.device_, codec=codec)

    def _set_offset(self, x_held_out):
        # Kept so that the threshold can be moved later without the training data (set_threshold).
        self.validation_scores_ = self._score_tensor(x_held_out)
        self.calibrated_score_ = self._score_method()
        if self.layout_.kind == "image":
            self.map_baseline_, self.map_scale_ = self._map_reference(x_held_out)
        else:
            self.map_baseline_ = self.map_scale_ = None
        self.set_threshold(contamination=self.contamination)

    def _map_reference(self, x_held_out):
        """How anomaly-map pictures are drawn, from the calibration images the threshold comes from.

        A picture shows a pixel's cost above the mean cost at that place in the calibration images
        (places normal images always find costly, such as edges, stay dark), on one colour scale for
        every image: from no excess to the calibration images' 99.9th percentile of it.
        """
        costs = self._anomaly_map_tensor(x_held_out).sum(axis=1)
        baseline = costs.mean(axis=0)
        high = float(np.quantile(costs - baseline, 0.999))
        return baseline, [0.0, max(high, 1e-6)]

    def _map_pictures(self, maps):
        """Anomaly maps ``(n, H, W)`` as their pictures draw them: the excess over ``map_baseline_``."""
        baseline = getattr(self, "map_baseline_", None)
        return maps if baseline is None else maps - baseline



    def _score_method(self):
        """The score method the parameters ask for now: ``score_method``, with "auto" resolved for the
        data ``fit`` saw. Unlike the other settings it may change after ``fit``, through :meth:`calibrate`."""
        return resolve_score(self.score_method, self.layout_.kind)





    # ------------------------------------------------------------------ inference

    def _network(self):
        """``model_`` as inference runs it: batch norms folded, channels-last; made once per ``model_``."""
        from .acceleration import inference_network, use_channels_last

        cached = self.__dict__.get("_inference_cache")
        if cached is None or cached[0] is not self.model_:
            network = use_channels_last(inference_network(self.model_), self.device_)
            cached = self._inference_cache = (self.model_, network)
        return cached[1]

    def __getstate__(self):
        # The folded copy is derived from model_; pickles and clones carry model_ alone.
        state = super().__getstate__()
        state.pop("_inference_cache", None)
        return state

    def _inference_batch_size(self):
        by_size = _INFERENCE_BATCH_VALUES // max(self.n_features_in_, 1)
        return max(self.batch_size, min(by_size, _MAX_INFERENCE_BATCH))

    def _to_tensor(self, X):
        """Validated array -> float32 CPU tensor in network space."""
        import torch

        if self.layout_.kind == "image":
            values = images_to_unit_range(X, self.layout_)
        else:
            values = ((X - self.feature_mean_) / self.feature_scale_).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(values))

    def _latent_noise(self):
        from .scoring import latent_noise

        return latent_noise(self.model_.latent_shape, self.n_samples_, self.noise_seed_, self.device_)

    def _score_tensor(self, x, score=None):
        from .scoring import score_batches

        score = score or self._score_method()
        return _fail_closed(score_batches(self._network(), x, score, self._latent_noise(), self.likelihood_,
                                          self._inference_batch_size(), self.device_, **self._score_options(score)),
                            score)

    def _score_options(self, score):
        """The keyword arguments the score method ``score`` takes from this detector."""
        method = get_score(score)
        options = {keyword: getattr(self, parameter) for keyword, parameter in method.options.items()}
        if method.needs_reference:
            options["reference"] = self.reference_
        return options

    def _anomaly_map_tensor(self, x):
        """(n, C, H, W) per-element negative log-likelihood, averaged over the ``n_samples`` draws."""
        from .scoring import anomaly_map, map_batches

        noise = self._latent_noise()
        return map_batches(lambda model, batch: anomaly_map(model, batch, noise, self.likelihood_), self._network(), x,
                           self._inference_batch_size(), self.device_).numpy()

    def _check_input(self, X):
        check_is_fitted(self)
        X, _ = check_X(self, X, reset=False)
        return self._to_tensor(X)

    def score_samples(self, X):
        """Normality score of each sample: higher means more normal.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            The method named by ``score_method`` (by default ``"bits_typicality"`` for images and the
            ELBO in nats per sample for tabular data; see the ``score_method`` parameter). The same input
            always gets the same score, alone or in any batch.
        """
        return self._score_tensor(self._check_input(X))

    def anomaly_map(self, X, *, per_channel=False):
        """Where each image is anomalous: per-pixel negative log-likelihood under the model.

        Parameters
        ----------
        X : array-like
            Images in the layout given to ``fit``.
        per_channel : bool, default=False
            Keep one map per channel, returned in the layout of ``X``; by default the channels are
            summed into one ``(n, H, W)`` map.

        Returns
        -------
        maps : ndarray
            ``-log p(x|z)`` in nats per element, averaged over ``n_samples`` latent draws; higher means
            worse explained. Summed over an image it is the reconstruction term of its ELBO.
        """
        check_is_fitted(self)
        if self.layout_.kind != "image":
            raise ValueError("anomaly_map needs a detector fitted on images; this one was fitted on tabular data.")
        maps = self._anomaly_map_tensor(self._check_input(X))
        return arrange_like(maps, self.layout_) if per_channel else maps.sum(axis=1)

    def score_table(self, X, *, methods=None):
        """Several score methods at once, one column each, from one call.

        Score columns are higher for more normal samples. With images, ``elbo`` and ``iwae`` also get
        a ``*_bits_per_dim`` column: the negative log-likelihood of the 8-bit image in bits per
        dimension (a cost, lower = more normal), comparable across image sizes and with the
        ``<codec>_bits_per_dim`` column (e.g. ``png_bits_per_dim``) that comes with ``complexity``.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.
        methods : sequence of str, optional
            Score methods to compute, in column order (see the ``score_method`` parameter). Defaults to all
            methods that apply to the data; ``"regret"`` alone costs about ``2 * regret_steps``
            times as much as ``"elbo"``, so leave it out to save time.

        Returns
        -------
        table : pandas.DataFrame of shape (n_samples, n_columns)
            Each column equals ``score_samples`` of a detector with that ``score_method``.

        Examples
        --------
        >>> import numpy as np
        >>> from vaedetect import VAEDetector
        >>> X = np.random.RandomState(0).normal(size=(100, 3))
        >>> detector = VAEDetector(latent_dim=2, epochs=2, random_state=0).fit(X)
        >>> list(detector.score_table(X[:5], methods=["elbo", "kl", "latent"]).columns)
        ['elbo', 'kl', 'latent']
        """
        import pandas as pd

        from .scoring import bits_per_dim

        x = self._check_input(X)
        methods = self._check_methods(methods)
        is_image = self.layout_.kind == "image"
        # methods that are functions of the ELBO share one ELBO pass
        shares_elbo = {m for m in methods if m == "elbo" or get_score(m).from_elbo is not None}
        elbo = self._score_tensor(x, "elbo") if shares_elbo else None
        table = pd.DataFrame(index=pd.RangeIndex(len(x)))
        for name in methods:
            method = get_score(name)
            if name == "elbo":
                columns = {name: elbo}
            elif name in shares_elbo:
                columns = method.load_from_elbo()(elbo, x, **self._score_options(name))
                # computed here, not by _score_tensor, which closes its own scores
                columns[name] = _fail_closed(columns[name], name)
            else:
                columns = {name: self._score_tensor(x, name)}
            if is_image and method.log_likelihood:
                columns[f"{name}_bits_per_dim"] = bits_per_dim(columns[name], self.n_features_in_)
            for column, values in columns.items():
                table[column] = values
        return table

    def _check_methods(self, methods):
        applicable = list(score_names(self.layout_.kind))
        if methods is None:
            return applicable
        methods = [methods] if isinstance(methods, str) else list(methods)
        unknown = [m for m in methods if m not in applicable]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty list drawn from {applicable}; got {methods!r}.")
        return methods







    def transform(self, X):
        """Latent means of ``X``.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        Z : ndarray of shape (n_samples, latent_dim)
            Flattened to ``latent_dim * h * w`` columns for a spatial latent code.
        """
        return self._encode_means(self._check_input(X)).flatten(1).double().numpy()

    @property
    def _n_features_out(self):
        """Columns of ``transform``: the latent code's size, for ``get_feature_names_out``."""
        return int(np.prod(self.model_.latent_shape))





    # ------------------------------------------------------------------ looking inside







    # ------------------------------------------------------------------ persistence

    def save(self, path):
        """Write the fitted detector to one file that loading cannot execute code from.

        Parameters
        ----------
        path : str or path-like
            Destination, conventionally ending in ``.vae``.
        """
        from .persistence import save_detector

        check_is_fitted(self)
        save_detector(self, path)

    @classmethod
    def load(cls, path, *, device=None):
        """Read a detector written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        device : str, optional
            Where to put the model; defaults to the saved ``device`` parameter.

        Returns
        -------
        detector : VAEDetector
        """
        from .persistence import load_detector

        return load_detector(path, cls, device=device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
