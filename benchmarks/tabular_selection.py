"""Choosing vaedetect's tabular settings on development tasks, never on the ADBench sets they are reported on.

A default picked for its score on the sets it is reported on would be fitted to them. Here candidate
settings are compared on development tasks: toy tasks built from scikit-learn's bundled data sets (no
download), the way many ODDS and ADBench sets were made from classification data (one class is the
anomaly, drawn to a few percent of the rows and mixed into the other classes, the normal data), and
with ``--development adbench_dev`` the 17 ADBench sets of ``adbench_dev/`` (``adbench_large``: the 6 large ones). The protocol is
the tabular suite's (70/30 stratified split, fit on the training part without labels, anomalies
included; ROC AUC on the test part), with IsolationForest as the reference. ``--confirm`` then runs
the same candidates once on the ADBench sets.

Usage::

    python -m benchmarks.tabular_selection --candidate gaussian likelihood=gaussian \\
        --candidate laplace likelihood=laplace [--development toy adbench_dev] [--seeds 0 1 2] \\
        [--confirm] [--data-dir DIR] [--out FILE.json] [--markdown FILE.md]

A candidate's settings are ``VAEDetector`` parameters, plus at most one wrapper that needs no change
to vaedetect: ``preprocess=power|quantile`` (a per-feature transform first), ``ensemble=K`` (the mean
of K seeds' standardised scores), ``ensemble_raw=K`` (the plain mean), ``refit_drop=Q`` (refit without
the lowest-scoring share Q of the training rows), ``min_steps=N`` (at least N optimiser steps),
``max_epochs=N`` (``epochs="auto"`` capped at N epochs) or ``clip=M`` (rows scored clipped to the widened
training range).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import _tables, tabular
from ._data import data_dir
from ._provenance import benchmark_parser, describe_run, generated_by, write_results

# Share of anomalies in each development task, as in ADBench's sets (2.5% to 35%).
ANOMALY_SHARE = {"breast_cancer": 0.05, "wine": 0.1, "iris": 0.1, "digits": 0.05}


def minority_class_task(X, y, anomaly_class, share: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """``(X, is_anomaly)``: every row of the other classes, and rows of ``anomaly_class`` drawn to make
    up ``share`` of the result (at least 5)."""
    normal = y != anomaly_class
    n_anomalies = max(5, round(share * normal.sum() / (1 - share)))
    anomalies = rng.choice(np.flatnonzero(~normal), size=min(n_anomalies, (~normal).sum()), replace=False)
    rows = np.concatenate([np.flatnonzero(normal), anomalies])
    return X[rows].astype(np.float64), (~normal[rows]).astype(int)


def development_sets(random_state: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """17 tasks ``{name: (X, y)}`` from scikit-learn's bundled data: breast cancer (malignant as the
    anomaly), and each class in turn of wine, iris and the 8x8 digits."""
    from sklearn import datasets

    rng = np.random.RandomState(random_state)
    loaders = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
               "iris": datasets.load_iris, "digits": datasets.load_digits}
    sets = {}
    for name, load in loaders.items():
        X, y = load(return_X_y=True)
        # breast cancer's class 0 is malignant: the natural anomaly; the others take each class in turn
        classes = [0] if name == "breast_cancer" else np.unique(y)
        for anomaly_class in classes:
            task = name if name == "breast_cancer" else f"{name}_{anomaly_class}"
            sets[task] = minority_class_task(X, y, anomaly_class, ANOMALY_SHARE[name], rng)
    return sets


def parse_setting(text: str) -> tuple[str, object]:
    """``"key=value"`` -> ``(key, value)`` with the value read as int, float, bool or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


