"""One CIFAR-10 class as normal (dogs by default): the pixel VAE, the VAE on pretrained features, and their
combined verdict.

For each seed, fits ``CombinedDetector`` (the default pixel ``VAEDetector`` and ``VAEDetector(backbone=...)``,
same splits) on ``--n-train`` training photos of the class, then scores its test photos, ``--per-class`` test
photos of every other class, far out-of-distribution sets (MNIST digits, constant colours, uniform noise) and
test photos of the class made wrong in how the photo is made (noise, blur, JPEG artefacts, swapped colours,
darkened). Reports the ROC AUC of the class against each set for the pixel model, the feature model and the
combined score (and the combination of standardised scores it was chosen over); beside them the feature-space
peers (Ledoit-Wolf Gaussian, kNN as in DN2, IsolationForest) fitted on the same embeddings of the same training
photos; the share of normal test photos the combined verdict flags at target false-positive rates; fit and
score seconds and the process's peak memory.

    python -m benchmarks reproduce combined_dog   # or python -m benchmarks.combined [--out F.json] [--markdown F.md]
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np

from ._data import load_cifar10
from ._provenance import benchmark_parser, generated_by, run_benchmark
from ._tables import roc_auc_against
from .cifar_dog_ood import TARGET_FPRS, far_ood_sets
from .features import UNSEEDED, peers

FAR_OOD = ("mnist", "constant", "noise")
# The pixel model's weights compared with the detector's own (its share of the false-positive budget).
PIXEL_WEIGHTS = (0.5, 0.2, 0.1, 0.05)
CORRUPTIONS = ("noise", "blur", "jpeg", "bgr", "dark")


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def corrupted_sets(photos: np.ndarray, n: int, name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Test photos of the normal class made wrong in how the photo is made, not in what it shows, ``n``
    different photos each, named ``<name>_<corruption>``: Gaussian noise (sd 20 of 255), a Gaussian blur
    (radius 1), JPEG at quality 10, red and blue swapped, and half the brightness."""
    from PIL import Image, ImageFilter

    rng = np.random.RandomState(seed)
    parts = [photos[i * n : (i + 1) * n] for i in range(len(CORRUPTIONS))]
    made = {
        "noise": np.clip(parts[0] + rng.normal(0, 20, parts[0].shape), 0, 255).astype(np.uint8),
        "blur": np.stack([np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(1.0))) for p in parts[1]]),
        "jpeg": np.stack([_jpeg(p, 10) for p in parts[2]]),
        "bgr": np.ascontiguousarray(parts[3][..., ::-1]),
        "dark": (parts[4] // 2).astype(np.uint8),
    }
    return {f"{name}_{corruption}": made[corruption] for corruption in CORRUPTIONS}


def _groups(sets, normal: str) -> tuple[list[str], list[str], list[str]]:
    """The evaluated sets as far out-of-distribution, corrupted normal photos and other classes."""
    corrupted = [f"{normal}_{c}" for c in CORRUPTIONS]
    return ([s for s in sets if s in FAR_OOD], [s for s in sets if s in corrupted],
            [s for s in sets if s not in FAR_OOD and s not in corrupted and s != normal])


def evaluation_sets(args) -> dict[str, np.ndarray]:
    test, labels = load_cifar10("test", path=args.data_dir)
    normal = test[labels == args.normal]
    sets = {args.normal: normal, **far_ood_sets(args.data_dir, args.n_synthetic, seed=0),
            **corrupted_sets(normal, args.n_synthetic, args.normal)}
    for label in sorted(set(labels) - {args.normal}):
        sets[label] = test[labels == label][: args.per_class]
    return sets



