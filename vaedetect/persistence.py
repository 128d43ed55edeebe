"""Model files: safetensors, a JSON header and raw tensors; nothing in them is unpickled or run.

A model file is a safetensors file (https://huggingface.co/docs/safetensors): an 8-byte header length, a
JSON header giving each tensor's dtype, shape and byte range, and the tensors' bytes. vaedetect's own header
is JSON in its metadata; tensors are named ``weights.*``, ``calibration.scores``, ``reference.*``,
``modality.*``, ``maps.baseline`` and ``training.decision_scores`` (a combined file prefixes each model's with
``pixel/`` or ``features/``).

Every file is treated as hostile (docs/guide/security.md). The safetensors reader refuses a header longer than the
file, byte ranges that overlap or leave gaps and shapes that do not fit their bytes before it allocates
anything, and vaedetect's header must be at most ``MAX_HEADER_BYTES``. The header is then checked against its
declared schema (:mod:`vaedetect._model_header`: types, ranges, no unknown field) and for consistency before
anything is built; the network is first built on torch's ``meta`` device, where it allocates nothing, and
must match the file's weights in every name, shape and dtype; weights, threshold and calibration scores
must be finite, so that a broken model is refused rather than silently flagging nothing. Each failure is a
``ValueError`` naming the file and the problem in one line. Files of format 2 (``torch.save`` archives,
vaedetect 0.1) are read by :mod:`vaedetect._legacy_format` into the same header and tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from . import _model_header as schema
from . import modality as modalities
from ._files import write_atomically
from ._legacy_format import read_format2
from .backbones import FeatureExtractor, extractor_from_settings, extractor_settings
from .calibration import Calibration
from .networks import VAE, NetworkConfig
from .registry import applies, get_score
from .scoring import EVIDENCE, MAX_NEIGHBOUR_ROWS, Reference
from .settings import BATCH_SIZE, Resolved
from .training import resolve_device

MAX_HEADER_BYTES = 16 * 2**20
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class FittedState:
    """What a fitted ``VAEDetector`` learned, as a model file holds it (see ``VAEDetector._fitted_state``)."""

    modality: object
    settings: object
    network: object
    weights: dict
    reference: object
    calibration: object
    noise_seed: int
    n_features_in: int
    feature_names_in: list | None
    history: dict
    training_summary: dict
    map_baseline: np.ndarray | None
    map_scale: list | None
    decision_scores: np.ndarray | None = None


# ------------------------------------------------------------------ writing


def _versions() -> dict:
    return {"format": schema.FORMAT_NAME, "format_version": schema.FORMAT_VERSION, "vaedetect_version": __version__,
            "torch_version": torch.__version__}


def _json_params(detector, names=None) -> dict:
    """The detector's parameters as JSON: a backbone by name or by its extractor's settings, never a network."""
    params = detector.get_params(deep=False)
    params = {name: params[name] for name in names} if names is not None else params
    if not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None  # a RandomState instance has no JSON form; the fit is done anyway
    if params.get("image_shape") is not None:
        params["image_shape"] = [int(s) for s in params["image_shape"]]
    backbone = params.get("backbone")
    if backbone is not None and not isinstance(backbone, str):  # a network given whole is refused: no JSON form
        extractor = backbone if isinstance(backbone, FeatureExtractor) else FeatureExtractor(backbone)
        params["backbone"] = {"feature_extractor": extractor_settings(extractor)}
    return params


def _model_parts(detector) -> tuple[dict, dict]:
    """A fitted ``VAEDetector`` as ``({"params", "fitted"}, tensors)``."""
    state = detector._fitted_state()
    modality, arrays = state.modality.state()
    calibration, calibration_arrays = state.calibration.state()
    reference = asdict(state.reference)
    fitted = {"modality": modality, "network": asdict(state.network), "settings": asdict(state.settings),
              "calibration": calibration, "noise_seed": state.noise_seed, "n_features_in": state.n_features_in,
              "reference": {name: reference.pop(name) for name in ("elbo_center", "elbo_spread_below",
                                                                    "elbo_spread_above", "codec")},
              "feature_names_in": state.feature_names_in, "map_scale": state.map_scale,
              "history": state.history, "training_summary": state.training_summary}
    tensors = {**{f"weights.{k}": v for k, v in state.weights.items()},
               **{f"modality.{k}": v for k, v in arrays.items()}, "calibration.scores": calibration_arrays["scores"],
               **{f"reference.{k}": v for k, v in reference.items() if v is not None},
               **({"maps.baseline": state.map_baseline} if state.map_baseline is not None else {}),
               **({"training.decision_scores": state.decision_scores} if state.decision_scores is not None else {})}
    return {"params": _json_params(detector), "fitted": fitted}, tensors


def _write(path, header: dict, tensors: dict) -> None:
    """Write a model file atomically (a crash never leaves half a file)."""
    tensors = {name: torch.as_tensor(value).contiguous() for name, value in tensors.items()}
    metadata = {"vaedetect": json.dumps(header)}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_detector(detector, path) -> None:
    """Write a fitted ``VAEDetector`` to ``path``."""
    model, tensors = _model_parts(detector)
    _write(path, {**_versions(), "detector": "VAEDetector", **model}, tensors)


def save_combined(detector, path) -> None:
    """Write a fitted ``CombinedDetector``: its calibration, and each model as a file of its own holds it."""
    calibration, arrays = detector.calibration_.state()
    header = {**_versions(), "detector": "CombinedDetector",
              "params": _json_params(detector, ("validation_fraction", "calibration_fraction", "pixel_weight",
                                                "contamination", "random_state")),
              "fitted": {"calibration": calibration, "training_summary": detector.training_summary_,
                         "models_calibration_sha256": {}},
              "models": {}}
    tensors = {"calibration.scores": arrays["scores"], "reference_scores": detector.reference_scores_}
    for part, model in (("pixel", detector.pixel_), ("features", detector.features_)):
        header["models"][part], part_tensors = _model_parts(model)
        tensors.update({f"{part}/{name}": value for name, value in part_tensors.items()})
        header["fitted"]["models_calibration_sha256"][part] = _digest(model.calibration_.scores)
    _write(path, header, tensors)


def _digest(scores) -> str:
    return hashlib.sha256(np.ascontiguousarray(scores, dtype=np.float64).tobytes()).hexdigest()


# ------------------------------------------------------------------ reading


def read_model(path, *, tensors: bool = True) -> tuple[dict, dict]:
    """``(header, tensors)`` of the model file at ``path``, the header checked against its schema (without
    ``tensors``, the tensors are not read); ValueError (naming the file) for anything that is not a readable
    vaedetect model file, FileNotFoundError if absent."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a pipe would block the reader, a device never end
        raise ValueError(f"Model file {str(path)!r} is not a regular file.")
    if not path.is_file():
        raise FileNotFoundError(f"Model file {str(path)!r} does not exist.")
    with open(path, "rb") as file:
        start = file.read(8)
    if start.startswith(_ZIP_MAGIC):
        header, found = read_format2(path)
    else:
        header, found = _read_safetensors(path, start, tensors)
    try:
        schema.check(header, schema.COMBINED if header.get("detector") == "CombinedDetector" else schema.DETECTOR)
    except ValueError as error:
        raise ValueError(f"{str(path)!r} has an invalid vaedetect header: {error}") from None
    return header, found