class Preprocessed:
    """A per-feature transform fitted on the training part, then a VAE on the transformed features.

    ``"power"`` is Yeo-Johnson with standardisation; ``"quantile"`` maps each feature's ranks to a
    standard normal. Both are non-affine, so unlike robust scaling they change what the VAE sees.
    """

    def __init__(self, kind: str, make_vae):
        self.kind, self.make_vae = kind, make_vae

    def fit(self, X):
        from sklearn.preprocessing import PowerTransformer, QuantileTransformer

        self.transform_ = (PowerTransformer() if self.kind == "power" else
                           QuantileTransformer(n_quantiles=min(1000, len(X)), output_distribution="normal"))
        self.vae_ = self.make_vae().fit(self.transform_.fit_transform(X))
        return self

    def score_samples(self, X):
        return self.vae_.score_samples(self.transform_.transform(X))


class SeedEnsemble:
    """``size`` VAEs of different seeds; the score is the mean of their scores, each centred on its
    training median and divided by its training interquartile range so that no member dominates
    (``standardise=False``: the plain mean, what one network holding the members side by side gives)."""

    def __init__(self, size: int, make_vae, standardise: bool = True):
        self.size, self.make_vae, self.standardise = size, make_vae, standardise

    def fit(self, X):
        self.members_ = [self.make_vae(member).fit(X) for member in range(self.size)]
        self.scales_ = [_median_and_iqr(member.score_samples(X)) if self.standardise else (0.0, 1.0)
                        for member in self.members_]
        return self

    def score_samples(self, X):
        return np.mean([(member.score_samples(X) - median) / iqr
                        for member, (median, iqr) in zip(self.members_, self.scales_)], axis=0)


def _median_and_iqr(scores) -> tuple[float, float]:
    q25, median, q75 = np.percentile(scores, [25, 50, 75])
    return median, max(q75 - q25, 1e-12)


class TrimmedRefit:
    """Fit, drop the ``drop`` share of training rows that score lowest (the likeliest anomalies of an
    unlabelled, contaminated training set), and fit a fresh VAE of the same settings on the rest."""

    def __init__(self, drop: float, make_vae):
        self.drop, self.make_vae = drop, make_vae

    def fit(self, X):
        scores = self.make_vae().fit(X).score_samples(X)
        kept = scores >= np.quantile(scores, self.drop)
        self.vae_, self.n_kept_ = self.make_vae().fit(X[kept]), int(kept.sum())
        return self

    def score_samples(self, X):
        return self.vae_.score_samples(X)


class Clipped:
    """The VAE on features clipped to their training range widened by ``margin`` times their robust
    range (1st to 99th percentile) on each side: a value far outside what training showed counts as
    much as one at the edge, as for IsolationForest, whose splits end at the training range."""

    def __init__(self, margin: float, make_vae):
        self.margin, self.make_vae = margin, make_vae

    def fit(self, X):
        low, high = np.percentile(X, [1, 99], axis=0)
        pad = self.margin * (high - low)
        self.low_, self.high_ = X.min(axis=0) - pad, X.max(axis=0) + pad
        self.vae_ = self.make_vae().fit(X)
        return self

    def score_samples(self, X):
        return self.vae_.score_samples(np.clip(X, self.low_, self.high_))


class _ChosenEpochs:
    """The VAE with ``epochs`` set from its training rows by ``epochs_for(vae, n_train)``."""

    def __init__(self, value: int, make_vae):
        self.value, self.make_vae = value, make_vae

    def fit(self, X):
        vae = self.make_vae()
        n_train = len(vae._seeds_and_splits(len(X))[1][0])
        self.vae_ = vae.set_params(epochs=self.epochs_for(vae, n_train)).fit(X)
        return self

    def score_samples(self, X):
        return self.vae_.score_samples(X)


class MinimumSteps(_ChosenEpochs):
    """``epochs`` raised so that training takes at least ``value`` optimiser steps: on a table of a hundred
    rows, ``epochs="auto"`` makes a few dozen."""

    def epochs_for(self, vae, n_train):
        import math

        from vaedetect import settings

        batch_size = settings.resolve_batch_size(vae.batch_size, "tabular", n_train)
        auto = settings.epochs_within_budget(n_train, batch_size, *settings.epoch_budget("tabular"))
        return max(auto if vae.epochs == "auto" else vae.epochs, math.ceil(self.value / math.ceil(n_train / batch_size)))


