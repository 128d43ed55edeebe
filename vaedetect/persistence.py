"""Model files: a JSON header plus tensors, read back with ``torch.load(weights_only=True)``.

A model file is a ``torch.save`` archive of a dict holding only strings, numbers and tensors, so the
restricted unpickler of ``weights_only=True`` can read it and loading cannot run code from the file.

Every file is treated as hostile (docs/security.md): before ``torch.load`` the archive's records must be
stored uncompressed and fit in the file, so reading it takes no more memory than the file's size; the
header is checked against a schema (types, ranges, consistency) before any network is built; the
network is first built on torch's ``meta`` device, where it allocates nothing, and must match the
file's weights in every shape; and weights, threshold and calibration scores must be finite, so that
a broken model is refused rather than silently flagging nothing. Each failure is a ``ValueError``
naming the file and the problem in one line.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from ._files import write_atomically

FORMAT_NAME = "vaedetect-model"
FORMAT_VERSION = 2
# Format 1 lacked the reference statistics (latent and typicality scores); it is not read.
_OLDEST_READABLE = 2
_FITTED_SCALARS = ("offset_", "n_features_in_", "noise_seed_", "device_", "training_summary_", "calibrated_score_",
                   "map_scale_", "likelihood_", "n_samples_", "n_estimators_")
_REFERENCE_SCALARS = ("elbo_center", "elbo_spread_below", "elbo_spread_above", "codec")
_REFERENCE_TENSORS = ("latent_location", "latent_precision", "bits_location", "bits_precision", "residual_location",
                      "residual_precision")
# Bounds of the header's architecture: far above any model vaedetect trains (the "sharp" preset has
# 64 base channels at 4 stages), and low enough that a forged header cannot describe a network
# whose construction would exhaust memory before its weights are compared with the file's.
MAX_LATENT_DIM = 4096
MAX_BASE_CHANNELS = 1024
MAX_IMAGE_SIDE = 4096
MAX_FEATURES = 1_000_000
# Latent draws per scored input: each is a decoder pass, and the fixed noise holds them all.
MAX_DRAWS = 10_000
MAX_MEMBERS = 64
_MAX_RECORDS = 10_000
_LAYOUT_FORMS = {"tabular": {"tabular"}, "image": {"flat", "nhw", "nchw", "nhwc"}}
_DEVICE_TYPES = ("auto", "cpu", "cuda", "mps")
# Parameters renamed since format 2 was introduced: {old name: new name}. Files keep loading.
_RENAMED_PARAMS = {"score": "score_method"}
_COMBINED_PARAMS = ("validation_fraction", "calibration_fraction", "contamination", "random_state")
_EXTRACTOR_FIELDS = {"backbone", "stages", "image_size", "batch_size", "device", "weights_path", "normalize"}


def _json_params(detector) -> dict:
    params = detector.get_params(deep=False)
    if not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None  # a RandomState instance has no JSON form; the fit is done anyway
    if params["image_shape"] is not None:
        params["image_shape"] = [int(s) for s in params["image_shape"]]
    params["backbone"] = _backbone_to_json(params["backbone"])
    return params


def _backbone_to_json(backbone):
    """The ``backbone`` parameter as JSON: a name, or a FeatureExtractor's parameters; never a network."""
    from .backbones import FeatureExtractor

    if backbone is None or isinstance(backbone, str):
        return backbone
    if isinstance(backbone, FeatureExtractor) and isinstance(backbone.backbone, str):
        return {"feature_extractor": _extractor_to_json(backbone)}
    raise ValueError(
        "A detector whose backbone is a torch.nn.Module cannot be saved in a model file, which holds no code; "
        "use a named backbone (e.g. 'efficientnet_lite0', or a torchvision classifier), or pickle the detector "
        "(and load the pickle only from a trusted source)."
    )


def _extractor_to_json(extractor) -> dict:
    fields = extractor.get_params(deep=False)
    fields["stages"] = None if fields["stages"] is None else [str(stage) for stage in fields["stages"]]
    fields["weights_path"] = None if fields["weights_path"] is None else str(fields["weights_path"])
    return fields


def _extractor_from_json(fields: dict):
    from .backbones import FeatureExtractor

    fields = dict(fields)
    if fields.get("stages") is not None:
        fields["stages"] = tuple(fields["stages"])
    return FeatureExtractor(**fields)


