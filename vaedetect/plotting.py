"""Pictures of what the detector sees. matplotlib is imported inside each function, never at import."""

from __future__ import annotations

import numpy as np


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5, min_side: int = 128) -> np.ndarray:
    """Blend an anomaly map over its image, as an RGB uint8 array.

    Parameters
    ----------
    image : ndarray of shape (H, W, C), uint8
        The image as decoded for the model (C is 1 or 3).
    heat : ndarray of shape (H, W)
        Anomaly map (e.g. from ``VAEDetector.anomaly_map``); scaled to its own range, so the colours
        show where in this image the model is most surprised, not how anomalous the image is overall.
    alpha : float, default=0.5
        Weight of the heat map.
    min_side : int, default=128
        Small images are enlarged (nearest neighbour) to at least this many pixels per side.

    Returns
    -------
    overlay : ndarray of shape (H', W', 3), uint8
    """
    from matplotlib import colormaps

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    span = float(heat.max() - heat.min())
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat, dtype=float)
    colours = colormaps["inferno"](scaled)[..., :3] * 255.0
    overlay = np.rint((1 - alpha) * rgb + alpha * colours).clip(0, 255).astype(np.uint8)
    factor = max(1, int(np.ceil(min_side / max(1, min(overlay.shape[:2])))))
    return overlay.repeat(factor, axis=0).repeat(factor, axis=1)
