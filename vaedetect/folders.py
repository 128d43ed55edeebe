"""Image files in and out: fitting on folders, scoring them in streamed batches, reading files the way a
detector reads them, and writing anomaly-map overlays.

:class:`FolderMixin` gives ``VAEDetector`` these methods; discovery and decoding are in
:mod:`vaedetect.images`.
"""

from __future__ import annotations

import os

import numpy as np

from .data import InputLayout, images_from_unit_range, images_to_unit_range


def _write_overlays(folder, paths, images, heat_maps, scale) -> dict[str, str]:
    """Save one heat-map overlay PNG per image, all on the colour ``scale``; return {source path: overlay path}."""
    from pathlib import Path

    from PIL import Image

    from ._files import map_name
    from .plotting import heatmap_overlay

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for path, image, heat in zip(paths, images, heat_maps):
        target = folder / map_name(path)
        Image.fromarray(heatmap_overlay(image, heat, scale=scale, colour_bar=True)).save(target)
        written[path] = str(target)
    return written


def _discovered(paths, follow_links):
    """``paths`` searched for image files, unless they are a :class:`~vaedetect.images.Discovery` already."""
    from .images import Discovery, discover_images

    return paths if isinstance(paths, Discovery) else discover_images(paths, follow_links=follow_links)


def _as_list(paths):
    from .images import Discovery

    if isinstance(paths, Discovery):
        return list(paths.roots)
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def _describe(paths) -> str:
    return ", ".join(repr(str(p)) for p in _as_list(paths))


