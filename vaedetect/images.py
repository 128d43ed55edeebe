"""Image files: discovery in folders, decoding and preprocessing, and batched streaming for scoring.

Every image is decoded the same way for training and scoring: EXIF orientation applied, any PIL mode
converted to the model's channels, the short side resized to ``image_size`` and the centre cropped to
a square, as in the SharpVAE tutorial. A file that cannot be decoded is reported with its reason and
skipped, never a crash and never a silent drop.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NOT_REGULAR = "not a regular file (a broken link, a pipe or a device)"
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
# Image files that are found but not decoded here: reported with the reason, never silently dropped.
UNSUPPORTED_EXTENSIONS = (".avif", ".heic", ".heif", ".jxl", ".jp2", ".j2k", ".psd", ".svg", ".eps", ".ps",
                          ".pdf", ".ico", ".dng", ".cr2", ".nef", ".arw")
# The formats PIL may open, whatever a file's name says: raster formats it decodes itself. Others
# (PostScript through Ghostscript, for one) would hand a hostile file to an external program.
# The JPEG opener also reads cameras' multi-picture JPEGs, as format "MPO".
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


@dataclass(frozen=True)
class Skipped:
    """A file that was found but not used, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover_images` found: image files to decode, entries skipped with a reason, and
    the paths that were searched. Unpacks as ``files, skipped = discover_images(...)``."""

    files: list[str]
    skipped: list[Skipped]
    roots: tuple[str, ...] = ()

    def __iter__(self):
        return iter((self.files, self.skipped))

    def entries(self) -> list[str]:
        """Every entry, files and skipped ones alike, sorted by path: the rows of a score table."""
        return sorted({*self.files, *(s.path for s in self.skipped)})

    def subset(self, entries) -> Discovery:
        """The files and skipped entries among ``entries`` (e.g. one shard of :meth:`entries`).

        Scoring each part of a split of :meth:`entries` gives the rows of scoring the whole, skipped
        entries reported again with their reason: how shards and Dask partitions are cut.
        """
        keep = set(entries)
        return Discovery([f for f in self.files if f in keep], [s for s in self.skipped if s.path in keep], self.roots)


# ------------------------------------------------------------------ discovery


def discover_images(paths, *, follow_links: bool = False) -> Discovery:
    """Find image files under ``paths`` (folders, searched recursively, or single files).

    Parameters
    ----------
    paths : str, path-like, or sequence of them
        A named file is taken whatever its extension (decoding will tell if it is an image); in
        folders, files with an extension of :data:`IMAGE_EXTENSIONS` (any case) are taken.
    follow_links : bool, default=False
        Follow symbolic links inside the folders wherever they point. By default a link is followed
        only when its target lies inside the folder being searched; one that leads out of it (``ln -s /
        photos/root``) is reported as skipped, so that a search never wanders over the file system.

    Returns
    -------
    discovery : Discovery
        ``files``, sorted and without duplicates, and ``skipped``: folders that could not be listed,
        entries that are not regular files, links out of the folder, folders named like image files
        and image files of a format not decoded here (:data:`UNSUPPORTED_EXTENSIONS`), each with the
        reason.

    Raises
    ------
    FileNotFoundError
        Naming the first path that does not exist.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files, skipped = set(), []
    for path in map(Path, paths):
        if path.is_dir():
            files.update(_walk(path, skipped, follow_links))
        elif path.is_file():
            files.add(str(path))
        elif path.exists() or path.is_symlink():
            skipped.append(Skipped(str(path), _NOT_REGULAR))
        else:
            raise FileNotFoundError(f"Path {str(path)!r} does not exist.")
    return Discovery(sorted(files), skipped, tuple(str(p) for p in paths))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk(root: Path, skipped: list[Skipped], follow_links: bool):
    """Files with image extensions under ``root``; links out of ``root`` only with ``follow_links``,
    and never a folder twice (a link back to a folder already visited)."""
    real_root = os.path.realpath(root)
    seen_dirs = set()

    def on_error(error: OSError):
        skipped.append(Skipped(str(error.filename), f"cannot list folder: {error.strerror or error}"))

    def leads_out(path: str) -> bool:
        if follow_links or not os.path.islink(path):
            return False
        target = os.path.realpath(path)
        if _inside(target, real_root):
            return False
        skipped.append(Skipped(path, f"a symbolic link out of the folder (to {target}); not followed "
                                     "(--follow-links, or follow_links=True, to follow it)"))
        return True

    for folder, dirs, names in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_dirs:  # a symlink back to a folder already visited: do not descend again
            dirs.clear()
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not leads_out(os.path.join(folder, d)))
        for name in dirs:
            if name.lower().endswith(IMAGE_EXTENSIONS + UNSUPPORTED_EXTENSIONS):
                skipped.append(Skipped(os.path.join(folder, name),
                                       "a folder named like an image file, not an image (its contents are searched)"))
        for name in names:
            path = os.path.join(folder, name)
            lower = name.lower()
            if lower.endswith(UNSUPPORTED_EXTENSIONS):
                skipped.append(Skipped(path, f"format {os.path.splitext(lower)[1]!r} is not decoded here; "
                                             f"convert it to one of {', '.join(IMAGE_EXTENSIONS)}"))
            elif lower.endswith(IMAGE_EXTENSIONS) and not leads_out(path):
                if os.path.isfile(path):
                    yield path
                else:  # opening a named pipe would block forever; a broken link cannot be read
                    skipped.append(Skipped(path, _NOT_REGULAR))


# ------------------------------------------------------------------ decoding


def load_image(path, image_size: int, channels: int) -> np.ndarray:
    """Decode one file (a path, or an ``io.BytesIO`` of its bytes) to a ``(image_size, image_size, channels)``
    uint8 array.

    Only the raster formats of :data:`PIL_FORMATS` are opened, whatever the file's name. An image
    of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 89 million, where PIL warns of a
    possible decompression bomb) is refused from its header, before it is decoded, which bounds the
    memory one file can take (docs/guide/security.md); raise that limit to accept larger images.

    Raises
    ------
    ValueError
        With the reason (not an image, truncated, decompression bomb, ...), for the caller to report.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL warns on truncated EXIF data and the like; the image itself decodes fine. Its warning
            # of a possible decompression bomb is no such case: it becomes the error that refuses it.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PIL_FORMATS) as image:
                if image.format in ("JPEG", "MPO"):
                    # decode at a reduced scale in the DCT: a 12-megapixel photo costs a fraction
                    image.draft("RGB" if channels == 3 else "L", (image_size, image_size))
                image.load()
                ImageOps.exif_transpose(image, in_place=True)  # a copy only when there is a turn to make
                image = _to_channels(_reduce_large(image, image_size), channels)
                image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BILINEAR)
                return np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"refused as a possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        if (path.getbuffer().nbytes if isinstance(path, io.BytesIO) else Path(path).stat().st_size) == 0:
            raise ValueError("empty file") from None
        raise ValueError(f"not an image file of a format read here ({', '.join(PIL_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError) as error:
        # PIL reports truncated and corrupt files with these
        raise ValueError(f"cannot decode image: {error}") from None


# Images above this many pixels are box-filtered down (to at least twice ``image_size`` on the short
# side) before any mode conversion, so that the conversions, each a full copy, run on a small image.
_REDUCE_ABOVE_PIXELS = 2**24
_REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "YCbCr", "La", "RGBa"}


def _reduce_large(image, image_size: int):
    factor = min(image.size) // (2 * image_size)
    if image.width * image.height <= _REDUCE_ABOVE_PIXELS or factor < 2 or image.mode not in _REDUCIBLE_MODES:
        return image
    return image.reduce(factor)


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


def load_images(paths, image_size: int, channels: int, num_workers: int = 0, batch_size: int = 64,
                progress: bool = False):
    """Decode ``paths`` into one uint8 array ``(n, image_size, image_size, channels)``; with ``progress``, a bar
    labelled "decoding" on stderr.

    Returns
    -------
    images : ndarray
    used : list of str
        Paths of the decoded images, in the order of ``images``.
    skipped : list of Skipped
    """
    from tqdm.auto import tqdm

    chunks, used, skipped = [], [], []
    paths = list(paths)
    with tqdm(total=len(paths), desc="decoding", unit="image", disable=not progress) as bar:
        for batch in stream_images(paths, image_size, channels, batch_size=batch_size, num_workers=num_workers):
            chunks.append(batch.images)
            used += batch.paths
            skipped += batch.skipped
            bar.update(len(batch.paths) + len(batch.skipped))
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

    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"n_jobs (worker processes decoding images; 0 decodes in this process) must be an integer "
                         f">= 0; got {num_workers!r}.")
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
