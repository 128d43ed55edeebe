"""The HTML report of a scoring run: content, escaping, bounded size, and rendering in a real browser."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vaedetect import VAEDetector
from vaedetect.report import render_report

from .conftest import TINY

EVIL_NAME = "<script>alert(1)<!--.png"


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """A detector fitted on a folder of images, and the score table of a second folder."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.RandomState(0)
    for folder, n in (("train", 30), ("new/normal", 8), ("new/odd", 4)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            image = rng.randint(0, 60, size=(12, 12, 3)).astype(np.uint8)
            if folder == "new/odd":
                image[2:10, 2:10] = 255
            Image.fromarray(image).save(root / folder / f"{i:02d}.png")
    Image.fromarray(rng.randint(0, 60, size=(12, 12, 3)).astype(np.uint8)).save(root / "new" / "odd" / EVIL_NAME)
    (root / "new" / "odd" / "broken.png").write_bytes(b"not a png")
    detector = VAEDetector(**{**TINY, "image_size": 8}).fit_paths(root / "train")
    table = detector.score_paths(root / "new")
    return detector, table, root


@pytest.fixture(scope="module")
def report_html(scored_run):
    detector, table, root = scored_run
    # top=13: every scored file gets a card, the one with the hostile name included
    return render_report(detector, table, model_path="model.vae", inputs=[str(root / "new")], top=13)


def test_report_escapes_file_names(report_html):
    assert "<script>" not in report_html
    assert "&lt;script&gt;alert(1)&lt;!--.png" in report_html


def test_report_is_self_contained(report_html):
    sources = re.findall(r'src="([^"]*)"', report_html)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    assert "http://" not in report_html and "https://" not in report_html


def test_report_summarises_the_run(scored_run, report_html):
    detector, table, _ = scored_run
    n_outliers = int(table["is_outlier"].sum())
    assert f"{len(table)} found, {len(table) - 1} scored, 1 could not be read" in report_html
    assert f"<td>{n_outliers} (" in report_html
    assert f"{detector.offset_:.6g}" in report_html
    assert "broken.png" in report_html  # listed with its reason
    n = len(detector.calibration_.scores)
    assert f"{n} scores of normal data held out from training and early stopping; the smallest reachable " \
           f"false-positive rate (and p-value) is 1/{n + 1}" in report_html


def test_thumbnails_are_limited_to_the_top_and_bottom(scored_run):
    detector, table, _ = scored_run
    page = render_report(detector, table, top=2)
    # two cards above and two below, each an image and its anomaly map
    assert len(re.findall(r'<div class="card( outlier)?">', page)) == 4
    assert page.count("<img") == 4 * 2 + 3  # plus the histogram, the maps' colour scale and the latent PCA


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium where apt can).")
    return path


def _headless(chromium, tmp_path, *arguments):
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_loads_every_image_in_headless_chromium(chromium, report_html, tmp_path):
    # a probe copy reports, once the page has loaded, how many images it has and how many decoded
    probe = report_html.replace(
        "</body>",
        "<script>addEventListener('load', () => { const images = [...document.images];"
        " document.title = 'images ' + images.length + ' decoded '"
        " + images.filter(i => i.complete && i.naturalWidth > 0).length; });</script></body>",
    )
    (tmp_path / "probe.html").write_text(probe, encoding="utf-8")
    result = _headless(chromium, tmp_path, "--virtual-time-budget=10000", "--dump-dom",
                       (tmp_path / "probe.html").as_uri())
    match = re.search(r"<title>images (\d+) decoded (\d+)</title>", result.stdout)
    assert match, result.stderr[-2000:]
    total, decoded = map(int, match.groups())
    assert total == report_html.count("<img") and decoded == total


def test_report_screenshot_in_headless_chromium_shows_content(chromium, report_html, tmp_path):
    (tmp_path / "report.html").write_text(report_html, encoding="utf-8")
    shot = tmp_path / "shot.png"
    _headless(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", (tmp_path / "report.html").as_uri())
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank page


def test_report_of_100000_files_stays_small_and_survives_vanished_files(scored_run):
    import pandas as pd

    detector = scored_run[0]
    n = 100_000
    table = pd.DataFrame({
        "path": [f"/vanished/{i % 10}/img_{i:06d}.png" for i in range(n)],
        "score": np.random.RandomState(0).normal(size=n),
        "p_value": 0.5,
        "error": "",
    })
    table.loc[:999, ["score", "error"]] = [np.nan, "truncated file"]
    table["is_outlier"] = table["score"] < 0
    page = render_report(detector, table)
    assert "100000 found, 99000 scored, 1000 could not be read" in page
    assert page.count("truncated file") == 200 and "... and 800 more." in page
    assert len(page) < 200_000  # the histogram, no thumbnails: their files are gone


def test_the_public_api_writes_the_report_and_marks_p_values_at_their_floor(scored_run, tmp_path):
    import vaedetect

    detector, table, _ = scored_run
    floor = 1 / (len(detector.calibration_.scores) + 1)
    table = table.copy()
    table.loc[table["score"].notna(), "p_value"] = floor  # as if every file scored below all calibration scores
    vaedetect.write_report(tmp_path / "r.html", detector, table, top=3)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count(f"p-value {floor:.3g}<sup") == 6  # 3 most anomalous and 3 most normal cards
    assert "is at its floor, 1/(n+1)" in page
