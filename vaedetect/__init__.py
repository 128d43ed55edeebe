"""vaedetect: anomaly and out-of-distribution detection with variational autoencoders.

The public names are loaded on first use, so that ``import vaedetect`` (and the command line's
``--help``) stays fast and does not import torch.
"""

__version__ = "0.1.0"
__all__ = ["VAEDetector", "load", "__version__"]


def load(path, *, device=None):
    """Read a fitted :class:`VAEDetector` from a file written by ``VAEDetector.save``.

    Parameters
    ----------
    path : str or path-like
    device : str, optional
        Where to put the model; defaults to the saved ``device`` parameter.

    Returns
    -------
    detector : VAEDetector
    """
    from .persistence import load_detector

    return load_detector(path, device=device)


def __getattr__(name):
    if name == "VAEDetector":
        from .estimator import VAEDetector

        return VAEDetector
    raise AttributeError(f"module 'vaedetect' has no attribute {name!r}")
