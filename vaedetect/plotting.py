"""Pictures of what the detector sees. matplotlib is imported inside each function, never at import."""

from __future__ import annotations

import numpy as np


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, *, scale=None, alpha: float = 0.5,
                    min_side: int = 128, colour_bar: bool = False) -> np.ndarray:
    """Blend an anomaly map over its image, as an RGB uint8 array.

    Parameters
    ----------
    image : ndarray of shape (H, W, C), uint8
        The image as decoded for the model (C is 1 or 3).
    heat : ndarray of shape (H, W)
        Anomaly map (e.g. from ``VAEDetector.anomaly_map``).
    scale : (low, high), optional
        Values shown as the coldest and the hottest colour, the same for every map drawn with them
        (``VAEDetector.map_scale_``), so that a normal image looks cool and an anomalous one hot. By
        default the map is scaled to its own range, which shows where in this image the model is
        most surprised, not how anomalous the image is.
    alpha : float, default=0.5
        Weight of the heat map.
    min_side : int, default=128
        Small images are enlarged (nearest neighbour) to at least this many pixels per side.
    colour_bar : bool, default=False
        Add a strip on the right with the colour scale, coldest at the bottom.

    Returns
    -------
    overlay : ndarray of shape (H', W', 3), uint8
    """
    from matplotlib import colormaps

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    low, high = (float(heat.min()), float(heat.max())) if scale is None else map(float, scale)
    scaled = np.clip((heat - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(heat, dtype=float)
    colours = colormaps["inferno"](scaled)[..., :3] * 255.0
    overlay = np.rint((1 - alpha) * rgb + alpha * colours).clip(0, 255).astype(np.uint8)
    factor = max(1, int(np.ceil(min_side / max(1, min(overlay.shape[:2])))))
    overlay = overlay.repeat(factor, axis=0).repeat(factor, axis=1)
    if colour_bar:
        ramp = colormaps["inferno"](np.linspace(1.0, 0.0, overlay.shape[0]))[:, :3] * 255.0
        width = max(4, overlay.shape[1] // 16)
        bar = np.rint(np.repeat(ramp[:, None, :], width, axis=1)).astype(np.uint8)
        gap = np.full((overlay.shape[0], max(1, width // 2), 3), 255, dtype=np.uint8)
        overlay = np.concatenate([overlay, gap, bar], axis=1)
    return overlay


def _axes(ax, figsize):
    """The given axes, or new ones on a new pyplot figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def as_hwc_float(images) -> np.ndarray:
    """Images in any layout vaedetect returns -> ``(n, H, W, C)`` floats in [0, 1].

    Accepts ``(n, H, W)`` grayscale, ``(n, H, W, C)`` and ``(n, C, H, W)`` with ``C`` in {1, 3};
    integer images are read as 0..255, float images as 0..1.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be (n, H, W), (n, H, W, C) or (n, C, H, W); got shape {images.shape}.")
    if images.shape[1] in (1, 3) and images.shape[3] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    scale = 255.0 if images.dtype.kind in "ui" else 1.0
    return np.clip(images.astype(np.float64) / scale, 0.0, 1.0)


def mosaic(images, *, ncols: int | None = None, padding: int = 1) -> np.ndarray:
    """Tile images row by row into one ``(rows * (H + padding) - padding, cols * (W + padding) - padding, 3)``
    RGB array in [0, 1], white between tiles (torchvision's ``make_grid``, without its outer border)."""
    import torch
    from torchvision.utils import make_grid

    tiles = torch.from_numpy(as_hwc_float(images)).permute(0, 3, 1, 2)  # grayscale becomes RGB in make_grid
    ncols = ncols or int(np.ceil(np.sqrt(len(tiles))))
    grid = make_grid(tiles, nrow=ncols, padding=padding, pad_value=1.0)
    if padding:
        grid = grid[:, padding:-padding, padding:-padding]
    return grid.permute(1, 2, 0).numpy()


def image_grid(images, *, ncols=None, title=None, ax=None):
    """Show images as one grid.

    Parameters
    ----------
    images : array-like
        ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)``, e.g. from ``VAEDetector.sample``.
    ncols : int, optional
        Images per row; about a square grid by default.
    title : str, optional
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    ax : matplotlib Axes
    """
    tiles = mosaic(images, ncols=ncols)
    # a new figure takes the grid's shape, so that a strip of images is not lost in a square of white
    height, width = tiles.shape[:2]
    ax = _axes(ax, (6, min(6.0, max(1.5, 6 * height / width)) + (0.4 if title else 0.0)))
    ax.imshow(tiles, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def reconstruction_grid(originals, reconstructions, *, ncols=8, ax=None):
    """Originals and their reconstructions in alternating rows (originals above).

    Parameters
    ----------
    originals, reconstructions : array-like
        Images of the same shape, e.g. ``X`` and ``VAEDetector.reconstruct(X)``.
    ncols : int, default=8
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
    """
    originals, reconstructions = as_hwc_float(originals), as_hwc_float(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions {reconstructions.shape} differ in shape.")
    rows = []
    for start in range(0, len(originals), ncols):
        chunk = slice(start, start + ncols)
        blank = np.ones((ncols - len(originals[chunk]), *originals.shape[1:]))
        rows += [np.concatenate([originals[chunk], blank]), np.concatenate([reconstructions[chunk], blank])]
    ax = image_grid(np.concatenate(rows), ncols=ncols, ax=ax)
    ax.set_title("originals (odd rows) and reconstructions (even rows)")
    return ax


def interpolation_strip(path, *, ax=None):
    """A latent interpolation (``VAEDetector.interpolate``) as one row of images.

    Returns
    -------
    ax : matplotlib Axes
    """
    ax = _axes(ax, (1.2 * len(path), 1.6))
    return image_grid(path, ncols=len(path), ax=ax)


def _label_text(label) -> str:
    """A legend label shown as written: any bytes of a folder name, and ``$`` never read as mathtext."""
    from ._files import printable

    return printable(label).replace("$", r"\$")


def latent_scatter(coordinates, *, labels=None, scores=None, outliers=None, ax=None):
    """Scatter of 2-D latent coordinates (e.g. from ``VAEDetector.latent_pca``).

    Parameters
    ----------
    coordinates : array-like of shape (n, 2)
    labels : array-like of shape (n,), optional
        Categories (e.g. sub-folder names), one colour each, with a legend.
    scores : array-like of shape (n,), optional
        Colour by score instead, with a colour bar (used when ``labels`` is None).
    outliers : array-like of bool, shape (n,), optional
        Samples to ring in black.
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
    """
    coordinates = np.asarray(coordinates, dtype=float)
    if coordinates.ndim != 2 or coordinates.shape[1] < 2:
        raise ValueError(f"coordinates must have shape (n, 2); got {coordinates.shape}.")
    ax = _axes(ax, (6, 5))
    x, y = coordinates[:, 0], coordinates[:, 1]
    size = 8 if len(coordinates) <= 2000 else 3
    handles = []
    if labels is not None:
        from matplotlib import colormaps
        from matplotlib.lines import Line2D

        names, codes = np.unique(np.asarray([_label_text(label) for label in labels], dtype=str),
                                 return_inverse=True)
        palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
        colours = palette(codes % palette.N)
        # one call in random order: drawn class by class, the last class would hide the others
        order = np.random.RandomState(0).permutation(len(coordinates))
        ax.scatter(x[order], y[order], s=size, c=colours[order], alpha=0.7)
        handles = [Line2D([], [], marker="o", linestyle="", color=palette(i % palette.N), label=name)
                   for i, name in enumerate(names)]
    elif scores is not None:
        points = ax.scatter(x, y, s=size, c=np.asarray(scores, dtype=float), cmap="viridis")
        ax.figure.colorbar(points, ax=ax, label="score (higher = more normal)")
    else:
        ax.scatter(x, y, s=size, alpha=0.7)
    if outliers is not None:
        outliers = np.asarray(outliers, dtype=bool)
        # black: no colour of the tab10/tab20 palettes the classes are drawn in
        handles.append(ax.scatter(x[outliers], y[outliers], s=40, facecolors="none", edgecolors="black",
                                  linewidths=1.0, label="outlier"))
    if handles:
        ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_xlabel("latent PC 1")
    ax.set_ylabel("latent PC 2")
    return ax


def training_curves(history, *, ax=None):
    """Training and validation loss per epoch, from ``VAEDetector.history_``.

    Returns
    -------
    ax : matplotlib Axes
    """
    ax = _axes(ax, (6, 4))
    ax.plot(history["epoch"], history["loss"], label="training loss")
    if "val_loss" in history:
        ax.plot(history["epoch"], history["val_loss"], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per sample)" if "kl" in history and "mse" not in history else "loss")
    ax.legend()
    return ax


def score_histogram(scores, *, threshold=None, labels=None, bins=50, ax=None):
    """Histogram of scores, with the outlier threshold as a vertical line.

    Parameters
    ----------
    scores : array-like of shape (n,)
    threshold : float, optional
        E.g. ``VAEDetector.offset_``; scores below it are outliers. Drawn as a line where it lies
        within half the scores' span of them; further out (a threshold of -1000 beside scores near
        0) an arrow at that edge of the plot names it and how many scores lie below it, so that the
        scores keep the whole width.
    labels : array-like of shape (n,), optional
        One histogram per category, overlaid.
    bins : int, default=50
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
    """
    scores = np.asarray(scores, dtype=float)
    finite = np.isfinite(scores)
    ax = _axes(ax, (6, 4))
    # a long tail of very anomalous scores would squeeze the bulk into one bar: bin the range from
    # the 1st percentile up and say how many lie further out
    low, high = np.quantile(scores[finite], 0.01), scores[finite].max()
    threshold_at = _threshold_position(threshold, low, high)
    if threshold_at == "inside":  # near the scores: widen the bins to it
        low, high = min(low, threshold), max(high, threshold)
    edges = np.histogram_bin_edges(scores[finite], bins=bins, range=(low, high))
    n_below = int(np.sum(scores[finite] < low))
    if n_below:
        ax.text(0.01, 0.98, f"{n_below} lower scores off the left edge", transform=ax.transAxes, va="top",
                fontsize="small")
    if labels is None:
        ax.hist(scores[finite], bins=edges, color="tab:blue", alpha=0.8)
    else:
        labels = np.asarray(labels)
        for label in np.unique(labels):
            ax.hist(scores[finite & (labels == label)], bins=edges, alpha=0.5, label=str(label))
    if threshold_at == "inside":
        ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.4g}")
    elif threshold_at is not None:
        # far from every score: drawn to scale it would squeeze the scores into one bar
        left, n_flagged = threshold_at == "left", int(np.sum(scores[finite] < threshold))
        ax.annotate(f"threshold {threshold:.4g}, off this edge\n({n_flagged} of {int(finite.sum())} scores below it)",
                    xy=(0.0 if left else 1.0, 0.8),
                    xytext=(0.04 if left else 0.96, 0.8), xycoords="axes fraction", textcoords="axes fraction",
                    ha="left" if left else "right", va="center", fontsize="small", color="red",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85},
                    arrowprops={"arrowstyle": "->", "color": "red"})
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper right")
    ax.set_xlabel("score (higher = more normal)")
    ax.set_ylabel("count")
    return ax


def _threshold_position(threshold, low, high):
    """Where a histogram of scores binned over ``[low, high]`` shows ``threshold``: None (no finite
    threshold), "inside" (within half the scores' span of them: the bins widen to it), or "left" /
    "right" of the bins (marked at that edge)."""
    if threshold is None or not np.isfinite(threshold):
        return None
    margin = max(high - low, 1e-9 * max(abs(low), abs(high)), 1e-12) / 2
    if threshold < low - margin:
        return "left"
    if threshold > high + margin:
        return "right"
    return "inside"


def roc_curve(is_anomaly, scores, *, ax=None):
    """ROC curve of flagging low scores as anomalies, with its area in the legend.

    Parameters
    ----------
    is_anomaly : array-like of bool, shape (n,)
        True for the known anomalies.
    scores : array-like of shape (n,)
        Higher = more normal, as ``score_samples`` returns.
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
    """
    from sklearn.metrics import RocCurveDisplay

    is_anomaly, scores = np.asarray(is_anomaly, dtype=bool), np.asarray(scores, dtype=float)
    ax = _axes(ax, (5, 5))
    # anomalies are the positive class, and low scores are anomalous: rank by -score
    display = RocCurveDisplay.from_predictions(is_anomaly, -scores, ax=ax, plot_chance_level=True,
                                               chance_level_kw={"color": "grey", "linestyle": ":", "label": None})
    display.line_.set_label(f"ROC AUC {display.roc_auc:.3f}")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(loc="lower right")
    return ax


def anomaly_overlays(images, maps, *, scale=None, ncols=None, ax=None):
    """Each image with its anomaly map (``VAEDetector.anomaly_map``) blended over it, as one grid.

    ``scale`` (e.g. ``VAEDetector.map_scale_``) gives every map the same colours; see
    :func:`heatmap_overlay`.

    Returns
    -------
    ax : matplotlib Axes
    """
    tiles = as_hwc_float(images)
    maps = np.asarray(maps, dtype=float)
    if maps.shape != tiles.shape[:3]:
        raise ValueError(f"maps must have shape {tiles.shape[:3]} (one (H, W) map per image); got {maps.shape}.")
    pixels = np.rint(tiles * 255).astype(np.uint8)
    overlays = np.stack([heatmap_overlay(image, heat, scale=scale, min_side=1) for image, heat in zip(pixels, maps)])
    return image_grid(overlays, ncols=ncols, ax=ax)
