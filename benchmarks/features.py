"""One-class CIFAR-10 in the feature space of a frozen pretrained backbone: density peers and the VAE.

Embeds ``--n-train`` training photos of the normal class and ``--per-class`` test photos of every class
with :class:`vaedetect.backbones.FeatureExtractor`, then scores the test photos with detectors fitted on
the same embeddings: a Ledoit-Wolf Gaussian (Mahalanobis distance), kNN (mean distance to the 2 nearest
training embeddings, DN2), IsolationForest, and ``VAEDetector`` with the settings ``backbone=`` resolves to
(Gaussian decoder, one common scale, the residual score), with the ELBO instead, and with the tabular defaults.
ROC AUC of the normal class against each other class and against all of them.

    python -m benchmarks.features --normal dog [--out FILE.json] [--markdown FILE.md]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ._data import load_cifar10
from ._provenance import benchmark_parser, generated_by, run_benchmark
from ._tables import roc_auc_against

UNSEEDED = ("gaussian", "knn")
PEERS = ("gaussian", "knn", "isolation_forest")


def peers(seed: int) -> dict:
    """Detectors fitted on embeddings, each ``fit(X)`` then ``score_samples(X)`` (higher = more normal)."""
    from sklearn.base import BaseEstimator
    from sklearn.covariance import LedoitWolf
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import NearestNeighbors

    from vaedetect import VAEDetector

    class Gaussian(BaseEstimator):
        def fit(self, X):
            self.fit_ = LedoitWolf().fit(X)
            return self

        def score_samples(self, X):
            return -self.fit_.mahalanobis(X)

    class NearestTraining(BaseEstimator):
        def fit(self, X):
            self.index_ = NearestNeighbors(n_neighbors=2).fit(X)
            return self

        def score_samples(self, X):
            return -self.index_.kneighbors(X)[0].mean(axis=1)

    # VAEDetector(backbone=...) on these embeddings: what its "auto" settings resolve to for features
    backbone_default = dict(likelihood="gaussian", score_method="residual", scaling="common", n_estimators=1,
                            learning_rate=5e-4, trim_fraction=0.0)
    return {"gaussian": Gaussian(), "knn": NearestTraining(),
            "isolation_forest": IsolationForest(random_state=seed),
            "vaedetect": VAEDetector(random_state=seed, **backbone_default),
            "vaedetect_elbo": VAEDetector(random_state=seed, **{**backbone_default, "score_method": "elbo"}),
            # the tabular defaults (a Laplace decoder, each feature its own scale): the wrong ones for embeddings
            "vaedetect_tabular": VAEDetector(random_state=seed)}


def run(args) -> dict:
    from vaedetect.backbones import FeatureExtractor

    train, _ = load_cifar10("train", classes={args.normal}, path=args.data_dir, limit_per_class=args.n_train)
    test, labels = load_cifar10("test", path=args.data_dir, limit_per_class=args.per_class)
    extractor = FeatureExtractor(args.backbone, stages=args.stages, image_size=args.image_size,
                                 normalize=not args.plain).fit()
    if args.cache and Path(args.cache).is_file():  # embeddings of an earlier run with the same arguments
        with np.load(args.cache) as cached:
            train_features, test_features = cached["train"], cached["test"]
            embed_seconds = float(cached["embed_seconds"])
    else:
        started = time.perf_counter()
        train_features = extractor.transform(train)
        embed_seconds = time.perf_counter() - started
        test_features = extractor.transform(test)
        if args.cache:
            np.savez(args.cache, train=train_features, test=test_features, embed_seconds=embed_seconds)
    rows = {}
    for name, detector in peers(args.seed).items():
        started = time.perf_counter()
        scores = detector.fit(train_features).score_samples(test_features)
        seconds = time.perf_counter() - started
        normal = labels == args.normal
        by_class = {other: roc_auc_against(scores[normal], scores[labels == other])
                    for other in sorted(set(labels) - {args.normal})}
        rows[name] = {"roc_auc_all": float(roc_auc_score(~normal, -scores)), "roc_auc": by_class,
                      "fit_score_seconds": seconds}
        print(f"{name}: all {rows[name]['roc_auc_all']:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in by_class.items())
              + f" ({seconds:.1f} s)", flush=True)
    return {"normal": args.normal, "backbone": extractor.backbone_.identity, "stages": list(extractor.backbone_.stages),
            "normalize": extractor.normalize, "image_size": extractor.image_size_, "n_train": len(train),
            "n_test": len(test), "n_features": int(train_features.shape[1]),
            "embed_seconds_per_1000": 1000 * embed_seconds / len(train), "methods": rows}


def _embedded(extractor, images, cache):
    """``extractor.transform(images)``, kept in the .npz ``cache`` (when given) and read back from it."""
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as cached:
            return cached["features"], float(cached["seconds"])
    started = time.perf_counter()
    features = extractor.transform(images)
    seconds = time.perf_counter() - started
    if cache is not None:
        np.savez(cache, features=features, seconds=seconds)
    return features, seconds


def run_one_class(args) -> dict:
    """Every CIFAR-10 class in turn as the normal one: ROC AUC against the nine others, per method."""
    from vaedetect.backbones import FeatureExtractor

    test, labels = load_cifar10("test", path=args.data_dir, limit_per_class=args.per_class)
    extractor = FeatureExtractor(args.backbone, stages=args.stages, image_size=args.image_size,
                                 normalize=not args.plain).fit()
    folder = Path(args.cache_dir) if args.cache_dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    test_features, _ = _embedded(extractor, test, folder and folder / "test.npz")
    rows, per_seed, embed_seconds, n_train, seconds_by_method = {}, {}, [], {}, {}
    for normal in getattr(args, "classes", None) or sorted(set(labels)):
        train, _ = load_cifar10("train", classes={normal}, path=args.data_dir, limit_per_class=args.n_train)
        features, seconds = _embedded(extractor, train, folder and folder / f"train_{normal}.npz")
        embed_seconds.append(1000 * seconds / len(train))
        n_train[normal] = len(train)
        per_seed[normal] = {}
        seconds_by_method[normal] = {}
        for name in peers(0):
            # the Gaussian and kNN draw nothing at random: one fit stands for every seed
            seeds = args.seeds if name not in UNSEEDED else args.seeds[:1]
            values, started = [], time.perf_counter()
            for seed in seeds:
                scores = peers(seed)[name].fit(features).score_samples(test_features)
                values.append(float(roc_auc_score(labels != normal, -scores)))
            seconds_by_method[normal][name] = (time.perf_counter() - started) / len(seeds)
            per_seed[normal][name] = values * (len(args.seeds) // len(values))
        rows[normal] = {name: float(np.mean(values)) for name, values in per_seed[normal].items()}
        print(f"{normal}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[normal].items()), flush=True)
    return {"backbone": extractor.backbone_.identity, "stages": list(extractor.backbone_.stages),
            "normalize": extractor.normalize, "image_size": extractor.image_size_, "n_train": n_train, "n_test": len(test),
            "n_features": int(test_features.shape[1]), "embed_seconds_per_1000": float(np.mean(embed_seconds)),
            "seeds": list(args.seeds), "one_class": rows, "one_class_per_seed": per_seed,
            "fit_score_seconds": seconds_by_method}


def markdown_one_class(results: dict) -> str:
    methods = list(next(iter(results["one_class"].values())))
    lines = ["| normal class | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for normal, row in results["one_class"].items():
        lines.append(f"| {normal} | " + " | ".join(f"{row[m]:.3f}" for m in methods) + " |")
    means = [np.mean([row[m] for row in results["one_class"].values()]) for m in methods]
    lines.append("| **mean** | " + " | ".join(f"**{value:.3f}**" for value in means) + " |")
    per_seed = results.get("one_class_per_seed")
    if per_seed and len(results["seeds"]) > 1:  # the spread of the class mean over seeds
        spread = [np.std([np.mean([per_seed[c][m][i] for c in per_seed]) for i in range(len(results["seeds"]))])
                  for m in methods]
        lines.append("| sd of the mean over seeds | " + " | ".join(f"{value:.3f}" for value in spread) + " |")
    return "\n".join(lines)


def markdown_one_class_page(results: dict) -> str:
    identity = results["backbone"]
    return (
        "# One-class CIFAR-10 in feature space: every class\n\n"
        + generated_by(results) + "\n\n"
        f"Backbone `{identity['name']}` ({identity['source']} {identity['version']}), stages "
        f"{', '.join(results['stages'])}, {results['n_features']} features per photo "
        f"({'power-normalised' if results.get('normalize') else 'plain averages'}), photos upsampled to "
        f"{results['image_size']} px ({results['embed_seconds_per_1000']:.0f} s per 1,000 photos to embed). Each class in "
        f"turn is normal: every detector is fitted on the embeddings of the first {max(results['n_train'].values())} "
        f"`train/<class>` photos and scores {results['n_test']} test photos (the same number of each class); ROC AUC of "
        "the normal class against the nine others (anomaly = positive). "
        + (f"Mean over seeds {', '.join(map(str, results['seeds']))} (seeds change the VAE's initialisation and splits "
           "and IsolationForest's trees; the Gaussian and kNN have none).\n\n" if len(results.get("seeds", [])) > 1
           else "One seed, one run.\n\n")
        + markdown_one_class(results) + "\n"
        + _fit_time_text(results)
    )


# A class of CIFAR-10's training split: what "fit time per class" is stated for.
CLASS_PHOTOS = 5000


def _fit_time_text(results: dict) -> str:
    """Seconds to fit and score each method on one class's embeddings, and what a fit on a whole class's photos
    costs with the embedding (runs before this was timed have no such line)."""
    seconds = results.get("fit_score_seconds")
    if not seconds:
        return ""
    methods = list(next(iter(seconds.values())))
    mean = {m: float(np.mean([row[m] for row in seconds.values()])) for m in methods}
    embed = results["embed_seconds_per_1000"] * CLASS_PHOTOS / 1000
    scale = CLASS_PHOTOS / max(results["n_train"].values())
    return ("\nFit and score seconds on one class's embeddings, mean over classes: "
            + ", ".join(f"{m} {mean[m]:.1f}" for m in methods)
            + f". Embedding the {CLASS_PHOTOS:,} photos of a whole class takes about {embed:.0f} s, so a fit of "
              f"`vaedetect` on them costs about {embed + scale * mean['vaedetect']:.0f} s (the VAE's part scaled "
              "from the photos above by their number).\n")


def markdown(results: dict) -> str:
    classes = list(next(iter(results["methods"].values()))["roc_auc"])
    lines = ["| method | all other classes | " + " | ".join(classes) + " | fit + score s |",
             "|---|---|" + "---|" * len(classes) + "---|"]
    for name, row in results["methods"].items():
        lines.append(f"| {name} | {row['roc_auc_all']:.3f} | " + " | ".join(f"{row['roc_auc'][c]:.3f}" for c in classes)
                     + f" | {row['fit_score_seconds']:.1f} |")
    return "\n".join(lines)


def markdown_page(results: dict) -> str:
    identity = results["backbone"]
    return (
        f"# One-class CIFAR-10 in feature space: `{results['normal']}` normal\n\n"
        + generated_by(results) + "\n\n"
        f"Backbone `{identity['name']}` ({identity['source']} {identity['version']}), stages "
        f"{', '.join(results['stages'])}, {results['n_features']} features per photo "
        f"({'power-normalised' if results.get('normalize') else 'plain averages'}), photos upsampled to "
        f"{results['image_size']} px; {results['embed_seconds_per_1000']:.0f} s per 1,000 photos to embed. Every "
        f"detector is fitted on the embeddings of {results['n_train']} `train/{results['normal']}` photos and scores "
        f"{results['n_test']} test photos; ROC AUC of `test/{results['normal']}` against each other class (anomaly = "
        "positive). One seed, one run.\n\n" + markdown(results) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/")
    parser.add_argument("--normal", default="dog")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--stages", nargs="+", default=None)
    parser.add_argument("--image-size", type=int, default=None, help="default: the side the backbone was trained at")
    parser.add_argument("--plain", action="store_true", help="plain averaged features, not power-normalised")
    parser.add_argument("--n-train", type=int, default=2000, help="training photos of the normal class")
    parser.add_argument("--per-class", type=int, default=200, help="test photos of each class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="with --all-classes: seeds to average over")
    parser.add_argument("--cache", default=None, help="keep the embeddings in this .npz and reuse them when it exists")
    parser.add_argument("--all-classes", action="store_true",
                        help="one-class CIFAR-10: every class in turn as the normal one (ignores --normal)")
    parser.add_argument("--cache-dir", default=None, help="with --all-classes: keep each embedding here and reuse it")
    args = parser.parse_args(argv)
    if args.all_classes:
        return run_benchmark("features", argv, args, run_one_class, markdown_one_class_page)
    return run_benchmark("features", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