def _backbone_from_json(value):
    """The ``backbone`` parameter from its JSON form (checked by :func:`_check_backbone_param`)."""
    return _extractor_from_json(value["feature_extractor"]) if isinstance(value, dict) else value


def save_detector(detector, path) -> None:
    """Write ``detector`` to ``path`` atomically (a crash never leaves half a file)."""
    import torch

    payload = _detector_payload(detector)
    write_atomically(path, lambda tmp: torch.save(payload, tmp))


def _versions() -> dict:
    import torch

    from . import __version__

    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "vaedetect_version": __version__,
            "torch_version": torch.__version__}


def _detector_payload(detector) -> dict:
    """A fitted ``VAEDetector`` as a dict of a JSON header and tensors."""
    import torch

    header = {
        **_versions(),
        "params": _json_params(detector),
        "fitted": {name: getattr(detector, name) for name in _FITTED_SCALARS},
        "layout": json.loads(detector.layout_.to_json()),
        "feature_names_in": [str(n) for n in getattr(detector, "feature_names_in_", [])] or None,
        "history": detector.history_.to_dict(orient="list"),
        "reference": {name: getattr(detector.reference_, name) for name in _REFERENCE_SCALARS},
    }
    if detector._data_kind() == "features":  # what was loaded, so that loading can tell it is the same
        header["backbone"] = {"identity": detector.backbone_.backbone_.identity,
                              # every setting of the extractor, so that later defaults cannot change it
                              "extractor": _extractor_to_json(detector.backbone_),
                              "input_layout": json.loads(detector.input_layout_.to_json())}
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
    if getattr(detector, "map_baseline_", None) is not None:
        payload["map_baseline"] = torch.from_numpy(np.asarray(detector.map_baseline_, dtype=np.float32))
    if detector.feature_mean_ is not None:
        payload["feature_mean"] = torch.from_numpy(np.asarray(detector.feature_mean_, dtype=np.float64))
        payload["feature_scale"] = torch.from_numpy(np.asarray(detector.feature_scale_, dtype=np.float64))
    return payload


def save_combined(detector, path) -> None:
    """Write a fitted ``CombinedDetector``: its calibration in the header, each model as its own payload."""
    import torch

    params = detector.get_params(deep=False)
    header = {
        **_versions(),
        "detector": "CombinedDetector",
        "params": {name: params[name] for name in _COMBINED_PARAMS},
        "fitted": {"offset_": float(detector.offset_), "training_summary_": detector.training_summary_},
    }
    if not isinstance(header["params"]["random_state"], (int, type(None))):
        header["params"]["random_state"] = None
    payload = {"header": json.dumps(header),
               "validation_scores": torch.from_numpy(np.asarray(detector.validation_scores_, dtype=np.float64)),
               "reference_scores": torch.from_numpy(np.asarray(detector.reference_scores_, dtype=np.float64)),
               "pixel": _detector_payload(detector.pixel_), "features": _detector_payload(detector.features_)}
    write_atomically(path, lambda tmp: torch.save(payload, tmp))


