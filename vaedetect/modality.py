"""What a detector's network models, decided once in ``fit``: image pixels, the rows of a table, or the
features a frozen pretrained backbone computes from images; and, for :class:`~vaedetect.CombinedDetector`,
pixels and features of the same images.

A modality holds how inputs become the network's tensors and back (pixel ranges, the scaling of rows and
features, the backbone), what "auto" resolves to for it (through :func:`vaedetect.settings.resolve`), which
parameter combinations it refuses, and what it can do:

=================  ======  =======  ========  ========
capability         images  table    features  combined
=================  ======  =======  ========  ========
``pixels``         yes     no       no        yes
``images``         yes     no       yes       yes
``decodes``        yes     yes      no        yes
``contributions``  no      yes      no        no
=================  ======  =======  ========  ========

``pixels``: the network models 8-bit pixels (anomaly maps, codec scores, bits per dimension, augmentation,
the perceptual loss); ``images``: it takes images (arrays and files); ``decodes``: decoding a latent code
gives data of the inputs' kind (``inverse_transform``, ``sample``, ``reconstruct``, ``interpolate``);
``contributions``: a row's score breaks down by column. The methods that need one are gated by
:func:`requires` (scikit-learn's ``available_if``, so that ``hasattr`` answers truthfully), with one message
per capability. This is the only module outside the networks and the settings that tells kinds apart.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import settings
from ._model_header import MAX_IMAGE_SIDE
from .backbones import FeatureExtractor, extractor_settings, load_recorded_extractor
from .data import InputLayout, feature_resolution, images_from_unit_range, images_to_unit_range, scaled_rows
from .images import load_images
from .losses import log_scale_floor
from .networks import NetworkConfig
from .registry import applies, get_score
from .settings import resolve, resolve_calibration

# Images converted to float pixels at once on their way into a backbone: memory holds one such chunk.
_EMBED_CHUNK = 256
# What each capability is for, said when a method that needs it is asked of a detector without it.
_NEEDS = {
    "pixels": "needs the pixel model (a detector fitted on image pixels), which maps per-pixel costs",
    "images": "takes images",
    "decodes": "decodes latent codes into data like the inputs",
    "contributions": "breaks a table row's score down by its columns",
}


def requires(capability: str):
    """Make a detector's method available only when its fitted ``modality_`` has ``capability``.

    Before ``fit`` the method is unavailable too (``hasattr`` is False); calling it raises an
    ``AttributeError`` caused by the reason.
    """
    def check(detector) -> bool:
        check_is_fitted(detector)
        modality = detector.modality_
        if not getattr(modality, capability):
            raise AttributeError(f"This method {_NEEDS[capability]}; this detector models {modality.describe()}.")
        return True

    return available_if(check)


@dataclass(frozen=True)
class ImageModality:
    """Image pixels: arrays as given to ``fit`` (:class:`~vaedetect.data.InputLayout`), in ``[-1, 1]`` for the
    convolutional network."""

    layout: InputLayout
    name: ClassVar[str] = "image"
    pixels: ClassVar[bool] = True
    images: ClassVar[bool] = True
    decodes: ClassVar[bool] = True
    contributions: ClassVar[bool] = False
    data: ClassVar[str] = "X holds images"

    @property
    def input_layout(self) -> InputLayout:
        """The layout of the ``X`` the detector takes."""
        return self.layout

    def describe(self) -> str:
        """What the network models, in a few words for messages."""
        channels, height, width = self.layout.shape
        return f"{'RGB' if channels == 3 else 'grayscale'} images of {height}x{width} pixels"

    def details(self) -> str:
        """The inputs in full, as ``vaedetect info`` shows them."""
        return f"{self.layout.kind} {self.layout.shape} ({self.layout.form})"

    def file_geometry(self) -> tuple[int, int]:
        """``(channels, side)`` image files are decoded to; ValueError for a detector fitted on images that are not
        square (arrays), whose files would be read otherwise than it was fitted."""
        channels, height, width = self.input_layout.shape
        if height != width:
            raise ValueError(f"Image files are read square for this detector, but it was fitted on images of "
                             f"{height}x{width}: score arrays of that size through the Python API.")
        return channels, height

    def check_params(self, params: dict) -> None:
        """Refuse parameters that do not apply to this data, naming the parameter and what to use."""
        check_score_method(params["score_method"], self)
        if params["n_estimators"] not in ("auto", 1):
            raise ValueError(f"n_estimators={params['n_estimators']!r}: member networks side by side are for tables and "
                             "backbone features; a detector of images has one network. Use 'auto' or 1.")

    def resolve(self, params: dict, n_train: int, fast_bfloat16: bool):
        """Every "auto" of ``params`` for this data (:func:`vaedetect.settings.resolve`)."""
        self.check_params(params)
        return resolve(params, self.name, n_train=n_train, n_features=self.layout.n_features,
                       fast_bfloat16=fast_bfloat16)

    def resolve_calibration(self, params: dict) -> tuple[str, float]:
        """The score method and the contamination ``calibrate`` uses, "auto" resolved for this data."""
        check_score_method(params["score_method"], self)
        return resolve_calibration(params, self.name, self.layout.n_features)

    def network_config(self, params: dict, members: int):
        return NetworkConfig(latent_dim=params["latent_dim"], base_channels=params["base_channels"],
                             n_stages=params["n_stages"], residual=params["residual"],
                             spatial_latent=params["spatial_latent"], skip_connections=params["skip_connections"],
                             activation=params["activation"], members=members)

    def represent(self, X):
        """Validated inputs -> the values the network models (here the images themselves)."""
        return X

    def fitted(self, values, scaling: str):
        """This modality with what it learns from the training ``values`` (images: nothing)."""
        return self

    def to_network(self, values):
        """Values the network models -> its float32 CPU tensor ``(n, C, H, W)`` in ``[-1, 1]``."""
        return torch.from_numpy(np.ascontiguousarray(images_to_unit_range(values, self.layout)))

    def from_network(self, values: np.ndarray) -> np.ndarray:
        """Decoded network values -> data in the layout and value range of the ``X`` given to ``fit``."""
        return images_from_unit_range(values, self.layout)

    def files_to_network(self, images: np.ndarray):
        """Decoded image files ``(b, H, W, C)`` uint8 -> the network's tensor."""
        return torch.from_numpy(images_to_unit_range(images, _decoded_files(self.input_layout.shape)))

    def log_scale_floor(self, values, likelihood: str, members: int):
        """The decoder's log-scale floor (tables: each column's resolution); None for pixels."""
        return None

    def reference_options(self, params: dict) -> dict:
        """What :func:`vaedetect.scoring.fit_reference` also fits: the codec statistics of ``bits_typicality``."""
        return {"codec": params["complexity_codec"]}

    def state(self) -> tuple[dict, dict]:
        """``(JSON fields, arrays)`` to write in a model file; :func:`restore` reads them back."""
        return {"kind": self.name, "layout": self.layout.to_dict()}, {}

    def export_fields(self) -> dict:
        """What :mod:`vaedetect.runtime` needs to bring inputs to an exported graph (:mod:`vaedetect.export`):
        the inputs' layout; the runtime scales it to the network's range, which the graph takes."""
        return {"kind": self.name, "input_layout": self.input_layout.to_dict()}


