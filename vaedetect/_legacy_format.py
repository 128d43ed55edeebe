"""Model files of format 2 (vaedetect 0.1): a ``torch.save`` archive of a JSON header and tensors, read with
``torch.load(weights_only=True)`` and turned into the header and tensors of format 3 (safetensors), so that
they go through the same checks and the same construction as a file written today. Saving a loaded model
writes format 3: ``vaedetect calibrate``, or ``vaedetect.load(old).save(new)``, converts a file.

The archive is read by :func:`vaedetect._files.load_torch_file`: its records must be stored uncompressed and fit
in the file (``torch.save`` never compresses), so reading it takes no more memory than the file's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._files import load_torch_file
from ._model_header import parse_header
from .modality import network_fields
from .settings import resolve, resolve_contamination

# Parameters newer than some format-2 files, which take their "auto" default there.
_NEWER_PARAMS = {"n_estimators": "auto", "learning_rate": "auto", "trim_fraction": "auto", "scaling": "auto",
                 "mixed_precision": "auto"}
_REFERENCE_TENSORS = ("latent_location", "latent_precision", "bits_location", "bits_precision", "residual_location",
                      "residual_precision")


def read_format2(path: Path) -> tuple[dict, dict]:
    """``(header, tensors)`` of a format-2 file in the form of format 3 (the header not yet checked)."""
    payload = load_torch_file(path, "model file")
    if not isinstance(payload, dict) or not isinstance(payload.get("header"), str):
        raise ValueError(f"{str(path)!r} is a torch file but not a vaedetect model (no vaedetect header).")
    header = parse_header(payload["header"], path)
    if header.get("format_version") != 2:
        raise ValueError(f"{str(path)!r} was written by vaedetect {header.get('vaedetect_version')} in model format "
                         f"{header.get('format_version')}, which lacks the training statistics this version scores "
                         "with; fit the model again.")
    versions = {name: header.get(name) for name in ("format", "format_version", "vaedetect_version", "torch_version")}
    try:
        if header.get("detector", "VAEDetector") == "CombinedDetector":
            return _combined(header, payload, versions)
        model, tensors = _model(header, payload)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"{str(path)!r} has an invalid vaedetect header (format 2): {type(error).__name__}: "
                         f"{' '.join(str(error).split())}") from None
    return {**versions, "detector": "VAEDetector", **model}, tensors


def _calibration(fitted: dict, scores, score_method: str, contamination) -> dict:
    """The calibration of a format-2 model, whose rule is the contamination quantile its threshold equals, or
    else a threshold given."""
    value, offset = resolve_contamination(contamination), fitted["offset_"]
    rule = {"contamination": value} if np.quantile(scores.double().numpy(), value) == offset else {"threshold": offset}
    return {"score_method": score_method, "offset": offset, "rule": rule,
            "source": fitted["training_summary_"].get("calibrated_on", "held-out")}


def _model(header: dict, payload: dict) -> tuple[dict, dict]:
    """One format-2 model as ``({"params", "fitted"}, tensors)`` of format 3."""
    params = {{"score": "score_method"}.get(name, name): value for name, value in header["params"].items()}
    fitted, layout, backbone = header["fitted"], header["layout"], header.get("backbone")
    kind = "features" if backbone is not None else layout["kind"]
    modality = {"kind": kind, "layout": layout}
    if backbone is not None:
        modality.update(images_layout=backbone["input_layout"], identity=backbone["identity"],
                        extractor=backbone["extractor"])
    members = fitted.get("n_estimators_", 1)  # written before members existed: one network
    params_then = {**_NEWER_PARAMS, **params, "n_estimators": members}
    settings = resolve(params_then, kind, n_train=fitted["training_summary_"].get("n_train", 1),
                       n_features=int(np.prod(layout["shape"])))
    settings = {**settings.to_dict(), "score_method": fitted["calibrated_score_"],
                **{name: fitted[f"{name}_"] for name in ("likelihood", "n_samples") if f"{name}_" in fitted}}
    calibration = _calibration(fitted, payload["validation_scores"], fitted["calibrated_score_"],
                               params.get("contamination", "auto"))
    model = {"params": params, "fitted": {
        "modality": modality, "network": network_fields(modality, params_then, members), "settings": settings,
        "calibration": calibration,
        "reference": header["reference"], "noise_seed": fitted["noise_seed_"], "n_features_in": fitted["n_features_in_"],
        "feature_names_in": header.get("feature_names_in"), "map_scale": fitted.get("map_scale_"),
        "history": header["history"], "training_summary": fitted["training_summary_"]}}
    tensors = {**{f"weights.{name}": value for name, value in payload["weights"].items()},
               "calibration.scores": payload["validation_scores"],
               **{f"reference.{name}": payload[name] for name in _REFERENCE_TENSORS if name in payload},
               **{f"modality.{name}": payload[name] for name in ("feature_mean", "feature_scale") if name in payload}}
    if fitted.get("map_scale_") is not None:  # its baseline came with it (format 2 wrote both for images only)
        tensors["maps.baseline"] = payload["map_baseline"]
    return model, tensors


def _combined(header: dict, payload: dict, versions: dict) -> tuple[dict, dict]:
    fitted = header["fitted"]
    calibration = _calibration(fitted, payload["validation_scores"], "combined", header["params"].get("contamination",
                                                                                                      "auto"))
    tensors = {"calibration.scores": payload["validation_scores"], "reference_scores": payload["reference_scores"]}
    models = {}
    for part in ("pixel", "features"):
        models[part], part_tensors = _model(parse_header(payload[part]["header"], part), payload[part])
        tensors.update({f"{part}/{name}": value for name, value in part_tensors.items()})
    return ({**versions, "detector": "CombinedDetector", "params": header["params"], "models": models,
             "fitted": {"calibration": calibration, "training_summary": fitted["training_summary_"],
                        "models_calibration_sha256": {}}}, tensors)
