"""Lossless codecs as a measure of an image's complexity, in numpy and Pillow alone (the torch-free runtime
scores ``bits_typicality`` with them too).

The length of an image's PNG (or lossless WebP) encoding approximates the bits a generic compressor needs
for it: low for flat or smooth images, about 8 bits per value for noise (Serra et al., "Input complexity and
out-of-distribution detection with likelihood-based generative models", ICLR 2020).
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

# Images reach the networks in [-1, 1]: one of the 256 levels of an 8-bit value is 2 / 255 wide.
_BIN_WIDTH = 2.0 / 255.0
# Lossless codecs Pillow offers for the complexity score, with the settings that compress best per
# millisecond on small photos (WebP: method 2 rather than 6, nearly as small in far less time).
CODECS = {
    "png": ("PNG", {"compress_level": 9}),
    "webp": ("WEBP", {"lossless": True, "quality": 100, "method": 2}),
}


def encoded_bytes(image: np.ndarray, codec: str) -> int:
    """Bytes of one ``(H, W, C)`` uint8 image encoded by ``codec``."""
    from PIL import Image

    name, options = CODECS[codec]
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format=name, **options)
    return buffer.tell()


@functools.lru_cache(maxsize=16)
def _codec_overhead_bytes(shape: tuple[int, int, int], codec: str) -> int:
    """Bytes of a blank image of ``shape``: the header, framing and the least the codec's stream of
    that many pixels takes, paid by every image of that shape."""
    return encoded_bytes(np.zeros(shape, dtype=np.uint8), codec)


def check_codec(codec: str) -> None:
    """Raise a clear error unless ``codec`` is known and this Pillow can write it."""
    from PIL import features

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}; got {codec!r}.")
    if codec == "webp" and not features.check("webp"):
        raise ValueError("complexity_codec='webp' needs Pillow built with WebP support; use 'png'.")


def lossless_bits_per_dim(pixels: np.ndarray, codec: str = "png") -> np.ndarray:
    """Length of each image's lossless encoding by ``codec``, in bits per dimension: ``pixels`` is a
    ``(B, H, W, C)`` uint8 batch. The fixed cost of the format (the encoding of a blank image of the same
    shape) is left out, so a constant image costs about 0 bits per dimension and uniform noise about 8."""
    check_codec(codec)
    overhead = _codec_overhead_bytes(pixels.shape[1:], codec)
    bits = [8.0 * max(encoded_bytes(image, codec) - overhead, 0) for image in pixels]
    return np.asarray(bits, dtype=np.float64) / max(pixels[0].size if len(pixels) else 1, 1)


def bits_per_dim(log_likelihood_nats, n_dims: int):
    """Negative log-likelihood of 8-bit data in bits per dimension, from a density in network space.

    A density on ``[-1, 1]`` times the width of one 8-bit bin (``2 / 255``) approximates the probability
    of that bin, so ``-(log p + D log(2 / 255)) / (D log 2)`` is comparable across image sizes and with
    lossless codecs (8 bits per dimension is the cost of storing raw bytes). Works on tensors and
    numpy arrays alike.
    """
    return -(log_likelihood_nats + n_dims * math.log(_BIN_WIDTH)) / (n_dims * math.log(2.0))
