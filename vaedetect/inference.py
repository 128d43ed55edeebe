"""Inference of a fitted detector: inputs to network tensors (through its modality), the inference network
(batch norms folded in, cached), the fixed latent noise, and the scores, score tables, anomaly maps and
latent codes computed from them.

:class:`InferenceMixin` gives ``VAEDetector`` these methods, and :class:`~vaedetect.folders.FolderMixin` and
:class:`~vaedetect.inspection.InspectionMixin`, which build on them, the private ones they call. It reads
the fitted state ``fit`` leaves: ``modality_``, ``settings_``, ``model_``, ``reference_``, ``noise_seed_``,
``device_`` and ``calibration_``. The score functions are in ``vaedetect.scoring``, listed by
:mod:`vaedetect.registry`.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from ._validation import check_X
from .acceleration import inference_network, use_channels_last
from .conformal import fail_closed
from .data import arrange_like
from .losses import elementwise_log_likelihood
from .modality import requires
from .registry import get_score, score_names
from .scoring import (anomaly_map, anomaly_map_and_kl, anomaly_map_and_min_evidence, bits_per_dim, latent_noise,
                      map_batches, score_batches)

# Inference batches hold about this many input values (and at most _MAX_INFERENCE_BATCH samples):
# beyond a cache-friendly size, bigger batches only cost memory (docs/experiments/usage_notes.md, "Inference batch size").
_INFERENCE_BATCH_VALUES = 2**18
_MAX_INFERENCE_BATCH = 256


class InferenceMixin:
    """Scores, score tables, anomaly maps and latent codes of a fitted detector (mixed into ``VAEDetector``)."""

    def _network(self):
        """``model_`` as inference runs it: batch norms folded, channels-last; made once per ``model_``."""
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
        # members multiply every activation: their batches hold as many values as one network's, since
        # bigger temporaries fragment the CPU allocator's heap (measured in docs/benchmarks/tabular_scale.md)
        members = self.model_.members
        by_size = _INFERENCE_BATCH_VALUES // max(self.modality_.layout.n_features * members, 1)
        return max(self.settings_.batch_size, min(by_size, _MAX_INFERENCE_BATCH // members))

    def _check_input(self, X):
        """Validated ``X`` in the layout given to ``fit`` -> the network's float32 CPU tensor."""
        check_is_fitted(self)
        X, _ = check_X(self, X, reset=False)
        return self.modality_.to_network(self.modality_.represent(X))

    def _latent_noise(self):
        return latent_noise(self.model_.latent_shape, self.settings_.n_samples, self.noise_seed_, self.device_)

    def _score_tensor(self, x, score=None):
        """Scores of network inputs ``x`` by the method ``score`` (default: the calibrated one), fail-closed."""
        score = score or self.calibration_.score_method
        return fail_closed(score_batches(self._network(), x, score, self._latent_noise(), self.settings_.likelihood,
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
        noise, likelihood = self._latent_noise(), self.settings_.likelihood
        return map_batches(lambda model, batch: anomaly_map(model, batch, noise, likelihood), self._network(), x,
                           self._inference_batch_size(), self.device_).numpy()

    def _fit_map_reference(self, x_calibration):
        """How anomaly-map pictures are drawn, from the calibration images the threshold comes from: a pixel's
        cost above the mean cost at that place in them (places normal images always find costly, such as
        edges, stay dark), on one colour scale for every image, from no excess to their 99.9th percentile of it."""
        costs = self._anomaly_map_tensor(x_calibration).sum(axis=1)
        self.map_baseline_ = costs.mean(axis=0)
        self.map_scale_ = [0.0, max(float(np.quantile(costs - self.map_baseline_, 0.999)), 1e-6)]

    def _encode_means(self, x):
        return map_batches(lambda model, batch: model.encode(batch)[0], self._network(), x, self._inference_batch_size(),
                           self.device_)

    def score_samples(self, X):
        """Normality score of each sample: higher means more normal.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            The score method the threshold is calibrated for (``score_method_``: by default
            ``"bits_typicality"`` for images and the ELBO in nats per sample for tabular data; see the
            ``score_method`` parameter). The same input always gets the same score, alone or in any batch
            (up to float32 rounding).
        """
        return self._score_tensor(self._check_input(X))

    @requires("pixels")
    def anomaly_map(self, X, *, per_channel=False, relative=False):
        """Where each image is anomalous: per-pixel negative log-likelihood under the model.

        Available for detectors of image pixels (not of tables or backbone features).

        Parameters
        ----------
        X : array-like
            Images in the layout given to ``fit``.
        per_channel : bool, default=False
            Keep one map per channel, returned in the layout of ``X``; by default the channels are
            summed into one ``(n, H, W)`` map.
        relative : bool, default=False
            Subtract the mean map of the calibration images (``map_baseline_``, summed over channels), as
            the pictures of ``--maps`` and the report draw it: what is costly here and not in normal images.
            Needs ``per_channel=False``.

        Returns
        -------
        maps : ndarray
            ``-log p(x|z)`` in nats per element, averaged over ``n_samples`` latent draws; higher means
            worse explained. Summed over an image it is the reconstruction term of its ELBO.
        """
        if relative and per_channel:
            raise ValueError("relative=True subtracts a map summed over channels; use per_channel=False.")
        maps = self._anomaly_map_tensor(self._check_input(X))
        if per_channel:
            return arrange_like(maps, self.modality_.layout)
        baseline = getattr(self, "map_baseline_", None)  # None in files written before it existed
        return maps.sum(axis=1) - (baseline if relative and baseline is not None else 0.0)

    @requires("contributions")
    def feature_contributions(self, X, *, return_scores=False):
        """Which columns make each row of a table anomalous: each feature's share of the row's score.

        Available for detectors of tables. A feature's contribution is its negative log-likelihood under the
        decoder, averaged over the ``n_samples`` latent draws, less its value at a perfect reconstruction:
        ``|x - mean| / scale`` for the Laplace decoder, ``(x - mean)^2 / (2 scale^2)`` for the Gaussian one, in
        nats. It is 0 where the model reconstructs the feature exactly and grows with the feature's deviation
        measured in that feature's own learned scale. The contributions of a row sum to minus its reconstruction
        probability (the ELBO less its KL term) less a constant of the model, so the largest ones name the
        columns that lowered its score.
        With several members (``n_estimators``) a feature's contribution is the sum of the members'.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows in the layout given to ``fit``.
        return_scores : bool, default=False
            Also return ``score_samples(X)``, from the same latent draws where the score method is the ELBO, the
            reconstruction probability or ``min_evidence`` (about half the time of two calls).

        Returns
        -------
        contributions : pandas.DataFrame of shape (n_samples, n_features)
            Nats, one column per feature (named as ``fit``'s DataFrame columns, else ``x0``, ``x1``, ...),
            indexed like ``X`` when it is a DataFrame.
        scores : ndarray of shape (n_samples,)
            With ``return_scores``: the rows' scores, as ``score_samples`` gives them.

        Examples
        --------
        >>> import numpy as np
        >>> from vaedetect import VAEDetector
        >>> X = np.random.RandomState(0).normal(size=(200, 3))
        >>> detector = VAEDetector(epochs=3, random_state=0).fit(X)
        >>> row = np.array([[0.0, 0.0, 8.0]])  # far out in its third column
        >>> detector.feature_contributions(row).idxmax(axis=1).tolist()
        ['x2']
        """
        x = self._check_input(X)
        method = self.calibration_.score_method
        if return_scores and method in ("elbo", "reconstruction_probability", "min_evidence"):
            # each feature's share and, last, the score (min_evidence) or the KL (the ELBO is minus the sum of all)
            options = {"noise": self._latent_noise(), "likelihood": self.settings_.likelihood}
            one_pass = (partial(anomaly_map_and_min_evidence, reference=self.reference_, **options)
                        if method == "min_evidence" else partial(anomaly_map_and_kl, **options))
            both = map_batches(one_pass, self._network(), x, self._inference_batch_size(), self.device_).numpy()
            nll, last = both[:, :-1], both[:, -1]
            score = last if method == "min_evidence" else -nll.sum(axis=1) - (last if method == "elbo" else 0.0)
            scores = fail_closed(score, method)
        else:
            nll = self._anomaly_map_tensor(x).reshape(len(x), -1)
            scores = self._score_tensor(x) if return_scores else None
        # the members' shares of a feature add up, as their ELBOs do in the score
        excess = nll - self._perfect_reconstruction_nll()
        contributions = excess.reshape(len(x), self.model_.members, -1).sum(axis=1)
        names = getattr(self, "feature_names_in_", None)
        columns = list(names) if names is not None else [f"x{i}" for i in range(contributions.shape[1])]
        index = X.index if isinstance(X, pd.DataFrame) else None
        table = pd.DataFrame(contributions.astype(np.float64), columns=columns, index=index)
        return (table, scores) if return_scores else table

    def _perfect_reconstruction_nll(self) -> np.ndarray:
        """Each feature's negative log-likelihood at a zero residual: the part of it the data cannot change."""
        zero = torch.zeros(1, self.model_.log_scale.numel())  # one per feature and member
        with torch.no_grad():
            return -elementwise_log_likelihood(zero, zero, self.model_.log_scale.detach().cpu(),
                                               self.settings_.likelihood, bounded=False)[0].numpy()

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
            Each column equals ``score_samples`` of a detector calibrated for that ``score_method``.

        Examples
        --------
        >>> import numpy as np
        >>> from vaedetect import VAEDetector
        >>> X = np.random.RandomState(0).normal(size=(100, 3))
        >>> detector = VAEDetector(latent_dim=2, epochs=2, random_state=0).fit(X)
        >>> list(detector.score_table(X[:5], methods=["elbo", "kl", "latent"]).columns)
        ['elbo', 'kl', 'latent']
        """
        x = self._check_input(X)
        methods = self._check_methods(methods)
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
                columns[name] = fail_closed(columns[name], name)
            else:
                columns = {name: self._score_tensor(x, name)}
            if self.modality_.pixels and method.log_likelihood:
                columns[f"{name}_bits_per_dim"] = bits_per_dim(columns[name], self.n_features_in_)
            for column, values in columns.items():
                table[column] = values
        return table

    def _check_methods(self, methods):
        applicable = list(score_names(self.modality_.pixels))
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
        Z : ndarray of shape (n_samples, latent_dim * ``n_estimators_``)
            The members' codes side by side for tables of several members (``n_estimators``); flattened to
            ``latent_dim * h * w`` columns for a spatial latent code.
        """
        return self._encode_means(self._check_input(X)).flatten(1).double().numpy()

    @property
    def _n_features_out(self):
        """Columns of ``transform``: the latent code's size, for ``get_feature_names_out``."""
        return int(np.prod(self.model_.latent_shape))
