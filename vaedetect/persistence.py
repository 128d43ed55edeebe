"""Model files: a JSON header plus tensors, read back with ``torch.load(weights_only=True)``.

A model file is a ``torch.save`` archive of a dict holding only strings, numbers and tensors, so the
restricted unpickler of ``weights_only=True`` can read it and loading cannot run code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._files import write_atomically

FORMAT_NAME = "vaedetect-model"
FORMAT_VERSION = 2
# Format 1 lacked the reference statistics (latent and typicality scores); it is not read.
_OLDEST_READABLE = 2
_FITTED_SCALARS = ("offset_", "n_features_in_", "noise_seed_", "device_", "training_summary_", "calibrated_score_")
_REFERENCE_SCALARS = ("elbo_center", "elbo_spread_below", "elbo_spread_above", "codec")
_REFERENCE_TENSORS = ("latent_location", "latent_precision", "bits_location", "bits_precision")


def _json_params(detector) -> dict:
    params = detector.get_params()
    if not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None  # a RandomState instance has no JSON form; the fit is done anyway
    if params["image_shape"] is not None:
        params["image_shape"] = [int(s) for s in params["image_shape"]]
    return params


def save_detector(detector, path) -> None:
    """Write ``detector`` to ``path`` atomically (a crash never leaves half a file)."""
    import torch

    from . import __version__

    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vaedetect_version": __version__,
        "torch_version": torch.__version__,
        "params": _json_params(detector),
        "fitted": {name: getattr(detector, name) for name in _FITTED_SCALARS},
        "layout": json.loads(detector.layout_.to_json()),
        "feature_names_in": [str(n) for n in getattr(detector, "feature_names_in_", [])] or None,
        "history": detector.history_.to_dict(orient="list"),
        "reference": {name: getattr(detector.reference_, name) for name in _REFERENCE_SCALARS},
    }
    payload = {
        "header": json.dumps(header),
        # contiguous: the file holds plain NCHW tensors whatever memory format training used
        "weights": {k: v.detach().cpu().contiguous() for k, v in detector.model_.state_dict().items()},
        "validation_scores": torch.from_numpy(np.asarray(detector.validation_scores_, dtype=np.float64)),
    }
    for name in _REFERENCE_TENSORS:
        value = getattr(detector.reference_, name)
        if value is not None:
            payload[name] = value.cpu()
    if detector.feature_mean_ is not None:
        payload["feature_mean"] = torch.from_numpy(np.asarray(detector.feature_mean_, dtype=np.float64))
        payload["feature_scale"] = torch.from_numpy(np.asarray(detector.feature_scale_, dtype=np.float64))
    write_atomically(path, lambda tmp: torch.save(payload, tmp))


def read_header(path) -> tuple[dict, dict]:
    """Return ``(header, payload)`` of a model file, or raise ``ValueError`` naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file {str(path)!r} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, random bytes...
        raise ValueError(
            f"{str(path)!r} is not a readable vaedetect model file (truncated, or of another format): {error}"
        ) from error
    if not isinstance(payload, dict) or not isinstance(payload.get("header"), str):
        raise ValueError(f"{str(path)!r} is a torch file but not a vaedetect model (no vaedetect header).")
    try:
        header = json.loads(payload["header"])
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} has a corrupt vaedetect header: {error}") from error
    if header.get("format") != FORMAT_NAME:
        raise ValueError(f"{str(path)!r} is not a vaedetect model file (format {header.get('format')!r}).")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written by vaedetect {header.get('vaedetect_version')} in model format "
            f"{version}; this vaedetect reads formats up to {FORMAT_VERSION}. Upgrade vaedetect to load it."
        )
    if version < _OLDEST_READABLE:
        raise ValueError(
            f"{str(path)!r} was written by vaedetect {header.get('vaedetect_version')} in model format "
            f"{version}, which lacks the training statistics this version scores with; fit the model again."
        )
    return header, payload


def load_detector(path, device=None):
    """Rebuild a fitted :class:`~vaedetect.VAEDetector` from a file written by :func:`save_detector`."""
    import pandas as pd
    import torch

    from .data import InputLayout
    from .estimator import VAEDetector
    from .networks import VAE
    from .scoring import Reference
    from .training import resolve_device

    header, payload = read_header(path)
    params = dict(header["params"])
    if params["image_shape"] is not None:
        params["image_shape"] = tuple(params["image_shape"])
    detector = VAEDetector(**params)
    for name, value in header["fitted"].items():
        setattr(detector, name, value)
    detector.layout_ = InputLayout.from_json(json.dumps(header["layout"]))
    if header.get("feature_names_in"):
        detector.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    detector.history_ = pd.DataFrame(header["history"])
    detector.validation_scores_ = payload["validation_scores"].numpy()
    detector.feature_mean_ = payload["feature_mean"].numpy() if "feature_mean" in payload else None
    detector.feature_scale_ = payload["feature_scale"].numpy() if "feature_scale" in payload else None
    detector.reference_ = Reference(**{name: payload.get(name) for name in _REFERENCE_TENSORS}, **header["reference"])

    target = resolve_device(device or params["device"])
    detector.device_ = str(target)
    model = VAE(detector.layout_.shape, detector._network_config())
    try:
        model.load_state_dict(payload["weights"])
    except RuntimeError as error:
        raise ValueError(f"{str(path)!r}: the weights do not match the architecture in its header: {error}") from error
    detector.model_ = model.to(target).eval()
    return detector
