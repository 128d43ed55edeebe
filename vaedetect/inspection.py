"""Looking inside a fitted detector: decoding latent codes, sampling, reconstructing, interpolating and
projecting the latent space.

:class:`InspectionMixin` gives ``VAEDetector`` these methods; pictures of them are drawn by
:mod:`vaedetect.plotting`.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .inference import InferenceMixin
from .modality import requires
from .scoring import map_batches

# Bytes of float32 outputs that sample() and interpolate() may decode at once: they return them whole.
_MAX_OUTPUT_BYTES = 2**30


def _check_output_size(n, n_features, what) -> None:
    """Refuse a request to decode more than ``_MAX_OUTPUT_BYTES`` of float32 outputs at once."""
    needed = n * n_features * 4
    if needed > _MAX_OUTPUT_BYTES:
        largest = max(1, _MAX_OUTPUT_BYTES // (4 * n_features))
        raise ValueError(f"{what} would decode {needed / 2**30:.1f} GiB at once; ask for at most {largest} "
                         "at a time (in a loop, for more).")


def slerp(start, end, weights):
    """Spherical interpolation between batches of codes ``start`` and ``end`` (1, ...) at ``weights``.

    Falls back to linear interpolation where the two codes are (nearly) parallel.
    """
    flat_start, flat_end = start.flatten(1), end.flatten(1)
    cosine = torch.nn.functional.cosine_similarity(flat_start, flat_end).clamp(-1.0, 1.0)
    angle = torch.arccos(cosine).view(1, *([1] * (start.ndim - 1)))
    if float(angle.min()) < 1e-4:
        return torch.lerp(start, end, weights)
    return (torch.sin((1.0 - weights) * angle) * start + torch.sin(weights * angle) * end) / torch.sin(angle)


class InspectionMixin(InferenceMixin):
    """Generative inspection of a fitted detector (mixed into ``VAEDetector``): decoding is available for
    detectors whose network models their inputs (images and tables, not backbone features)."""

    @requires("decodes")
    def inverse_transform(self, Z):
        """Decode latent codes into data in the layout and value range of the ``X`` given to ``fit``.

        Parameters
        ----------
        Z : array-like of shape (n_samples, latent_dim * ``n_estimators_``)
            Latent codes, e.g. from ``transform``.

        Returns
        -------
        X : ndarray
            Decoded means: float for tabular and float images, uint8 for integer images. With several
            members (``n_estimators``), the mean of the members' decodings of their blocks of ``Z``.
        """
        self._check_generative("inverse_transform")
        latent_size = int(np.prod(self.model_.latent_shape))
        Z = np.asarray(Z, dtype=np.float32)
        if Z.ndim != 2 or Z.shape[1] != latent_size or len(Z) == 0:
            raise ValueError(f"Z must have shape (n_samples, {latent_size}) with n_samples >= 1; got {Z.shape}.")
        if not np.isfinite(Z).all():
            raise ValueError("Z contains NaN or infinite values.")
        return self._decode(torch.from_numpy(Z).view(-1, *self.model_.latent_shape))

    def _check_generative(self, method):
        if not self.model_.can_generate:
            raise ValueError(
                f"{method} is not available with skip_connections=True: the decoder needs an input image's "
                "encoder features, not only a latent code, so what it decodes from a code alone is meaningless."
            )

    def _decode(self, z):
        """Latent codes (tensor, any batch) -> decoded means in the layout and value range of ``X``."""
        decoded = map_batches(lambda model, batch: model.average_members(model.output_mean(model.decode(batch))),
                              self._network(), z, self._inference_batch_size(), self.device_).numpy()
        return self.modality_.from_network(decoded)

    @requires("decodes")
    def sample(self, n=1, *, temperature=1.0, random_state=None):
        """Generate new data: decode ``n`` draws from the prior ``N(0, temperature**2 I)``.

        Parameters
        ----------
        n : int, default=1
            Number of samples.
        temperature : float, default=1.0
            Scale of the prior draws; below 1 gives more typical, less varied samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws.

        Returns
        -------
        samples : ndarray
            ``n`` decoded means in the layout and value range of the ``X`` given to ``fit``.

        Examples
        --------
        >>> import numpy as np
        >>> from vaedetect import VAEDetector
        >>> X = np.random.RandomState(0).randint(0, 256, size=(60, 8, 8), dtype=np.uint8)
        >>> detector = VAEDetector(latent_dim=2, base_channels=4, n_stages=2, epochs=1, random_state=0).fit(X)
        >>> detector.sample(5, random_state=0).shape
        (5, 8, 8)
        """
        self._check_generative("sample")
        if not isinstance(n, Integral) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}.")
        if not isinstance(temperature, Real) or not np.isfinite(temperature) or not temperature > 0:
            raise ValueError(f"temperature must be a positive number; got {temperature!r}.")
        _check_output_size(n, self.n_features_in_, f"sample({n})")
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn((n, *self.model_.latent_shape), generator=generator) * float(temperature)
        return self._decode(z)

    @requires("decodes")
    def reconstruct(self, X):
        """Decode each sample's latent mean: what the model makes of ``X``.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.

        Returns
        -------
        reconstructions : ndarray
            Same shape, layout and value range as ``X``.
        """
        self._check_generative("reconstruct")
        return self._decode(self._encode_means(self._check_input(X)))

    def _one_sample(self, value, name):
        """One sample given alone or as a batch of one -> (1, ...) network tensor."""
        per_sample_ndim = {"tabular": 1, "flat": 1, "nhw": 2, "nchw": 3, "nhwc": 3}[self.modality_.input_layout.form]
        value = np.asarray(value)
        if value.ndim == per_sample_ndim:
            value = value[None]
        if value.ndim != per_sample_ndim + 1 or len(value) != 1:
            raise ValueError(f"{name} must be one sample in the layout given to fit; got an array of shape {value.shape}.")
        return self._check_input(value)

    @requires("decodes")
    def interpolate(self, a, b, *, steps=10, method="slerp"):
        """Decode a path between the latent means of two samples ``a`` and ``b``.

        Parameters
        ----------
        a, b : array-like
            One sample each, alone (e.g. an ``(H, W, C)`` image) or as a batch of one.
        steps : int, default=10
            Points on the path, both ends included.
        method : {"slerp", "lerp"}, default="slerp"
            Spherical interpolation keeps intermediate codes at the norm that codes of a Gaussian
            latent space typically have, where straight lines pass through the improbable region
            near the origin (White, "Sampling Generative Networks", 2016); or linear.

        Returns
        -------
        path : ndarray of shape (steps, ...)
            Decoded means in the layout and value range of ``X``; the ends are the reconstructions
            of ``a`` and ``b``.
        """
        self._check_generative("interpolate")
        if not isinstance(steps, Integral) or steps < 2:
            raise ValueError(f"steps must be an integer >= 2; got {steps!r}.")
        if method not in ("slerp", "lerp"):
            raise ValueError(f"method must be 'slerp' or 'lerp'; got {method!r}.")
        _check_output_size(steps, self.n_features_in_, f"interpolate(steps={steps})")
        start, end = (self._encode_means(self._one_sample(v, name)) for v, name in ((a, "a"), (b, "b")))
        weights = torch.linspace(0.0, 1.0, steps).view(-1, *([1] * (start.ndim - 1)))
        path = slerp(start, end, weights) if method == "slerp" else torch.lerp(start, end, weights)
        return self._decode(path)

    def latent_pca(self, X, *, n_components=2):
        """Principal components of the latent means of ``X``, e.g. to plot the latent space.

        Parameters
        ----------
        X : array-like
            Data in the layout given to ``fit``.
        n_components : int, default=2

        Returns
        -------
        pca : sklearn.decomposition.PCA
            Fitted on the latent means of ``X``.
        coordinates : ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self)
        self._check_generative("latent_pca")  # its message: with skips, the codes do not summarise X
        codes = self.transform(X)
        pca = PCA(n_components=n_components, random_state=0).fit(codes)
        return pca, pca.transform(codes)
