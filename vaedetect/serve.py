"""A scoring service: ``vaedetect serve MODEL`` (a model file, or an ONNX file ``vaedetect export`` wrote).

``POST /score`` takes image files (``multipart/form-data``, one or many) or a table's rows (JSON) and returns
the score table's rows as JSON; ``GET /`` is a page where a person drops photos and sees each one's score,
p-value, verdict and, for a pixel model file, its anomaly map; ``GET /health`` and ``GET /model`` (what
``vaedetect info`` says). The posture is the command line's: bound to 127.0.0.1 unless told otherwise,
requests and images of bounded size (an upload above the limit gets 413), every hostile file reported as that
file's error with the rest scored, nothing written to disk (uploads are read into memory, within the limit).
Built on FastAPI and uvicorn (the ``serve`` extra).
"""

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np

from .images import load_image

DEFAULT_MAX_REQUEST_BYTES = 32 * 2**20
DEFAULT_MAX_FILES = 64
DEFAULT_MAX_ROWS = 10_000
_PAGE = Path(__file__).with_name("serve_page.html")


class TooLarge(Exception):
    """A request body above the service's limit."""


class Scorer:
    """A model to score with, from a model file (torch) or an exported one (onnxruntime, no torch), behind one
    interface; one request scores at a time (the networks are not shared between threads)."""

    def __init__(self, path):
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            from . import runtime

            self.model, self.exported = runtime.load(path), True
            self.calibration, self.images = self.model, self.model.images
        else:
            from . import load

            self.model, self.exported = load(path), False
            self.calibration, self.images = self.model.calibration_, self.model.modality_.images
        self.rows = not self.images
        self.path, self.lock = path, threading.Lock()
        self.maps = not self.exported and getattr(self.model, "map_scale_", None) is not None

    def describe(self) -> dict:
        """What ``GET /model`` answers."""
        if self.exported:
            fields = self.model.fields
            return {"file": self.path.name, "exported": True, "detector": fields["detector"], "kind": self.model.kind,
                    "score_method": self.model.score_method_, "threshold": _number(self.model.offset_),
                    "vaedetect_version": fields["vaedetect_version"], "inputs": "images" if self.images else "rows"}
        calibration = self.model.calibration_
        return {"file": self.path.name, "exported": False, "detector": type(self.model).__name__,
                "kind": self.model.modality_.name, "input": self.model.modality_.describe(),
                "score_method": calibration.score_method, "threshold": _number(calibration.offset),
                "rule": calibration.describe_rule(), "calibration": calibration.describe(),
                "inputs": "images" if self.images else "rows"}

    def score_images(self, uploads: list[tuple[str, bytes]], maps: bool = False) -> list[dict]:
        """The score table's rows of uploaded files ``(name, bytes)``; a file that cannot be read gets its
        reason in ``error`` and no score. With ``maps``, flagged images of a pixel model get ``map``, a PNG
        data URL of their anomaly map."""
        if not self.images:
            raise ValueError("this model scores a table's rows: send JSON rows, not files.")
        geometries = self.model._file_geometries()
        decoded, rows = [], []
        for name, data in uploads:
            try:
                decoded.append((name, [load_image(io.BytesIO(data), side, channels) for channels, side in geometries]))
            except ValueError as error:
                rows.append({"name": name, "score": None, "p_value": None, "is_outlier": False, "error": str(error)})
        if decoded:
            batches = [np.stack([images[i] for _, images in decoded]) for i in range(len(geometries))]
            with self.lock:
                scores = np.asarray(self.model._score_decoded(*batches), dtype=np.float64)
                verdicts = self.calibration.verdicts(scores)
                pictures = self._maps(batches[0], verdicts["is_outlier"]) if maps and self.maps else {}
            for i, (name, _) in enumerate(decoded):
                rows.append({"name": name, "score": _number(scores[i]), "p_value": _number(verdicts["p_value"][i]),
                             "is_outlier": bool(verdicts["is_outlier"][i]), "error": "",
                             **({"map": pictures[i]} if i in pictures else {})})
        return rows

    def _maps(self, images, flagged) -> dict[int, str]:
        """PNG data URLs of the anomaly maps of the ``flagged`` decoded images (pixel model files only)."""
        from PIL import Image

        from .plotting import heatmap_overlay

        pixel = getattr(self.model, "pixel_", self.model)
        indices = np.flatnonzero(flagged)
        if not len(indices):
            return {}
        heat = pixel._anomaly_map_tensor(pixel.modality_.files_to_network(images[indices])).sum(axis=1)
        heat = heat - pixel.map_baseline_ if pixel.map_baseline_ is not None else heat
        pictures = {}
        for index, image, excess in zip(indices, images[indices], heat):
            buffer = io.BytesIO()
            Image.fromarray(heatmap_overlay(image, excess, scale=pixel.map_scale_, colour_bar=True)).save(buffer, "PNG")
            pictures[int(index)] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return pictures

    def score_rows(self, payload, max_rows: int) -> list[dict]:
        """The score table's rows of a table sent as JSON: ``{"rows": [[...], ...]}`` (values in the columns'
        order) or ``{"records": [{"column": value, ...}, ...]}``. A row that is not numbers, or of the wrong
        length, gets its reason in ``error``; the others are scored."""
        if not self.rows:
            raise ValueError("this model scores images: send files (multipart/form-data), not JSON rows.")
        rows, names = _rows_of(payload, self.model, max_rows)
        width = int(self.model.n_features_in_ if not self.exported else self.model.fields["model"]["n_features_in"])
        good, results = [], []
        for number, row in enumerate(rows):
            try:
                values = np.asarray(row, dtype=np.float64)
                if values.shape != (width,) or not np.isfinite(values).all():
                    raise ValueError(f"a row of {width} finite numbers is expected, got {json.dumps(row)[:200]}")
                good.append((number, values))
            except (TypeError, ValueError) as error:
                results.append({"row": number, "score": None, "p_value": None, "is_outlier": False,
                                "error": str(error)})
        if good:
            X = np.stack([values for _, values in good])
            if names is not None:
                import pandas as pd

                X = pd.DataFrame(X, columns=names)
            with self.lock:
                scores = np.asarray(self.model.score_samples(X), dtype=np.float64)
                verdicts = self.calibration.verdicts(scores)
            results += [{"row": number, "score": _number(scores[i]), "p_value": _number(verdicts["p_value"][i]),
                         "is_outlier": bool(verdicts["is_outlier"][i]), "error": ""}
                        for i, (number, _) in enumerate(good)]
        return sorted(results, key=lambda result: result["row"])


