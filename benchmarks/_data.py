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


def cifar10_tar(split: str, path=None) -> Path:
    """The tar file of CIFAR-10's ``split`` ("train" or "test"); a ``FileNotFoundError`` naming it when absent."""
    archive_path = data_dir(path) / "cifar10" / f"cifar10-{split}.tar"
    if not archive_path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file {archive_path} not found; pass --data-dir or set VAEDETECT_DATA.")
    return archive_path


def extract_cifar10(split: str, destination: Path, *, label: str | None = None, path=None) -> Path:
    """Unpack CIFAR-10's ``split`` (only class ``label``'s photos when given) into ``destination``, as the JPEG
    folders a user would point ``vaedetect`` at; returns ``destination/split`` (``/label``)."""
    import tarfile

    with tarfile.open(cifar10_tar(split, path)) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and (label is None or Path(m.name).parent.name == label)]
        archive.extractall(destination, members=members, filter="data")
    return Path(destination) / split / (label or "")


def load_cifar10(split: str, classes=None, path=None, limit_per_class=None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 photos of ``split`` ("train" or "test") straight from the tar file, without unpacking.

    Returns images (n, 32, 32, 3) uint8 and their class names, ordered by class then file name;
    ``classes`` keeps only those classes, ``limit_per_class`` the first so many files of each.
    Raises ``FileNotFoundError`` naming the missing tar file.
    """
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(cifar10_tar(split, path)) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".jpg")),
                         key=lambda m: m.name)
        by_class: dict[str, list] = {}
        for member in members:
            label = Path(member.name).parent.name
            if classes is None or label in classes:
                by_class.setdefault(label, []).append(member)
        images, labels = [], []
        for label in sorted(by_class):
            for member in by_class[label][:limit_per_class]:
                with Image.open(io.BytesIO(archive.extractfile(member).read())) as image:
                    images.append(np.asarray(image.convert("RGB")))
                labels.append(label)
    return np.stack(images), np.asarray(labels)
