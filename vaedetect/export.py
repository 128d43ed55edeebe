"""Export a fitted detector's scoring to ONNX, for :mod:`vaedetect.runtime`, which scores without torch.

The graph holds what needs the network: the inference network (batch norms folded), its fixed latent draws,
the score function and the statistics it compares against; for a detector of backbone features the backbone
too (resizing, normalisation, pooling and the features' scaling), so that images in [0, 1] go in. What a graph
cannot hold stays with the runtime, in numpy: the inputs' layout and scaling to the network's range (the same
functions as the PyTorch path), the lossless-codec lengths of ``bits_typicality``, the conformal p-values and
threshold, and a combined detector's tail probabilities. The file carries them as JSON in its metadata
(``metadata_props["vaedetect"]``), beside the graph: one file, no code.

Graph inputs and outputs: ``x`` (float32; the network's input for pixels and tables, ``(n, 3, H, W)`` images in
[0, 1] for backbone features) and ``score`` (float64; the ELBO where the runtime completes the score). A
combined detector's graph takes ``pixels`` and ``photos`` and gives ``pixel_score`` and ``feature_score``.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

FORMAT, FORMAT_VERSION = "vaedetect-onnx", 1
OPSET = 18  # Resize with antialiasing, which a backbone's resizing needs
# Score methods the graph computes whole; bits_typicality's graph gives the ELBO and the runtime adds the
# codec's lengths (Pillow) and their distance from the training pairs.
IN_GRAPH = ("elbo", "reconstruction_probability", "iwae", "kl", "reconstruction", "residual", "latent", "min_evidence")
COMPLETED_BY_RUNTIME = ("bits_typicality",)
EXPORTABLE = IN_GRAPH + COMPLETED_BY_RUNTIME


def graph_score(score_method: str) -> str:
    """What the graph computes for ``score_method``; ValueError naming the exportable ones."""
    if score_method not in EXPORTABLE:
        raise ValueError(f"score method {score_method!r} cannot be exported to ONNX (it optimises per input, or "
                         f"needs what a graph cannot hold); exportable: {', '.join(EXPORTABLE)}. Calibrate the "
                         "detector for one of them first (set_params(score_method=...).calibrate(X)).")
    return "elbo" if score_method in COMPLETED_BY_RUNTIME else score_method


class _ScoreGraph(nn.Module):
    """The network input of a fitted ``VAEDetector`` -> its score ``graph_score`` (float64)."""

    def __init__(self, detector, score: str):
        super().__init__()
        from .registry import get_score

        # copies on the CPU: the detector keeps scoring where it lives
        self.network = copy.deepcopy(detector._network()).cpu().float().eval()
        self.function = get_score(score).load()
        self.options = detector._score_options(score)
        self.likelihood = detector.settings_.likelihood
        self.register_buffer("noise", detector._latent_noise().cpu())
        self.features = _FeatureGraph(detector) if "photos" in detector.modality_.export_fields() else None

    def forward(self, x):
        x = self.features(x) if self.features is not None else x
        return self.function(self.network, x, self.noise, self.likelihood, **self.options).double()


class _FeatureGraph(nn.Module):
    """Images in [0, 1] ``(n, 3, H, W)`` -> the scaled backbone features a feature model's network takes, as
    :class:`~vaedetect.backbones.FeatureExtractor` and the modality compute them."""

    def __init__(self, detector):
        super().__init__()
        extractor, modality = detector.modality_.extractor, detector.modality_
        self.backbone = copy.deepcopy(extractor.backbone_.network).cpu().float().eval()
        # the named maps of the copy: a Lite network's own method, or a torchvision extractor (or a network) itself
        method = getattr(extractor.backbone_.stage_maps, "__name__", None)
        self.stage_maps = getattr(self.backbone, method) if method == "stages" else _call_maps(extractor, self.backbone)
        self.stages = extractor.backbone_.stages
        self.normalize, self.side = extractor.normalize, extractor.image_size_
        self.register_buffer("mean", torch.tensor(extractor.backbone_.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(extractor.backbone_.std).view(1, 3, 1, 1))
        self.register_buffer("feature_mean", torch.as_tensor(modality.feature_mean, dtype=torch.float64))
        self.register_buffer("feature_scale", torch.as_tensor(modality.feature_scale, dtype=torch.float64))

    def forward(self, images):
        from .backbones import _pooled
        from .data import SCALED_LIMIT

        images = functional.interpolate(images, size=(self.side, self.side), mode="bilinear", antialias=True,
                                        align_corners=False)
        features = _pooled(self.stage_maps((images - self.mean) / self.std), self.stages, self.normalize)
        scaled = (features.double() - self.feature_mean) / self.feature_scale
        return scaled.clamp(-SCALED_LIMIT, SCALED_LIMIT).float()


def _call_maps(extractor, network):
    """``stage_maps`` of a backbone that is not a Lite network, run on ``network`` (a copy of it): a torchvision
    extractor returns its named maps itself; a network given whole returns its output, named "output"."""
    if extractor.backbone_.stage_maps is extractor.backbone_.network:
        return network
    return lambda x: {"output": network(x)}


class _CombinedGraph(nn.Module):
    def __init__(self, pixel: _ScoreGraph, features: _ScoreGraph):
        super().__init__()
        self.pixel, self.features = pixel, features

    def forward(self, pixels, photos):
        return self.pixel(pixels), self.features(photos)


def _example_input(detector, batch: int = 3) -> torch.Tensor:
    """An input of the graph's shape (a batch of 3: a size no other dimension has, so none is taken for another)."""
    photos = detector.modality_.export_fields().get("photos")
    if photos is not None:
        return torch.rand(batch, 3, photos["image_size"], photos["image_size"])
    return torch.zeros(batch, *detector.modality_.layout.shape)


