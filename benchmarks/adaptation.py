"""Adapting the backbone to the normal class on the CPU: does PANDA's compactness loss lift one-class CIFAR-10?

PANDA (Reiss et al., 2021) fine-tunes the last stages of an ImageNet network on the normal photos only, pulling
their features towards the features' initial mean, and stops early (the loss collapses every photo onto one
point if it runs on). Here EfficientNet-Lite0's stages below ``first`` stay frozen and are run once per photo;
the stages from ``first`` on and the head are trained with Adam on the compactness loss of the features
``FeatureExtractor`` gives (pooled head, power-normalised), epoch by epoch, and after each epoch a kNN (mean
distance to the 2 nearest training photos, as PANDA scores) and a Ledoit-Wolf Gaussian (which
``VAEDetector(backbone=...)`` ranks level with) are fitted on the adapted features and scored.

The photos are the development protocol of settings, not the published test split: each normal class trains
on its first ``--n-train`` training photos and is evaluated on the last ``--n-eval`` training photos of every
class, which it never saw. The time of a training step of the whole network is measured too, for what fully
adapting it (as MSC does, with augmented views) would cost per epoch.

    python -m benchmarks.adaptation --out benchmarks/results/adaptation.json \
        --markdown docs/experiments/backbone_adaptation.md
"""

from __future__ import annotations

import copy
import sys
import time

import numpy as np

from ._data import load_cifar10
from ._provenance import benchmark_parser, generated_by, run_benchmark


def _setting(text: str) -> tuple[int, float]:
    """``"7:2e-5"`` -> (first adapted stage 7, learning rate 2e-5)."""
    stage, rate = text.split(":")
    return int(stage), float(rate)


def _trunk(network, first: int):
    """Frozen Lite0 up to the input of stage ``first``: images -> feature maps."""
    import torch
    from torch.nn import functional

    from vaedetect.backbones import _same_padding

    blocks = network._blocks[: network.stage_ends[first - 2] + 1]

    def maps(batch):
        with torch.inference_mode():
            x = functional.relu6(network._bn0(network._conv_stem(_same_padding(batch, 3, 2))))
            for block in blocks:
                x = block(x)
            return x.float().clone()

    return maps


