"""Out-of-distribution scores side by side: a detector trained on CIFAR-10 dogs, every score method.

Train ``VAEDetector`` (default settings) on CIFAR-10 ``train/dog``, then score ``test/dog`` (normal) against:
MNIST digits resized to 32x32 RGB, constant-colour images, uniform noise, and each other CIFAR-10 test class.
Reported from one run, on one network:

- ROC AUC of every score method against each evaluation set (anomaly = positive class);
- the cost of each method in seconds per 1,000 images (model time, images already in memory);
- the observed false-positive rate on ``test/dog`` at target ``fpr`` 0.05 and 0.01, each method
  calibrated (``calibrate``) on the detector's own calibration split (the dogs ``fit`` held out from
  training and early stopping, found again from the seed and checked against ``calibration_.scores``),
  and the flagged share of every evaluation set.

Usage::

    python -m benchmarks.cifar_dog_ood [--data-dir DIR] [--epochs N] [--per-class 500] [--out FILE.json]
        [--markdown docs/benchmarks/scores_cifar_dog.md] [--save-model dog.vae]
"""

from __future__ import annotations

import copy
import sys
import time

import numpy as np

from ._data import data_dir, load_cifar10, load_mnist
from ._provenance import benchmark_parser, describe_run, generated_by, write_results
from ._tables import roc_auc_against

TARGET_FPRS = (0.05, 0.01)


def mnist_as_rgb(images: np.ndarray, size: int = 32) -> np.ndarray:
    """Grayscale digits resized (bilinear) to ``size`` x ``size`` and repeated over three channels."""
    from PIL import Image

    resized = [np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)) for image in images]
    return np.repeat(np.stack(resized)[..., None], 3, axis=-1)


def far_ood_sets(data_dir, n_synthetic: int, seed: int) -> dict[str, np.ndarray]:
    """``n_synthetic`` each of MNIST digits as 32x32 RGB, constant colours and uniform noise, uint8."""
    rng = np.random.RandomState(seed)
    digits, _ = load_mnist(data_dir)
    colours = rng.randint(0, 256, size=(n_synthetic, 1, 1, 3), dtype=np.uint8)
    return {
        "mnist": mnist_as_rgb(digits[5000 : 5000 + n_synthetic]),
        "constant": np.ascontiguousarray(np.broadcast_to(colours, (n_synthetic, 32, 32, 3))),
        "noise": rng.randint(0, 256, size=(n_synthetic, 32, 32, 3), dtype=np.uint8),
    }


def evaluation_sets(data_dir, n_synthetic: int, per_class: int | None, seed: int) -> dict[str, np.ndarray]:
    """``{"dog": test dogs, "mnist": ..., "constant": ..., "noise": ..., <class>: ...}`` as (n, 32, 32, 3) uint8."""
    test, labels = load_cifar10("test", path=data_dir)
    sets = {"dog": test[labels == "dog"], **far_ood_sets(data_dir, n_synthetic, seed)}
    for label in sorted(set(labels) - {"dog"}):
        sets[label] = test[labels == label][:per_class]
    return sets


def calibration_split(detector, images: np.ndarray) -> np.ndarray:
    """The images ``detector.fit(images)`` calibrated on, drawn again from its integer ``random_state``
    as ``fit`` draws them, and checked: their scores must be its ``calibration_.scores``."""
    _, (_, _, calibration_index) = detector._seeds_and_splits(len(images))
    calibration = images[calibration_index]
    np.testing.assert_allclose(detector.score_samples(calibration), detector.calibration_.scores, rtol=1e-5, atol=1e-5)
    return calibration