class FolderMixin:
    """Fitting on and scoring image files (mixed into ``VAEDetector``)."""

    def fit_paths(self, paths, *, n_jobs=0, max_memory_bytes=8 * 2**30, follow_links=False):
        """Fit on the image files under ``paths``, decoded as ``image_size`` x ``image_size`` x ``channels``.

        With a ``backbone``, the files are decoded in RGB at the extractor's resolution and embedded batch
        by batch, so that memory holds their features and one batch of pixels. Files that cannot be
        decoded are skipped and listed in ``skipped_files_``.

        Parameters
        ----------
        paths : str, path-like or sequence of them
            Folders (searched recursively) and single image files.
        n_jobs : int, default=0
            Worker processes decoding images; 0 decodes in this process.
        max_memory_bytes : int, default=8 GiB
            Refuse, before decoding, a training set whose in-memory copies would need more.
        follow_links : bool, default=False
            Follow symbolic links that lead out of the folders (see
            :func:`vaedetect.images.discover_images`); by default they are skipped and reported.

        Returns
        -------
        self : VAEDetector
        """
        return self._fit_paths(paths, n_jobs=n_jobs, max_memory_bytes=max_memory_bytes, follow_links=follow_links)

    def _fit_paths(self, paths, *, n_jobs=0, max_memory_bytes=8 * 2**30, follow_links=False, world=None,
                   device=None):
        """``fit_paths``; with ``world``, each process decodes its share of the files (see ``_fit``)."""
        from .images import IMAGE_EXTENSIONS, load_images

        self._validate_params()
        files, unreadable = _discovered(paths, follow_links)
        if not files:
            raise ValueError(f"Found 0 images in {_describe(paths)} with extensions {IMAGE_EXTENSIONS}.")
        if self.backbone is not None:
            return self._fit_paths_embedded(paths, files, unreadable, n_jobs, world, device)
        # Training keeps the decoded images in memory, as uint8 and again as float32 tensors.
        needed = len(files) * self.image_size**2 * self.channels * 5
        if needed > max_memory_bytes:
            raise ValueError(
                f"Training on {len(files)} images of {self.image_size}x{self.image_size}x{self.channels} needs "
                f"about {needed / 2**30:.1f} GiB of memory, over max_memory_bytes={max_memory_bytes}; "
                "use a smaller image_size, a sample of the files, or raise max_memory_bytes."
            )
        if world is None:
            images, used, skipped = load_images(files, self.image_size, self.channels, num_workers=n_jobs)
        else:
            from .distributed import gather_decoded

            shard = load_images(files[world.rank :: world.size], self.image_size, self.channels, num_workers=n_jobs)
            images, used, skipped = gather_decoded(world, files, *shard)
        if not used:
            raise ValueError(
                f"None of the {len(files)} files found in {_describe(paths)} could be decoded; "
                f"the first, {skipped[0].path!r}: {skipped[0].reason}."
            )
        self._fit(images, world=world, device=device)
        return self._summarise_files(paths, files, unreadable + skipped)

    def _fit_paths_embedded(self, paths, files, unreadable, n_jobs, world, device):
        """``fit_paths`` with a backbone: the files' features, streamed, then the network on them."""
        self.__dict__.pop("feature_names_in_", None)
        self._load_backbone(world, device)
        side = self.backbone_.image_size
        self.input_layout_ = InputLayout("image", "nhwc", True, (3, side, side))
        self.n_features_in_ = self.input_layout_.n_features
        features, used, skipped = self.backbone_.embed_paths(files, n_jobs=n_jobs)
        if not used:
            raise ValueError(f"None of the {len(files)} files found in {_describe(paths)} could be decoded; "
                             f"the first, {skipped[0].path!r}: {skipped[0].reason}.")
        self._fit_network(features, self._features_layout(), world, device)
        return self._summarise_files(paths, files, unreadable + skipped)

    def _summarise_files(self, paths, files, skipped):
        self.skipped_files_ = skipped
        self.training_summary_.update(paths=[str(p) for p in _as_list(paths)], n_files_found=len(files),
                                      n_files_skipped=len(skipped))
        return self

    def score_paths(self, paths, *, n_jobs=0, maps_dir=None, follow_links=False, progress=False):
        """Score every image file under ``paths``, streaming in batches so memory stays bounded.

        Parameters
        ----------
        paths : str, path-like, sequence of them, or vaedetect.images.Discovery
            Folders (searched recursively) and single image files, or what
            :func:`vaedetect.images.discover_images` found in them.
        n_jobs : int, default=0
            Worker processes decoding images; 0 decodes in this process.
        maps_dir : str or path-like, optional
            Write a heat-map overlay (``anomaly_map`` over the image) as PNG here for every file
            flagged as an outlier, and add a ``map`` column with its path. Needs the pixel model (a
            detector without ``backbone``).
        follow_links : bool, default=False
            Follow symbolic links that lead out of the folders (see
            :func:`vaedetect.images.discover_images`); by default they are skipped and reported.
        progress : bool, default=False
            Show a progress bar of the files scored on stderr.

        Returns
        -------
        table : pandas.DataFrame
            One row per file found, sorted by path, with columns ``path``, ``score`` (higher = more
            normal; NaN where the file failed; -inf where the model could not evaluate it), ``p_value``
            (see :meth:`p_values`), ``is_outlier`` (score below ``offset_``) and ``error`` (empty, or why
            the file could not be scored). File names are kept as Python holds them (bytes that are not
            UTF-8 as lone surrogates, which ``open`` takes back); ``vaedetect score`` writes them as text.
        """
        import pandas as pd
        from tqdm.auto import tqdm

        from .images import stream_images

        self._check_calibrated()
        channels, height, _ = self._file_geometry("score_paths")
        if maps_dir is not None:
            self._check_fitted_on_images("score_paths(maps_dir=...)")
        files, unreadable = _discovered(paths, follow_links)
        rows = [(s.path, np.nan, s.reason) for s in unreadable]
        maps = {}
        bar = tqdm(total=len(files), desc="scoring", unit="image", disable=not progress)
        for batch in stream_images(files, height, channels, batch_size=self._inference_batch_size(), num_workers=n_jobs):
            bar.update(len(batch.paths) + len(batch.skipped))
            x = self._decoded_to_tensor(batch.images)
            scores = self._score_tensor(x) if len(x) else []
            rows += [(path, score, "") for path, score in zip(batch.paths, scores)]
            rows += [(s.path, np.nan, s.reason) for s in batch.skipped]
            flagged = np.flatnonzero(scores < self.offset_) if maps_dir is not None and len(x) else []
            if len(flagged):  # a batch with nothing flagged has no maps to draw
                maps.update(_write_overlays(maps_dir, [batch.paths[i] for i in flagged], batch.images[flagged],
                                            self._map_pictures(self._anomaly_map_tensor(x[flagged]).sum(axis=1)),
                                            self.map_scale_))
        bar.close()
        paths, values, errors = zip(*rows) if rows else ((), (), ())
        # object columns: a name that is not UTF-8 is a str that pandas' Arrow strings would refuse
        table = pd.DataFrame({"path": pd.Series(paths, dtype=object), "score": np.asarray(values, dtype=np.float64),
                              "error": pd.Series(errors, dtype=object)})
        if maps_dir is not None:
            table["map"] = pd.Series([maps.get(path, "") for path in paths], dtype=object)
        return self._add_verdicts(table).sort_values("path", ignore_index=True)

    def _decoded_to_tensor(self, images):
        """Decoded files ``(b, H, W, C)`` uint8 -> the network's input: pixels in [-1, 1], or standardised
        backbone features."""
        import torch

        # decoded files are (b, H, W, C) uint8, whatever layout the detector was fitted on
        decoded = InputLayout("image", "nhwc", True, self._input_layout().shape)
        if self._data_kind() == "features":
            return self._to_tensor(self._embed(images, decoded))
        return torch.from_numpy(images_to_unit_range(images, decoded))

    def _file_geometry(self, method):
        """(channels, side, side) that image files are decoded to for this detector."""
        self._check_takes_images(method)
        channels, height, width = self._input_layout().shape
        if height != width:
            raise ValueError(f"{method} needs a detector fitted on square images; this one has {height}x{width}.")
        return channels, height, width

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
            :func:`vaedetect.images.discover_images`).

        Returns
        -------
        X : ndarray
            The decoded images, ready for every method that takes ``X``.
        used : list of str
            The path of each image in ``X``.
        skipped : list of vaedetect.images.Skipped
            Files that could not be read, with the reason.
        """
        from .images import load_images

        channels, side, _ = self._file_geometry("read_images")
        files, unreadable = _discovered(paths, follow_links)
        images, used, skipped = load_images(files, side, channels, num_workers=n_jobs)
        layout = self._input_layout()
        decoded = InputLayout("image", "nhwc", True, layout.shape)
        X = images_from_unit_range(images_to_unit_range(images, decoded), layout)
        return X, used, unreadable + skipped
