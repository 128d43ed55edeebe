"""Fitting on 5,000 photos with a pretrained backbone, from the command line: seconds and peak memory.

Extracts CIFAR-10's 5,000 training dogs (JPEG) into a temporary folder and times, each in its own process,
``vaedetect fit FOLDER --backbone efficientnet_lite0`` (the VAE on the photos' features, embedding included)
and ``vaedetect fit FOLDER --combined`` (that and the pixel model), reading the process's peak resident
memory while it runs; ``--modes combined_32px`` fits the combined model with the pixel model at 32 px.

    python -m benchmarks.backbone_fit --out benchmarks/results/backbone_fit.json --markdown docs/benchmarks/backbone_fit.md
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ._data import extract_cifar10
from ._provenance import benchmark_parser, generated_by, run_benchmark
from .speed import run_measured

TARGET_SECONDS = 300
MODES = {"features": ["--backbone", "efficientnet_lite0"], "combined": ["--combined"],
         # the pixel model at the photos' own 32 px, as benchmarks.combined measures its quality
         "combined_32px": ["--combined", "--image-size", "32"]}
DEFAULT_MODES = ("features", "combined")


def run(args) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = extract_cifar10("train", Path(tmp) / "photos", label=args.label, path=args.data_dir)
        n_files = sum(1 for path in folder.rglob("*") if path.is_file())
        for mode in args.modes:
            options = MODES[mode]
            model = Path(tmp) / f"{mode}.vae"
            row = run_measured(["fit", str(folder), "-o", str(model), "--quiet", "--seed", "0", *options])
            row.pop("stdout")
            row["model_file_mb"] = model.stat().st_size / 2**20 if model.is_file() else None
            rows[mode] = row
            print(f"{mode}: exit {row['exit_code']}, {row['seconds']:.0f} s, peak {row['peak_rss_mb']:.0f} MB", flush=True)
    return {"label": args.label, "n_files": n_files, "modes": rows}


def markdown_page(results: dict) -> str:
    lines = ["| mode | exit code | seconds | target | peak memory MB | model file MB |", "|---|---|---|---|---|---|"]
    for mode, row in results["modes"].items():
        met = "met" if row["exit_code"] == 0 and row["seconds"] < TARGET_SECONDS else "not met"
        lines.append(f"| {mode} (`vaedetect fit ... {' '.join(MODES[mode])}`) | {row['exit_code']} | {row['seconds']:.0f} "
                     f"| under {TARGET_SECONDS} s: {met} | {row['peak_rss_mb']:.0f} | {row['model_file_mb'] or 0:.1f} |")
    return (
        "# Fitting on 5,000 photos with a pretrained backbone\n\n"
        + generated_by(results) + "\n\n"
        f"The {results['n_files']} CIFAR-10 training photos of `{results['label']}` (32x32 JPEG files), fitted from the "
        "command line with the default settings and `--seed 0`, each mode in a fresh process: wall time from start to the model "
        "file written (decoding, embedding at 224 px, training, calibration) and the process's peak resident "
        "memory.\n\n" + "\n".join(lines) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cifar10/")
    parser.add_argument("--label", default="dog")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES))
    args = parser.parse_args(argv)
    return run_benchmark("backbone_fit", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
