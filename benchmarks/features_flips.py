"""Mirrored photos in feature space: do they lift the VAE above the same-feature peers?

One-class CIFAR-10 as in ``benchmarks.features --all-classes`` (the same detectors, protocol and
embeddings), each detector in four ways: as it is; trained on the embeddings of the training photos and
of their mirror images (``aug``: twice the data, which a VAE might use better than a Gaussian); scored by
the mean of the scores of a photo and of its mirror image (``tta``, test-time augmentation); both.

    python -m benchmarks.features_flips --cache-dir /tmp/bench/flips --out benchmarks/results/features_flips.json \
        --markdown docs/experiments/features_flips.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ._data import load_cifar10
from ._provenance import benchmark_parser, generated_by, run_benchmark
from .features import _embedded, peers

METHODS = ("gaussian", "knn", "vaedetect")
WAYS = ("plain", "aug", "tta", "aug_tta")


def _mirrored(images: np.ndarray) -> np.ndarray:
    """Photos ``(n, H, W, C)`` flipped left to right."""
    return np.ascontiguousarray(images[:, :, ::-1])


def _both_embedded(extractor, images, folder: Path | None, name: str):
    """Embeddings of ``images`` and of their mirror images, cached as ``name.npz`` and ``name_flip.npz``."""
    cache = (lambda suffix: folder / f"{name}{suffix}.npz") if folder is not None else (lambda suffix: None)
    return _embedded(extractor, images, cache(""))[0], _embedded(extractor, _mirrored(images), cache("_flip"))[0]


def _four_ways(method: str, seed: int, train, train_mirrored, test, test_mirrored, anomaly) -> dict:
    """ROC AUC of ``method`` fitted without and with the mirrored training photos, scored without and with
    the mirrored test photos."""
    ways = {}
    for prefix, fitted_on in (("plain", train), ("aug", np.r_[train, train_mirrored])):
        detector = peers(seed)[method].fit(fitted_on)
        scores, mirrored = detector.score_samples(test), detector.score_samples(test_mirrored)
        ways[prefix] = float(roc_auc_score(anomaly, -scores))
        ways["tta" if prefix == "plain" else "aug_tta"] = float(roc_auc_score(anomaly, -(scores + mirrored) / 2))
    return ways


def run(args) -> dict:
    from vaedetect.backbones import FeatureExtractor

    folder = Path(args.cache_dir) if args.cache_dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    extractor = FeatureExtractor("efficientnet_lite0").fit()
    test, labels = load_cifar10("test", path=args.data_dir, limit_per_class=args.per_class)
    test_features, test_mirrored = _both_embedded(extractor, test, folder, "test")
    rows = {}
    for normal in args.classes or sorted(set(labels)):
        train, _ = load_cifar10("train", classes={normal}, path=args.data_dir, limit_per_class=args.n_train)
        train_features, train_mirrored = _both_embedded(extractor, train, folder, f"train_{normal}")
        rows[normal] = {method: _four_ways(method, args.seed, train_features, train_mirrored, test_features,
                                           test_mirrored, labels != normal) for method in METHODS}
        print(normal, {m: {w: round(v, 4) for w, v in ways.items()} for m, ways in rows[normal].items()}, flush=True)
    return {"backbone": extractor.backbone_.identity, "n_train": args.n_train, "n_test": len(test), "seed": args.seed,
            "one_class": rows}


def markdown_page(results: dict) -> str:
    columns = [(method, way) for method in METHODS for way in WAYS]
    lines = ["| normal class | " + " | ".join(f"{m} {w}" for m, w in columns) + " |", "|---|" + "---|" * len(columns)]
    for normal, row in results["one_class"].items():
        lines.append(f"| {normal} | " + " | ".join(f"{row[m][w]:.4f}" for m, w in columns) + " |")
    means = [np.mean([row[m][w] for row in results["one_class"].values()]) for m, w in columns]
    lines.append("| **mean** | " + " | ".join(f"**{value:.4f}**" for value in means) + " |")
    return (
        "# Mirrored photos in feature space\n\n"
        + generated_by(results) + "\n\n"
        f"Backbone `{results['backbone']['name']}`, head features at 224 px, power-normalised. Each class in turn "
        f"is normal: {results['n_train']} training photos, {results['n_test']} test photos (the same number of each "
        "class), ROC AUC against the nine other classes, seed "
        f"{results['seed']}. `plain`: fitted on the training embeddings, as in features_one_class.md; `aug`: fitted "
        "on those and the embeddings of the mirrored training photos; `tta`: each test photo scored by the mean of "
        "its score and its mirror image's; `aug_tta`: both. `vaedetect` is `VAEDetector` with a backbone's "
        "settings (residual score).\n\n" + "\n".join(lines) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/")
    parser.add_argument("--classes", nargs="+", default=None, help="normal classes (default: all ten)")
    parser.add_argument("--n-train", type=int, default=2000, help="training photos of the normal class")
    parser.add_argument("--per-class", type=int, default=200, help="test photos of each class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="keep each embedding here and reuse it")
    args = parser.parse_args(argv)
    return run_benchmark("features_flips", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
