"""The header of a model file, declared: every field, its type and its range, in one readable place.

Leaves are lists of scikit-learn's parameter constraints (``Interval``, ``StrOptions``, types, None), checked
by :func:`sklearn.utils._param_validation.validate_parameter_constraints`, so that a forged field is refused
with the message a bad parameter gets ("The 'offset' parameter of fitted['calibration'] must be a float in
the range (-inf, inf). Got nan instead."). :class:`Fields` are JSON objects, closed: a missing required field
or any field not declared is refused. :class:`Items` are JSON arrays of bounded length, :class:`Mapping` objects
of free keys. The bounds are far above any model vaedetect trains and low enough that no header can describe
a network or a draw of latent noise whose construction would exhaust memory. Consistency across fields (the
weights' shapes against the network, the layout against the modality) is checked where the file is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from numbers import Integral, Real

from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_parameter_constraints,
)

from .calibration import SOURCES
from .registry import SCORE_METHODS
from .settings import ACTIVATIONS, CODECS, LIKELIHOODS, SCALINGS

FORMAT_NAME, FORMAT_VERSION = "vaedetect-model", 3
MAX_LATENT_DIM, MAX_BASE_CHANNELS, MAX_IMAGE_SIDE, MAX_FEATURES = 4096, 1024, 4096, 1_000_000
# The side a backbone embeds images at: up to 1024 pixels (EfficientNet-Lite0's activations at that side stay
# within hundreds of megabytes; they grow with the square of the side, and at 4096 `info` alone ran out of bounds).
MAX_BACKBONE_SIDE = 1024
# Latent draws per scored input: each is a decoder pass, and the fixed noise holds them all.
MAX_DRAWS, MAX_MEMBERS = 10_000, 64


@dataclass(frozen=True)
class Fields:
    """A JSON object of the fields ``specs`` declares; those in ``optional`` may be missing, no other may be there."""

    specs: dict
    optional: frozenset = field(default_factory=frozenset)


@dataclass(frozen=True)
class Items:
    """A JSON array of ``low`` to ``high`` items, each of ``spec``."""

    spec: object
    low: int = 0
    high: int = 10**6


@dataclass(frozen=True)
class Mapping:
    """A JSON object of at most ``high`` free keys (strings), each value of ``spec``."""

    spec: object
    high: int = 1000


class Matching(Options):
    """A value that ``test`` accepts, described as ``what`` (an ``Options``, so that scikit-learn's validation
    takes it)."""

    def __init__(self, test, what: str):
        super().__init__(object, set())
        self.test, self.what = test, what

    def is_satisfied_by(self, val):
        return self.test(val)

    def __str__(self):
        return self.what


def Pattern(pattern: str, what: str) -> Matching:  # noqa: N802 (a constraint, named as scikit-learn's are)
    """A string matching ``pattern`` whole."""
    regex = re.compile(pattern)
    return Matching(lambda val: isinstance(val, str) and regex.fullmatch(val) is not None, what)


def _ints(low, high):
    return [Interval(Integral, low, high, closed="both")]


FINITE = [Interval(Real, None, None, closed="neither")]
POSITIVE = [Interval(Real, 0, None, closed="neither")]
BOOLEAN = ["boolean"]
NAME = [Pattern(r"[A-Za-z0-9_.\-]{1,100}", "a name of 1 to 100 letters, digits, '_', '.' or '-'")]
DEVICE = [Pattern(r"auto|cpu|mps|cuda(:\d{1,4})?", "one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")]
# a score method registered when the file is read, or the combined detector's statistic
SCORE = [Matching(lambda val: isinstance(val, str) and (val in SCORE_METHODS or val == "combined"),
                  "a registered score method or 'combined'")]

LAYOUT = Fields({"kind": [StrOptions({"image", "tabular"})], "form": [StrOptions({"tabular", "flat", "nhw", "nchw", "nhwc"})],
                 "integer": BOOLEAN, "shape": Items(_ints(1, MAX_FEATURES), 1, 3)})
EXTRACTOR = Fields({"backbone": NAME, "stages": [None, Items(NAME, 1, 32)], "image_size": [None, *_ints(16, MAX_BACKBONE_SIDE)],
                    "batch_size": [StrOptions({"auto"}), *_ints(1, 4096)], "device": DEVICE,
                    "weights_path": [None, Pattern(r"[^\x00]{1,4096}", "a path of 1 to 4096 characters")],
                    "normalize": BOOLEAN},
                   optional=frozenset({"stages", "image_size", "batch_size", "device", "weights_path", "normalize"}))
IDENTITY = Fields({"name": NAME, "source": [str], "version": [None, str],
                   "sha256": [Pattern(r"[0-9a-f]{64}", "64 hexadecimal digits")]})
MODALITY = Fields({"kind": [StrOptions({"image", "tabular", "features"})], "layout": LAYOUT, "images_layout": LAYOUT,
                   "identity": IDENTITY, "extractor": EXTRACTOR},
                  optional=frozenset({"images_layout", "identity", "extractor"}))
NETWORK = Fields({"latent_dim": _ints(1, MAX_LATENT_DIM), "base_channels": _ints(1, MAX_BASE_CHANNELS),
                  "n_stages": _ints(1, 8), "residual": BOOLEAN, "spatial_latent": BOOLEAN, "skip_connections": BOOLEAN,
                  "activation": [StrOptions(set(ACTIVATIONS))], "members": _ints(1, MAX_MEMBERS)})
SETTINGS = Fields({"likelihood": [StrOptions(set(LIKELIHOODS))], "batch_size": _ints(2, 10**9),
                   "n_samples": _ints(1, MAX_DRAWS), "augment": BOOLEAN,
                   "scaling": [StrOptions(set(SCALINGS))], "n_estimators": _ints(1, MAX_MEMBERS),
                   "learning_rate": POSITIVE, "trim_fraction": [Interval(Real, 0, 0.5, closed="left")],
                   "epochs": _ints(1, 10**9), "max_steps_per_epoch": [None, *_ints(1, 10**12)],
                   "mixed_precision": BOOLEAN, "contamination": [Interval(Real, 0, 0.5, closed="right")],
                   "score_method": SCORE},
                  optional=frozenset({"batch_size"}))  # files written before batch_size="auto" lack it
RULE = Fields({"contamination": [Interval(Real, 0, 0.5, closed="right")], "fpr": [Interval(Real, 0, 1, closed="neither")],
               "threshold": FINITE, "labels": _ints(1, 10**12)},
              optional=frozenset({"contamination", "fpr", "threshold", "labels"}))
CALIBRATION = Fields({"score_method": SCORE, "source": [StrOptions(set(SOURCES))], "rule": RULE, "offset": FINITE})
REFERENCE = Fields({"elbo_center": FINITE, "elbo_spread_below": POSITIVE, "elbo_spread_above": POSITIVE,
                    "codec": [None, StrOptions(set(CODECS))]})
# what fit and its callers record of the data; shown by `vaedetect info`, never built from
SUMMARY = Mapping([Integral, str, None, Items([str], 0, 10_000), Mapping([Integral, str, None, Items([str], 0, 10_000)])])
FITTED = Fields({"modality": MODALITY, "network": NETWORK, "settings": SETTINGS, "calibration": CALIBRATION,
                 "reference": REFERENCE, "noise_seed": _ints(0, 2**63 - 1), "n_features_in": _ints(1, 3 * MAX_FEATURES),
                 "feature_names_in": [None, Items([str], 1, MAX_FEATURES)], "map_scale": [None, Items(FINITE, 2, 2)],
                 "history": Mapping(Items([Real, None])), "training_summary": SUMMARY})
# Parameters as JSON. Their choices are checked by the estimator's own validation; the sizes here bound
# what a later fit of the loaded detector would build. A missing one takes its default.
PARAMS = Mapping([Integral, Real, str, None, Items(_ints(1, MAX_IMAGE_SIDE), 2, 3),
                  Fields({"feature_extractor": EXTRACTOR})], high=100)
PARAM_SIZES = {"latent_dim": _ints(1, MAX_LATENT_DIM), "base_channels": _ints(1, MAX_BASE_CHANNELS),
               "n_stages": _ints(1, 8), "n_samples": [StrOptions({"auto"}), *_ints(1, MAX_DRAWS)],
               "n_estimators": [StrOptions({"auto"}), *_ints(1, MAX_MEMBERS)], "device": DEVICE,
               "backbone": [None, *NAME, Fields({"feature_extractor": EXTRACTOR})]}
VERSIONS = {"format": [StrOptions({FORMAT_NAME})], "format_version": _ints(1, FORMAT_VERSION),
            "vaedetect_version": [str], "torch_version": [str]}
DETECTOR = Fields({**VERSIONS, "detector": [StrOptions({"VAEDetector"})], "params": PARAMS, "fitted": FITTED})
MODEL = Fields({"params": PARAMS, "fitted": FITTED})
COMBINED = Fields({**VERSIONS, "detector": [StrOptions({"CombinedDetector"})],
                   "params": Fields({"validation_fraction": FINITE, "calibration_fraction": FINITE, "pixel_weight": FINITE,
                                     "contamination": [StrOptions({"auto"}), *FINITE], "random_state": [None, Integral]},
                                    optional=frozenset({"pixel_weight"})),
                   "fitted": Fields({"calibration": CALIBRATION, "training_summary": SUMMARY,
                                     # SHA-256 of each model's calibration scores: the halves belong to each other
                                     "models_calibration_sha256": Mapping(Pattern(r"[0-9a-f]{64}", "a SHA-256"), 2)}),
                   "models": Fields({"pixel": MODEL, "features": MODEL})})


def parse_header(text: str, path) -> dict:
    """The JSON header ``text`` of the file ``path``, its format and version checked."""
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ValueError(f"{str(path)!r} has a corrupt vaedetect header: {reason}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ValueError(f"{str(path)!r} is not a vaedetect model file (format {found!r}).")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} was written by vaedetect {header.get('vaedetect_version')} in model format "
                         f"{version}; this vaedetect reads formats up to {FORMAT_VERSION}. Upgrade vaedetect to "
                         "load it.")
    return header


def check(value, spec, where: str = "header") -> None:
    """Check ``value`` against ``spec``; a ValueError naming the field (``where``) and what it must be."""
    if isinstance(spec, Fields):
        _require(isinstance(value, dict), f"{where} must be a JSON object, not {type(value).__name__}")
        missing = sorted(set(spec.specs) - set(value) - spec.optional)
        _require(not missing, f"{where} lacks {missing[:1]}")
        unknown = sorted(map(str, set(value) - set(spec.specs)))
        _require(not unknown, f"{where} holds unknown field(s) {unknown}")
        for name, item in value.items():
            check(item, spec.specs[name], f"{where}[{name!r}]")
    elif isinstance(spec, Items):
        _require(isinstance(value, list) and spec.low <= len(value) <= spec.high,
                 f"{where} must be a list of {spec.low} to {spec.high} items")
        for i, item in enumerate(value):
            check(item, spec.spec, f"{where}[{i}]")
    elif isinstance(spec, Mapping):
        _require(isinstance(value, dict) and len(value) <= spec.high, f"{where} must be an object of at most "
                 f"{spec.high} fields")
        for name, item in value.items():
            check(item, spec.spec, f"{where}[{name!r}]")
    else:
        _check_leaf(value, spec if isinstance(spec, list) else [spec], where)


def _check_leaf(value, constraints: list, where: str) -> None:
    """A value among ``constraints``: JSON structures by their spec, anything else by scikit-learn's checks."""
    structures = [c for c in constraints if isinstance(c, (Fields, Items, Mapping))]
    kinds = {Fields: dict, Mapping: dict, Items: list}
    for structure in structures:
        if isinstance(value, kinds[type(structure)]):
            return check(value, structure, where)
    plain = [c for c in constraints if c not in structures]
    try:
        validate_parameter_constraints({"value": plain}, {"value": value}, caller_name="header")
    except InvalidParameterError as error:  # "The 'value' parameter of header must be ... Got ... instead."
        raise ValueError(where + str(error)[str(error).index(" must be "):]) from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
