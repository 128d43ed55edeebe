"""Image files: discovery in folders, decoding and preprocessing, and batched streaming for scoring.

Every image is decoded the same way for training and scoring: EXIF orientation applied, any PIL mode
converted to the model's channels, the short side resized to ``image_size`` and the centre cropped to
a square, as in the SharpVAE tutorial. A file that cannot be decoded is reported with its reason and
skipped, never a crash and never a silent drop.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NOT_REGULAR = "not a regular file (a broken link, a pipe or a device)"
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Skipped:
    """A file that was found but not used, and why."""

    path: str
    reason: str


# ------------------------------------------------------------------ discovery


def discover_images(paths) -> tuple[list[str], list[Skipped]]:
    """Find image files under ``paths`` (folders, searched recursively, or single files).

    Parameters
    ----------
    paths : str, path-like, or sequence of them
        A named file is taken whatever its extension (decoding will tell if it is an image); in
        folders, files with an extension of :data:`IMAGE_EXTENSIONS` (any case) are taken.

    Returns
    -------
    files : list of str
        Sorted, without duplicates.
    unreadable : list of Skipped
        Folders that could not be listed, and entries that are not regular files.

    Raises
    ------
    FileNotFoundError
        Naming the first path that does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files, unreadable = set(), []
    for path in map(Path, paths):
        if path.is_dir():
            files.update(_walk(path, unreadable))
        elif path.is_file():
            files.add(str(path))
        elif path.exists() or path.is_symlink():
            unreadable.append(Skipped(str(path), _NOT_REGULAR))
        else:
            raise FileNotFoundError(f"Path {str(path)!r} does not exist.")
    return sorted(files), unreadable


def discover_entries(paths) -> list[str]:
    """Every entry of :func:`discover_images`, image files and unreadable ones alike, sorted by path.

    Splitting this list and scoring the parts (``score_paths`` on each) gives the rows of scoring it
    whole, unreadable entries reported again with their reason: how shards and Dask partitions are cut.
    """
    files, unreadable = discover_images(paths)
    return sorted({*files, *(s.path for s in unreadable)})


def _walk(root: Path, unreadable: list[Skipped]):
    """Files with image extensions under ``root``, following symbolic links but never in a loop."""
    seen_dirs = set()

    def on_error(error: OSError):
        unreadable.append(Skipped(str(error.filename), f"cannot list folder: {error.strerror or error}"))

    for folder, dirs, names in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_dirs:  # a symlink back to a folder already visited: do not descend again
            dirs.clear()
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    yield path
                else:  # opening a named pipe would block forever; a broken link cannot be read
                    unreadable.append(Skipped(path, _NOT_REGULAR))


# ------------------------------------------------------------------ decoding


def load_image(path, image_size: int, channels: int) -> np.ndarray:
    """Decode one file to a ``(image_size, image_size, channels)`` uint8 array.

    Raises
    ------
    ValueError
        With the reason (not an image, truncated, decompression bomb, ...), for the caller to report.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL warns on truncated EXIF data and the like; the image itself decodes fine.
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                if image.format == "JPEG":
                    # decode at a reduced scale in the DCT: a 12-megapixel photo costs a fraction
                    image.draft("RGB" if channels == 3 else "L", (image_size, image_size))
                image = ImageOps.exif_transpose(image)
                image = _to_channels(image, channels)
                image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BILINEAR)
                return np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)
    except Image.DecompressionBombError as error:
        raise ValueError(f"refused as a possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError) as error:
        # PIL reports truncated and corrupt files with these
        raise ValueError(f"cannot decode image: {error}") from None


def _to_channels(image, channels: int):
    """Convert any PIL mode to 8-bit grayscale (``channels=1``) or RGB (``channels=3``)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit and float data: PIL's convert("L") clips at 255; rescale the range instead
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        image = Image.fromarray(values.astype(np.uint8))  # 2-D uint8 -> mode "L"
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # transparent pixels become white, as on a page, rather than whatever colour they hide
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def load_images(paths, image_size: int, channels: int, num_workers: int = 0, batch_size: int = 64):
    """Decode ``paths`` into one uint8 array ``(n, image_size, image_size, channels)``.

    Returns
    -------
    images : ndarray
    used : list of str
        Paths of the decoded images, in the order of ``images``.
    skipped : list of Skipped
    """
    chunks, used, skipped = [], [], []
    for batch in stream_images(paths, image_size, channels, batch_size=batch_size, num_workers=num_workers):
        chunks.append(batch.images)
        used += batch.paths
        skipped += batch.skipped
    shape = (0, image_size, image_size, channels)
    images = np.concatenate(chunks) if chunks else np.empty(shape, dtype=np.uint8)
    return images, used, skipped


# ------------------------------------------------------------------ streaming


@dataclass
class ImageBatch:
    """Decoded images of one batch, their paths, and the files of the batch that failed."""

    images: np.ndarray  # (b, H, W, C) uint8
    paths: list[str]
    skipped: list[Skipped]


class _ImageFiles:
    """Map-style dataset for ``torch.utils.data.DataLoader``: index -> (path, image or None, error)."""

    def __init__(self, paths, image_size: int, channels: int):
        self.paths, self.image_size, self.channels = list(paths), image_size, channels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        try:
            return path, load_image(path, self.image_size, self.channels), None
        except ValueError as error:
            return path, None, str(error)
        except Exception as error:  # a worker must report, not die: the rest of the folder matters
            return path, None, f"{type(error).__name__}: {error}"


def _collate(items) -> ImageBatch:
    good = [(path, image) for path, image, _ in items if image is not None]
    skipped = [Skipped(path, error) for path, _, error in items if error is not None]
    images = np.stack([image for _, image in good]) if good else None
    return ImageBatch(images, [path for path, _ in good], skipped)


def stream_images(paths, image_size: int, channels: int, batch_size: int = 64, num_workers: int = 0):
    """Yield :class:`ImageBatch` es of decoded files, in order, holding one batch per worker at a time.

    Decoding runs in ``num_workers`` processes of a ``torch.utils.data.DataLoader``, so memory stays
    bounded whatever the number of files. Batches whose files all failed have ``images=None``.
    """
    from torch.utils.data import DataLoader

    paths = list(paths)
    if not paths:
        return
    loader = DataLoader(
        _ImageFiles(paths, image_size, channels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    for batch in loader:
        if batch.images is None:
            batch.images = np.empty((0, image_size, image_size, channels), dtype=np.uint8)
        yield batch
