"""How fast a backbone embeds images on this machine: milliseconds per image by batch size, batch norms
folded into the convolutions or not.

Random images at 224 px through EfficientNet-Lite0 (the packaged ImageNet weights, as loaded as they are
and with its batch norms folded, as ``load_backbone`` returns it) and, for a second architecture,
torchvision's ResNet-18 (random weights: speed does not depend on them, and nothing is downloaded).
Configurations take turns, round after round, so that a machine slowed for a while slows them alike;
each figure is the median of the rounds. This is the evidence for ``FeatureExtractor(batch_size="auto")``
(two images per thread on the CPU) and for folding the batch norms.

Usage::

    python -m benchmarks.backbone_speed [--batch-sizes 1 2 4 8 16 64] [--out FILE.json] [--markdown FILE.md]
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

from ._provenance import benchmark_parser, generated_by, run_benchmark

IMAGE_SIZE = 224


def _networks() -> dict:
    """The networks timed, by name: Lite0 as released, Lite0 folded, ResNet-18."""
    import torch
    import torchvision

    from vaedetect.backbones import _fold_batch_norms, _lite0_network, lite0_weights_file

    released = _lite0_network()
    released.load_state_dict(torch.load(lite0_weights_file(), map_location="cpu", weights_only=True))
    folded = copy.deepcopy(released)
    _fold_batch_norms(folded)
    return {"efficientnet_lite0": released, "efficientnet_lite0_folded": folded,
            "resnet18": torchvision.models.resnet18(weights=None)}


def _milliseconds_per_image(extractor, images) -> float:
    started = time.perf_counter()
    extractor.transform(images)
    return 1000 * (time.perf_counter() - started) / len(images)


def run(args) -> dict:
    import numpy as np

    from vaedetect.backbones import FeatureExtractor

    images = np.random.default_rng(0).random((args.n_images, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    extractors = {(name, batch): FeatureExtractor(network, image_size=IMAGE_SIZE, batch_size=batch, device="cpu").fit()
                  for name, network in _networks().items() for batch in args.batch_sizes}
    auto = FeatureExtractor(image_size=IMAGE_SIZE, device="cpu").fit()  # as shipped: folded, batch "auto"
    extractors[("efficientnet_lite0 as shipped", f"auto = {auto.batch_size_}")] = auto
    for extractor in extractors.values():
        extractor.transform(images[:2])  # warm-up: oneDNN builds its kernels for the shapes
    rounds = {key: [] for key in extractors}
    for _ in range(args.rounds):
        for key, extractor in extractors.items():
            rounds[key].append(_milliseconds_per_image(extractor, images))
    return {"image_size": IMAGE_SIZE, "n_images": args.n_images, "rounds": args.rounds,
            "rows": [{"network": name, "batch_size": batch, "ms_per_image": statistics.median(times), "rounds_ms": times}
                     for (name, batch), times in rounds.items()]}


def markdown_page(results: dict) -> str:
    lines = ["| network | batch size | ms per image |", "|---|---|---|"]
    lines += [f"| {row['network']} | {row['batch_size']} | {row['ms_per_image']:.1f} |" for row in results["rows"]]
    return (
        "# Embedding speed of the backbones\n\n"
        + generated_by(results) + "\n\n"
        f"{results['n_images']} random images at {results['image_size']} px through each network under "
        "`inference_mode`, channels-last, by `FeatureExtractor.transform` (resizing and pooling included); median "
        f"milliseconds per image over {results['rounds']} rounds in which the configurations take turns. "
        "`efficientnet_lite0`: the released network, batch norms apart; `_folded`: batch norms merged into the "
        "convolutions (what `load_backbone` returns); `resnet18`: torchvision's, random weights.\n\n"
        + "\n".join(lines) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    return run_benchmark("backbone_speed", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
