"""The score methods, one entry each: adding a method is one :func:`register_score` call (and its line
in docs/guide/scores.md).

Everything that asks "which score methods are there, and what does this one need" reads this table:
the estimator's parameter check, ``score_samples``, ``score_table``, the model-file check and the
command line's ``--score-method`` choices. Torch-free: an entry names its functions as
``"module:attribute"``, imported on first use, so that ``vaedetect --help`` lists the methods without
loading torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoreMethod:
    """One score method; every score is higher for more normal samples, one value per sample.

    Attributes
    ----------
    name : str
        The ``score_method`` value that selects it.
    function : str or callable
        ``function(model, x, noise, likelihood, **options) -> Tensor (n,)``: the scores of one batch
        ``x`` in network space (see ``vaedetect.scoring``), or its ``"module:attribute"``.
    options : mapping, default={}
        Keyword of ``function`` -> the ``VAEDetector`` parameter that gives it, e.g.
        ``{"steps": "regret_steps"}``.
    images_only : bool, default=False
        Defined for networks of image pixels only (e.g. it compresses the input with an image codec).
    tabular_only : bool, default=False
        Defined for networks of table rows and backbone features only.
    needs_reference : bool, default=False
        ``function`` takes ``reference=``, the statistics of the training data (``reference_``).
    needs_grad : bool, default=False
        ``function`` optimises per input, so it runs outside ``torch.inference_mode``.
    from_elbo : str, callable or None, default=None
        ``from_elbo(elbo, x, **options) -> {column: values}``: the same scores computed from the ELBO
        (a float64 numpy vector), so that ``score_table`` makes one ELBO pass for all such methods;
        the dict holds the column ``name`` and may add others (e.g. the codec's bits per dimension).
    log_likelihood : bool, default=False
        The score is a bound on ``log p(x)`` in nats: ``score_table`` adds its bits per dimension for
        images as a column ``<name>_bits_per_dim``.
    """

    name: str
    function: str | Callable
    options: Mapping[str, str] = field(default_factory=dict)
    images_only: bool = False
    tabular_only: bool = False
    needs_reference: bool = False
    needs_grad: bool = False
    from_elbo: str | Callable | None = None
    log_likelihood: bool = False

    def load(self) -> Callable:
        """The score function itself."""
        return _load(self.function)

    def load_from_elbo(self) -> Callable | None:
        """The function computing the scores from the ELBO, if any."""
        return None if self.from_elbo is None else _load(self.from_elbo)


def _load(target: str | Callable) -> Callable:
    if callable(target):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


SCORE_METHODS: dict[str, ScoreMethod] = {}


def register_score(method: ScoreMethod) -> ScoreMethod:
    """Add ``method`` to the score methods (replacing one of the same name); returns it."""
    SCORE_METHODS[method.name] = method
    return method


def unregister_score(name: str) -> None:
    """Remove the score method ``name`` (a method added for a test or an experiment)."""
    SCORE_METHODS.pop(name, None)


def score_names(pixels: bool | None = None) -> tuple[str, ...]:
    """The registered methods, in registration order; with ``pixels`` those defined for a network of image
    pixels (True) or of table rows and backbone features (False)."""
    return tuple(name for name, method in SCORE_METHODS.items() if applies(method, pixels))


def applies(method: ScoreMethod, pixels: bool | None) -> bool:
    """Whether ``method`` is defined for a network that models image pixels (``pixels`` True), table rows or
    backbone features (False), or either (None)."""
    return not (pixels is False and method.images_only or pixels is True and method.tabular_only)


class ScoreMethodChoices(Set):
    """The values ``score_method`` may take, "auto" and every registered method, as of each question
    (a live view: methods registered later belong to it)."""

    def __contains__(self, name) -> bool:
        return name == "auto" or name in SCORE_METHODS

    def __iter__(self):
        return iter(("auto", *SCORE_METHODS))

    def __len__(self) -> int:
        return 1 + len(SCORE_METHODS)

    @classmethod
    def _from_iterable(cls, iterable):  # what set operations with it return
        return frozenset(iterable)


def get_score(name: str) -> ScoreMethod:
    """The entry of ``name``; a ValueError listing the methods when there is none."""
    try:
        return SCORE_METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown score method {name!r}; choose one of {list(SCORE_METHODS)}.") from None


_SCORING = "vaedetect.scoring"
for _method in (
    ScoreMethod("elbo", f"{_SCORING}:elbo_score", log_likelihood=True),
    ScoreMethod("iwae", f"{_SCORING}:iwae_score", log_likelihood=True),
    ScoreMethod("kl", f"{_SCORING}:kl_score"),
    ScoreMethod("reconstruction", f"{_SCORING}:reconstruction_score"),
    ScoreMethod("reconstruction_probability", f"{_SCORING}:reconstruction_probability_score"),
    ScoreMethod("latent", f"{_SCORING}:latent_score", needs_reference=True),
    ScoreMethod("typicality", f"{_SCORING}:typicality_score", needs_reference=True,
                from_elbo=f"{_SCORING}:typicality_columns"),
    ScoreMethod("complexity", f"{_SCORING}:complexity_score", options={"codec": "complexity_codec"}, images_only=True,
                from_elbo=f"{_SCORING}:complexity_columns"),
    ScoreMethod("bits_typicality", f"{_SCORING}:bits_typicality_score", images_only=True, needs_reference=True,
                from_elbo=f"{_SCORING}:bits_typicality_columns"),
    ScoreMethod("regret", f"{_SCORING}:regret_score", options={"steps": "regret_steps"}, needs_grad=True),
    ScoreMethod("residual", f"{_SCORING}:residual_score", tabular_only=True, needs_reference=True),
    ScoreMethod("min_evidence", f"{_SCORING}:min_evidence_score", tabular_only=True, needs_reference=True),
):
    register_score(_method)
