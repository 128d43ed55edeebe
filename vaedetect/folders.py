"""Image files in and out: scoring folders in streamed batches, reading and calibrating on files the way a
detector reads them, and writing anomaly-map overlays.

:class:`FolderMixin` gives ``VAEDetector`` these methods (``fit_paths`` is the estimator's); discovery and
decoding are in :mod:`vaedetect.images`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import schema
from ._files import map_name, write_atomically
from .data import InputLayout, images_from_unit_range, images_to_unit_range
from .images import Discovery, discover_images, load_images, stream_images
from .inference import InferenceMixin
from .modality import requires
from .plotting import heatmap_overlay


def write_overlays(folder, paths, images, heat_maps, scale) -> dict[str, str]:
    """Save one heat-map overlay PNG per image, all on the colour ``scale``; return {source path: overlay path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for path, image, heat in zip(paths, images, heat_maps):
        target = folder / map_name(path)
        overlay = Image.fromarray(heatmap_overlay(image, heat, scale=scale, colour_bar=True))
        write_atomically(target, lambda tmp: overlay.save(tmp, format="PNG"))  # never through a link placed there
        written[path] = str(target)
    return written


def discovered(paths, follow_links):
    """``paths`` searched for image files, unless they are a :class:`~vaedetect.images.Discovery` already."""
    return paths if isinstance(paths, Discovery) else discover_images(paths, follow_links=follow_links)


def as_list(paths):
    if isinstance(paths, Discovery):
        return list(paths.roots)
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def describe(paths) -> str:
    return ", ".join(repr(str(p)) for p in as_list(paths))


class FolderMixin(InferenceMixin):
    """Scoring and reading image files (mixed into ``VAEDetector``); available for detectors that take images."""

    @requires("images")
    def score_paths(self, paths, *, n_jobs=0, maps_dir=None, follow_links=False, progress=False):
        """Score every image file under ``paths``, streaming in batches so memory stays bounded.

        Parameters
        ----------
        paths : str, path-like, sequence of them, or vaedetect.images.Discovery
            Folders (searched recursively) and single image files, or what
            ``vaedetect.images.discover_images`` found in them.
        n_jobs : int, default=0
            Worker processes decoding images; 0 decodes in this process.
        maps_dir : str or path-like, optional
            Write a heat-map overlay (``anomaly_map`` over the image) as PNG here for every file
            flagged as an outlier, and add a ``map`` column with its path. Needs the pixel model (a
            detector without ``backbone``).
        follow_links : bool, default=False
            Follow symbolic links that lead out of the folders (see
            ``vaedetect.images.discover_images``); by default they are skipped and reported.
        progress : bool, default=False
            Show a progress bar of the files scored on stderr.

        Returns
        -------
        table : pandas.DataFrame
            One row per file found, sorted by path, with the columns of :mod:`vaedetect.schema`: ``path``,
            ``score`` (higher = more normal; NaN where the file failed; -inf where the model could not
            evaluate it), ``p_value`` (see :meth:`p_values`), ``is_outlier`` (score below ``offset_``),
            ``error`` (empty, or why the file could not be scored) and, with ``maps_dir``, ``map``. File
            names are kept as Python holds them (bytes that are not UTF-8 as lone surrogates, which ``open``
            takes back); ``vaedetect score`` writes them as text.
        """
        if maps_dir is not None and not hasattr(self, "anomaly_map"):
            raise ValueError(f"maps_dir: anomaly maps need the pixel model; this detector models "
                             f"{self.modality_.describe()}.")
        channels, side = self.modality_.file_geometry()
        files, unreadable = discovered(paths, follow_links)
        rows = [(s.path, np.nan, s.reason) for s in unreadable]
        maps = {}
        bar = tqdm(total=len(files), desc=f"scoring ({self.modality_.name})", unit="image", disable=not progress)
        for batch in stream_images(files, side, channels, batch_size=self._inference_batch_size(), num_workers=n_jobs):
            bar.update(len(batch.paths) + len(batch.skipped))
            x = self.modality_.files_to_network(batch.images) if len(batch.paths) else None
            scores = self._score_tensor(x) if x is not None else []
            rows += [(path, score, "") for path, score in zip(batch.paths, scores)]
            rows += [(s.path, np.nan, s.reason) for s in batch.skipped]
            flagged = np.flatnonzero(scores < self.offset_) if maps_dir is not None and x is not None else []
            if len(flagged):  # a batch with nothing flagged has no maps to draw
                heat = self._anomaly_map_tensor(x[flagged]).sum(axis=1)
                heat = heat if self.map_baseline_ is None else heat - self.map_baseline_  # older files lack it
                maps.update(write_overlays(maps_dir, [batch.paths[i] for i in flagged], batch.images[flagged], heat,
                                           self.map_scale_))
        bar.close()
        rows.sort(key=lambda row: row[0])
        paths, scores, errors = zip(*rows) if rows else ((), (), ())
        values = {"path": paths, "score": scores, "error": errors, "map": [maps.get(path, "") for path in paths]}
        return schema.build(values, self.calibration_, maps=maps_dir is not None)

    def _file_geometries(self) -> list[tuple[int, int]]:
        """``(channels, side)`` each image file is decoded to for this detector (one model, one geometry)."""
        return [self.modality_.file_geometry()]

    def _score_decoded(self, images):
        """Scores of image files decoded at ``_file_geometries()`` (``(n, side, side, C)`` uint8), as
        ``score_paths`` scores them."""
        return self._score_tensor(self.modality_.files_to_network(images))

    @requires("images")
    def read_images(self, paths, *, n_jobs=0, follow_links=False):
        """Decode image files the way this detector reads them, into the layout given to ``fit``.

        Parameters
        ----------
        paths : str, path-like or sequence of them
            Folders (searched recursively) and single image files.
        n_jobs : int, default=0
            Worker processes decoding images; 0 decodes in this process.
        follow_links : bool, default=False
            Follow symbolic links that lead out of the folders (see
            ``vaedetect.images.discover_images``).

        Returns
        -------
        X : ndarray
            The decoded images, ready for every method that takes ``X``.
        used : list of str
            The path of each image in ``X``.
        skipped : list of vaedetect.images.Skipped
            Files that could not be read, with the reason.
        """
        channels, side = self.modality_.file_geometry()
        files, unreadable = discovered(paths, follow_links)
        images, used, skipped = load_images(files, side, channels, num_workers=n_jobs)
        layout = self.modality_.input_layout
        decoded = InputLayout("image", "nhwc", True, layout.shape)
        X = images_from_unit_range(images_to_unit_range(images, decoded), layout)
        return X, used, unreadable + skipped

    @requires("images")
    def calibrate_paths(self, paths, *, n_jobs=0, follow_links=False):
        """:meth:`calibrate` on the normal image files under ``paths``, read as :meth:`read_images` reads them.

        Files that cannot be read are skipped; ``skipped_files_`` lists them and ``len(calibration_)`` says how
        many calibrate.

        Returns
        -------
        self : VAEDetector
        """
        X, _, skipped = self.read_images(paths, n_jobs=n_jobs, follow_links=follow_links)
        if not len(X):
            raise ValueError(f"None of the files in {describe(paths)} could be read as normal images to calibrate on.")
        self.skipped_files_ = skipped
        return self.calibrate(X)