def _check_archive(path: Path) -> None:
    """Refuse, before anything is decompressed or unpickled, an archive that could cost more memory
    than its own size: ``torch.save`` stores its records uncompressed, so a compressed record (a zip
    bomb) or records larger than the file cannot come from it."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ValueError(f"{str(path)!r} is not a readable vaedetect model file (not a torch.save archive: "
                         f"{error}).") from None
    if len(records) > _MAX_RECORDS:
        raise ValueError(f"{str(path)!r} is not a vaedetect model file: it holds {len(records)} records.")
    compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise ValueError(f"{str(path)!r} is not a vaedetect model file: record {compressed[0]!r} is compressed, "
                         "which torch.save never does (refused as a possible decompression bomb).")
    claimed = sum(r.file_size for r in records)
    if claimed > size:
        raise ValueError(f"{str(path)!r} is not a vaedetect model file: its records claim {claimed} bytes "
                         f"in a file of {size}.")


def read_header(path, estimator: type) -> tuple[dict, dict]:
    """Return ``(header, payload)`` of a model file, or raise ``ValueError`` naming the file.

    The header is validated (see the module docstring) against the parameters of ``estimator``, the
    class it describes (``VAEDetector`` or ``CombinedDetector``); the payload's tensors are not yet.
    """
    path = Path(path)
    payload = _read_payload(path)
    header = _parse_header(payload, path)
    kind = header.get("detector", "VAEDetector")
    if kind != estimator.__name__:
        raise ValueError(f"{str(path)!r} holds a {kind!s:.40}, not a {estimator.__name__}; load it with "
                         f"vaedetect.{kind!s:.40}.load (the command line tells them apart).")
    try:
        if kind == "CombinedDetector":
            _check_combined_header(header, estimator)
        else:
            check_header(header, estimator)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{str(path)!r} has an invalid vaedetect header: {_one_line(error)}") from None
    return header, payload


def model_kind(path) -> str:
    """Which estimator a model file holds, "VAEDetector" or "CombinedDetector" (checked further on loading)."""
    path = Path(path)
    return str(_parse_header(_read_payload(path), path).get("detector", "VAEDetector"))


def _read_payload(path: Path) -> dict:
    import torch

    if path.exists() and not path.is_file():  # a pipe would block the reader, a device never end
        raise ValueError(f"Model file {str(path)!r} is not a regular file.")
    if not path.is_file():
        raise FileNotFoundError(f"Model file {str(path)!r} does not exist.")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{str(path)!r} is not a readable vaedetect model file: it holds Python objects other "
                         "than tensors, numbers and strings, refused without running them.") from None
    except Exception as error:  # truncated zip, random bytes...
        raise ValueError(
            f"{str(path)!r} is not a readable vaedetect model file (truncated, or of another format): "
            f"{_one_line(error)}"
        ) from None
    return payload


def _parse_header(payload, path: Path) -> dict:
    """The JSON header of ``payload`` (a file's, or one part of a combined file's), its format checked."""
    if not isinstance(payload, dict) or not isinstance(payload.get("header"), str):
        raise ValueError(f"{str(path)!r} is a torch file but not a vaedetect model (no vaedetect header).")
    try:
        header = json.loads(payload["header"])
    except (json.JSONDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ValueError(f"{str(path)!r} has a corrupt vaedetect header: {reason}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ValueError(f"{str(path)!r} is not a vaedetect model file (format {found!r}).")
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
    params = header.get("params")
    if isinstance(params, dict):
        header["params"] = {_RENAMED_PARAMS.get(name, name): value for name, value in params.items()}
    return header


def _one_line(error) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split())[:500]


# ------------------------------------------------------------------ the header's schema


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _field(mapping, name, kinds, where):
    """``mapping[name]``, which must exist and be of ``kinds`` (bool is never a number here)."""
    _require(isinstance(mapping, dict), f"{where} must be a JSON object")
    _require(name in mapping, f"{where} lacks {name!r}")
    value = mapping[name]
    is_bool = isinstance(value, bool)
    _require(isinstance(value, kinds) and (bool in _as_tuple(kinds) or not is_bool),
             f"{where}[{name!r}] has the wrong type ({type(value).__name__})")
    return value


def _as_tuple(kinds):
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _integer(mapping, name, low, high, where):
    value = _field(mapping, name, Integral, where)
    _require(low <= value <= high, f"{where}[{name!r}] = {value} is outside [{low}, {high}]")
    return value


def _finite(mapping, name, where):
    value = _field(mapping, name, Real, where)
    _require(math.isfinite(value), f"{where}[{name!r}] = {value} is not a finite number")
    return value


def check_device(device) -> None:
    """Refuse a ``device`` setting that is not "auto", "cpu", "cuda[:N]" or "mps" (``meta`` has no data)."""
    kind, _, index = str(device).partition(":")
    if kind not in _DEVICE_TYPES or (index and (kind == "auto" or not index.isdigit())):
        raise ValueError(f"device {device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")


def check_header(header: dict, estimator: type) -> None:
    """Validate a model file's header against the schema of docs/security.md; ``ValueError`` if not.

    Checks types and ranges of everything the loader builds from, and the consistency of the layout
    with the parameters (of ``estimator``, the class that will be built), so that no network is built
    from a forged or corrupt description.
    """
    params = _field(header, "params", dict, "header")
    _check_params(params, estimator)
    layout = _field(header, "layout", dict, "header")
    n_features = _check_layout(layout)
    n_inputs = n_features
    if params.get("backbone") is not None or header.get("backbone") is not None:
        _require(params.get("backbone") is not None and header.get("backbone") is not None,
                 "params['backbone'] and header['backbone'] must come together")
        _require(layout["kind"] == "tabular", "a backbone's features are modelled as a table, but layout['kind'] is "
                 f"{layout['kind']!r}")
        n_inputs = _check_backbone(_field(header, "backbone", dict, "header"))
    fitted = _field(header, "fitted", dict, "header")
    _check_fitted(fitted, n_inputs)
    _require(layout["kind"] == "tabular" or fitted.get("n_estimators_", 1) == 1,
             f"fitted['n_estimators_'] = {fitted.get('n_estimators_')}, but members side by side are for tables")
    names = header.get("feature_names_in")
    _require(names is None or (isinstance(names, list) and len(names) == n_features
                               and all(isinstance(n, str) for n in names)),
             "feature_names_in must be null or one string per feature")
    history = _field(header, "history", dict, "header")
    _require(all(isinstance(v, list) for v in history.values()), "history must map names to lists")
    reference = _field(header, "reference", dict, "header")
    for name in ("elbo_center", "elbo_spread_below", "elbo_spread_above"):
        _finite(reference, name, "reference")
    _require(reference.get("codec") in (None, "png", "webp"), f"reference['codec'] = {reference.get('codec')!r} is unknown")
    _require(set(reference) <= set(_REFERENCE_SCALARS), "reference holds unknown entries")


def _check_combined_header(header: dict, estimator: type) -> None:
    """Validate a ``CombinedDetector`` file's own header; each model's is checked as it is read."""
    params = _field(header, "params", dict, "header")
    _require(set(params) <= set(_COMBINED_PARAMS), f"unknown parameter(s) {sorted(set(params) - set(_COMBINED_PARAMS))}")
    try:
        estimator(**params)._validate_params()
    except ValueError as error:
        raise ValueError(str(error)) from None
    fitted = _field(header, "fitted", dict, "header")
    _require(set(fitted) <= {"offset_", "training_summary_"}, f"unknown fitted attribute(s) in {sorted(fitted)}")
    _finite(fitted, "offset_", "fitted")
    _field(fitted, "training_summary_", dict, "fitted")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_params(params: dict, estimator: type) -> None:
    unknown = sorted(set(params) - set(estimator().get_params()))
    _require(not unknown, f"unknown parameter(s) {unknown}")
    for name, high in (("latent_dim", MAX_LATENT_DIM), ("base_channels", MAX_BASE_CHANNELS), ("n_stages", 8),
                       ("n_samples", MAX_DRAWS), ("n_estimators", MAX_MEMBERS)):
        if name in params and params[name] != "auto":  # a missing one takes its default, as for models written before it existed
            _integer(params, name, 1, high, "params")
    check_device(params.get("device", "auto"))
    _check_backbone_param(params.get("backbone"))
    try:
        estimator(**{**params, "image_shape": None, "backbone": None})._validate_params()
    except ValueError as error:  # scikit-learn's InvalidParameterError names the parameter and the value
        raise ValueError(str(error)) from None
    shape = params.get("image_shape")
    _require(shape is None or (isinstance(shape, list) and len(shape) in (2, 3)
                               and all(_is_int(s) and 1 <= s <= MAX_IMAGE_SIDE for s in shape)),
             f"params['image_shape'] = {shape!r} is not a list of 2 or 3 sides in [1, {MAX_IMAGE_SIDE}]")


def _check_name(value, what) -> None:
    _require(isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", value) is not None,
             f"{what} = {value!r} is not a name of 1 to 100 letters, digits, '_', '.' or '-'")


def _check_backbone_param(value) -> None:
    """``params['backbone']``: null, a name, or ``{"feature_extractor": {...}}`` of known, bounded fields."""
    if value is None or isinstance(value, str):
        if value is not None:
            _check_name(value, "params['backbone']")
        return
    _require(isinstance(value, dict) and set(value) == {"feature_extractor"},
             "params['backbone'] must be null, a name or {'feature_extractor': {...}}")
    _check_extractor(_field(value, "feature_extractor", dict, "params['backbone']"),
                     "params['backbone']['feature_extractor']")


def _check_extractor(fields: dict, where: str) -> None:
    """A FeatureExtractor's parameters: known fields, a backbone by name, bounded sizes."""
    _require(set(fields) <= _EXTRACTOR_FIELDS, f"{where} holds unknown fields {sorted(set(fields) - _EXTRACTOR_FIELDS)}")
    _check_name(_field(fields, "backbone", str, where), f"{where}['backbone']")
    stages = fields.get("stages")
    _require(stages is None or (isinstance(stages, list) and 1 <= len(stages) <= 32),
             f"{where}['stages'] must be null or a list of 1 to 32 names")
    for stage in stages or ():
        _check_name(stage, f"{where}['stages'] entry")
    if "image_size" in fields:
        _integer(fields, "image_size", 8, MAX_IMAGE_SIDE, where)
    if fields.get("batch_size", "auto") != "auto":
        _integer(fields, "batch_size", 1, 4096, where)
    if "normalize" in fields:
        _field(fields, "normalize", bool, where)
    check_device(fields.get("device", "auto"))
    weights = fields.get("weights_path")
    _require(weights is None or (isinstance(weights, str) and 0 < len(weights) <= 4096),
             f"{where}['weights_path'] must be null or a path")


