"""Scores and their conformal statistics, in numpy alone (the torch-free runtime reads them too).

Split-conformal p-values and the threshold of a false-positive rate (Vovk et al., "Algorithmic Learning in a
Random World", 2005; for outlier detection Bates et al., "Testing for outliers with conformal p-values",
Annals of Statistics, 2023), and the tail probabilities of a score among reference scores that
:class:`~vaedetect.CombinedDetector` combines.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

# The lowest share of reference scores an exponential tail is fitted to (and at least this many of them).
TAIL_SHARE, MIN_TAIL = 0.1, 5


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``p(x) = (1 + #{calibration scores <= score(x)}) / (n + 1)``, one per score.

    For data exchangeable with the held-out calibration data, ``P(p <= alpha) <= alpha``: flagging
    ``p <= fpr`` raises a false alarm on at most ``fpr`` of normal data, in expectation over
    calibration sets. Low scores (anomalous) get small p-values.
    """
    calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    at_or_below = np.searchsorted(calibration, np.asarray(scores, dtype=np.float64), side="right")
    return (1.0 + at_or_below) / (len(calibration) + 1.0)


def p_values_keeping_nan(calibration_scores: np.ndarray, scores) -> np.ndarray:
    """:func:`conformal_p_values` of ``scores``, NaN (an entry that could not be scored) staying NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    p_values = np.full(scores.shape, np.nan)
    known = ~np.isnan(scores)
    p_values[known] = conformal_p_values(calibration_scores, scores[known])
    return p_values


def verdict_columns(calibration_scores: np.ndarray, offset: float, scores) -> dict:
    """The verdict columns of a score table: ``p_value`` and ``is_outlier`` (a score below ``offset``). NaN
    scores, entries that could not be scored, get no p-value and are not outliers."""
    scores = np.asarray(scores, dtype=np.float64)
    return {"p_value": p_values_keeping_nan(calibration_scores, scores), "is_outlier": scores < offset}


def fail_closed(scores, method: str) -> np.ndarray:
    """Scores with every non-finite value set to -inf, the most anomalous score, and a warning.

    A score overflows to NaN or infinity only for inputs far outside anything the model was fitted on
    (e.g. features a thousand orders of magnitude off): such an input must never pass as normal.
    """
    scores = np.asarray(scores, dtype=np.float64)
    broken = ~np.isfinite(scores)
    if broken.any():
        warnings.warn(
            f"The {method!r} score of {int(broken.sum())} of {len(scores)} samples is not finite (the input lies far "
            "outside what the model was fitted on, and its evaluation overflowed); it is set to -inf, the most "
            "anomalous score, so that these samples are flagged.",
            UserWarning,
            stacklevel=3,
        )
        scores = np.where(broken, -np.inf, scores)
    return scores


def flagged_among(n: int, fpr: float) -> int:
    """How many of ``n`` calibration scores lie below the threshold of false-positive rate ``fpr``:
    ``floor(fpr * (n + 1))``; none means the rate is out of reach of ``n`` scores."""
    return int(math.floor(fpr * (n + 1) + 1e-9))


def conformal_threshold(calibration_scores: np.ndarray, fpr: float) -> float:
    """The score below which exactly the samples with conformal p-value ``<= fpr`` fall.

    That is the ``k``-th smallest calibration score with ``k`` of :func:`flagged_among`; ``-inf`` (flag
    nothing) when ``k = 0``, i.e. when the calibration set is too small for that rate.
    """
    calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    k = flagged_among(len(calibration), fpr)
    return float(calibration[k - 1]) if k >= 1 else -np.inf


def _tail_size(n: int) -> int:
    """How many of ``n`` reference scores the exponential tail is fitted to: a tenth, at least 5."""
    return min(n, max(MIN_TAIL, int(TAIL_SHARE * n)))


def log_tail_probability(scores, reference) -> np.ndarray:
    """``log P(S <= score)`` for each score, ``S`` a score of normal data given by the sample ``reference``.

    The empirical ``(1 + #{reference <= score}) / (n + 1)`` down to the ``k``-th lowest reference score
    (``k`` = a tenth of them, at least 5); below it an exponential tail whose scale is the mean distance of
    the ``k`` lowest from the ``k``-th, continuous there, so that scores below every reference score still
    rank by how far below they are. NaN stays NaN.
    """
    reference = np.sort(np.asarray(reference, dtype=np.float64))
    scores = np.asarray(scores, dtype=np.float64)
    n = len(reference)
    k = _tail_size(n)
    edge = reference[k - 1]
    scale = max(float(np.mean(edge - reference[:k])), 1e-12)
    with np.errstate(invalid="ignore"):
        inside = np.log((1.0 + np.searchsorted(reference, scores, side="right")) / (n + 1.0))
        tail = np.log(k / (n + 1.0)) - (edge - scores) / scale
        return np.where(np.isnan(scores), np.nan, np.where(scores < edge, tail, inside))


def leave_one_out_log_tail_probability(reference) -> np.ndarray:
    """For each score of ``reference``, :func:`log_tail_probability` of it among the *other* scores.

    A held-out image scored this way stands where a new image stands, whose score is never among the
    reference scores; so the same images can be the reference and calibrate the combined statistic. Equal to
    ``log_tail_probability(reference[i], np.delete(reference, i))`` for each ``i``, in ``O(n log n)``.
    """
    values = np.asarray(reference, dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"leaving one out needs at least 2 reference scores; got {len(values)}.")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    others = len(values) - 1
    k = _tail_size(others)
    # the k lowest of the others: the k lowest of all, or, when the score is itself among them, the k + 1
    # lowest without it
    among_lowest = rank < k
    edge = np.where(among_lowest, ordered[min(k, others)], ordered[k - 1])
    lowest_sum = np.where(among_lowest, ordered[: k + 1].sum() - values, ordered[:k].sum())
    scale = np.maximum(edge - lowest_sum / k, 1e-12)
    at_or_below_others = np.searchsorted(ordered, values, side="right") - 1
    inside = np.log((1.0 + at_or_below_others) / (others + 1.0))
    tail = np.log(k / (others + 1.0)) - (edge - values) / scale
    return np.where(values < edge, tail, inside)
