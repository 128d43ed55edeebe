"""How tabular fit and score time and peak memory grow with rows: the large ADBench sets and their subsets.

For each set in ``adbench_large/`` and each share of its rows (by default 1%, 10% and all of them, drawn
at random with seed 0), a fresh process loads the rows, fits ``VAEDetector(random_state=0)`` with the
default settings and scores every row of the set; this process reads the child's peak resident memory
while it runs. Reported: rows, fit and score seconds, peak memory, and the growth between the sizes
(seconds and MB per 100,000 more rows).

    python -m benchmarks.tabular_scale --out benchmarks/results/tabular_scale.json --markdown docs/benchmarks/tabular_scale.md
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from ._data import data_dir
from ._provenance import benchmark_parser, generated_by, run_benchmark
from .speed import run_measured

SHARES = (0.01, 0.1, 1.0)
MEMORY_TARGET_MB = 3 * 1024  # the largest table fits under 3 GB


def child(path: str, share: float) -> dict:
    """In the measured process: fit on ``share`` of the rows at ``path``, score all of them."""
    from vaedetect import VAEDetector

    with np.load(path) as data:
        X = data["X"].astype(np.float64)
    rows = np.sort(np.random.RandomState(0).permutation(len(X))[: max(int(round(share * len(X))), 50)])
    subset = X[rows]
    started = time.perf_counter()
    detector = VAEDetector(random_state=0).fit(subset)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    detector.score_samples(X)
    score_seconds = time.perf_counter() - started
    return {"n_rows": len(subset), "n_features": int(X.shape[1]), "n_scored": len(X), "fit_seconds": fit_seconds,
            "score_seconds": score_seconds, "epochs": detector.training_summary_["epochs"],
            "epochs_run": detector.training_summary_["epochs_run"]}


def run(args) -> dict:
    folder = data_dir(args.data_dir) / "adbench_large"
    paths = sorted(folder.glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no .npz files in {folder}")
    sets = {}
    for path in paths:
        name = path.stem.split("_", 1)[-1]
        if args.sets and name not in args.sets:
            continue
        sets[name] = []
        for share in args.shares:
            measured = run_measured(["--child", str(path), str(share)], module="benchmarks.tabular_scale")
            row = {"share": share, "exit_code": measured["exit_code"], "wall_seconds": measured["seconds"],
                   "peak_rss_mb": measured["peak_rss_mb"]}
            if measured["exit_code"] == 0:
                row |= json.loads(measured["stdout"].strip().splitlines()[-1])
            sets[name].append(row)
            print(f"{name} {share}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in row.items()), flush=True)
    return {"sets": sets}


def growth(rows: list[dict], key: str) -> float:
    """Least-squares slope of ``key`` against rows fitted, per 100,000 rows."""
    done = [row for row in rows if row["exit_code"] == 0]
    if len(done) < 2:
        return float("nan")
    return float(np.polyfit([row["n_rows"] for row in done], [row[key] for row in done], 1)[0] * 100_000)


def markdown(results: dict) -> str:
    lines = ["| set | rows fitted | features | epochs | fit s | score s (all rows) | rows scored | peak memory MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in results["sets"].items():
        for row in rows:
            if row["exit_code"] != 0:
                lines.append(f"| {name} | {row['share']:.0%} | | | failed (exit code {row['exit_code']}) | | | "
                             f"{row['peak_rss_mb']:.0f} |")
                continue
            lines.append(f"| {name} | {row['n_rows']:,} | {row['n_features']} | {row['epochs_run']} / {row['epochs']} "
                         f"| {row['fit_seconds']:.1f} | {row['score_seconds']:.1f} | {row['n_scored']:,} "
                         f"| {row['peak_rss_mb']:.0f} |")
    lines += ["", "| set | fit s per 100,000 more rows | peak MB per 100,000 more rows |", "|---|---|---|"]
    for name, rows in results["sets"].items():
        lines.append(f"| {name} | {growth(rows, 'fit_seconds'):.1f} | {growth(rows, 'peak_rss_mb'):.0f} |")
    return "\n".join(lines)


def largest(results: dict) -> tuple[str, dict]:
    """The set with the most rows, and its run on all of them."""
    name = max(results["sets"], key=lambda n: max(row.get("n_rows", 0) for row in results["sets"][n]))
    return name, max(results["sets"][name], key=lambda row: row["share"])


def markdown_page(results: dict) -> str:
    name, row = largest(results)
    met = row["exit_code"] == 0 and row["peak_rss_mb"] < MEMORY_TARGET_MB
    return (
        "# Tabular fit and score: time and memory against rows\n\n"
        + generated_by(results) + "\n\n"
        "Each set of `adbench_large/`, fitted with `VAEDetector(random_state=0)` on a random share of its rows "
        "(seed 0) and scoring every row of the set, each run in a fresh process; peak memory is that "
        "process's resident set (the Python interpreter and torch included). Epochs are those run / those "
        "`epochs=\"auto\"` allowed (at most 2,500 optimiser steps, so fit time stops growing with rows apart from "
        "the passes over the data after training: reference statistics and calibration).\n\n"
        + markdown(results) + "\n\n"
        f"Target, fit on the largest table ({name}, {row.get('n_rows', 0):,} rows) with peak memory under "
        f"{MEMORY_TARGET_MB / 1024:.0f} GB: {row['peak_rss_mb']:.0f} MB, **{'met' if met else 'not met'}**.\n"
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], float(argv[2]))))
        return 0
    parser = benchmark_parser(__doc__, "adbench_large/")
    parser.add_argument("--sets", nargs="+", default=None, help="only these sets (default: all)")
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    args = parser.parse_args(argv)
    return run_benchmark("tabular_scale", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
