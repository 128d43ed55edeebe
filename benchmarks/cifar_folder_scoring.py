"""CIFAR-10 through the command line: fit on ``train/dog``, score all of ``test/`` as one folder.

Measures what a user of ``vaedetect fit`` / ``vaedetect score`` gets on real JPEG folders: wall time of
each command, scoring throughput including decoding, peak resident memory of the scoring process, and
the ROC AUC of dogs against each other class (dog = normal, the other class = anomaly).

Usage::

    python -m benchmarks.cifar_folder_scoring [--data-dir DIR] [--epochs 10] [--image-size 32] [--workers 2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._data import data_dir, extract_cifar10
from ._provenance import benchmark_parser, describe_run, write_results


def _run(command: list[str]) -> tuple[float, int]:
    """Run ``command``; return its wall time in seconds and its peak resident memory in bytes."""
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {os.waitstatus_to_exitcode(status)}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports kilobytes


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/", page=False)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    tars = data_dir(args.data_dir) / "cifar10"
    if not (tars / "cifar10-test.tar").is_file():
        print(f"skipped: {tars / 'cifar10-test.tar'} not found; pass --data-dir or set VAEDETECT_DATA.", file=sys.stderr)
        return 0

    import pandas as pd
    from sklearn.metrics import roc_auc_score

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for split in ("train", "test"):
            extract_cifar10(split, work, path=args.data_dir)
        model, scores_csv = work / "dog.vae", work / "scores.csv"
        cli = [sys.executable, "-m", "vaedetect"]
        fit_seconds, fit_rss = _run([*cli, "fit", str(work / "train" / "dog"), "-o", str(model), "--image-size",
                                     str(args.image_size), "--epochs", str(args.epochs), "--seed", "0", "--quiet"])
        score_seconds, score_rss = _run([*cli, "score", str(model), str(work / "test"), "-o", str(scores_csv),
                                         "--workers", str(args.workers)])
        table = pd.read_csv(scores_csv, keep_default_na=False)

    table["label"] = [Path(p).parent.name for p in table["path"]]
    dogs = table[table["label"] == "dog"]
    auc = {}
    for label in sorted(set(table["label"]) - {"dog"}):
        pair = pd.concat([dogs, table[table["label"] == label]])
        auc[label] = float(roc_auc_score(pair["label"] != "dog", -pair["score"].astype(float)))
    results = {
        "benchmark": "cifar_folder_scoring",
        **describe_run("python -m benchmarks.cifar_folder_scoring", argv),
        "settings": vars(args),
        "fit_seconds": fit_seconds,
        "fit_peak_rss_mb": fit_rss / 2**20,
        "n_scored": int(len(table)),
        "n_errors": int((table["error"] != "").sum()),
        "score_seconds": score_seconds,
        "score_images_per_second": len(table) / score_seconds,
        "score_peak_rss_mb": score_rss / 2**20,
        "roc_auc_dog_vs": auc,
        "flagged_share": table.groupby("label")["is_outlier"].apply(lambda s: float((s == True).mean())).to_dict(),  # noqa: E712
    }
    print(json.dumps(results, indent=1))
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