def _calibration_fields(calibration) -> dict:
    return {"scores": [float(s) for s in calibration.scores], "offset": float(calibration.offset),
            "rule": calibration.rule, "source": calibration.source, "score_method": calibration.score_method}


def _model_fields(detector) -> dict:
    """What the runtime needs besides the graph to score as ``detector`` does."""
    reference, score_method = detector.reference_, detector.calibration_.score_method
    names = getattr(detector, "feature_names_in_", None)
    fields = {**detector.modality_.export_fields(), "score_method": score_method,
              "graph_score": graph_score(score_method), "n_features_in": int(detector.n_features_in_),
              "batch_size": int(detector.settings_.batch_size),
              "feature_names": None if names is None else [str(name) for name in names],
              "calibration": _calibration_fields(detector.calibration_)}
    if score_method == "bits_typicality":
        fields["bits"] = {"codec": reference.codec, "location": reference.bits_location.double().cpu().tolist(),
                          "precision": reference.bits_precision.double().cpu().tolist()}
    return fields


def _graph(module: nn.Module, inputs: tuple, input_names, output_names, photos: tuple = ()):
    """``module`` as an ONNX model (``onnx.ModelProto``), every input of any batch size and the ``photos`` inputs
    (a backbone's images, resized in the graph) of any height and width."""
    batch = torch.export.Dim("batch", min=1)
    dynamic = {name: {0: batch} for name in input_names}
    for name in photos:
        dynamic[name].update({2: torch.export.Dim(f"{name}_height", min=2), 3: torch.export.Dim(f"{name}_width", min=2)})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(module, inputs, input_names=list(input_names), output_names=list(output_names),
                                    dynamic_shapes=tuple(dynamic[name] for name in input_names), opset_version=OPSET,
                                    dynamo=True, external_data=False, verbose=False)
    return program.model_proto


def _save(model, path: Path, fields: dict) -> None:
    """Write ``model`` with vaedetect's ``fields`` as its metadata, atomically."""
    import onnx

    from ._files import write_atomically

    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "vaedetect", json.dumps(fields)
    write_atomically(path, lambda temporary: onnx.save(model, str(temporary)))


def _versions() -> dict:
    from . import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "vaedetect_version": __version__,
            "torch_version": torch.__version__}


def _check_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(f"exporting to ONNX needs onnx and onnxscript ({error.name} is missing): "
                          'pip install "vaedetect[onnx]"') from None


def export_detector(detector, path) -> Path:
    """Write the scoring of a fitted ``VAEDetector`` to the ONNX file ``path`` (see the module's docstring)."""
    _check_onnx()
    path = Path(path)
    fields = {**_versions(), "detector": "VAEDetector", "model": _model_fields(detector)}
    graph = _ScoreGraph(detector, fields["model"]["graph_score"])
    photos = ("x",) if graph.features is not None else ()
    _save(_graph(graph, (_example_input(detector),), ("x",), ("score",), photos), path, fields)
    return path


def export_combined(detector, path) -> Path:
    """Write the scoring of a fitted ``CombinedDetector`` to the ONNX file ``path``: both models' graphs, and
    the reference scores and calibration the runtime combines their scores with."""
    _check_onnx()
    path = Path(path)
    pixel, features = detector.pixel_, detector.features_
    graph = _CombinedGraph(_ScoreGraph(pixel, graph_score(pixel.calibration_.score_method)),
                           _ScoreGraph(features, graph_score(features.calibration_.score_method)))
    model = _graph(graph, (_example_input(pixel), _example_input(features)), ("pixels", "photos"),
                   ("pixel_score", "feature_score"), photos=("photos",))
    weights = [float(detector.pixel_weight), 1.0 - float(detector.pixel_weight)]
    fields = {**_versions(), "detector": "CombinedDetector", "pixel": _model_fields(pixel),
              "features": _model_fields(features), "weights": weights,
              "reference_scores": np.asarray(detector.reference_scores_, dtype=np.float64).tolist(),
              "calibration": _calibration_fields(detector.calibration_)}
    _save(model, path, fields)
    return path