class EpochCap(_ChosenEpochs):
    """``epochs="auto"`` resolved under an epoch cap of ``value`` instead of ``TABULAR_MAX_EPOCHS``, within the
    same step budget: tables small enough for the budget train for ``value`` epochs, larger ones as before."""

    def epochs_for(self, vae, n_train):
        from vaedetect import settings

        batch_size = settings.resolve_batch_size(vae.batch_size, "tabular", n_train)
        return settings.epochs_within_budget(n_train, batch_size, self.value, settings.TABULAR_MAX_STEPS)


class StepCap(_ChosenEpochs):
    """``epochs="auto"`` resolved within a budget of ``value`` optimiser steps instead of ``AUTO_MAX_STEPS``."""

    def epochs_for(self, vae, n_train):
        from vaedetect import settings

        batch_size = settings.resolve_batch_size(vae.batch_size, "tabular", n_train)
        return settings.epochs_within_budget(n_train, batch_size, settings.TABULAR_MAX_EPOCHS, self.value)


class EpochSteps:
    """``batch_size`` raised so that an epoch takes at most ``value`` optimiser steps (at least 32 rows, or the
    VAE's own batch size where it is set): the epoch count, and ``epochs="auto"``'s cap of 25, then bound the steps
    whatever the number of rows. ``VAEDetector``'s ``batch_size="auto"`` is this rule for 16 steps, at most 256
    rows."""

    def __init__(self, value: int, make_vae):
        self.value, self.make_vae = value, make_vae

    def fit(self, X):
        import math

        from vaedetect.settings import BATCH_SIZE

        vae = self.make_vae()
        n_train = len(vae._seeds_and_splits(len(X))[1][0])
        smallest = BATCH_SIZE if vae.batch_size == "auto" else vae.batch_size
        self.vae_ = vae.set_params(batch_size=max(smallest, math.ceil(n_train / self.value))).fit(X)
        return self

    def score_samples(self, X):
        return self.vae_.score_samples(X)


# Settings that wrap the VAE instead of configuring it: ideas screened without changing vaedetect.
WRAPPERS = ("preprocess", "ensemble", "ensemble_raw", "refit_drop", "min_steps", "clip", "max_epochs",
            "epoch_steps", "max_steps")


DEVELOPMENT = ("toy", "adbench_dev", "adbench_large")


def against_isolation_forest(results: dict, names) -> dict[str, dict]:
    """``{method: {"mean", "ratio", "worst_gap", "worst_set"}}`` over the data sets ``names``: the mean
    ROC AUC, its ratio to IsolationForest's and the set where the method falls furthest below it."""
    table = _tables.summary({name: results[name] for name in names})
    forest = table["isolation_forest"]
    out = {}
    for method, row in table.items():
        means = {name: row[name] for name in names}
        gaps = {name: means[name] - forest[name] for name in names}
        worst = min(gaps, key=gaps.get)
        mean = float(np.mean(list(means.values())))
        out[method] = {"mean": mean, "ratio": mean / float(np.mean([forest[n] for n in names])),
                       "worst_gap": float(gaps[worst]), "worst_set": worst}
    return out


def leave_one_set_out(results: dict, candidates) -> dict:
    """Choosing among ``candidates`` judged on data sets it did not choose on: for each data set of ``results``
    in turn, the candidate of the highest mean ROC AUC over the *other* sets, scored on the one left out.

    Returns ``{"chosen": {set: candidate}, "mean", "ratio", "worst_gap", "worst_set"}``: the mean held-out ROC
    AUC of the choices, its ratio to IsolationForest's mean over the same sets, and the held-out set where the
    choice falls furthest below IsolationForest.
    """
    table = _tables.summary(results)
    names = list(results)
    chosen, held_out = {}, {}
    for left_out in names:
        others = [name for name in names if name != left_out]
        chosen[left_out] = max(candidates, key=lambda c: np.mean([table[c][name] for name in others]))
        held_out[left_out] = table[chosen[left_out]][left_out]
    forest = table["isolation_forest"]
    gaps = {name: held_out[name] - forest[name] for name in names}
    worst = min(gaps, key=gaps.get)
    mean = float(np.mean(list(held_out.values())))
    return {"chosen": chosen, "mean": mean, "ratio": mean / float(np.mean([forest[n] for n in names])),
            "worst_gap": float(gaps[worst]), "worst_set": worst}