def _read_safetensors(path: Path, start: bytes, tensors: bool) -> tuple[dict, dict]:
    if len(start) < 8 or struct.unpack("<Q", start)[0] > MAX_HEADER_BYTES:
        raise ValueError(f"{str(path)!r} is not a readable vaedetect model file: it is shorter than a safetensors "
                         f"header, or its first bytes claim a header of more than {MAX_HEADER_BYTES} bytes.")
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            found = {name: file.get_tensor(name) for name in file.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable vaedetect model file (safetensors: "
                         f"{' '.join(str(error).split())}).") from None
    text = metadata.get("vaedetect")
    if text is None:
        raise ValueError(f"{str(path)!r} is a safetensors file but not a vaedetect model (no vaedetect header).")
    header = schema.parse_header(text, path)
    if header["format_version"] < 3:  # vaedetect wrote formats 1 and 2 as torch.save archives
        raise ValueError(f"{str(path)!r} is a safetensors file of model format {header['format_version']}, which "
                         "vaedetect never wrote.")
    return header, found


def model_kind(path) -> str:
    """Which estimator a model file holds, "VAEDetector" or "CombinedDetector" (its header checked)."""
    return read_model(path, tensors=False)[0]["detector"]


def load_detector(path, estimator: type, device=None):
    """Rebuild a fitted ``estimator`` (:class:`~vaedetect.VAEDetector`, passed in by its ``load``, since this
    module does not import the estimators) from a file written by :func:`save_detector`."""
    header, tensors = _read_for(path, estimator)
    return _build(header, tensors, "", path, estimator, device)


def _read_for(path, estimator: type) -> tuple[dict, dict]:
    """:func:`read_model`, refusing a file of another estimator than ``estimator``, saying which reads it."""
    header, tensors = read_model(path)
    if header["detector"] != estimator.__name__:
        raise ValueError(f"{str(path)!r} holds a {header['detector']}, not a {estimator.__name__}; load it with "
                         "vaedetect.load (the command line tells them apart).")
    return header, tensors


@contextmanager
def _naming(path):
    """Errors of reading the file at ``path`` as one line naming it."""
    try:
        yield
    except (ValueError, KeyError) as error:
        raise ValueError(f"{str(path)!r}: {_one_line(error)}") from None


def _build(model: dict, tensors: dict, prefix: str, path, estimator: type, device=None):
    """The fitted detector of ``model`` (``{"params", "fitted"}``) and its ``prefix``-ed tensors."""
    params = _params(model["params"], estimator, path)
    target = resolve_device(device or params.get("device", "auto"))
    fitted = model["fitted"]
    if "batch_size" not in fitted["settings"]:  # written before batch_size="auto": trained at its parameter's
        trained = params["batch_size"] if params["batch_size"] != "auto" else BATCH_SIZE
        fitted = {**fitted, "settings": {**fitted["settings"], "batch_size": trained}}
    with _naming(path):
        state = _state(fitted, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                       target)
    return estimator._from_fitted_state(params, state, target)


def _params(fields: dict, estimator: type, path) -> dict:
    """The constructor's parameters from their JSON form, checked by the estimator's own validation."""
    params = dict(fields)
    try:
        for name, constraints in schema.PARAM_SIZES.items():
            if name in params:
                schema.check(params[name], constraints, f"params[{name!r}]")
        unknown = sorted(set(params) - set(estimator().get_params()))
        schema._require(not unknown, f"unknown parameter(s) {unknown}")
        if params.get("image_shape") is not None:
            params["image_shape"] = tuple(params["image_shape"])
        if isinstance(params.get("backbone"), dict):
            params["backbone"] = extractor_from_settings(params["backbone"]["feature_extractor"])
        estimator(**params)._validate_params()
    except ValueError as error:  # scikit-learn's InvalidParameterError names the parameter and the value
        raise ValueError(f"{str(path)!r} has an invalid vaedetect header: {_one_line(error)}") from None
    return params


def _state(fitted: dict, tensors: dict, device) -> FittedState:
    """A :class:`FittedState` from a checked header's ``fitted`` fields and the tensors; ValueError when they
    do not agree. The backbone, if any, is loaded last, once everything else is known to be sound."""
    shape = modalities.check_state(fitted["modality"])
    network, settings = NetworkConfig(**fitted["network"]), Resolved(**fitted["settings"])
    schema._require(network.members == settings.n_estimators, f"network members {network.members} do not match "
                    f"n_estimators {settings.n_estimators}")
    with torch.device("meta"):  # allocates nothing, whatever the header claims
        skeleton = VAE(shape, network)
    weights = _weights(tensors, skeleton)
    latent, n = math.prod(skeleton.latent_shape), skeleton.log_scale.numel()  # n: the residual score's outputs
    shapes = {"latent_location": (latent,), "latent_precision": (latent, latent), "bits_location": (2,),
              "bits_precision": (2, 2), "residual_location": (n,), "residual_precision": (n, n),
              "neighbour_codes": (None, latent), "evidence_location": (len(EVIDENCE),),
              "evidence_scale": (len(EVIDENCE),)}
    reference = Reference(**fitted["reference"], **{name: _finite(tensors, f"reference.{name}", shape,
                                                                  required=name.startswith("latent"))
                                                    for name, shape in shapes.items()})
    _check_evidence(reference)
    scores = _finite(tensors, "calibration.scores", (None,)).double().numpy()
    baseline = _finite(tensors, "maps.baseline", shape[1:], required=fitted["map_scale"] is not None)
    schema._require((baseline is None) == (fitted["map_scale"] is None), "'maps.baseline' and 'map_scale' must come "
                    "together")
    decision_scores = _decision_scores(tensors, fitted["training_summary"])
    arrays = {name[len("modality."):]: _finite(tensors, name).double().numpy() for name in tensors
              if name.startswith("modality.")}
    modality = modalities.restore(fitted["modality"], arrays, device)
    schema._require(fitted["n_features_in"] == modality.input_layout.n_features, f"n_features_in "
                    f"{fitted['n_features_in']} does not match the {modality.input_layout.n_features} values of its inputs")
    names = fitted["feature_names_in"]
    schema._require(names is None or len(names) == modality.layout.n_features, "feature_names_in must be one name per "
                    "feature")
    schema._require(baseline is None or modality.pixels, "'maps.baseline' belongs to models of image pixels")
    for method in (settings.score_method, fitted["calibration"]["score_method"]):
        schema._require(method != "combined" and applies(get_score(method), modality.pixels),
                        f"score method {method!r} is not defined for a model of {modality.describe()}")
    schema._require(len(fitted["calibration"]["rule"]) == 1, "calibration rule must hold one of contamination, fpr, "
                    "threshold and labels")
    return FittedState(
        modality=modality, settings=settings, network=network, weights=weights, reference=reference,
        calibration=Calibration.restore(scores, **fitted["calibration"]), noise_seed=fitted["noise_seed"],
        n_features_in=fitted["n_features_in"], feature_names_in=names, history=fitted["history"],
        training_summary=fitted["training_summary"], map_baseline=None if baseline is None else baseline.numpy(),
        map_scale=fitted["map_scale"], decision_scores=decision_scores)


def _check_evidence(reference: Reference) -> None:
    """``min_evidence``'s statistics (absent from files written before it): all three or none, at most
    ``MAX_NEIGHBOUR_ROWS`` codes, so that scoring a row costs what it did at fit, and positive spreads."""
    present = [value is not None for value in (reference.neighbour_codes, reference.evidence_location,
                                               reference.evidence_scale)]
    schema._require(all(present) or not any(present), "'reference.neighbour_codes', 'reference.evidence_location' "
                    "and 'reference.evidence_scale' must come together")
    if all(present):
        schema._require(len(reference.neighbour_codes) <= MAX_NEIGHBOUR_ROWS, f"tensor 'reference.neighbour_codes' "
                        f"holds {len(reference.neighbour_codes)} codes, more than the {MAX_NEIGHBOUR_ROWS} a fit keeps")
        schema._require(bool((reference.evidence_scale > 0).all()), "tensor 'reference.evidence_scale' must be "
                        f"positive: one spread for each of {list(EVIDENCE)}")


def _decision_scores(tensors: dict, training_summary: dict) -> np.ndarray | None:
    """The training samples' outlier scores (``training.decision_scores``, absent from files written before them):
    one per sample fitted on, none NaN; +inf is the score of a sample the model could not evaluate."""
    value = tensors.get("training.decision_scores")
    if value is None:
        return None
    n_samples = training_summary.get("n_samples")
    schema._require(value.is_floating_point() and value.ndim == 1 and value.numel() == n_samples,
                    f"tensor 'training.decision_scores' has shape {tuple(value.shape)}, expected ({n_samples},): one "
                    "score per sample fitted on")
    schema._require(not bool(value.isnan().any()) and not bool((value == -math.inf).any()),
                    "tensor 'training.decision_scores' holds NaN or -inf; fit the model again")
    return value.double().numpy()


def _finite(tensors, name, shape=None, *, required=True):
    """``tensors[name]`` as a finite floating tensor (of ``shape`` when given, where None is any non-zero size),
    or ValueError."""
    value = tensors.get(name)
    if value is None and not required:
        return None
    schema._require(value is not None and value.is_floating_point(),
                    f"tensor {name!r} is missing or not a floating-point tensor")
    schema._require(shape is None or len(shape) == value.ndim and value.numel() > 0
                    and all(s in (None, n) for s, n in zip(shape, value.shape)),
                    f"tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(shape or ())}")
    schema._require(bool(value.isfinite().all()), f"tensor {name!r} holds NaN or infinite values; the model is broken "
                    "and would score nothing as an outlier. Fit it again.")
    return value


def _weights(tensors: dict, skeleton) -> dict:
    """The file's weights, finite and exactly as ``skeleton`` (built on ``meta``) expects them in name, shape and
    dtype."""
    weights = {name[len("weights."):]: value for name, value in tensors.items() if name.startswith("weights.")}
    expected = {name: (tuple(t.shape), t.dtype) for name, t in skeleton.state_dict().items()}
    found = {name: (tuple(t.shape), t.dtype) for name, t in weights.items()}
    if expected != found:
        differing = sorted(set(expected.items()) ^ set(found.items()), key=str)[:3]
        raise ValueError(f"the weights do not match the architecture in its header (first differences: {differing}).")
    for name, tensor in weights.items():
        schema._require(not tensor.is_floating_point() or bool(tensor.isfinite().all()),
                        f"weight {name!r} holds NaN or infinite values; the model is broken and would score nothing "
                        "as an outlier. Fit it again.")
    return weights


def load_combined(path, estimator: type, detector_class: type, device=None):
    """Rebuild a fitted ``CombinedDetector`` (``estimator``) and its two ``detector_class`` models from a file
    written by :func:`save_combined`; each model is checked as a model file of its own is."""
    header, tensors = _read_for(path, estimator)
    models = {part: _build(header["models"][part], tensors, f"{part}/", path, detector_class, device)
              for part in ("pixel", "features")}
    recorded = header["fitted"]["models_calibration_sha256"]
    for part, model in models.items():
        # format 2 recorded nothing to bind them
        if header["format_version"] >= 3 and recorded.get(part) != _digest(model.calibration_.scores):
            raise ValueError(f"{str(path)!r}: its {part} model is not the one the combined calibration was made with "
                             "(its calibration scores differ); fit or calibrate the combined model again.")
    with _naming(path):
        calibration = _finite(tensors, "calibration.scores", (None,)).double().numpy()
        reference = _finite(tensors, "reference_scores", (None, 2)).double().numpy()
    # files written before the models were weighted weighed them alike
    params = {"pixel_weight": 0.5, **_params(header["params"], estimator, path)}
    return estimator._from_fitted_state(params, header["fitted"], calibration, reference, models)


def _one_line(error) -> str:
    return " ".join(str(error).split())
