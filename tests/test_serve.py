"""The scoring service: a real HTTP client against a running server, and its page in headless Chromium."""

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaedetect import VAEDetector

from tests.conftest import TINY
from tests.hostile import build_image_corpus

pytest.importorskip("fastapi", reason='the serve extra: pip install "vaedetect[serve]"')
uvicorn = pytest.importorskip("uvicorn", reason='the serve extra: pip install "vaedetect[serve]"')


@contextlib.contextmanager
def running(model_path, **limits):
    """The service of ``model_path`` listening on a free port of 127.0.0.1; yields its base URL."""
    from vaedetect.serve import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(model_path, **limits), host="127.0.0.1", port=0,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _request(url, data=None, content_type=None):
    """``(status, JSON body)`` of a GET, or of a POST of ``data``."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post_files(url, files: dict[str, bytes]):
    """POST ``{name: bytes}`` as multipart/form-data, as a browser's form does."""
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
              "Content-Type: application/octet-stream\r\n\r\n").encode("utf-8", "surrogateescape") + data + b"\r\n"
             for name, data in files.items()]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return _request(url, body, f"multipart/form-data; boundary={boundary}")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    """A pixel model of dark noise with a bright square, its file and a folder of images it scores."""
    rng = np.random.RandomState(0)
    images = rng.randint(0, 40, size=(80, 12, 12)).astype(np.uint8)
    images[:, 3:9, 3:9] = 230
    folder = tmp_path_factory.mktemp("served")
    detector = VAEDetector(**{**TINY, "epochs": 10}, augment=False).fit(images)
    detector.save(folder / "model.vae")
    for i, image in enumerate(images[:6]):
        Image.fromarray(image).save(folder / f"{i}.png")
    return detector, folder


def test_health_and_model_answer(pixel_model):
    detector, folder = pixel_model
    with running(folder / "model.vae") as url:
        assert _request(f"{url}/health") == (200, {"status": "ok"})
        status, model = _request(f"{url}/model")
    assert status == 200 and model["detector"] == "VAEDetector" and model["inputs"] == "images"
    assert model["threshold"] == detector.offset_ and model["score_method"] == detector.calibration_.score_method


def test_uploaded_photos_get_the_scores_and_verdicts_of_score_paths(pixel_model):
    detector, folder = pixel_model
    files = {f"{i}.png": (folder / f"{i}.png").read_bytes() for i in range(6)}
    with running(folder / "model.vae") as url:
        status, body = _post_files(f"{url}/score", files)
    assert status == 200
    expected = detector.score_paths([folder / name for name in files]).set_index("path")
    for row in body["rows"]:
        truth = expected.loc[str(folder / row["name"])]
        assert row["score"] == pytest.approx(truth["score"], rel=1e-6)
        assert row["p_value"] == pytest.approx(truth["p_value"]) and row["is_outlier"] == truth["is_outlier"]


def test_every_hostile_upload_is_that_files_error_and_the_service_keeps_answering(pixel_model, tmp_path):
    _, folder = pixel_model
    corpus = tmp_path / "corpus"
    build_image_corpus(corpus)
    uploads = {path.name: path.read_bytes() for path in sorted(corpus.iterdir())
               if path.is_file() and not path.is_symlink() and not path.is_fifo()}
    uploads["../../etc/passwd.png"] = b"\x89PNG\r\n\x1a\n not really"  # a name that points elsewhere
    with running(folder / "model.vae", max_request_bytes=64 * 2**20) as url:
        status, body = _post_files(f"{url}/score", uploads)
        assert _request(f"{url}/health")[0] == 200
    assert status == 200
    errors = {row["name"]: row["error"] for row in body["rows"]}
    # a name that is not UTF-8 comes back readable, its odd bytes as U+FFFD
    assert set(errors) == {name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for name in uploads}
    for name in ("broken.png", "empty.jpg", "truncated.png", "bomb.png", "ghostscript.jpg", "photo.heic",
                 "photo.avif", "../../etc/passwd.png"):
        assert errors[name], name
    assert "decompression bomb" in errors["bomb.png"] and errors["empty.jpg"] == "empty file"
    assert not any(error for name, error in errors.items() if name.startswith(("long_", "ansi-", "latin1-")))


def test_an_upload_above_the_limit_gets_413_and_the_service_keeps_answering(pixel_model):
    _, folder = pixel_model
    with running(folder / "model.vae", max_request_bytes=10_000) as url:
        status, body = _post_files(f"{url}/score", {"big.png": b"\x00" * 20_000})
        assert status == 413 and "10000 bytes" in body["error"]
        assert _post_files(f"{url}/score", {"0.png": (folder / "0.png").read_bytes()})[0] == 200