@dataclass(frozen=True)
class TabularModality:
    """The rows of a table, centred and scaled (``feature_mean``, ``feature_scale``) for the MLP network."""

    layout: InputLayout
    feature_mean: np.ndarray | None = field(default=None, compare=False)
    feature_scale: np.ndarray | None = field(default=None, compare=False)
    name: ClassVar[str] = "tabular"
    pixels: ClassVar[bool] = False
    images: ClassVar[bool] = False
    decodes: ClassVar[bool] = True
    contributions: ClassVar[bool] = True
    data: ClassVar[str] = "X is tabular"

    input_layout = ImageModality.input_layout
    details = ImageModality.details
    file_geometry = ImageModality.file_geometry
    resolve = ImageModality.resolve
    resolve_calibration = ImageModality.resolve_calibration
    represent = ImageModality.represent

    def describe(self) -> str:
        return f"the rows of a table of {self.layout.n_features} columns"

    def check_params(self, params: dict) -> None:
        check_score_method(params["score_method"], self)
        if params["augment"] is True:
            raise ValueError(f"augment=True applies to images only; {self.data}. Use augment='auto' or False.")
        if params["likelihood"] == "bernoulli":
            raise ValueError(f"likelihood='bernoulli' needs images in [0, 1]; {self.data}. Use 'auto'.")

    def network_config(self, params: dict, members: int):
        return NetworkConfig(latent_dim=params["latent_dim"], base_channels=params["base_channels"],
                             n_stages=params["n_stages"], residual=params["residual"], activation=params["activation"],
                             members=members)

    def fitted(self, values, scaling: str):
        """Centre the training ``values`` and scale them: each column by its own standard deviation
        (``scaling="standard"``) or all by their root mean variance (``"common"``)."""
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the overflow is reported below
            scaler = StandardScaler().fit(values)
        if not (np.isfinite(scaler.mean_).all() and np.isfinite(scaler.scale_).all()):
            raise ValueError(
                f"X's features are too large to standardise (values up to {np.abs(values).max():.3g} overflow "
                "float64 in their variance); rescale X, e.g. divide it by a power of ten."
            )
        scale = scaler.scale_
        if scaling == "common":
            scale = np.full_like(scale, np.sqrt(np.mean(scaler.var_)) or 1.0)
        return replace(self, feature_mean=scaler.mean_, feature_scale=scale)

    def to_network(self, values):
        """Rows -> their float32 tensor, centred and scaled; values beyond ``SCALED_LIMIT`` scale units (which
        float32 cannot carry through the network) are taken at that limit: far out, all alike."""
        return torch.from_numpy(scaled_rows(values, self.feature_mean, self.feature_scale))

    def from_network(self, values: np.ndarray) -> np.ndarray:
        return values.astype(np.float64) * self.feature_scale + self.feature_mean

    def log_scale_floor(self, values, likelihood: str, members: int):
        """Each column's decoder log-scale floor at its resolution, in scaled units (see
        :func:`vaedetect.losses.log_scale_floor`), once per member."""
        return log_scale_floor(feature_resolution(values) / self.feature_scale, likelihood).repeat(members)

    def reference_options(self, params: dict) -> dict:
        """The ``residual`` score's statistics, up to its size limit, and ``min_evidence``'s."""
        return {"residuals_up_to": settings.MAX_RESIDUAL_FEATURES, "evidence": True}

    def state(self) -> tuple[dict, dict]:
        arrays = {"feature_mean": self.feature_mean, "feature_scale": self.feature_scale}
        return {"kind": self.name, "layout": self.layout.to_dict()}, arrays

    def export_fields(self) -> dict:
        """The rows' layout and scaling, which the runtime applies before the graph."""
        return {**ImageModality.export_fields(self), "scaling": {"mean": self.feature_mean.tolist(),
                                                                 "scale": self.feature_scale.tolist()}}


