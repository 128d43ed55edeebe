"""Array layouts: what the user hands in, and the tensors the networks see.

Images reach the networks as float32 ``(n, C, H, W)`` tensors in ``[-1, 1]`` (the range of the
decoder's ``tanh``); tabular rows as float32 ``(n, d)`` tensors, standardised. An
:class:`InputLayout`, inferred once in ``fit``, records how to go there and back, so that
``inverse_transform`` and the reconstructions come back in the user's own layout and value range.

Layout rule for images (``C`` must be 1 or 3):

- ``(n, d)`` with ``image_shape=None``: tabular data;
- ``(n, d)`` with ``image_shape=(C, H, W)`` or ``(H, W)``: flat images, reshaped row by row;
- ``(n, H, W)``: grayscale images;
- ``(n, C, H, W)`` or ``(n, H, W, C)``: channels first or last, told apart by which axis is 1 or 3;
  an array where both could be channels (say ``(n, 3, 5, 3)``) is refused as ambiguous.

``uint8`` (and other integer) images are read as 0..255, float images as 0..1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Scaled table values are clipped to this many scale units: 10^12 squared stays finite in float64 and the network's
# float32 activations of it too (a row of 1e308 would overflow to inf and score -inf, though finite).
SCALED_LIMIT = 1e12

_CHANNEL_COUNTS = (1, 3)


@dataclass(frozen=True)
class InputLayout:
    """How the arrays given to ``fit`` map to network tensors.

    Attributes
    ----------
    kind : {"tabular", "image"}
    form : {"tabular", "flat", "nhw", "nchw", "nhwc"}
        The array layout the user gave; outputs are returned in it.
    integer : bool
        True when the images were integers read as 0..255 (outputs are then uint8).
    shape : tuple of int
        ``(d,)`` for tabular data, ``(C, H, W)`` for images.
    """

    kind: str
    form: str
    integer: bool
    shape: tuple[int, ...]

    @property
    def n_features(self) -> int:
        return int(np.prod(self.shape))

    def to_dict(self) -> dict:
        """The layout as JSON-ready fields (model files)."""
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, fields: dict) -> InputLayout:
        return cls(**{**fields, "shape": tuple(int(s) for s in fields["shape"])})


def _image_shape_from_param(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] not in _CHANNEL_COUNTS or min(shape) < 1:
        raise ValueError(
            "The 'image_shape' parameter of VAEDetector must be (C, H, W) or (H, W) with C in "
            f"{_CHANNEL_COUNTS}. Got {image_shape!r} instead."
        )
    return shape


def infer_layout(X: np.ndarray, image_shape=None) -> InputLayout:
    """Infer the :class:`InputLayout` of ``X`` (see the module docstring for the rule)."""
    integer = X.dtype.kind in "ui"
    if X.ndim == 2 and image_shape is None:
        return InputLayout("tabular", "tabular", False, (X.shape[1],))
    if X.ndim == 2:
        shape = _image_shape_from_param(image_shape)
        if X.shape[1] != int(np.prod(shape)):
            raise ValueError(
                f"X has {X.shape[1]} features per row, but image_shape={tuple(image_shape)!r} "
                f"needs {int(np.prod(shape))}."
            )
        return InputLayout("image", "flat", integer, shape)
    if X.ndim == 3:
        return InputLayout("image", "nhw", integer, (1, X.shape[1], X.shape[2]))
    if X.ndim == 4:
        first, last = X.shape[1] in _CHANNEL_COUNTS, X.shape[3] in _CHANNEL_COUNTS
        if first and last:
            raise ValueError(
                f"Image array of shape {X.shape} is ambiguous: axis 1 and axis 3 could both be "
                "channels. Pass X flattened to (n, C*H*W) together with image_shape=(C, H, W)."
            )
        if first:
            return InputLayout("image", "nchw", integer, tuple(X.shape[1:]))
        if last:
            _, h, w, c = X.shape
            return InputLayout("image", "nhwc", integer, (c, h, w))
        raise ValueError(
            f"Image array of shape {X.shape} has no channel axis of size 1 or 3 at axis 1 "
            "(n, C, H, W) or axis 3 (n, H, W, C)."
        )
    raise ValueError(
        f"X must be 2-D (tabular, or flat images with image_shape), 3-D (n, H, W) or 4-D "
        f"(n, C, H, W) / (n, H, W, C); got an array with {X.ndim} dimension(s), shape {X.shape}."
    )


def check_layout_matches(X: np.ndarray, layout: InputLayout) -> None:
    """Raise ``ValueError`` unless ``X`` has the layout the detector was fitted on."""
    expected = {
        "tabular": (layout.shape[0],),
        "flat": (layout.n_features,),
        "nhw": layout.shape[1:],
        "nchw": layout.shape,
        "nhwc": (*layout.shape[1:], layout.shape[0]),
    }[layout.form]
    if X.ndim != len(expected) + 1 or tuple(X.shape[1:]) != tuple(expected):
        if layout.form in ("tabular", "flat") and X.ndim == 2:
            raise ValueError(
                f"X has {X.shape[1]} features, but VAEDetector is expecting "
                f"{expected[0]} features as input."
            )
        raise ValueError(
            f"X has shape {X.shape}, but VAEDetector was fitted on arrays of shape "
            f"(n, {', '.join(map(str, expected))})."
        )


def check_value_range(X: np.ndarray, layout: InputLayout) -> None:
    """Refuse images whose values fall outside the range their dtype implies, and, once fitted, float
    images with fractions given to a model fitted on integer images (they would be read as 0..255)."""
    if layout.kind != "image" or X.size == 0:
        return
    if layout.integer and X.dtype.kind == "f" and not np.array_equal(X, np.round(X)):
        raise ValueError(
            f"This model was fitted on integer images, read as 0..255, but X holds fractional values in "
            f"[{X.min():.3g}, {X.max():.3g}]; float images in [0, 1] would be read as nearly black. Pass "
            "np.rint(X * 255).astype(np.uint8), or fit on float images."
        )
    low, high = (0, 255) if layout.integer else (0.0, 1.0)
    x_min, x_max = X.min(), X.max()
    if x_min < low or x_max > high:
        kind = "integer images are read as 0..255" if layout.integer else "float images must lie in [0, 1]"
        raise ValueError(
            f"Image values must lie in [{low}, {high}] ({kind}); got values in "
            f"[{x_min}, {x_max}]. Scale the images, e.g. X / X.max(), or pass uint8."
        )


def scaled_rows(values: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Table rows centred and scaled, clipped to ``SCALED_LIMIT`` scale units (far out, all alike), as float32:
    what a tabular network takes."""
    scaled = np.clip((values - mean) / scale, -SCALED_LIMIT, SCALED_LIMIT)
    return np.ascontiguousarray(scaled.astype(np.float32))


