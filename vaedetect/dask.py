"""Scoring image folders on a Dask cluster (optional extra: ``pip install "vaedetect[dask]"``).

The files are found once, on the client, sorted and cut into partitions of ``files_per_partition``;
each partition is scored by :meth:`VAEDetector.score_paths` on a worker, which loads the model file
once and keeps it for every later partition. The result is a Dask DataFrame with the columns of
``vaedetect score``'s table, its partitions in path order, so ``.compute()`` gives exactly the table
the command writes. The workers must see the same paths as the client (one machine, or a shared file
system on a cluster).

Example::

    from dask.distributed import Client, LocalCluster
    from vaedetect.dask import score_paths

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
        table = score_paths("model.vae", ["photos/"]).compute()
"""

from __future__ import annotations

import functools
import os

@functools.lru_cache(maxsize=4)
def _cached_detector(model_path: str, modified: float, threshold_items: tuple):
    """The detector of ``model_path`` as this worker process first loaded it (per file version and
    threshold setting), so that every partition after the first skips reading and building the model."""
    import vaedetect

    detector = vaedetect.load(model_path)  # its own device setting: "auto" takes a worker's GPU
    if threshold_items:
        detector.set_threshold(**dict(threshold_items))
    return detector


def _score_partition(model_path: str, modified: float, threshold_items: tuple, found, maps_dir):
    detector = _cached_detector(model_path, modified, threshold_items)
    return detector.score_paths(found, maps_dir=maps_dir)


def score_paths(model_path, paths, *, files_per_partition: int = 2000, threshold=None, fpr=None,
                contamination=None, maps_dir=None):
    """Score every image file under ``paths`` with the model in ``model_path``, on the Dask cluster of
    the current client (or Dask's default scheduler when there is none).

    Parameters
    ----------
    model_path : str or path-like
        A model file written by ``VAEDetector.save`` or ``CombinedDetector.save``; every worker reads it.
    paths : str, path-like, sequence of them, or vaedetect.images.Discovery
        Folders (searched recursively) and image files, or what
        ``vaedetect.images.discover_images`` found in them.
    files_per_partition : int, default=2000
        Files scored by one task; each task holds one decoding batch at a time, whatever its size.
    threshold, fpr, contamination : float, optional
        At most one: replaces the model's threshold, as ``VAEDetector.set_threshold``.
    maps_dir : str or path-like, optional
        Workers write heat-map overlays of the outliers here (see ``VAEDetector.score_paths``).

    Returns
    -------
    table : dask.dataframe.DataFrame
        One row per file, the columns of :mod:`vaedetect.schema` (those of the model's ``score_paths``),
        partitions in path order.

    Examples
    --------
    >>> from vaedetect.dask import score_paths
    >>> table = score_paths("model.vae", "photos/")  # doctest: +SKIP
    >>> table.compute().sort_values("score").head()  # doctest: +SKIP
    """
    try:
        import dask.dataframe as dd
        from dask import delayed
    except ImportError as error:
        raise ImportError('Scoring on Dask needs dask: pip install "vaedetect[dask]".') from error
    from . import schema
    from .calibration import threshold_override
    from .images import Discovery, discover_images
    from .persistence import model_kind

    threshold_items = tuple(threshold_override(threshold=threshold, fpr=fpr, contamination=contamination).items())
    if files_per_partition < 1:
        raise ValueError(f"files_per_partition must be at least 1; got {files_per_partition}.")
    model_path = os.path.abspath(model_path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"No model file at {model_path!r}.")
    modified = os.path.getmtime(model_path)
    maps = None if maps_dir is None else os.path.abspath(maps_dir)
    found = paths if isinstance(paths, Discovery) else discover_images(paths)
    entries = found.entries()
    chunks = [found.subset(entries[start : start + files_per_partition])
              for start in range(0, len(entries), files_per_partition)]
    # the table of the model's kind, whose columns the workers' tables have
    meta = schema.empty(maps=maps is not None, evidence=model_kind(model_path) == "CombinedDetector")
    if not chunks:
        return dd.from_pandas(meta, npartitions=1)
    parts = [delayed(_score_partition)(model_path, modified, threshold_items, chunk, maps) for chunk in chunks]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)
