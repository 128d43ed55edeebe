"""Image suites: one-class MNIST, one-class CIFAR-10 and far out-of-distribution inputs.

Protocols (``../shared/data/README.md``):

- **one-class MNIST**: the MNIST test split; images 0-4999 are the training pool, of which only the
  normal digit is used, images 5000-9999 the evaluation set (the normal digit against all others);
- **one-class CIFAR-10**: train on ``train/<class>``, evaluate on all of ``test/`` (that class against
  the nine others);
- **far out-of-distribution**: the detector trained on ``train/dog`` above also scores MNIST digits as
  32x32 RGB, constant-colour images and uniform noise, each against ``test/dog``.

vaedetect is ``VAEDetector(random_state=seed)`` with default settings (``--quick`` trains fewer epochs,
and CIFAR-10 on a sample of each class); its default score is the column ``vaedetect``, and two other
scores of the same network are reported beside it. The peers (IsolationForest, PCA reconstruction
error, LocalOutlierFactor) see the pixels as flat vectors in ``[0, 1]``, not standardised: a pixel
that is almost always dark would otherwise dominate once divided by its tiny spread. PyOD's VAE is left out of
these suites: on 784 or 3,072 features it costs more than the whole quick run allows.
"""

from __future__ import annotations

import time

import numpy as np

from . import tabular
from ._data import load_cifar10, load_mnist
from ._tables import evaluation, log_means
from .cifar_dog_ood import far_ood_sets

# Other scores of the same network, reported beside the default (bits_typicality for images).
VAE_ALTERNATIVES = ("elbo", "latent")
# Quick runs: epochs, and training images per CIFAR-10 class.
QUICK_EPOCHS = 10
QUICK_CIFAR_TRAIN = 1000
N_FAR_OOD = 1000


def vaedetect_scores(detector, images) -> tuple[dict[str, np.ndarray], float]:
    """``{column: scores}`` of the default score and the alternatives, from one ``score_table`` call."""
    started = time.perf_counter()
    methods = [detector.score_method_, *VAE_ALTERNATIVES]
    table = detector.score_table(images, methods=methods)
    columns = {"vaedetect": table[methods[0]].to_numpy()}
    columns.update({f"vaedetect_{name}": table[name].to_numpy() for name in VAE_ALTERNATIVES})
    return columns, time.perf_counter() - started


def fit_vaedetect(train, seed: int, quick: bool):
    from vaedetect import VAEDetector

    params = {"random_state": seed} | ({"epochs": QUICK_EPOCHS} if quick else {})
    started = time.perf_counter()
    detector = VAEDetector(**params).fit(train)
    return detector, time.perf_counter() - started


def flat_pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def run_class(train, test, is_anomaly, seeds, quick: bool, far_sets=None) -> dict:
    """One normal class: vaedetect and the peers fit on ``train`` and scored on ``test``, every seed.

    ``far_sets`` (name -> images) are scored too, each against the normal images of ``test``.
    """
    entry = {"n_train": len(train), "n_test": len(test), "anomaly_share": float(np.mean(is_anomaly)),
             "methods": {}, "far_ood": {}}
    far_sets = far_sets or {}

    def record(column, test_scores, fit_seconds, score_seconds, seed, far_scores):
        entry["methods"].setdefault(column, []).append(
            evaluation(is_anomaly, test_scores, seed=seed, fit_seconds=fit_seconds, score_seconds=score_seconds))
        normal_scores = test_scores[~is_anomaly]
        for name, scores in far_scores.items():
            labels = np.r_[np.zeros(len(normal_scores), bool), np.ones(len(scores), bool)]
            entry["far_ood"].setdefault(name, {}).setdefault(column, []).append(
                evaluation(labels, np.r_[normal_scores, scores], seed=seed))

    flat_train, flat_test = flat_pixels(train), flat_pixels(test)
    flat_far = {name: flat_pixels(images) for name, images in far_sets.items()}
    for seed in seeds:
        detector, fit_seconds = fit_vaedetect(train, seed, quick)
        columns, score_seconds = vaedetect_scores(detector, test)
        far = {name: vaedetect_scores(detector, images)[0] for name, images in far_sets.items()}
        for column, scores in columns.items():
            record(column, scores, fit_seconds, score_seconds, seed, {n: far[n][column] for n in far})
        for name, make in tabular.peers(with_pyod=False, standardise=False).items():
            started = time.perf_counter()
            peer = make(seed).fit(flat_train)
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            scores = peer.score_samples(flat_test)
            score_seconds = time.perf_counter() - started
            far_scores = {n: peer.score_samples(images) for n, images in flat_far.items()}
            record(name, scores, fit_seconds, score_seconds, seed, far_scores)
    return entry


def mnist_suite(folder, seeds, quick: bool, log=print) -> dict:
    """``{digit: entry}`` for every digit as the normal class."""
    images, labels = load_mnist(folder)
    pool, pool_labels, test, test_labels = images[:5000], labels[:5000], images[5000:], labels[5000:]
    results = {}
    for digit in range(10):
        results[str(digit)] = run_class(pool[pool_labels == digit], test, test_labels != digit, seeds, quick)
        log_means(f"mnist {digit}", results[str(digit)], log)
    return results


def cifar_suite(folder, seeds, quick: bool, log=print, classes=None) -> dict:
    """``{class: entry}`` for every CIFAR-10 class as the normal one; ``dog`` also carries the far
    out-of-distribution sets."""
    train, train_labels = load_cifar10("train", path=folder)
    test, test_labels = load_cifar10("test", path=folder)
    results = {}
    for name in classes or sorted(set(train_labels)):
        images = train[train_labels == name]
        if quick:
            images = images[np.random.RandomState(0).permutation(len(images))[:QUICK_CIFAR_TRAIN]]
        far = far_ood_sets(folder, N_FAR_OOD, seed=0) if name == "dog" else None
        results[name] = run_class(images, test, test_labels != name, seeds, quick, far)
        log_means(f"cifar10 {name}", results[name], log)
    return results


def far_ood_markdown(entry: dict) -> str:
    sets = list(entry["far_ood"])
    methods = list(entry["methods"])
    lines = ["| method | " + " | ".join(f"dog vs {name}" for name in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for method in methods:
        cells = []
        for name in sets:
            aucs = [r["roc_auc"] for r in entry["far_ood"][name][method]]
            spread = f" ± {np.std(aucs):.3f}" if len(aucs) > 1 and np.std(aucs) >= 5e-4 else ""
            cells.append(f"{np.mean(aucs):.3f}{spread}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fit_seconds_per_class(results: dict) -> dict[str, float]:
    """``{class: seconds}``: each class's longest vaedetect training over the seeds."""
    return {name: max(run["fit_seconds"] for run in entry["methods"]["vaedetect"]) for name, entry in results.items()}