def _check_backbone(backbone: dict) -> int:
    """``header['backbone']``: what was loaded and the images it took; return their values per image."""
    identity = _field(backbone, "identity", dict, "backbone")
    for name in ("name", "source"):
        _field(identity, name, str, "backbone['identity']")
    _require(identity.get("version") is None or isinstance(identity["version"], str),
             "backbone['identity']['version'] must be null or a string")
    digest = identity.get("sha256")
    _require(digest is None or (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) is not None),
             "backbone['identity']['sha256'] must be null or 64 hexadecimal digits")
    _check_extractor(_field(backbone, "extractor", dict, "backbone"), "backbone['extractor']")
    layout = _field(backbone, "input_layout", dict, "backbone")
    n_inputs = _check_layout(layout)
    _require(layout["kind"] == "image", "backbone['input_layout'] must describe images")
    return n_inputs


def _check_layout(layout: dict) -> int:
    """Validate the layout; return its number of features."""
    kind = _field(layout, "kind", str, "layout")
    _require(kind in _LAYOUT_FORMS, f"layout['kind'] = {kind!r} is not 'tabular' or 'image'")
    form = _field(layout, "form", str, "layout")
    _require(form in _LAYOUT_FORMS[kind], f"layout['form'] = {form!r} does not fit kind {kind!r}")
    _field(layout, "integer", bool, "layout")
    shape = _field(layout, "shape", list, "layout")
    _require(all(_is_int(s) for s in shape), "layout['shape'] must hold integers")
    if kind == "image":
        _require(len(shape) == 3 and shape[0] in (1, 3) and all(1 <= s <= MAX_IMAGE_SIDE for s in shape[1:]),
                 f"layout['shape'] = {shape} is not (C, H, W) with C in (1, 3) and sides in [1, {MAX_IMAGE_SIDE}]")
    else:
        _require(len(shape) == 1 and 1 <= shape[0] <= MAX_FEATURES,
                 f"layout['shape'] = {shape} is not (d,) with d in [1, {MAX_FEATURES}]")
    return math.prod(shape)


