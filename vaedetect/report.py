"""A scoring run as one self-contained HTML page: summary, score histogram, the most anomalous and the
most normal images (with their anomaly maps), and the latent PCA.

Everything is embedded (PNG data URIs, inline CSS, no scripts), so the file opens from disk with no
network. Its size is bounded whatever the number of files scored: thumbnails are drawn only for the
``top`` most anomalous and most normal files, the PCA for a sample of at most ``pca_sample`` files,
and at most ``max_errors`` unreadable files are listed.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from ._files import printable, write_atomically
from .plotting import as_hwc_float, heatmap_overlay, latent_scatter, score_histogram

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table.summary td { padding: 2px 12px 2px 0; vertical-align: top; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { width: 212px; border: 1px solid #ddd; border-radius: 4px; padding: 6px; font-size: 0.8em; }
.card img { width: 100px; height: 100px; image-rendering: pixelated; }
.card .path { overflow-wrap: anywhere; color: #555; }
.outlier { border-color: #c00; }
img.plot { max-width: 100%; }
img.scale { width: 200px; height: 12px; vertical-align: middle; }
"""


# Beside a p-value at its floor, 1 / (n + 1): the file scored below every calibration score, so its
# p-value says "at most this", not how far below it lies (the summary states n).
_FLOOR_MARK = '<sup title="the smallest p-value n calibration scores allow: below all of them">*</sup>'


def _cards_legend(detector, table) -> str:
    """What the cards show: each image beside its anomaly map, or, for a model without pixels, alone; and for
    a combined detector which evidence flagged it."""
    if not hasattr(detector, "anomaly_map"):
        legend = (f"The model scores {_escape(detector.modality_.describe())} computed from each image (its content), "
                  "which have no per-pixel costs to map.")
    else:
        legend = f"Each image beside its anomaly map: brighter where the model explains the image worse. {_map_legend(detector)}"
    if "evidence" in table.columns:
        legend += (" <i>flagged by</i> names the evidence below the threshold: <i>pixels</i> (how the image is made: "
                   "noise, blur, colours, damage), <i>features</i> (what it shows).")
    return legend


def _map_legend(detector) -> str:
    """What the maps' colours mean: one scale for all (the model's ``map_scale_``), or each its own."""
    scale = detector.map_scale_
    if scale is None:
        return "Each map is scaled to its own range (this model file predates a shared scale)."
    from matplotlib import colormaps

    ramp = np.rint(colormaps["inferno"](np.linspace(0.0, 1.0, 200))[None, :, :3] * 255).astype(np.uint8)
    return (f"A map shows each pixel's cost above the mean cost at that place in the calibration images, on one "
            f"colour scale for all: from none (dark; what normal images cost there) to {scale[1]:.3g} nats, the "
            f"calibration images' 99.9th percentile (bright) "
            f'{_img(_png_data_uri(np.repeat(ramp, 12, axis=0)), "colour scale, dark to bright", "scale")}.')


def _png_data_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_data_uri(ax) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _escape(value) -> str:
    """HTML text of ``value``: file names of any bytes, control characters shown, markup escaped."""
    return html.escape(printable(value), quote=True)


def _img(uri: str, alt: str, css_class: str = "") -> str:
    css = f' class="{css_class}"' if css_class else ""
    return f'<img{css} src="{uri}" alt="{_escape(alt)}">'


def _read_still_present(detector, paths):
    """Decode the files among ``paths`` that still exist; files moved or deleted since they were
    scored are left out rather than stopping the report."""
    present = [path for path in paths if Path(path).is_file()]
    if not present:
        return np.empty((0,)), []
    X, used, _ = detector.read_images(present)
    return X, used


def _thumbnails(detector, rows) -> list[str]:
    """One card per row of the score table: the image, its anomaly map, path, score and p-value."""
    X, used = _read_still_present(detector, list(rows["path"]))
    if not len(X):
        return []
    floor = detector.calibration_.smallest_rate + 1e-12  # the smallest p-value there is
    # a model of backbone features has no pixel costs to map
    maps = detector.anomaly_map(X, relative=True) if hasattr(detector, "anomaly_map") else None
    pixels = np.rint(as_hwc_float(X) * 255).astype(np.uint8)
    position = {path: i for i, path in enumerate(used)}
    cards = []
    for row in rows.itertuples(index=False):
        if row.path not in position:
            continue  # the file changed or vanished since it was scored
        i = position[row.path]
        image = pixels[i] if pixels.shape[-1] == 3 else np.repeat(pixels[i], 3, axis=-1)
        name = Path(row.path).name
        pictures = _img(_png_data_uri(image), name)
        if maps is not None:
            overlay = heatmap_overlay(pixels[i], maps[i], scale=detector.map_scale_, min_side=1)
            pictures += f" {_img(_png_data_uri(overlay), 'anomaly map of ' + name)}"
        cards.append(
            f'<div class="card{" outlier" if row.is_outlier else ""}">{pictures}'
            f"<div>score {row.score:.4g}, p-value {row.p_value:.3g}{_FLOOR_MARK if row.p_value <= floor else ''}"
            f"{' &middot; <b>outlier</b>' if row.is_outlier else ''}"
            f"{' (flagged by ' + _escape(row.evidence) + ')' if getattr(row, 'evidence', '') else ''}"
            f'</div><div class="path">{_escape(row.path)}</div></div>'
        )
    return cards