@dataclass(frozen=True)
class FeatureModality(TabularModality):
    """Images embedded by a frozen pretrained backbone (``extractor``, a fitted
    :class:`~vaedetect.backbones.FeatureExtractor`); the tabular network models their features."""

    extractor: object = None
    images_layout: InputLayout | None = None
    name: ClassVar[str] = "features"
    images: ClassVar[bool] = True
    decodes: ClassVar[bool] = False
    contributions: ClassVar[bool] = False
    data: ClassVar[str] = "the network models the backbone's features, not pixels"

    @classmethod
    def load(cls, backbone, images_layout: InputLayout | None, device: str, world=None) -> FeatureModality:
        """Load ``backbone`` (the ``backbone`` parameter: a configured extractor keeps its own device, a name or a
        network goes to ``device``) for images of ``images_layout``."""
        if world is not None:
            raise ValueError("A detector with a backbone trains in one process; drop the data-parallel world (--nproc).")
        if isinstance(backbone, FeatureExtractor):
            extractor = clone(backbone)
        else:
            extractor = FeatureExtractor(backbone, device=str(device))
        try:
            extractor.fit()
        except (ImportError, OSError) as error:  # a set-up problem (an extra missing, no network), said as such
            raise ValueError(f"backbone {str(backbone)!r} cannot be loaded: {' '.join(str(error).split())}") from None
        return cls(InputLayout("tabular", "tabular", False, (extractor.n_features_out_,)), extractor=extractor,
                   images_layout=images_layout)

    @property
    def input_layout(self) -> InputLayout:
        return self.images_layout

    def backbone_name(self) -> str:
        return str(self.extractor.backbone_.identity["name"])

    def describe(self) -> str:
        return f"the {self.layout.n_features} features of backbone {self.backbone_name()!r}"

    def details(self) -> str:
        identity, images = self.extractor.backbone_.identity, self.images_layout
        return (f"image {images.shape} ({images.form}), embedded by backbone {identity['name']} ({identity['source']} "
                f"{identity['version']}, SHA-256 {identity['sha256']}) into {self.layout.n_features} features")

    def represent(self, X, layout: InputLayout | None = None):
        """Validated images in ``layout`` (by default the detector's) -> the backbone's features, float32 ``(n, d)``."""
        layout = layout or self.images_layout
        chunks = [np.empty((0, self.layout.n_features), dtype=np.float32)]
        for start in range(0, len(X), _EMBED_CHUNK):
            pixels = images_to_unit_range(X[start : start + _EMBED_CHUNK], layout)
            chunks.append(self.extractor.transform(np.clip((pixels + 1.0) / 2.0, 0.0, 1.0)))
        return np.concatenate(chunks)

    def files_to_network(self, images: np.ndarray):
        return self.to_network(self.represent(images, _decoded_files(self.images_layout.shape)))

    def export_fields(self) -> dict:
        """The images' layout and the backbone's side: the graph takes images in [0, 1] and holds the backbone
        and the features' scaling."""
        return {**ImageModality.export_fields(self), "photos": {"image_size": int(self.extractor.image_size_),
                                                                "backbone": self.extractor.backbone_.identity}}

    def state(self) -> tuple[dict, dict]:
        fields, arrays = super().state()
        fields.update(images_layout=self.images_layout.to_dict(), identity=self.extractor.backbone_.identity,
                      # every setting of the extractor, so that later defaults cannot change it
                      extractor=extractor_settings(self.extractor))
        return fields, arrays


