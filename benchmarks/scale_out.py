"""Beyond one process: Dask scoring with 1 and 2 workers, Gloo training with 1 and 2 processes.

- scoring: ``vaedetect score`` over the 10,000 CIFAR-10 test photos as one folder, in one process
  (2 decoding workers, torch on every core) and on a local Dask cluster of 1 and 2 single-threaded
  workers; wall time of each command, and whether the tables are equal row for row;
- training: ``vaedetect fit --nproc 1`` and ``--nproc 2`` (Gloo) on the same photos, training images
  per second from the model's own per-epoch timings (decoding and start-up excluded).

Usage::

    python -m benchmarks.scale_out [--data-dir DIR] [--train-images 2000] [--epochs 2] [--out FILE.json]
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


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def scoring(model: Path, folder: Path, work: Path) -> dict:
    import pandas as pd

    base = [sys.executable, "-m", "vaedetect", "score", str(model), str(folder)]
    runs = {
        "one_process": [*base, "-o", str(work / "one.csv"), "--workers", "2"],
        "dask_1_worker": [*base, "-o", str(work / "dask1.csv"), "--dask-workers", "1"],
        "dask_2_workers": [*base, "-o", str(work / "dask2.csv"), "--dask-workers", "2"],
    }
    seconds = {name: _timed(command) for name, command in runs.items()}
    tables = {name: pd.read_csv(work / f, keep_default_na=False) for name, f in
              (("one_process", "one.csv"), ("dask_1_worker", "dask1.csv"), ("dask_2_workers", "dask2.csv"))}
    n_files = len(tables["one_process"])
    return {"n_files": n_files, "seconds": seconds,
            "images_per_second": {name: n_files / s for name, s in seconds.items()},
            "tables_equal": all(t.equals(tables["one_process"]) for t in tables.values())}


def training(folder: Path, work: Path, epochs: int) -> dict:
    import vaedetect

    results = {}
    for nproc in (1, 2):
        model = work / f"train{nproc}.vae"
        command = [sys.executable, "-m", "vaedetect", "fit", str(folder), "-o", str(model), "--epochs", str(epochs),
                   "--seed", "0", "--quiet", "--nproc", str(nproc), "--validation-fraction", "0.1"]
        wall = _timed(command)
        detector = vaedetect.load(model)
        trained = detector.training_summary_["n_train"] * len(detector.history_)
        results[f"{nproc}_process"] = {"wall_seconds": wall,
                                       "training_seconds": float(detector.history_["seconds"].sum()),
                                       "images_per_second": trained / float(detector.history_["seconds"].sum()),
                                       "final_loss": float(detector.history_["loss"].iloc[-1])}
    return results


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/", page=False)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    archive_path = data_dir(args.data_dir) / "cifar10" / "cifar10-test.tar"
    if not archive_path.is_file():
        print(f"skipped: {archive_path} not found", file=sys.stderr)
        return 0
    from .speed import fit_speed_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = extract_cifar10("test", work, path=args.data_dir)
        model = fit_speed_model(work / "speed.vae", 64)
        subset = work / "subset"
        subset.mkdir()
        for path in sorted(photos.rglob("*.jpg"))[:: max(1, 10000 // args.train_images)][: args.train_images]:
            os.symlink(path, subset / f"{path.parent.name}_{path.name}")
        results = {
            **describe_run("python -m benchmarks.scale_out", argv),
            "scoring": scoring(model, photos, work),
            "training": training(subset, work, args.epochs),
        }
    print(json.dumps(results, indent=1))
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