def _by_set(scores: np.ndarray, bounds, names) -> dict[str, np.ndarray]:
    return {name: scores[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}


def _standardised(raw: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The alternative to tail probabilities: each model's scores centred on the reference scores' median and
    divided by their robust spread (1.4826 times the median absolute deviation)."""
    median = np.median(reference, axis=0)
    return (raw - median) / (1.4826 * np.median(np.abs(reference - median), axis=0))


def _halves_statistic(detector, raw: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """The rule ``CombinedDetector`` calibrated with before leaving one out: a random half of the held-out images
    as the reference, the other half calibrating the smaller log tail probability. The statistic of ``raw``
    and its threshold at the default contamination."""
    from vaedetect.combined import log_tail_probability
    from vaedetect.settings import resolve_contamination

    pairs = detector.reference_scores_
    order = np.random.RandomState(seed).permutation(len(pairs))
    reference, calibration = pairs[order[: len(pairs) // 2]], pairs[order[len(pairs) // 2:]]

    def statistic(scores):
        return np.column_stack([log_tail_probability(scores[:, m], reference[:, m]) for m in range(2)]).min(axis=1)

    return statistic(raw), float(np.quantile(statistic(calibration), resolve_contamination(detector.contamination)))


def _other_weights(detector) -> list[float]:
    return [weight for weight in PIXEL_WEIGHTS if weight != detector.pixel_weight]


def reweighted(detector, pixel_weight: float):
    """The fitted ``detector`` with another ``pixel_weight``, calibrated again on the same held-out images (the
    models are shared, not refitted)."""
    import copy

    variant = copy.copy(detector)
    variant.pixel_weight = pixel_weight
    return variant._calibrate_on_pairs(detector.reference_scores_, "held-out")


def flagged_at_default(detector, raw: np.ndarray, seed: int, variants: dict) -> dict[str, np.ndarray]:
    """Which images each rule flags at the default threshold (contamination "auto", 1%): each model on its own
    (its own threshold from all held-out images), the combined verdict at its weight and at ``PIXEL_WEIGHTS``,
    the union bound over the two models' conformal p-values (flag when either is at most half the rate) and the
    halved calibration the combined verdict had before. ``variants``: the detector at other weights, by weight."""
    from vaedetect.settings import resolve_contamination

    rate = resolve_contamination(detector.contamination)
    p_values = [model.calibration_.p_values(raw[:, m]) for m, model in enumerate((detector.pixel_, detector.features_))]
    halves, halves_offset = _halves_statistic(detector, raw, seed)
    flags = {"pixels": raw[:, 0] < detector.pixel_.offset_, "features": raw[:, 1] < detector.features_.offset_,
             "combined": detector._combine(raw).min(axis=1) < detector.offset_}
    for weight, variant in variants.items():
        flags[f"combined_pixel_weight_{weight}"] = variant._combine(raw).min(axis=1) < variant.offset_
    return flags | {"union_bound": np.minimum(*p_values) <= rate / 2, "combined_halves": halves < halves_offset}


def matched_single_models(raw: np.ndarray, normal: slice, flags: dict) -> dict[str, dict[str, np.ndarray]]:
    """For each rule, what each model alone flags with its threshold moved to flag the same share of the normal
    test photos as the rule does: the comparison at the same false-positive rate."""
    matched = {}
    for rule, hits in flags.items():
        rate = float(np.mean(hits[normal]))
        matched[rule] = {model: raw[:, m] < np.quantile(raw[normal, m], rate) if rate > 0 else np.zeros(len(raw), bool)
                         for m, model in enumerate(("pixels", "features"))}
    return matched


def _peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_seed(args, seed, train, everything, bounds, names, peer_features, unseeded_peers) -> dict:
    from vaedetect import CombinedDetector, VAEDetector
    from vaedetect.backbones import FeatureExtractor

    epochs = getattr(args, "epochs", "auto")
    features = VAEDetector(backbone=FeatureExtractor(args.backbone, image_size=args.image_size), epochs=epochs)
    detector = CombinedDetector(VAEDetector(epochs=epochs), features, random_state=seed)
    started = time.perf_counter()
    detector.fit(train)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    raw = np.column_stack([detector.pixel_.score_samples(everything), detector.features_.score_samples(everything)])
    evidence = detector._combine(raw)  # what evidence_scores(everything) returns
    score_seconds = time.perf_counter() - started
    scores = {"pixels": evidence[:, 0], "features": evidence[:, 1], "combined": evidence.min(axis=1),
              "combined_standardised": _standardised(raw, detector.reference_scores_).min(axis=1)}
    train_features, test_features = peer_features
    scores.update(unseeded_peers)
    forest = peers(seed)["isolation_forest"]
    scores["peer_isolation_forest"] = forest.fit(train_features).score_samples(test_features)
    variants = {weight: reweighted(detector, weight) for weight in _other_weights(detector)}
    for weight, variant in variants.items():
        scores[f"combined_pixel_weight_{weight}"] = variant._combine(raw).min(axis=1)
    rows = {}
    for method, values in scores.items():
        by_set = _by_set(values, bounds, names)
        rows[method] = {name: roc_auc_against(by_set[args.normal], other) for name, other in by_set.items()
                        if name != args.normal}
    flags = flagged_at_default(detector, raw, seed, variants)
    at_default = {rule: {name: float(np.mean(hits)) for name, hits in _by_set(found, bounds, names).items()}
                  for rule, found in flags.items()}
    normal_rows = slice(bounds[names.index(args.normal)], bounds[names.index(args.normal) + 1])
    at_same_rate = {rule: {model: {name: float(np.mean(hits)) for name, hits in _by_set(found, bounds, names).items()}
                           for model, found in models.items()}
                    for rule, models in matched_single_models(raw, normal_rows, flags).items()}
    normal = _by_set(scores["combined"], bounds, names)[args.normal]
    flagged = {str(fpr): float(np.mean(normal < detector.set_threshold(fpr=fpr).offset_)) for fpr in TARGET_FPRS}
    groups = _groups(names, args.normal)
    print(f"seed {seed}: fit {fit_seconds:.0f} s, score {score_seconds:.0f} s; "
          + "; ".join(f"{m} " + " ".join(f"{label} {np.mean([r[s] for s in group]):.3f}"
                                         for label, group in zip(("far", "corrupted", "others"), groups))
                      for m, r in rows.items()), flush=True)
    return {"seed": seed, "fit_seconds": fit_seconds, "score_seconds": score_seconds, "n_scored": int(len(everything)),
            "n_calibration": int(len(detector.calibration_.scores)), "training_summary": detector.training_summary_,
            "roc_auc": rows, "flagged_normal": flagged, "flagged_at_default": at_default,
            "single_models_at_the_same_rate": at_same_rate,
            "peak_memory_mb": _peak_memory_mb()}


def run(args) -> dict:
    from vaedetect.backbones import FeatureExtractor

    train, _ = load_cifar10("train", classes={args.normal}, path=args.data_dir, limit_per_class=args.n_train)
    sets = evaluation_sets(args)
    names = list(sets)
    everything = np.concatenate([sets[name] for name in names])
    bounds = np.cumsum([0] + [len(sets[name]) for name in names])
    extractor = FeatureExtractor(args.backbone, image_size=args.image_size).fit()
    started = time.perf_counter()
    peer_features = extractor.transform(train), extractor.transform(everything)
    embed_seconds = time.perf_counter() - started
    # the Gaussian and kNN draw nothing at random: fitted once for every seed
    unseeded = {f"peer_{name}": peers(0)[name].fit(peer_features[0]).score_samples(peer_features[1])
                for name in UNSEEDED}
    seeds = [run_seed(args, seed, train, everything, bounds, names, peer_features, unseeded) for seed in args.seeds]
    from vaedetect import CombinedDetector

    return {"normal": args.normal, "backbone": extractor.backbone_.identity, "image_size": extractor.image_size_,
            "pixel_weight": CombinedDetector().pixel_weight,
            "n_train": int(len(train)),
            "n_evaluated": {name: int(len(values)) for name, values in sets.items()},
            "peer_embed_seconds_per_1000": 1000 * embed_seconds / (len(train) + len(everything)), "seeds": seeds}


def _flagged(seed: dict) -> dict:
    return seed.get("flagged_normal", seed.get("flagged_test_dogs"))  # the name of the first runs


def markdown(results: dict) -> str:
    seeds = results["seeds"]
    methods = list(seeds[0]["roc_auc"])
    sets = list(seeds[0]["roc_auc"][methods[0]])
    others = _groups(sets, results.get("normal", "dog"))[2]
    lines = ["| method | " + " | ".join(sets) + " | mean of the other classes |", "|---|" + "---|" * (len(sets) + 1)]
    for method in methods:
        means = {s: np.mean([seed["roc_auc"][method][s] for seed in seeds]) for s in sets}
        spread = np.std([np.mean([seed["roc_auc"][method][s] for s in others]) for seed in seeds])
        lines.append(f"| {method} | " + " | ".join(f"{means[s]:.3f}" for s in sets)
                     + f" | {np.mean([means[s] for s in others]):.3f} +- {spread:.3f} |")
    lines += ["", "| seed | fit s | score s (per 1,000) | combined calibration scores | flagged normal test photos at "
              + " / ".join(f"fpr {fpr}" for fpr in TARGET_FPRS) + " | peak memory MB |", "|---|---|---|---|---|---|"]
    for seed in seeds:
        per_1000 = 1000 * seed["score_seconds"] / seed["n_scored"]
        lines.append(f"| {seed['seed']} | {seed['fit_seconds']:.0f} | {per_1000:.1f}"
                     f" | {seed['n_calibration']} | "
                     + " / ".join(f"{_flagged(seed)[str(fpr)]:.3f}" for fpr in TARGET_FPRS)
                     + f" | {seed['peak_memory_mb']:.0f} |")
    return "\n".join(lines)


def flagged_markdown(results: dict) -> str:
    """The share of each group of sets each rule flags at the default threshold, mean over seeds, and how much
    of what the better single model flags at the same false-positive rate the combined rules keep."""
    seeds = [seed for seed in results["seeds"] if "flagged_at_default" in seed]  # runs before it have none
    if not seeds:
        return ""
    normal = results.get("normal", "dog")
    rules = list(seeds[0]["flagged_at_default"])
    far, corrupted, others = _groups(list(seeds[0]["flagged_at_default"][rules[0]]), normal)
    groups = {f"{normal} (false positives)": [normal], "other classes": others, f"damaged {normal} photos": corrupted,
              "far out-of-distribution": far}

    def share(table, group):
        return float(np.mean([np.mean([table(seed)[name] for name in group]) for seed in seeds]))

    def kept(rule, group):
        """The rule's catch over the better single model's at the rule's own false-positive rate."""
        alone = seeds[0].get("single_models_at_the_same_rate", {}).get(rule)
        if alone is None or rule in ("pixels", "features"):
            return ""
        better = max(share(lambda seed, m=model: seed["single_models_at_the_same_rate"][rule][m], group)
                     for model in alone)
        return f"{share(lambda seed: seed['flagged_at_default'][rule], group) / better:.0%}"

    lines = ["| rule | " + " | ".join(groups) + " | kept of the better model at the same rate: other classes / damaged |",
             "|---|" + "---|" * (len(groups) + 1)]
    for rule in rules:
        cells = [f"{share(lambda seed: seed['flagged_at_default'][rule], group):.3f}" for group in groups.values()]
        catch = [kept(rule, groups[label]) for label in ("other classes", f"damaged {normal} photos")]
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {' / '.join(catch) if all(catch) else ''} |")
    return "\n".join(lines)


def markdown_page(results: dict) -> str:
    identity, normal = results["backbone"], results.get("normal", "dog")
    return (
        f"# {normal.capitalize()} photos as the normal class: pixels, features and the combined "
        "verdict\n\n"
        + generated_by(results) + "\n\n"
        f"`CombinedDetector` of the default pixel `VAEDetector` (on the 32x32 photos) and `VAEDetector(backbone=...)` "
        f"with `{identity['name']}` ({identity['source']} {identity['version']}) at {results['image_size']} px, fitted "
        f"on the first {results['n_train']} `train/{normal}` photos, one fit per seed (the seed draws both models' "
        f"common splits and the calibration halves). Scored: {results['n_evaluated'][normal]} test photos of it against "
        f"each set (`{normal}_*`: other test photos of it with noise of sd 20/255, a Gaussian blur of radius 1, JPEG "
        "quality 10, red and blue swapped, half the brightness) "
        f"({', '.join(f'{k} {v}' for k, v in results['n_evaluated'].items() if k != normal)}); ROC AUC with the anomaly "
        "as positive, mean over seeds. `pixels` and `features` are the two models' own scores, `combined` the smaller "
        f"of their weighted log tail probabilities (what `score_samples` returns, at `pixel_weight="
        f"{results.get('pixel_weight', 0.5)}`), `combined_standardised` the smaller of "
        "the two scores standardised instead (median and robust spread of the same reference scores); `peer_*` are "
        "fitted on the same embeddings of the same training photos. "
        f"The flagged share of test {normal} photos is the observed false-positive rate of the combined threshold set with "
        "`set_threshold(fpr=...)`. Peak memory is the process's, over the run so far.\n\n"
        + markdown(results) + "\n"
        + _flagged_section(results)
    )


def _flagged_section(results: dict) -> str:
    table = flagged_markdown(results)
    if not table:
        return ""
    normal = results.get("normal", "dog")
    return ("\n## Flagged at the default threshold\n\n"
            "Share of each group flagged at `contamination=\"auto\"` (1%), mean over seeds and over the sets of a group: "
            "`pixels` and `features` each model alone with its own threshold (from all held-out images), `combined` "
            "the combined verdict, `union_bound` flags when either model's own conformal p-value is at most 0.5%, "
            "`combined_halves` the combined statistic calibrated on half the held-out images with the other half as "
            "reference (the rule before leaving one out), `combined_pixel_weight_*` the combined verdict with the pixel "
            "model's share of the false-positive budget at that weight, calibrated again on the same images. The first "
            f"column is the observed false-positive rate on the {normal} test photos; the last, what a combined rule "
            "flags over what the better of the two models flags alone with its threshold moved to the same observed "
            "false-positive rate.\n\n" + table + "\n")


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/ and mnist/")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=None, help="default: the side the backbone was trained at")
    parser.add_argument("--normal", default="dog", help="the normal class")
    parser.add_argument("--n-train", type=int, default=2000, help="training photos of the normal class")
    parser.add_argument("--per-class", type=int, default=200, help="test photos of each other class")
    parser.add_argument("--n-synthetic", type=int, default=200, help="images of each far out-of-distribution set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    return run_benchmark("combined", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