@dataclass(frozen=True)
class CombinedModality:
    """The images of a :class:`~vaedetect.CombinedDetector`: pixels for one model, features for the other."""

    pixel: ImageModality
    features: FeatureModality
    name: ClassVar[str] = "combined"
    pixels: ClassVar[bool] = True
    images: ClassVar[bool] = True
    decodes: ClassVar[bool] = True
    contributions: ClassVar[bool] = False

    def describe(self) -> str:
        return f"{self.pixel.describe()}, by their pixels and by {self.features.describe()}"

    def file_geometry(self) -> tuple[int, int]:
        """What the pixel model decodes files to (the feature model checks its own)."""
        self.features.file_geometry()
        return self.pixel.file_geometry()


Modality = ImageModality | TabularModality | FeatureModality
_BY_NAME = {cls.name: cls for cls in (ImageModality, TabularModality, FeatureModality)}


def _decoded_files(shape) -> InputLayout:
    # decoded files are (b, H, W, C) uint8, whatever layout the detector was fitted on
    return InputLayout("image", "nhwc", True, tuple(shape))


def check_score_method(score_method: str, modality) -> None:
    """Refuse a score method that is not defined for ``modality``'s data."""
    if score_method != "auto" and not applies(get_score(score_method), modality.pixels):
        other = "images" if not modality.pixels else "tabular data and backbone features"
        raise ValueError(f"score_method={score_method!r} is defined for {other} only; {modality.data}.")


def for_arrays(params: dict, layout: InputLayout, device=None, world=None) -> Modality:
    """The modality of a detector with parameters ``params`` fitted on arrays of ``layout``."""
    if params["backbone"] is None:
        return ImageModality(layout) if layout.kind == "image" else TabularModality(layout)
    if layout.kind != "image":
        raise ValueError(f"backbone={params['backbone']!r} embeds images, but X is tabular; pass images (see Notes), "
                         "or backbone=None to model the table itself.")
    return FeatureModality.load(params["backbone"], layout, device or params["device"], world)