def test_a_flagged_photo_comes_back_with_its_anomaly_map(pixel_model):
    _, folder = pixel_model
    bright = np.full((12, 12), 255, dtype=np.uint8)
    with running(folder / "model.vae") as url:
        status, body = _post_files(f"{url}/score?maps=1", {"bright.png": _png(bright)})
    (row,) = body["rows"]
    assert status == 200 and row["is_outlier"]
    picture = Image.open(io.BytesIO(base64.b64decode(row["map"].removeprefix("data:image/png;base64,"))))
    assert picture.format == "PNG" and min(picture.size) >= 12


def test_table_rows_sent_as_json_are_scored_and_a_bad_row_is_its_error(fitted_tabular, tmp_path):
    detector, X = fitted_tabular
    detector.save(tmp_path / "table.vae")
    rows = X[:4].tolist() + [["a", 1, 2, 3, 4], [1.0, 2.0]]
    with running(tmp_path / "table.vae") as url:
        status, body = _request(f"{url}/score", json.dumps({"rows": rows}).encode(), "application/json")
    assert status == 200
    scores = [row["score"] for row in body["rows"][:4]]
    np.testing.assert_allclose(scores, detector.score_samples(X[:4]), rtol=1e-9)
    assert [bool(row["error"]) for row in body["rows"]] == [False] * 4 + [True, True]


def test_an_exported_model_is_served_without_its_model_file(fitted_tabular, tmp_path):
    pytest.importorskip("onnxruntime")
    detector, X = fitted_tabular
    detector.export_onnx(tmp_path / "table.onnx")
    with running(tmp_path / "table.onnx") as url:
        status, body = _request(f"{url}/score", json.dumps({"rows": X[:3].tolist()}).encode(), "application/json")
        assert _request(f"{url}/model")[1]["exported"] is True
    np.testing.assert_allclose([row["score"] for row in body["rows"]], detector.score_samples(X[:3]), rtol=1e-4)


def test_a_body_that_is_neither_files_nor_rows_is_refused_with_the_reason(pixel_model):
    _, folder = pixel_model
    with running(folder / "model.vae") as url:
        status, body = _request(f"{url}/score", b"hello", "text/plain")
    assert status == 400 and "multipart/form-data" in body["error"]


def test_the_page_scores_a_dropped_photo_in_headless_chromium(pixel_model, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium where apt can).")
    _, folder = pixel_model
    bright = base64.b64encode(_png(np.full((12, 12), 255, dtype=np.uint8))).decode()
    with running(folder / "model.vae") as url:
        page = urllib.request.urlopen(f"{url}/", timeout=30).read().decode()
        # the page as served, from the service's address, given a photo as a person's drop gives it; the title
        # reports what the page then shows
        probe = page.replace("<head>", f'<head><base href="{url}/">').replace("describe();", f"""
const bytes = Uint8Array.from(atob("{bright}"), c => c.charCodeAt(0));
Promise.all([describe(), score([new File([bytes], "bright.png", {{type: "image/png"}})])]).then(() => {{
  const cells = [...document.querySelectorAll("#results tbody td")].map(td => td.textContent);
  const maps = document.querySelectorAll("#results img").length;
  document.title = "scored " + cells[0] + " " + cells[3] + " maps " + maps + " | " +
    document.getElementById("model").textContent;
}});""")
        (tmp_path / "probe.html").write_text(probe, encoding="utf-8")
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-web-security", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
                   "--dump-dom", (tmp_path / "probe.html").as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r"<title>scored (.*?)</title>", result.stdout)
    assert match, result.stderr[-2000:]
    assert match.group(1).startswith("bright.png outlier maps 1 | Model model.vae: VAEDetector (image)")


def test_the_command_line_serves_on_localhost_by_default():
    from click.testing import CliRunner

    from vaedetect.cli import main

    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--host" in help_text and "127.0.0.1" in help_text and "413" in help_text
    assert Path(__file__).parent.joinpath("..", "vaedetect", "serve_page.html").is_file()


def test_a_threshold_that_flags_nothing_is_described_as_json_can_hold_it(pixel_model, tmp_path):
    import copy

    pytest.importorskip("onnxruntime")
    detector, _ = pixel_model
    unreachable = copy.deepcopy(detector)
    with pytest.warns(UserWarning, match="nothing will be flagged"):
        unreachable.set_threshold(fpr=1e-6)  # too few calibration scores for that rate: the threshold is -inf
    unreachable.export_onnx(tmp_path / "strict.onnx")  # a model file draws it again at load; an export keeps it
    with running(tmp_path / "strict.onnx") as url:
        status, model = _request(f"{url}/model")
    assert status == 200 and model["threshold"] == "-inf"