def _check_fitted(fitted: dict, n_features: int) -> None:
    from .registry import SCORE_METHODS
    from .settings import LIKELIHOODS

    _require(set(fitted) <= set(_FITTED_SCALARS), f"unknown fitted attribute(s) {sorted(set(fitted) - set(_FITTED_SCALARS))}")
    _finite(fitted, "offset_", "fitted")
    _require(_integer(fitted, "n_features_in_", 1, MAX_FEATURES * 3, "fitted") == n_features,
             f"fitted['n_features_in_'] = {fitted['n_features_in_']} does not match the layout's {n_features} features")
    _integer(fitted, "noise_seed_", 0, 2**63 - 1, "fitted")
    check_device(_field(fitted, "device_", str, "fitted"))
    _field(fitted, "training_summary_", dict, "fitted")
    _require(_field(fitted, "calibrated_score_", str, "fitted") in SCORE_METHODS,
             f"fitted['calibrated_score_'] = {fitted['calibrated_score_']!r} is not a score method")
    scale = fitted.get("map_scale_")  # absent from files written before it existed
    _require(scale is None or (isinstance(scale, list) and len(scale) == 2
                               and all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
                                       for v in scale) and scale[0] < scale[1]),
             f"fitted['map_scale_'] = {scale!r} is not null or [low, high] with finite low < high")
    # absent from files written before fit resolved them: load_detector resolves them from the params
    if "likelihood_" in fitted:
        _require(fitted["likelihood_"] in LIKELIHOODS, f"fitted['likelihood_'] = {fitted['likelihood_']!r} is unknown")
    if "n_samples_" in fitted:
        _integer(fitted, "n_samples_", 1, MAX_DRAWS, "fitted")
    if "n_estimators_" in fitted:
        _integer(fitted, "n_estimators_", 1, MAX_MEMBERS, "fitted")