def read_files_to_fit(params: dict, files: list[str], *, n_jobs=0, max_memory_bytes=None, world=None, device=None,
                      progress=False):
    """Decode (and, with a backbone, embed) the image ``files`` a detector with ``params`` is fitted on, with a
    labelled progress bar when ``progress``.

    Returns
    -------
    modality : Modality
    values : ndarray
        What the network models: decoded uint8 images ``(n, H, W, C)``, or the backbone's features.
    used : list of str
    skipped : list of vaedetect.images.Skipped
    """
    if params["backbone"] is not None:
        probe = FeatureModality.load(params["backbone"], None, device or params["device"], world)
        side = probe.extractor.image_size_
        modality = replace(probe, images_layout=_decoded_files((3, side, side)))
        features, used, skipped = modality.extractor.embed_paths(files, n_jobs=n_jobs, progress=progress)
        return modality, features, used, skipped
    side, channels = params["image_size"], params["channels"]
    # training keeps the decoded images in memory, as uint8 and again as float32 tensors
    needed = len(files) * side**2 * channels * 5
    if max_memory_bytes is not None and needed > max_memory_bytes:
        raise ValueError(
            f"Training on {len(files)} images of {side}x{side}x{channels} needs about {needed / 2**30:.1f} GiB of "
            f"memory, over max_memory_bytes={max_memory_bytes}; use a smaller image_size, a sample of the files, or "
            "raise max_memory_bytes."
        )
    if world is None:
        images, used, skipped = load_images(files, side, channels, num_workers=n_jobs, progress=progress)
    else:
        from .distributed import gather_decoded

        shard = load_images(files[world.rank :: world.size], side, channels, num_workers=n_jobs)
        images, used, skipped = gather_decoded(world, files, *shard)
    return ImageModality(_decoded_files((channels, side, side))), images, used, skipped


def network_fields(fields: dict, params: dict, members: int) -> dict:
    """The network a model of the modality ``fields`` (as :meth:`state` writes them) builds from ``params``."""
    return asdict(_BY_NAME[fields["kind"]](InputLayout.from_dict(fields["layout"])).network_config(params, members))


def check_state(fields: dict) -> tuple[int, ...]:
    """Check the modality a model file records (its fields already of the declared types) before anything is
    built from it; return the shape of the data its network models."""
    kind, layout = fields["kind"], InputLayout.from_dict(fields["layout"])
    backbone = {"images_layout", "identity", "extractor"} & set(fields)
    if (kind == "features") != bool(backbone) or len(backbone) not in (0, 3):
        raise ValueError("modality: 'images_layout', 'identity' and 'extractor' come together, for kind 'features'")
    images = [layout] if kind == "image" else [InputLayout.from_dict(fields["images_layout"])] if backbone else []
    if layout.kind != ("image" if kind == "image" else "tabular") or any(image.kind != "image" for image in images):
        raise ValueError(f"modality: a layout of kind {layout.kind!r} does not describe the data of modality {kind!r}")
    for image in images:
        channels, *sides = image.shape if len(image.shape) == 3 else (0,)
        if channels not in (1, 3) or min(sides) < 1 or max(sides) > MAX_IMAGE_SIDE:
            raise ValueError(f"modality: images of shape {image.shape} are not (C, H, W) with C in (1, 3) and sides "
                             f"in [1, {MAX_IMAGE_SIDE}]")
    if layout.kind == "tabular" and len(layout.shape) != 1:
        raise ValueError(f"modality: rows of shape {layout.shape} are not (d,)")
    return layout.shape


def restore(fields: dict, arrays: dict, device=None) -> Modality:
    """A modality from what :meth:`state` wrote, checked by :func:`check_state`, and its ``arrays`` (finite); a
    backbone is loaded and must be the one the model was fitted with (same SHA-256 of its weights)."""
    layout = InputLayout.from_dict(fields["layout"])
    modality = _BY_NAME[fields["kind"]](layout)
    expected = {"feature_mean", "feature_scale"} if fields["kind"] != "image" else set()
    if set(arrays) != expected:
        raise ValueError(f"modality: tensors {sorted(arrays)} where {sorted(expected)} were expected")
    if fields["kind"] == "image":
        return modality
    for name, values in arrays.items():
        if values.shape != layout.shape:
            raise ValueError(f"tensor 'modality.{name}' has shape {values.shape}, expected {layout.shape}")
    if not (arrays["feature_scale"] > 0).all():
        raise ValueError("tensor 'modality.feature_scale' must be positive")
    scaled = replace(modality, feature_mean=arrays["feature_mean"], feature_scale=arrays["feature_scale"])
    if fields["kind"] == "tabular":
        return scaled
    extractor = load_recorded_extractor(fields["extractor"], fields["identity"], device)
    if extractor.n_features_out_ != layout.n_features:
        raise ValueError(f"its backbone gives {extractor.n_features_out_} features, but the model was fitted on "
                         f"{layout.n_features}.")
    return replace(scaled, extractor=extractor, images_layout=InputLayout.from_dict(fields["images_layout"]))
