"""Readers for the benchmark data sets; the folder comes from an argument or ``VAEDETECT_DATA``."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data folder: ``path``, else ``$VAEDETECT_DATA``, else ``../shared/data`` beside the repository."""
    return Path(path or os.environ.get("VAEDETECT_DATA") or DEFAULT_DATA_DIR)


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        return np.frombuffer(file.read(), dtype=np.uint8, offset=header_bytes)


def load_mnist(path=None) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test split: images (10000, 28, 28) uint8 and labels (10000,).

    Raises ``FileNotFoundError`` naming the missing file, so callers can skip with the reason.
    """
    folder = data_dir(path) / "mnist"
    images_file, labels_file = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    for file in (images_file, labels_file):
        if not file.is_file():
            raise FileNotFoundError(f"MNIST file {file} not found; pass --data-dir or set VAEDETECT_DATA.")
    images = _read_idx(images_file, 16).reshape(-1, 28, 28)
    labels = _read_idx(labels_file, 8)
    return images, labels