def _latent_pca_figure(detector, scored, pca_sample: int, random_state: int) -> str | None:
    if len(scored) < 3:
        return None
    rng = np.random.RandomState(random_state)
    sample = scored.iloc[np.sort(rng.choice(len(scored), size=min(pca_sample, len(scored)), replace=False))]
    X, used = _read_still_present(detector, list(sample["path"]))
    if len(X) < 3:
        return None
    _, coordinates = detector.latent_pca(X, n_components=2)
    outlier = dict(zip(sample["path"], sample["is_outlier"]))
    ax = latent_scatter(coordinates, labels=[Path(p).parent.name for p in used],
                        outliers=[bool(outlier[p]) for p in used])
    ax.set_title(f"latent means of {len(X)} scored images, coloured by folder; outliers ringed")
    return _figure_data_uri(ax)


def _score_method(detector) -> str:
    method = detector.calibration_.score_method
    if method == "combined":
        return ("combined: the smaller of the pixel model's and the feature model's log tail probabilities among normal "
                "images' scores")
    return method


def render_report(detector, table, *, model_path=None, inputs=(), threshold_note="", top=24, pca_sample=2000,
                  max_errors=200, random_state=0) -> str:
    """The HTML text of the report on ``table`` (from ``VAEDetector.score_paths``) scored by ``detector``.

    Parameters
    ----------
    detector : VAEDetector
        The fitted detector that scored the table (image model).
    table : pandas.DataFrame
        Columns ``path``, ``score``, ``p_value``, ``is_outlier``, ``error``.
    model_path : str, optional
        Shown in the summary.
    inputs : sequence of str
        The folders and files that were scored, shown in the summary.
    threshold_note : str
        How the threshold was chosen (e.g. ``"--fpr 0.01"``).
    top : int, default=24
        Thumbnails of this many most anomalous and most normal files.
    pca_sample : int, default=2000
        At most this many scored files (a random sample) go into the latent PCA.
    max_errors : int, default=200
        At most this many unreadable files are listed.
    random_state : int, default=0
        Seeds the PCA sample.

    Returns
    -------
    html : str
    """
    scored = table[table["score"].notna()]
    errors = table[table["error"] != ""]
    by_score = scored.sort_values("score", kind="stable")
    n_outliers = int(scored["is_outlier"].sum())
    summary = [
        ("model", model_path or "(in memory)"),
        ("scored", ", ".join(str(p) for p in inputs) or "(unspecified)"),
        ("score method", f"{_score_method(detector)} (higher = more normal), of {detector.modality_.describe()}"),
        ("threshold", f"{detector.offset_:.6g} ({detector.calibration_.describe_rule()}) {threshold_note}".strip()),
        ("calibration", detector.calibration_.describe()),
        ("files", f"{len(table)} found, {len(scored)} scored, {len(errors)} could not be read"),
        ("outliers", f"{n_outliers} ({n_outliers / max(len(scored), 1):.2%} of scored)"),
        ("model trained on", ", ".join(detector.training_summary_.get("paths", [])) or
         f"{detector.training_summary_.get('n_samples', '?')} samples"),
        ("written", f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} by vaedetect {__version__}"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>vaedetect report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>vaedetect report</h1>",
        '<table class="summary">',
        *(f"<tr><td><b>{_escape(k)}</b></td><td>{_escape(v)}</td></tr>" for k, v in summary),
        "</table>",
    ]
    if len(scored):
        ax = score_histogram(scored["score"].to_numpy(), threshold=detector.offset_)
        ax.set_title(f"scores of {len(scored)} files")
        parts += ["<h2>Score distribution</h2>", _img(_figure_data_uri(ax), "histogram of scores", "plot")]
        parts += [f"<h2>The {min(top, len(by_score))} most anomalous</h2>",
                  f"<p>{_cards_legend(detector, table)} "
                  "A p-value marked * is at its floor, 1/(n+1) for n calibration scores: the file scored below "
                  "all of them, so the p-value bounds how unusual it is rather than measuring it.</p>",
                  '<div class="cards">', *_thumbnails(detector, by_score.head(top)), "</div>"]
        parts += [f"<h2>The {min(top, len(by_score))} most normal, for contrast</h2>",
                  '<div class="cards">', *_thumbnails(detector, by_score.tail(top).iloc[::-1]), "</div>"]
        pca_uri = _latent_pca_figure(detector, scored, pca_sample, random_state)
        if pca_uri:
            parts += ["<h2>Latent space</h2>", _img(pca_uri, "latent PCA scatter", "plot")]
    if len(errors):
        shown = errors.head(max_errors)
        parts += [f"<h2>Files that could not be scored ({len(errors)})</h2>", "<ul>"]
        parts += [f"<li>{_escape(r.path)}: {_escape(r.error)}</li>" for r in shown.itertuples()]
        parts += ["</ul>"] + ([f"<p>... and {len(errors) - len(shown)} more.</p>"] if len(errors) > len(shown) else [])
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path, detector, table, **options) -> None:
    """Write :func:`render_report` to ``path`` (UTF-8), atomically."""
    page = render_report(detector, table, **options)
    write_atomically(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