def _leave_one_set_out_lines(results: dict, candidates) -> list[str]:
    """The page's section on choosing by held-out data sets, over every set that every candidate ran on."""
    sets = {**results["development"], **results.get("adbench", {})}
    sets = {name: entry for name, entry in sets.items()
            if all(method in entry["methods"] for method in [*candidates, "isolation_forest"])}
    if len(sets) < 3 or len(candidates) < 2:
        return []
    outcome = leave_one_set_out(sets, candidates)
    counts = {name: list(outcome["chosen"].values()).count(name) for name in candidates}
    own = against_isolation_forest(sets, list(sets))
    lines = ["", "## Choosing by held-out data sets", "",
             f"Over all {len(sets)} data sets of this page (the development sets and, where run, ADBench), each left "
             "out in turn: the candidate of the best mean ROC AUC "
             "on the others is chosen and scored on the one left out, so that no figure comes from a set that chose "
             "it. Every candidate's own figures over the same sets are below it for comparison (a candidate alone "
             "chooses nothing, but these sets chose the candidates of earlier screenings).", "",
             "| choice | mean ROC AUC | ratio to IsolationForest | furthest below IsolationForest |", "|---|---|---|---|",
             "| **chosen on the other sets** (" + ", ".join(f"`{name}` {count}x" for name, count in counts.items()
                                                       if count) + f") | {outcome['mean']:.3f} | "
             f"{outcome['ratio']:.3f} | {outcome['worst_gap']:+.3f} ({outcome['worst_set']}) |"]
    lines += [f"| `{name}` | {own[name]['mean']:.3f} | {own[name]['ratio']:.3f} | {own[name]['worst_gap']:+.3f} "
              f"({own[name]['worst_set']}) |" for name in candidates]
    return lines


def candidate_maker(params: dict):
    """``make(seed)`` for one candidate's settings: ``VAEDetector`` parameters plus at most one of
    ``preprocess=power|quantile``, ``ensemble=K`` (seeds ``K * seed`` to ``K * seed + K - 1``) or
    ``refit_drop=Q``."""
    from vaedetect import VAEDetector

    # docs/experiments/tabular_scores.md records its candidates as score=..., the parameter's name until it was renamed
    params = {("score_method" if key == "score" else key): value for key, value in params.items()}
    vae_params = {key: value for key, value in params.items() if key not in WRAPPERS}
    wrapper = {key: value for key, value in params.items() if key in WRAPPERS}
    VAEDetector(**vae_params)._validate_params()  # a typo fails now, not after the first candidate ran
    if len(wrapper) > 1:
        raise ValueError(f"at most one of {WRAPPERS} per candidate; got {sorted(wrapper)}")
    if wrapper.get("preprocess", "power") not in ("power", "quantile"):
        raise ValueError(f"preprocess must be power or quantile; got {wrapper['preprocess']!r}")

    def make(seed):
        if "preprocess" in wrapper:
            return Preprocessed(wrapper["preprocess"], lambda: VAEDetector(random_state=seed, **vae_params))
        if "ensemble" in wrapper or "ensemble_raw" in wrapper:
            size = int(wrapper.get("ensemble", wrapper.get("ensemble_raw")))
            return SeedEnsemble(size, lambda member: VAEDetector(random_state=size * seed + member, **vae_params),
                                standardise="ensemble" in wrapper)
        if "refit_drop" in wrapper:
            return TrimmedRefit(float(wrapper["refit_drop"]), lambda: VAEDetector(random_state=seed, **vae_params))
        if "clip" in wrapper:
            return Clipped(float(wrapper["clip"]), lambda: VAEDetector(random_state=seed, **vae_params))
        if "min_steps" in wrapper:
            return MinimumSteps(int(wrapper["min_steps"]), lambda: VAEDetector(random_state=seed, **vae_params))
        if "epoch_steps" in wrapper:
            return EpochSteps(int(wrapper["epoch_steps"]), lambda: VAEDetector(random_state=seed, **vae_params))
        if "max_steps" in wrapper:
            return StepCap(int(wrapper["max_steps"]), lambda: VAEDetector(random_state=seed, **vae_params))
        if "max_epochs" in wrapper:
            return EpochCap(int(wrapper["max_epochs"]), lambda: VAEDetector(random_state=seed, **vae_params))
        return VAEDetector(random_state=seed, **vae_params)

    return make


