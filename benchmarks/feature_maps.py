"""Do the backbone's spatial feature maps add image-level evidence? One-class CIFAR-10, pooled against per-position.

The question behind feature anomaly maps (issue 23): a map needs a score per position of the backbone's spatial
feature maps, and is only worth building if such scores carry evidence. Here the normal class's training photos
(2,000) fit, on EfficientNet-Lite0 features at 224 px, a Ledoit-Wolf Gaussian on the pooled, power-normalised
head features (the detector's default features; no VAE, to isolate the features) and, PaDiM-style, one Gaussian
per position of a stage's map (200 channels drawn at random, as PaDiM does), or one Gaussian shared by all
positions; an image's score is the largest or the mean of its positions' Mahalanobis distances. ROC AUC of the
normal class's test photos against the nine other classes (200 test photos of each class).

    python -m benchmarks.feature_maps --out benchmarks/results/feature_maps.json --markdown docs/benchmarks/feature_maps.md
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ._data import load_cifar10
from ._provenance import benchmark_parser, generated_by, run_benchmark

STAGES = ("stage6", "head")  # 7x7 at 224 px: 192 and 1280 channels
CHANNELS_KEPT = 200


def _embed(extractor, images):
    """Pooled, power-normalised head features ``(n, 1280)`` and the maps of ``STAGES`` ``{stage: (n, c, h, w)}``
    (float16, to keep 4,000 photos' maps in about 1 GB)."""
    import torch

    from vaedetect.backbones import _pooled

    pooled, maps = [], {stage: [] for stage in STAGES}
    with torch.inference_mode():
        for batch in extractor._network_batches(images):
            stage_maps = extractor.backbone_.stage_maps(batch)
            pooled.append(_pooled(stage_maps, ("head",), True).float())
            for stage in STAGES:
                maps[stage].append(stage_maps[stage].half())
    return torch.cat(pooled).numpy(), {stage: torch.cat(parts) for stage, parts in maps.items()}


def _squared_mahalanobis(fit_rows, rows):
    from sklearn.covariance import LedoitWolf

    gaussian = LedoitWolf().fit(fit_rows)
    centred = rows - gaussian.location_
    return np.einsum("ij,jk,ik->i", centred, gaussian.precision_, centred)


def _positions(maps, channels):
    """``(n, positions, channels)`` float32 vectors of a stage's maps, at the chosen channels."""
    n, _, height, width = maps.shape
    return maps[:, channels].float().permute(0, 2, 3, 1).reshape(n, height * width, len(channels)).numpy()


def spatial_scores(train_maps, test_maps, rng) -> dict[str, np.ndarray]:
    """Anomaly scores (higher = more anomalous) of the test photos from one stage's maps."""
    channels = np.sort(rng.choice(train_maps.shape[1], size=min(CHANNELS_KEPT, train_maps.shape[1]), replace=False))
    train, test = _positions(train_maps, channels), _positions(test_maps, channels)
    per_position = np.stack([_squared_mahalanobis(train[:, p], test[:, p]) for p in range(train.shape[1])], axis=1)
    shared = _squared_mahalanobis(train.reshape(-1, train.shape[-1]), test.reshape(-1, test.shape[-1]))
    return {"per_position_max": per_position.max(axis=1), "per_position_mean": per_position.mean(axis=1),
            "shared_max": shared.reshape(len(test), -1).max(axis=1)}


def run(args) -> dict:
    from sklearn.metrics import roc_auc_score

    from vaedetect.backbones import FeatureExtractor

    extractor = FeatureExtractor("efficientnet_lite0", stages=STAGES, image_size=224, batch_size=64).fit()
    train, _ = load_cifar10("train", classes={args.normal}, path=args.data_dir, limit_per_class=args.n_train)
    test, labels = load_cifar10("test", path=args.data_dir, limit_per_class=args.per_class)
    is_anomaly = labels != args.normal
    started = time.perf_counter()
    train_pooled, train_maps = _embed(extractor, train)
    test_pooled, test_maps = _embed(extractor, test)
    embed_seconds = time.perf_counter() - started
    roc_auc = {"pooled_gaussian": roc_auc_score(is_anomaly, _squared_mahalanobis(train_pooled, test_pooled))}
    rng = np.random.RandomState(0)
    for stage in STAGES:
        for name, scores in spatial_scores(train_maps[stage], test_maps[stage], rng).items():
            roc_auc[f"{stage}_{name}"] = roc_auc_score(is_anomaly, scores)
        print(roc_auc, flush=True)
    return {"normal": args.normal, "n_train": len(train), "n_test": len(test), "identity": extractor.backbone_.identity,
            "embed_seconds": embed_seconds, "roc_auc": {name: float(value) for name, value in roc_auc.items()}}


def markdown_page(results: dict) -> str:
    identity = results["identity"]
    rows = "\n".join(f"| {name} | {value:.3f} |" for name, value in results["roc_auc"].items())
    return (
        "# Spatial feature maps against pooled features\n\n"
        + generated_by(results) + "\n\n"
        f"`{identity['name']}` ({identity['source']} {identity['version']}) at 224 px; normal class "
        f"`{results['normal']}`: {results['n_train']} training photos fit each Gaussian, {results['n_test']} test "
        "photos (the same number of each class) are scored; ROC AUC of the normal class against the nine others. "
        "`pooled_gaussian`: a Ledoit-Wolf Gaussian on the pooled, power-normalised head features (the detector's "
        "features); `<stage>_per_position_max` / `_mean`: one Gaussian per position of the stage's 7x7 map "
        f"({CHANNELS_KEPT} channels drawn at random, as PaDiM does), the image's largest or mean squared "
        "Mahalanobis distance; `<stage>_shared_max`: one Gaussian for every position, the largest distance.\n\n"
        "| score | ROC AUC |\n|---|---|\n" + rows + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/")
    parser.add_argument("--normal", default="dog", help="the normal class")
    parser.add_argument("--n-train", type=int, default=2000, help="training photos of the normal class")
    parser.add_argument("--per-class", type=int, default=200, help="test photos of each class")
    args = parser.parse_args(argv)
    return run_benchmark("feature_maps", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
