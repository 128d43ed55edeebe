"""Score with an exported detector (``vaedetect export``, ``export_onnx``) without torch: numpy, Pillow and
onnxruntime.

:func:`load` reads an ONNX file :mod:`vaedetect.export` wrote and returns a detector that scores as the
fitted one did: ``score_samples``, ``decision_function``, ``predict``, ``p_values`` on arrays in the layout
the detector was fitted on, and ``score_paths`` on image files (decoded by the same code as training and
scoring, into the same score table). The graph computes what needs the network; the rest is the same numpy
code the PyTorch path runs: the inputs' scaling (:mod:`vaedetect.data`), the codec lengths of
``bits_typicality`` (:mod:`vaedetect.codecs`), p-values and tail probabilities (:mod:`vaedetect.conformal`).

Nothing here imports torch (a test checks ``sys.modules``), so a scoring process starts in a fraction of
the time and memory.

Examples
--------
>>> from vaedetect import runtime
>>> detector = runtime.load("model.onnx")  # doctest: +SKIP
>>> detector.predict(X_new)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .codecs import bits_per_dim, lossless_bits_per_dim
from .conformal import fail_closed, log_tail_probability, p_values_keeping_nan, verdict_columns
from .data import InputLayout, check_layout_matches, check_value_range, images_to_unit_range, scaled_rows

FORMAT, FORMAT_VERSION = "vaedetect-onnx", 1
# What the graph holds is checked by onnxruntime; the metadata is vaedetect's JSON, at most this long.
MAX_METADATA_BYTES = 256 * 2**20
# Rows or files a graph takes at once: the fitted detector's inference batch (its ``settings_.batch_size``),
# recorded at export; files exported before it was recorded take BATCH_SIZE, the batch images are fitted on.
BATCH_SIZE, MAX_BATCH_SIZE = 32, 4096
_EVIDENCE = ("pixels", "features")


def load(path, *, providers=None):
    """Read an exported detector.

    Parameters
    ----------
    path : str or path-like
        An ONNX file written by ``VAEDetector.export_onnx``, ``CombinedDetector.export_onnx`` or
        ``vaedetect export``.
    providers : list of str, optional
        onnxruntime's execution providers, e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``;
        default the CPU.

    Returns
    -------
    detector : ExportedDetector or ExportedCombined
    """
    path = Path(path)
    session, fields = _session(path, providers)
    try:
        if fields["detector"] == "CombinedDetector":
            return ExportedCombined(session, fields)
        return ExportedDetector(session, fields)
    except (KeyError, TypeError, ValueError) as error:  # metadata that is JSON, but not what export writes
        raise malformed_metadata(path, error) from None


def malformed_metadata(path: Path, error: Exception) -> ValueError:
    """The error for an exported file whose vaedetect metadata is JSON, but not what export writes."""
    return ValueError(f"{str(path)!r} holds vaedetect metadata that is incomplete or malformed "
                      f"({type(error).__name__}: {error}).")


def _session(path: Path, providers):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError('scoring an exported detector needs onnxruntime: pip install "vaedetect[onnx]"') from None
    if not path.is_file():
        raise FileNotFoundError(f"Exported model {str(path)!r} does not exist or is not a regular file.")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings on unused initialisers are noise here
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own classes for a file it cannot read
        raise ValueError(f"{str(path)!r} is not a readable ONNX model: {' '.join(str(error).split())}") from None
    text = session.get_modelmeta().custom_metadata_map.get("vaedetect")
    if text is None or len(text) > MAX_METADATA_BYTES:
        raise ValueError(f"{str(path)!r} is an ONNX model but not one vaedetect exported (no vaedetect metadata).")
    try:
        fields = json.loads(text)
    except ValueError as error:
        raise malformed_metadata(path, error) from None
    if not isinstance(fields, dict):
        raise malformed_metadata(path, TypeError(f"a JSON {type(fields).__name__}, not an object"))
    if fields.get("format") != FORMAT or fields.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} holds export format {fields.get('format')!r} {fields.get('format_version')}; "
                         f"this vaedetect reads {FORMAT!r} {FORMAT_VERSION}.")
    return session, fields


class _Model:
    """One exported model: how inputs reach its graph and how the graph's output becomes its score."""

    def __init__(self, fields: dict):
        self.fields = fields
        self.kind, self.score_method = fields["kind"], fields["score_method"]
        # what reaches the graph: scaled rows, images in [0, 1] for a backbone (``photos``), or pixels in [-1, 1]
        self.rows, self.photos = "scaling" in fields, fields.get("photos")
        self.layout = InputLayout.from_dict(fields["input_layout"])
        self.calibration_scores = np.asarray(fields["calibration"]["scores"], dtype=np.float64)
        self.offset = float(fields["calibration"]["offset"])
        self.batch_size = fields.get("batch_size", BATCH_SIZE)
        if type(self.batch_size) is not int or not 1 <= self.batch_size <= MAX_BATCH_SIZE:  # bool is no batch size
            raise ValueError(f"batch_size must be an integer in [1, {MAX_BATCH_SIZE}]; got {self.batch_size!r}")

    # inputs ---------------------------------------------------------------------------------------

    def check(self, X) -> np.ndarray:
        """``X`` as ``score_samples`` takes it: in the layout the detector was fitted on, finite."""
        if self.rows and hasattr(X, "columns"):
            names = self.fields.get("feature_names")
            if names is not None and [str(c) for c in X.columns] != names:
                raise ValueError(f"X's columns {list(X.columns)[:5]}... are not the {len(names)} columns the detector "
                                 f"was fitted on ({names[:5]}...).")
        X = np.asarray(X)
        X = X.astype(np.float64) if X.dtype == bool else X  # booleans count as numbers, as in fit
        if not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}.")
        if not np.isfinite(X).all():
            raise ValueError("X holds NaN or infinite values.")
        check_layout_matches(X, self.layout)  # the checks of the PyTorch path
        check_value_range(X, self.layout)
        return X

    def network_input(self, X, layout: InputLayout | None = None) -> np.ndarray:
        """Checked ``X`` -> what the graph takes (float32): the same arithmetic as the PyTorch path."""
        layout = layout or self.layout
        if self.rows:
            scaling = self.fields["scaling"]
            return scaled_rows(X.astype(np.float64), np.asarray(scaling["mean"]), np.asarray(scaling["scale"]))
        unit = images_to_unit_range(X, layout)
        if self.photos is not None:  # the extractor's images: [0, 1], three channels
            unit = np.clip((unit + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
            unit = np.repeat(unit, 3, axis=1) if unit.shape[1] == 1 else unit
        return np.ascontiguousarray(unit)

    # scores ---------------------------------------------------------------------------------------

    def complete(self, graph_scores: np.ndarray, network_input: np.ndarray) -> np.ndarray:
        """The detector's score from the graph's output (its ELBO, for ``bits_typicality``)."""
        scores = np.asarray(graph_scores, dtype=np.float64)
        if self.score_method == "bits_typicality":
            bits = self.fields["bits"]
            pixels = np.clip(np.round((network_input + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
            pairs = np.column_stack([bits_per_dim(scores, network_input[0].size), lossless_bits_per_dim(pixels, bits["codec"])])
            centred = pairs - np.asarray(bits["location"])
            scores = -np.einsum("bi,ij,bj->b", centred, np.asarray(bits["precision"]), centred)
        return fail_closed(scores, self.score_method)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        return p_values_keeping_nan(self.calibration_scores, scores)

    def file_geometry(self) -> tuple[int, int]:
        """``(channels, side)`` files are decoded to for this model."""
        if self.rows:
            raise ValueError("score_paths reads image files; this detector was fitted on a table: use score_samples.")
        if self.photos is not None:
            return 3, int(self.photos["image_size"])
        channels, height, width = self.layout.shape
        if height != width:
            raise ValueError(f"Image files are read square, but the detector was fitted on {height}x{width} images.")
        return channels, height


def _sorted_by_path(rows: dict) -> dict:
    """The columns of a score table with their entries in the order of ``rows["path"]``, as ``score_paths``
    sorts them."""
    order = sorted(range(len(rows["path"])), key=rows["path"].__getitem__)
    return {name: [values[i] for i in order] for name, values in rows.items()}


def _decoded_layout(channels: int, side: int) -> InputLayout:
    return InputLayout("image", "nhwc", True, (channels, side, side))


class _Calibrated:
    """What both exported detectors share: the threshold, the verdicts and p-values of their scores; each sets
    ``batch_size``, the rows or files its graph takes at once."""

    @property
    def offset_(self) -> float:
        """Threshold on ``score_samples``: samples scoring below it are outliers."""
        return self._offset

    @property
    def score_method_(self) -> str:
        return self._score_method

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 inlier, -1 outlier."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def p_values(self, X) -> np.ndarray:
        """Split-conformal p-values against the calibration scores."""
        return self._p_values(self.score_samples(X))

    def _p_values(self, scores) -> np.ndarray:
        return p_values_keeping_nan(self._calibration_scores, scores)

    def verdicts(self, scores) -> dict:
        """The score table's verdict columns (:func:`~vaedetect.conformal.verdict_columns`)."""
        return verdict_columns(self._calibration_scores, self.offset_, scores)

    def _decoded(self, paths, follow_links: bool, geometries):
        """The image files under ``paths``, decoded in batches at each of ``geometries`` (``(channels, side)``):
        yields ``(paths, [images per geometry], errors)`` with an error per file that could not be read."""
        from .images import discover_images, load_image

        files, skipped = discover_images(paths, follow_links=follow_links)
        if skipped:
            yield [s.path for s in skipped], None, [s.reason for s in skipped]
        for start in range(0, len(files), self.batch_size):
            decoded, errors = [], []
            for path in files[start : start + self.batch_size]:
                try:
                    decoded.append((path, [load_image(path, side, channels) for channels, side in geometries]))
                except ValueError as error:
                    errors.append((path, str(error)))
            if errors:
                yield [path for path, _ in errors], None, [reason for _, reason in errors]
            if decoded:
                yield ([path for path, _ in decoded], [np.stack([images[i] for _, images in decoded])
                                                       for i in range(len(geometries))], None)


class ExportedDetector(_Calibrated):
    """A ``VAEDetector`` exported to ONNX, scored by onnxruntime (see :func:`load`).

    Attributes
    ----------
    offset_ : float
        Threshold on ``score_samples``: samples scoring below it are outliers.
    score_method_ : str
        The score ``score_samples`` returns.
    kind : str
        "image", "tabular" or "features": what the detector models.
    images : bool
        Whether it scores images (``score_paths``), or a table's rows.
    """

    def __init__(self, session, fields: dict):
        self._session, self.fields = session, fields
        self._model = _Model(fields["model"])
        self.batch_size = self._model.batch_size
        self.kind, self.images = self._model.kind, not self._model.rows
        self._offset, self._score_method = self._model.offset, self._model.score_method
        self._calibration_scores = self._model.calibration_scores

    def _scores_of_network_input(self, x: np.ndarray) -> np.ndarray:
        chunks = [np.empty(0)]
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size]
            chunks.append(self._model.complete(self._session.run(["score"], {"x": batch})[0], batch))
        return np.concatenate(chunks)

    def score_samples(self, X) -> np.ndarray:
        """Normality score of each sample (higher = more normal), as the fitted detector's ``score_samples``."""
        return self._scores_of_network_input(self._model.network_input(self._model.check(X)))

    def _file_geometries(self) -> list[tuple[int, int]]:
        return [self._model.file_geometry()]

    def _score_decoded(self, images) -> np.ndarray:
        """Scores of image files decoded at ``_file_geometries()``."""
        return self._scores_of_network_input(self._model.network_input(images, _decoded_layout(*self._file_geometries()[0])))

    def score_paths(self, paths, *, follow_links=False):
        """Score the image files under ``paths``: the score table of ``VAEDetector.score_paths`` (path, score,
        p_value, is_outlier, error); a file that cannot be read gets its reason and no score."""
        from . import schema

        rows = {"path": [], "score": [], "error": []}
        for paths_, images, errors in self._decoded(paths, follow_links, self._file_geometries()):
            rows["path"] += paths_
            rows["score"] += [np.nan] * len(paths_) if images is None else list(self._score_decoded(images[0]))
            rows["error"] += errors if images is None else [""] * len(paths_)
        return schema.build(_sorted_by_path(rows), self)


class ExportedCombined(_Calibrated):
    """A ``CombinedDetector`` exported to ONNX: both models in one graph, their scores combined here as the
    fitted detector combines them (see :func:`load`)."""

    def __init__(self, session, fields: dict):
        self._session, self.fields = session, fields
        self._pixel, self._features = _Model(fields["pixel"]), _Model(fields["features"])
        self.batch_size = min(self._pixel.batch_size, self._features.batch_size)
        self.kind, self.images = "combined", True
        calibration = fields["calibration"]
        self._offset, self._score_method = float(calibration["offset"]), "combined"
        self._calibration_scores = np.asarray(calibration["scores"], dtype=np.float64)
        self._reference = np.asarray(fields["reference_scores"], dtype=np.float64)
        self._log_double_weights = np.log(2.0 * np.asarray(fields["weights"], dtype=np.float64))

    def _raw_scores(self, pixels: np.ndarray, photos: np.ndarray) -> np.ndarray:
        """``(n, 2)``: the pixel and the feature model's own scores of network inputs."""
        chunks = [np.empty((0, 2))]
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start : start + self.batch_size], photos[start : start + self.batch_size]
            pixel, feature = self._session.run(["pixel_score", "feature_score"], {"pixels": batch[0], "photos": batch[1]})
            chunks.append(np.column_stack([self._pixel.complete(pixel, batch[0]), self._features.complete(feature, batch[1])]))
        return np.concatenate(chunks)

    def evidence(self, raw: np.ndarray) -> np.ndarray:
        """Each model's log tail probability among the reference scores, less the log of twice its weight."""
        each = np.column_stack([log_tail_probability(raw[:, m], self._reference[:, m]) for m in range(2)])
        return each - self._log_double_weights

    def score_samples(self, X) -> np.ndarray:
        """The combined score (higher = more normal) of images ``X`` in the pixel model's layout."""
        X = self._pixel.check(X)
        raw = self._raw_scores(self._pixel.network_input(X), self._features.network_input(X, self._pixel.layout))
        return self.evidence(raw).min(axis=1)

    def _file_geometries(self) -> list[tuple[int, int]]:
        return [self._pixel.file_geometry(), self._features.file_geometry()]

    def _raw_decoded(self, pixels, photos) -> np.ndarray:
        """Both models' own scores of image files decoded at ``_file_geometries()``."""
        geometries = self._file_geometries()
        return self._raw_scores(self._pixel.network_input(pixels, _decoded_layout(*geometries[0])),
                                self._features.network_input(photos, _decoded_layout(*geometries[1])))

    def _score_decoded(self, pixels, photos) -> np.ndarray:
        return self.evidence(self._raw_decoded(pixels, photos)).min(axis=1)

    def score_paths(self, paths, *, follow_links=False):
        """Score the image files under ``paths``: the score table of ``CombinedDetector.score_paths``."""
        from . import schema

        rows = {"path": [], "error": []}
        raw = [np.empty((0, 2))]
        for paths_, images, errors in self._decoded(paths, follow_links, self._file_geometries()):
            rows["path"] += paths_
            raw.append(np.full((len(paths_), 2), np.nan) if images is None else self._raw_decoded(*images))
            rows["error"] += errors if images is None else [""] * len(paths_)
        raw = np.concatenate(raw)
        evidence = self.evidence(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows of unread files
            scores = np.where(np.asarray(rows["error"], dtype=object) != "", np.nan, evidence.min(axis=1))
        below, flagged = evidence < self.offset_, scores < self.offset_
        rows.update(score=scores, pixel_score=evidence[:, 0], feature_score=evidence[:, 1], pixel_raw_score=raw[:, 0],
                    feature_raw_score=raw[:, 1], pixel_p_value=self._pixel.p_values(raw[:, 0]),
                    feature_p_value=self._features.p_values(raw[:, 1]),
                    evidence=["+".join(name for name, hit in zip(_EVIDENCE, row) if hit) if is_flagged else ""
                              for row, is_flagged in zip(below, flagged)])
        return schema.build(_sorted_by_path(rows), self, evidence=True)