def candidate_makers(candidates: list[list[str]]) -> dict[str, callable]:
    """``{name: make(seed)}`` for ``--candidate NAME KEY=VALUE ...`` arguments, plus IsolationForest."""
    from sklearn.ensemble import IsolationForest

    makers = {name: candidate_maker(dict(parse_setting(text) for text in settings))
              for name, *settings in candidates}
    makers["isolation_forest"] = lambda seed: IsolationForest(random_state=seed)
    return makers


def wins(results: dict, method: str, against: str) -> int:
    """Tasks on which ``method``'s mean ROC AUC over seeds is above ``against``'s."""
    table = _tables.summary(results)
    return sum(table[method][name] > table[against][name] for name in results)


# What each wrapper does, for the page; the classes above are the definitions.
WRAPPER_TEXT = {
    "preprocess": "`preprocess=power` fits Yeo-Johnson with standardisation and `preprocess=quantile` a "
                  "map of ranks to a standard normal on the training part, then the VAE on the result",
    "ensemble": "`ensemble=K` averages the scores of K VAEs of different seeds, each centred on its "
                "training median and divided by its training interquartile range",
    "ensemble_raw": "`ensemble_raw=K` averages the scores of K VAEs of different seeds as they are",
    "refit_drop": "`refit_drop=Q` fits, drops the share Q of training rows that score lowest and fits a "
                  "fresh VAE on the rest",
    "min_steps": "`min_steps=N` raises `epochs` so that training takes at least N optimiser steps",
    "max_epochs": "`max_epochs=N` resolves `epochs=\"auto\"` with at most N epochs instead of the tables' "
                  "default, within the same step budget",
    "epoch_steps": "`epoch_steps=S` raises `batch_size` to the training rows divided by S where that is "
                   "larger, so that an epoch takes at most S optimiser steps",
    "max_steps": "`max_steps=N` resolves `epochs=\"auto\"` within a budget of N optimiser steps",
    "clip": "`clip=M` clips each feature of the rows scored to its training range widened by M times its "
            "1st-to-99th-percentile range on each side",
}


def _wrapper_text(settings) -> str:
    """What the wrappers among the candidates' settings (``"KEY=VALUE KEY=VALUE"`` texts) do."""
    keys = {parse_setting(part)[0] for text in settings for part in text.split()}
    used = [key for key in WRAPPERS if key in keys]
    if not used:
        return ""
    return ("Wrappers in `benchmarks/tabular_selection.py`, not in vaedetect: "
            + "; ".join(WRAPPER_TEXT[key] for key in used) + ". ")


def _development_text(results: dict) -> str:
    toy = any(name not in (*results.get("adbench_dev", ()), *results.get("adbench_large", ()))
              for name in results["development"])
    parts = []
    if toy:
        parts.append("Toy development tasks come from scikit-learn's bundled data sets: in each, one class is the "
                     "anomaly (for breast cancer the malignant one), drawn to a share of the rows ("
                     + ", ".join(f"{name} {share:.0%}" for name, share in ANOMALY_SHARE.items())
                     + ") and mixed into the other classes.")
    if results.get("adbench_dev"):
        parts.append("The ADBench development sets are those of `adbench_dev/`, kept for choosing settings.")
    if results.get("adbench_large"):
        parts.append("The large ADBench sets are those of `adbench_large/` (95,000 to 620,000 rows), on which no "
                     "setting was chosen.")
    return " ".join(parts)