def _tensor(payload, name, path, *, shape=None, required=True):
    """``payload[name]`` as a finite floating tensor (of ``shape`` when given), or ``ValueError``."""
    import torch

    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"{str(path)!r}: record {name!r} is missing or not a floating-point tensor.")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{str(path)!r}: record {name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}.")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{str(path)!r}: record {name!r} holds NaN or infinite values; the model is broken "
                         "and would score nothing as an outlier. Fit it again.")
    return value


def _check_weights(weights, model, path) -> None:
    """The file's weights must be finite and shaped exactly as ``model`` (built on ``meta``) expects."""
    import torch

    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{str(path)!r}: record 'weights' is not a dict of tensors.")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    if expected != found:
        differing = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise ValueError(f"{str(path)!r}: the weights do not match the architecture in its header "
                         f"(first differences: {differing}).")
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{str(path)!r}: weight {name!r} holds NaN or infinite values; the model is broken "
                             "and would score nothing as an outlier. Fit it again.")


def load_detector(path, estimator: type, device=None):
    """Rebuild a fitted ``estimator`` (the class :class:`~vaedetect.VAEDetector`, given by its ``load``
    rather than imported here, which would import in a circle) from a file written by
    :func:`save_detector`.

    Raises
    ------
    ValueError
        Naming the file and what is wrong with it (see the module docstring).
    """
    header, payload = read_header(path, estimator)
    return _build_detector(header, payload, path, estimator, device)


def _build_detector(header, payload, path, estimator: type, device=None):
    """A fitted ``estimator`` from a checked header and its payload (see :func:`load_detector`)."""
    import pandas as pd
    import torch

    from .data import InputLayout
    from .networks import VAE
    from .scoring import Reference
    from .settings import resolve
    from .training import resolve_device

    params = dict(header["params"])
    if params.get("image_shape") is not None:
        params["image_shape"] = tuple(params["image_shape"])
    params["backbone"] = _backbone_from_json(params.get("backbone"))
    detector = estimator(**params)
    detector.backbone_ = detector.input_layout_ = None  # set last, for a detector with a backbone
    detector.map_scale_ = None  # files written before it existed: each map scaled to itself
    for name, value in header["fitted"].items():
        setattr(detector, name, value)
    detector.layout_ = InputLayout.from_json(json.dumps(header["layout"]))
    if "n_estimators_" not in header["fitted"]:  # written before members existed: one network
        detector.n_estimators_ = 1
    if "likelihood_" not in header["fitted"]:  # written before fit resolved them, by the same rule
        resolved = resolve(detector.get_params(), detector.layout_.kind)
        detector.likelihood_, detector.n_samples_ = resolved.likelihood, resolved.n_samples
    if header.get("feature_names_in"):
        detector.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    detector.history_ = pd.DataFrame({name: pd.Series(values) for name, values in header["history"].items()})
    scores = _tensor(payload, "validation_scores", path)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"{str(path)!r}: record 'validation_scores' must be a non-empty vector.")
    detector.validation_scores_ = scores.numpy()
    tabular = detector.layout_.kind == "tabular"
    n_features = detector.layout_.shape if tabular else None
    detector.feature_mean_, detector.feature_scale_ = (
        None if t is None else t.numpy()
        for t in (_tensor(payload, name, path, shape=n_features, required=tabular)
                  for name in ("feature_mean", "feature_scale")))
    baseline = _tensor(payload, "map_baseline", path, shape=detector.layout_.shape[1:], required=False)
    detector.map_baseline_ = None if baseline is None or tabular else baseline.numpy()
    if (detector.map_baseline_ is None) != (detector.map_scale_ is None):
        raise ValueError(f"{str(path)!r}: 'map_baseline' and 'map_scale_' must come together.")
    if tabular and not (detector.feature_scale_ > 0).all():
        raise ValueError(f"{str(path)!r}: record 'feature_scale' must be positive.")

    config = detector._network_config()
    with torch.device("meta"):  # allocates nothing, whatever the header claims
        skeleton = VAE(detector.layout_.shape, config)
    _check_weights(payload["weights"], skeleton, path)
    latent_size = math.prod(skeleton.latent_shape)
    # the residual score's statistics: one per decoded value (a table's features times its members)
    n_outputs = skeleton.log_scale.numel() if tabular else math.prod(detector.layout_.shape)
    detector.reference_ = Reference(
        latent_location=_tensor(payload, "latent_location", path, shape=(latent_size,)),
        latent_precision=_tensor(payload, "latent_precision", path, shape=(latent_size, latent_size)),
        bits_location=_tensor(payload, "bits_location", path, shape=(2,), required=False),
        bits_precision=_tensor(payload, "bits_precision", path, shape=(2, 2), required=False),
        # absent from files written before the residual score existed, and for images
        residual_location=_tensor(payload, "residual_location", path, shape=(n_outputs,), required=False),
        residual_precision=_tensor(payload, "residual_precision", path, shape=(n_outputs, n_outputs), required=False),
        **header["reference"],
    )

    target = resolve_device(device or params.get("device", "auto"))
    detector.device_ = str(target)
    model = VAE(detector.layout_.shape, config)
    model.load_state_dict(payload["weights"])
    detector.model_ = model.to(target).eval()
    if header.get("backbone") is not None:
        detector.backbone_ = _load_recorded_backbone(header["backbone"], path, target)
        detector.input_layout_ = InputLayout.from_json(json.dumps(header["backbone"]["input_layout"]))
    return detector