def _rows_of(payload, model, max_rows: int):
    """Rows (lists of values) and the column names they follow (None: the fitted order) of a JSON body."""
    if not isinstance(payload, dict) or not ({"rows", "records"} & set(payload)):
        raise ValueError('send {"rows": [[...], ...]} or {"records": [{"column": value, ...}, ...]}.')
    rows = payload.get("rows", payload.get("records"))
    if not isinstance(rows, list) or not rows or len(rows) > max_rows:
        raise ValueError(f"send between 1 and {max_rows} rows.")
    if "rows" in payload:
        return rows, None
    names = getattr(model, "feature_names_in_", None)
    names = list(names) if names is not None else (model.fields["model"].get("feature_names")
                                                   if hasattr(model, "fields") else None)
    if names is None:
        raise ValueError('this model was fitted without column names: send {"rows": [[...], ...]}.')
    return [[record.get(name) if isinstance(record, dict) else None for name in names] for record in rows], names


def _number(value: float):
    """A float as JSON holds it: -inf (a score the model could not evaluate) as a string, NaN as null."""
    value = float(value)
    return None if np.isnan(value) else value if np.isfinite(value) else str(value)


def _text(name: str) -> str:
    """A file name as JSON can hold it: bytes that are not UTF-8 (held as lone surrogates) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _multipart_files(content_type: str, body: bytes, max_files: int) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each file part of a ``multipart/form-data`` body, parsed in memory."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body)
    if not message.is_multipart():
        raise ValueError("send the files as multipart/form-data.")
    files = [(_text(part.get_filename()) or f"file{i}", part.get_payload(decode=True) or b"")
             for i, part in enumerate(message.iter_parts()) if part.get_filename() is not None]
    if not files or len(files) > max_files:
        raise ValueError(f"send between 1 and {max_files} files.")
    return files


class _BodyLimit:
    """ASGI middleware: a request whose body is (or claims to be) larger than ``limit`` bytes gets 413."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _too_large(send, self.limit)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except TooLarge:
            await _too_large(send, self.limit)


async def _too_large(send, limit: int):
    body = json.dumps({"error": f"the request is larger than the service's limit of {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(model_path, *, max_request_bytes=DEFAULT_MAX_REQUEST_BYTES, max_files=DEFAULT_MAX_FILES,
               max_rows=DEFAULT_MAX_ROWS):
    """The service's ASGI application for the model at ``model_path`` (loaded once, before serving)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise ImportError('the scoring service needs FastAPI and uvicorn: pip install "vaedetect[serve]"') from None

    scorer = Scorer(model_path)
    app = FastAPI(title="vaedetect", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/model")
    def model():
        return scorer.describe()

    @app.get("/", response_class=HTMLResponse)
    def page():
        return _PAGE.read_text(encoding="utf-8")

    @app.post("/score")
    async def score(request: Request):  # FastAPI reads the annotation: no `from __future__ import annotations` here
        body = await request.body()  # within the limit: _BodyLimit stops a larger one
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith("multipart/form-data"):
                uploads = _multipart_files(content_type, body, max_files)
                maps = request.query_params.get("maps") == "1"
                return {"rows": scorer.score_images(uploads, maps=maps)}
            if content_type.startswith("application/json"):
                return {"rows": scorer.score_rows(json.loads(body), max_rows)}
            raise ValueError("send image files as multipart/form-data, or a table's rows as application/json.")
        except (ValueError, json.JSONDecodeError) as error:
            return JSONResponse({"error": " ".join(str(error).split())}, status_code=400)

    return _BodyLimit(app, max_request_bytes)


def serve(model_path, *, host="127.0.0.1", port=8000, **limits) -> None:
    """Serve the model at ``model_path`` until interrupted (see :func:`create_app` for ``limits``)."""
    import uvicorn

    uvicorn.run(create_app(model_path, **limits), host=host, port=port, log_level="warning")