def markdown_page(results: dict) -> str:
    development = results["development"]
    candidates = [name for name in next(iter(development.values()))["methods"] if name != "isolation_forest"]
    first = candidates[0]
    lines = [
        "# Choosing tabular settings on development tasks", "",
        generated_by(results), "",
        "Each candidate is `VAEDetector(random_state=seed, **settings)`: "
        + "; ".join(f"`{name}`: {results['candidates'][name] or 'default settings'}" for name in candidates)
        + ". " + _wrapper_text(results["candidates"].values()) + _development_text(results),
        "70/30 stratified split, fit without labels on the training part,",
        f"ROC AUC on the test part, mean over {_tables.seeds_text(development)}.", "",
        "## Development tasks", "",
        _tables.markdown(development), "",
    ]
    lines += [f"`{name}` above `{first}` on {wins(development, name, first)} of {len(development)} tasks."
              for name in candidates[1:]]
    if results.get("adbench_dev"):
        lines += ["", "On the ADBench development sets (" + ", ".join(results["adbench_dev"]) + "):", "",
                  "| method | mean ROC AUC | ratio to IsolationForest | furthest below IsolationForest |",
                  "|---|---|---|---|"]
        for method, row in against_isolation_forest(development, results["adbench_dev"]).items():
            lines.append(f"| {method} | {row['mean']:.3f} | {row['ratio']:.3f} | {row['worst_gap']:+.3f} "
                         f"({row['worst_set']}) |")
    lines += _leave_one_set_out_lines(results, candidates)
    if "adbench" in results:
        lines += ["", "## Confirmation on ADBench", "",
                  "Run once, after the choice, on the tabular suite's sets and splits.", "",
                  _tables.markdown(results["adbench"])]
    return "\n".join(lines) + "\n"


def _only(sets: dict, names) -> dict:
    """``sets`` restricted to ``names`` (all of them for None)."""
    return sets if names is None else {name: data for name, data in sets.items() if name in names}


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "adbench/ and adbench_dev/")
    parser.add_argument("--candidate", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE]",
                        help="a name, VAEDetector settings and at most one wrapper (preprocess=, ensemble=, "
                             "refit_drop=); repeat for each candidate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--development", nargs="+", choices=DEVELOPMENT, default=["toy"],
                        help="toy: tasks from scikit-learn's bundled data; adbench_dev: the 17 ADBench sets kept "
                             "for choosing settings; adbench_large: the 6 large ADBench sets")
    parser.add_argument("--confirm", action="store_true", help="also run the candidates on the ADBench sets")
    parser.add_argument("--sets", nargs="+", metavar="NAME", help="only these data sets (ADBench names or toy tasks)")
    args = parser.parse_args(argv)
    makers = candidate_makers(args.candidate)
    results = {"benchmark": "tabular_selection", **describe_run("python -m benchmarks.tabular_selection", argv),
               "candidates": {name: " ".join(settings) for name, *settings in args.candidate}}
    results["development"] = {}
    if "toy" in args.development:
        results["development"] |= tabular.evaluate(_only(development_sets(), args.sets), makers, args.seeds,
                                                    prefix="development")
    for folder in ("adbench_dev", "adbench_large"):
        if folder in args.development:
            sets = _only(tabular.load_adbench(data_dir(args.data_dir) / folder), args.sets)
            results[folder] = sorted(sets)
            results["development"] |= tabular.evaluate(sets, makers, args.seeds, prefix=folder)
    if args.confirm:
        try:
            sets = _only(tabular.load_adbench(data_dir(args.data_dir) / "adbench"), args.sets)
        except FileNotFoundError as error:
            print(f"confirmation skipped: {error}", file=sys.stderr)
        else:
            results["adbench"] = tabular.evaluate(sets, makers, args.seeds, prefix="adbench")
    page = markdown_page(results)
    print(page)
    write_results(results, args.out, args.markdown, page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