def images_to_unit_range(X: np.ndarray, layout: InputLayout) -> np.ndarray:
    """Return ``(n, C, H, W)`` float32 images in ``[-1, 1]``."""
    n = X.shape[0]
    if layout.form == "nhwc":
        X = X.transpose(0, 3, 1, 2)
    X = X.reshape(n, *layout.shape).astype(np.float32)
    scale = 255.0 if layout.integer else 1.0
    return X * (2.0 / scale) - 1.0


def images_from_unit_range(images: np.ndarray, layout: InputLayout) -> np.ndarray:
    """Invert :func:`images_to_unit_range`: ``(n, C, H, W)`` in ``[-1, 1]`` to the user's layout."""
    images = np.clip((images + 1.0) / 2.0, 0.0, 1.0)
    if layout.integer:
        images = np.rint(images * 255.0).astype(np.uint8)
    else:
        images = images.astype(np.float32)
    return arrange_like(images, layout)


def arrange_like(images: np.ndarray, layout: InputLayout) -> np.ndarray:
    """Reorder ``(n, C, H, W)`` values into the user's array layout, values unchanged."""
    n = images.shape[0]
    if layout.form == "flat":
        return images.reshape(n, -1)
    if layout.form == "nhw":
        return images[:, 0]
    if layout.form == "nhwc":
        return images.transpose(0, 2, 3, 1)
    return images


def feature_resolution(X: np.ndarray) -> np.ndarray:
    """Each column's resolution: the smallest gap between two of its distinct values (1 for integer
    counts, 0.01 for prices in cents), or NaN where the column holds one value only.

    A continuous density cannot tell apart values closer than this, so the decoder's scale of a feature
    has no business shrinking below it (:func:`vaedetect.losses.log_scale_floor`).
    """
    resolution = np.full(X.shape[1], np.nan)
    for column in range(X.shape[1]):
        gaps = np.diff(np.unique(X[:, column]))
        if len(gaps):
            resolution[column] = gaps.min()
    return resolution
