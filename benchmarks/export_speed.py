"""Scoring with PyTorch against scoring an ONNX export with onnxruntime: throughput, peak memory, start-up.

Three models, each fitted here on real data and exported: a pixel model of MNIST digits (28 px), a table model
of ADBench's cardio rows, and a model of EfficientNet-Lite0 features of CIFAR-10 photos (224 px). Each way of
scoring runs in a fresh process, which loads the model, scores the same inputs twice (the first pass warms
up) and reports the second pass's samples per second, the seconds from start to a loaded model (imports
included) and its peak resident memory; the runtime's process must not import torch. Scores of the two are
compared too (the largest relative difference).

    python -m benchmarks.export_speed --out benchmarks/results/export_speed.json \
        --markdown docs/benchmarks/export_speed.md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from ._provenance import benchmark_parser, generated_by, run_benchmark

# One scoring process: the inputs from an .npy file, the model from a .vae (torch) or .onnx file (runtime).
_CHILD = textwrap.dedent("""
    import json, sys, time
    started = time.perf_counter()

    def peak_mb():
        # this process's own high-water mark (getrusage's maxrss would count the parent's, inherited at fork)
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

    import numpy as np
    way, model, inputs, out = sys.argv[1:5]
    if way == "torch":
        import vaedetect
        detector = vaedetect.load(model, device="cpu")
    else:
        from vaedetect import runtime
        detector = runtime.load(model)
    loaded = time.perf_counter() - started
    X = np.load(inputs)
    detector.score_samples(X)
    began = time.perf_counter()
    scores = detector.score_samples(X)
    seconds = time.perf_counter() - began
    np.save(out, scores)
    print(json.dumps({"load_seconds": loaded, "samples_per_second": len(X) / seconds,
                      "peak_mb": peak_mb(),
                      "torch_imported": "torch" in sys.modules}))
""")


def _fitted(kind: str, data_dir, n: int):
    """``(detector, inputs)`` of ``kind``: fitted on real data, and ``n`` inputs to score."""
    from vaedetect import VAEDetector

    from ._data import data_dir as folder, load_cifar10, load_mnist

    if kind == "pixel (MNIST, 28 px)":
        digits, labels = load_mnist(data_dir)
        detector = VAEDetector(epochs=3, random_state=0).fit(digits[:5000][labels[:5000] == 0])
        return detector, digits[5000 : 5000 + n]
    if kind == "table (ADBench cardio)":
        path = folder(data_dir) / "adbench" / "6_cardio.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; pass --data-dir or set VAEDETECT_DATA.")
        with np.load(path) as data:
            rows = data["X"]
        detector = VAEDetector(random_state=0).fit(rows)
        return detector, np.resize(rows, (n, rows.shape[1]))  # the rows repeated up to n
    photos, _ = load_cifar10("test", classes={"dog"}, path=data_dir, limit_per_class=max(n, 600))
    detector = VAEDetector(backbone="efficientnet_lite0", epochs=5, random_state=0).fit(photos[:500])
    return detector, np.resize(photos, (n, *photos.shape[1:]))


def _score_in_a_process(way: str, model: Path, inputs: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, way, str(model), str(inputs), str(out)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    sizes = {"pixel (MNIST, 28 px)": args.n_images, "table (ADBench cardio)": args.n_rows,
             "features (Lite0, CIFAR-10 at 224 px)": args.n_photos}
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for kind, n in sizes.items():
            detector, inputs = _fitted(kind, args.data_dir, n)
            detector.save(folder / "model.vae")
            detector.export_onnx(folder / "model.onnx")
            np.save(folder / "inputs.npy", inputs)
            rows[kind] = {"n": n, "score_method": detector.calibration_.score_method}
            scores = {}
            for way, model in (("torch", folder / "model.vae"), ("onnxruntime", folder / "model.onnx")):
                rows[kind][way] = _score_in_a_process(way, model, folder / "inputs.npy", folder / f"{way}.npy")
                scores[way] = np.load(folder / f"{way}.npy")
            scale = np.maximum(np.abs(scores["torch"]), np.std(scores["torch"]))
            rows[kind]["max_relative_difference"] = float(np.max(np.abs(scores["onnxruntime"] - scores["torch"]) / scale))
            print(kind, json.dumps(rows[kind]), flush=True)
    return {"models": rows}


def markdown_page(results: dict) -> str:
    lines = ["| model | scored | samples/s PyTorch | samples/s onnxruntime | start-up s PyTorch | start-up s onnxruntime "
             "| peak MB PyTorch | peak MB onnxruntime | torch imported by the runtime | largest relative difference |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, row in results["models"].items():
        torch_row, ort = row["torch"], row["onnxruntime"]
        lines.append(f"| {kind}, {row['score_method']} | {row['n']:,} | {torch_row['samples_per_second']:,.0f} | "
                     f"{ort['samples_per_second']:,.0f} | {torch_row['load_seconds']:.2f} | {ort['load_seconds']:.2f} | "
                     f"{torch_row['peak_mb']:,.0f} | {ort['peak_mb']:,.0f} | {'yes' if ort['torch_imported'] else 'no'} | "
                     f"{row['max_relative_difference']:.1e} |")
    return (
        "# Scoring an ONNX export against scoring with PyTorch\n\n" + generated_by(results) + "\n\n"
        "Each model is fitted on real data and exported (`VAEDetector.export_onnx`); each way of scoring runs in a "
        "fresh process on the CPU, which loads the model (start-up: from the process's first line to a loaded "
        "model, imports included), scores the inputs once to warm up, then again, timed. Peak memory is the "
        "process's peak resident set (`VmHWM`). The largest relative difference compares the two ways' scores (relative to "
        "the score, or to the scores' spread for scores near zero).\n\n" + "\n".join(lines) + "\n"
    )


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "mnist/, adbench/ and cifar10/")
    parser.add_argument("--n-images", type=int, default=5000, help="digits to score")
    parser.add_argument("--n-rows", type=int, default=100_000, help="table rows to score")
    parser.add_argument("--n-photos", type=int, default=500, help="photos to score")
    args = parser.parse_args(argv)
    return run_benchmark("export_speed", argv, args, run, markdown_page)


if __name__ == "__main__":
    sys.exit(main())