def run(args) -> dict:
    from vaedetect import VAEDetector
    from vaedetect.registry import score_names

    sets = evaluation_sets(args.data_dir, args.n_synthetic, args.per_class, args.seed)
    train, _ = load_cifar10("train", classes={"dog"}, path=args.data_dir)

    params = {"random_state": args.seed} | ({"epochs": args.epochs} if args.epochs else {})
    started = time.perf_counter()
    detector = VAEDetector(**params).fit(train)
    fit_seconds = time.perf_counter() - started
    print(f"fit on {len(train)} dogs in {fit_seconds:.0f} s ({len(detector.history_)} epochs)", flush=True)
    if args.save_model:
        detector.save(args.save_model)
    calibration = calibration_split(detector, train)

    names = list(sets)
    everything = np.concatenate([sets[name] for name in names])
    bounds = np.cumsum([0] + [len(sets[name]) for name in names])
    rows = {}
    for method in score_names():
        started = time.perf_counter()
        scores = detector.score_table(everything, methods=[method])[method].to_numpy()
        seconds = time.perf_counter() - started
        by_set = {name: scores[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}
        calibrated = copy.deepcopy(detector).set_params(score_method=method).calibrate(calibration)
        rows[method] = {
            "seconds_per_1000": 1000 * seconds / len(everything),
            "roc_auc": {
                name: roc_auc_against(by_set["dog"], values)
                for name, values in by_set.items() if name != "dog"
            },
            "flagged_share": {
                str(fpr): {name: float(np.mean(values < calibrated.set_threshold(fpr=fpr).offset_))
                           for name, values in by_set.items()}
                for fpr in TARGET_FPRS
            },
        }
        print(f"{method}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[method]["roc_auc"].items())
              + f" ({rows[method]['seconds_per_1000']:.1f} s/1000)", flush=True)
    return {
        "fit_seconds": fit_seconds,
        "epochs_run": int(len(detector.history_)),
        "training_summary": detector.training_summary_,
        "n_train": int(detector.training_summary_["n_train"]),
        "n_calibration": int(len(calibration)),
        "n_evaluated": {name: int(len(values)) for name, values in sets.items()},
        "params": detector.get_params(),
        "methods": rows,
    }


def markdown(results: dict) -> str:
    methods = list(results["methods"])
    sets = list(results["methods"][methods[0]]["roc_auc"])
    lines = ["| test/dog vs | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name in sets:
        lines.append(f"| {name} ({results['n_evaluated'][name]}) | "
                     + " | ".join(f"{results['methods'][m]['roc_auc'][name]:.3f}" for m in methods) + " |")
    lines.append("| **seconds per 1,000 images** | "
                 + " | ".join(f"{results['methods'][m]['seconds_per_1000']:.2f}" for m in methods) + " |")
    for fpr in TARGET_FPRS:
        lines.append(f"| **share of test/dog flagged at fpr={fpr}** | "
                     + " | ".join(f"{results['methods'][m]['flagged_share'][str(fpr)]['dog']:.3f}" for m in methods)
                     + " |")
    return "\n".join(lines)


def markdown_page(results: dict) -> str:
    n_dogs, n_calibration = results["n_evaluated"]["dog"], results["n_calibration"]
    summary = results["training_summary"]
    # the flagged share varies with the test set and with the calibration set the threshold came from
    errors = {fpr: np.sqrt(fpr * (1 - fpr) * (1 / n_dogs + 1 / n_calibration)) for fpr in TARGET_FPRS}
    return (
        "# Out-of-distribution scores: trained on CIFAR-10 dogs\n\n"
        + generated_by(results) + "\n\n"
        f"`VAEDetector(random_state=0)` with default settings, fitted on the {summary['n_samples']} images of CIFAR-10\n"
        f"`train/dog`: trained on {results['n_train']} ({results['epochs_run']} epochs, {results['fit_seconds']:.0f} s), "
        f"early stopping on {summary['n_validation']}, and its own calibration split of {n_calibration} dogs, held out\n"
        "from both, calibrates each method's threshold (`calibrate` on that split). ROC AUC of `test/dog`\n"
        "(normal) against each set (anomaly = positive class), every column a score method of the same network\n"
        "(`score_table`). `mnist` are test digits resized to 32x32 RGB, `constant` single-colour images, `noise`\n"
        "uniform noise. The last rows are the share of `test/dog` flagged at a target false-positive rate,\n"
        f"whose sampling error ({n_dogs} test dogs, {n_calibration} calibration dogs) is about "
        + ", ".join(f"±{errors[f]:.3f} at {f}" for f in TARGET_FPRS) + ".\n\n"
        + markdown(results) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/ and mnist/")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the detector's)")
    parser.add_argument("--per-class", type=int, default=500, help="test images of each other CIFAR class")
    parser.add_argument("--n-synthetic", type=int, default=500, help="images in each of mnist, constant, noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-model", default=None, help="also save the fitted detector here")
    args = parser.parse_args(argv)
    folder = data_dir(args.data_dir)
    needed = [folder / "cifar10" / "cifar10-train.tar", folder / "cifar10" / "cifar10-test.tar",
              folder / "mnist" / "t10k-images-idx3-ubyte.gz"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found; pass --data-dir or set VAEDETECT_DATA.", file=sys.stderr)
        return 0

    results = {"benchmark": "cifar_dog_ood", **describe_run("python -m benchmarks.cifar_dog_ood", argv)} | run(args)
    print(markdown(results))
    write_results(results, args.out, args.markdown, markdown_page(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
