"""vaedetect: anomaly and out-of-distribution detection with variational autoencoders.

The public names are loaded on first use, so that ``import vaedetect`` (and the command line's
``--help``) stays fast and does not import torch.
"""

__version__ = "0.2.0"
__all__ = ["VAEDetector", "CombinedDetector", "load", "write_report", "__version__"]


def load(path, *, device=None):
    """Read a fitted detector from a file written by ``VAEDetector.save`` or ``CombinedDetector.save``.

    Parameters
    ----------
    path : str or path-like
    device : str, optional
        Where to put the model; defaults to the saved ``device`` parameter.

    Returns
    -------
    detector : VAEDetector or CombinedDetector
    """
    from .persistence import model_kind

    if model_kind(path) == "CombinedDetector":
        from .combined import CombinedDetector

        return CombinedDetector.load(path, device=device)
    from .estimator import VAEDetector

    return VAEDetector.load(path, device=device)


def write_report(path, detector, table, **options):
    """Write the HTML report of a scoring run (``vaedetect score --report``) to ``path``.

    Parameters
    ----------
    path : str or path-like
        Destination, e.g. ``report.html``; written atomically.
    detector : VAEDetector or CombinedDetector
        The fitted image detector that scored ``table``.
    table : pandas.DataFrame
        From ``detector.score_paths(...)``.
    **options
        Of :func:`vaedetect.report.render_report`: ``model_path``, ``inputs``, ``threshold_note``,
        ``top``, ``pca_sample``, ``max_errors``, ``random_state``.

    Examples
    --------
    >>> table = detector.score_paths("incoming/")  # doctest: +SKIP
    >>> vaedetect.write_report("report.html", detector, table, top=12)  # doctest: +SKIP
    """
    from .report import write_report as write

    write(path, detector, table, **options)


def __getattr__(name):
    if name == "VAEDetector":
        from .estimator import VAEDetector

        return VAEDetector
    if name == "CombinedDetector":
        from .combined import CombinedDetector

        return CombinedDetector
    raise AttributeError(f"module 'vaedetect' has no attribute {name!r}")