def _load_recorded_backbone(recorded: dict, path, device):
    """The feature extractor a model file names, loaded here and checked to be the one it was fitted with."""
    extractor = _extractor_from_json(recorded["extractor"])
    weights = extractor.weights_path
    if weights is not None and not Path(weights).is_file():  # a pipe or device would never end
        raise ValueError(f"{str(path)!r} names backbone weights {str(weights)!r}, which is not a regular file.")
    extractor.set_params(device=str(device))
    expected = recorded["identity"]
    try:
        extractor.fit()
    except (ImportError, OSError, RuntimeError, ValueError) as error:  # missing, offline, or not these weights
        raise ValueError(f"{str(path)!r} scores images by the features of backbone {expected['name']!r}, which "
                         f"cannot be loaded here: {_one_line(error)}") from None
    found = extractor.backbone_.identity
    if expected.get("sha256") is not None and found["sha256"] != expected["sha256"]:
        raise ValueError(
            f"{str(path)!r} was fitted on the features of backbone {expected['name']!r} with weights of SHA-256 "
            f"{expected['sha256'][:12]}... ({expected.get('source')} {expected.get('version')}), but the weights "
            f"found here differ ({found['sha256'][:12]}..., {found.get('source')} {found.get('version')}); its "
            "scores and threshold would not hold. Install the same weights, or fit the model again."
        )
    return extractor


def load_combined(path, estimator: type, detector_class: type, device=None):
    """Rebuild a fitted ``CombinedDetector`` (``estimator``) and its two ``detector_class`` models from a file
    written by :func:`save_combined`; every part is checked as a model file of its own is."""
    from sklearn.base import clone

    path = Path(path)
    header, payload = read_header(path, estimator)
    models = {}
    for part in ("pixel", "features"):
        part_payload = payload.get(part)
        part_header = _parse_header(part_payload, path)
        try:
            check_header(part_header, detector_class)
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"{str(path)!r} has an invalid header for its {part} model: {_one_line(error)}") from None
        models[part] = _build_detector(part_header, part_payload, path, detector_class, device)
    if models["pixel"]._data_kind() != "image" or models["features"]._data_kind() != "features":
        raise ValueError(f"{str(path)!r}: its pixel model must model pixels and its features model a backbone's features.")
    detector = estimator(**header["params"])
    detector.pixel_, detector.features_ = models["pixel"], models["features"]
    detector.set_params(pixel=clone(models["pixel"]), features=clone(models["features"]))
    fitted = header["fitted"]
    detector.offset_ = float(fitted["offset_"])
    detector.training_summary_ = fitted["training_summary_"]
    scores = _tensor(payload, "validation_scores", path)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"{str(path)!r}: record 'validation_scores' must be a non-empty vector.")
    detector.validation_scores_ = scores.numpy()
    reference = _tensor(payload, "reference_scores", path)
    if reference.ndim != 2 or reference.shape[1] != 2 or len(reference) == 0:
        raise ValueError(f"{str(path)!r}: record 'reference_scores' must be a non-empty (n, 2) matrix.")
    detector.reference_scores_ = reference.numpy()
    detector.calibrated_score_ = "combined"
    return detector