def _top(network, first: int):
    """A trainable copy of Lite0 from stage ``first`` to the pooled, power-normalised head features."""
    import torch
    from torch.nn import functional

    class Top(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = copy.deepcopy(network._blocks[network.stage_ends[first - 2] + 1 :])
            self.head = copy.deepcopy(network._conv_head)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            pooled = functional.relu6(self.head(x)).mean(dim=(2, 3))
            return functional.normalize(pooled.sign() * pooled.abs().sqrt(), dim=1)

    top = Top()
    for parameter in top.parameters():
        parameter.requires_grad_(True)
    return top


def _features(top, maps, batch_size=256):
    import torch

    with torch.no_grad():
        return torch.cat([top(maps[start : start + batch_size]) for start in range(0, len(maps), batch_size)]).numpy()


def _aucs(train, evaluation, anomaly) -> dict:
    from sklearn.covariance import LedoitWolf
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    knn = NearestNeighbors(n_neighbors=2).fit(train).kneighbors(evaluation)[0].mean(axis=1)
    gaussian = LedoitWolf().fit(train).mahalanobis(evaluation)
    return {"knn": float(roc_auc_score(anomaly, knn)), "gaussian": float(roc_auc_score(anomaly, gaussian))}


def _adapt(network, first, rate, epochs, train_maps, eval_maps, anomaly, seed) -> list[dict]:
    """Per epoch (0: as pretrained): the compactness loss, the AUCs of the adapted features and the epoch's
    seconds."""
    import torch

    torch.manual_seed(seed)
    top = _top(network, first)
    start = _features(top, train_maps)
    center = torch.from_numpy(start.mean(axis=0))
    rows = [{"epoch": 0, **_aucs(start, _features(top, eval_maps), anomaly)}]
    optimizer = torch.optim.Adam(top.parameters(), lr=rate)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        started, total = time.perf_counter(), 0.0
        for batch in torch.randperm(len(train_maps), generator=generator).split(64):
            loss = ((top(train_maps[batch]) - center) ** 2).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        seconds = time.perf_counter() - started
        rows.append({"epoch": epoch, "loss": total / len(train_maps), "seconds": seconds,
                     **_aucs(_features(top, train_maps), _features(top, eval_maps), anomaly)})
    return rows


def _full_step_seconds(extractor, images, batch_size=32) -> float:
    """Seconds of one training step (forward, backward, update) of the whole network on ``batch_size`` photos."""
    import torch

    network = copy.deepcopy(extractor.backbone_.network).train()
    for parameter in network.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-5)
    batch = torch.cat([b for b in extractor._network_batches(images[:batch_size])])
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        loss = network.stages(batch)["head"].mean(dim=(2, 3)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    return min(timings)


def run(args) -> dict:
    import torch

    from vaedetect.backbones import FeatureExtractor

    extractor = FeatureExtractor("efficientnet_lite0", device="cpu").fit()
    network = extractor.backbone_.network
    photos, labels = load_cifar10("train", path=args.data_dir)
    classes = sorted(set(labels))
    evaluation = np.concatenate([np.flatnonzero(labels == name)[-args.n_eval :] for name in classes])
    settings = [_setting(text) for text in args.settings]
    results = {"backbone": extractor.backbone_.identity, "n_train": args.n_train, "n_eval": args.n_eval,
               "epochs": args.epochs, "seed": args.seed, "settings": args.settings, "classes": {}}
    trunk_maps = {}  # the frozen trunk's maps of the evaluation photos, per first adapted stage
    for normal in args.classes:
        training = np.flatnonzero(labels == normal)[: args.n_train]
        anomaly = labels[evaluation] != normal
        results["classes"][normal] = {}
        for (first, rate), text in zip(settings, args.settings):
            trunk = _trunk(network, first)

            def maps_of(indices):
                return torch.cat([trunk(batch) for batch in extractor._network_batches(photos[indices])])

            if first not in trunk_maps:
                trunk_maps[first] = maps_of(evaluation)
            rows = _adapt(network, first, rate, args.epochs, maps_of(training), trunk_maps[first], anomaly, args.seed)
            results["classes"][normal][text] = rows
            print(normal, text, [(row["epoch"], round(row["knn"], 4), round(row["gaussian"], 4)) for row in rows],
                  flush=True)
    step = _full_step_seconds(extractor, photos[training])
    results["full_network"] = {"batch_size": 32, "step_seconds": step,
                               "epoch_minutes": step * args.n_train / 32 / 60}
    return results


def markdown_page(results: dict) -> str:
    settings, epochs = results["settings"], results["epochs"]
    header = ["normal class", "adapted from stage : learning rate"] + [f"epoch {e} (kNN / Gaussian)"
                                                                       for e in range(epochs + 1)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---|" * (epochs + 1)]
    for normal, by_setting in results["classes"].items():
        for text in settings:
            rows = by_setting[text]
            cells = [f"{row['knn']:.4f} / {row['gaussian']:.4f}" for row in rows]
            lines.append(f"| {normal} | {text} | " + " | ".join(cells) + " |")
    seconds = {text: np.mean([row["seconds"] for by in results["classes"].values() for row in by[text][1:]])
               for text in settings}
    timing = ", ".join(f"`{text}` {value:.0f} s" for text, value in seconds.items())
    full = results["full_network"]
    return (
        "# Adapting the backbone to the normal class (PANDA's compactness loss, on the CPU)\n\n"
        + generated_by(results) + "\n\n"
        f"EfficientNet-Lite0 at 224 px. Each normal class trains on its first {results['n_train']} CIFAR-10 "
        f"training photos; evaluation on the last {results['n_eval']} training photos of every class (the "
        "development protocol: the test split stays for published figures). The stages before the adapted one "
        "stay frozen; the rest and the head are trained with Adam (batch 64) to pull the power-normalised head "
        "features of the normal photos towards their initial mean (PANDA's compactness loss, stopped early). "
        "After each epoch, ROC AUC of kNN (2 nearest training photos) and of a Ledoit-Wolf Gaussian on the "
        f"adapted features, normal class against the nine others; epoch 0 is the frozen backbone. Seed "
        f"{results['seed']}.\n\n" + "\n".join(lines) + "\n\n"
        f"Seconds per epoch of adaptation on 2 CPU cores: {timing}. A training step of the whole network on "
        f"{full['batch_size']} photos takes {full['step_seconds']:.1f} s, so one epoch over {results['n_train']} "
        f"photos costs about {full['epoch_minutes']:.0f} minutes per view.\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/")
    parser.add_argument("--classes", nargs="+", default=["dog", "cat", "horse"], help="normal classes")
    parser.add_argument("--settings", nargs="+", default=["7:2e-5", "7:1e-4", "6:1e-5"],
                        help="FIRST_STAGE:LEARNING_RATE of each adaptation tried")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=4500, help="training photos of the normal class")
    parser.add_argument("--n-eval", type=int, default=500, help="held-out training photos of each class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run_benchmark("adaptation", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
