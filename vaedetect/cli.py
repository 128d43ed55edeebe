"""The ``vaedetect`` command: thin wrappers over the public Python API.

Heavy imports (torch, scikit-learn, pandas) happen inside the commands, so ``vaedetect --help`` and
every subcommand's ``--help`` answer without importing torch. Options of ``fit`` carry the names of
``VAEDetector``'s parameters and default to the estimator's own defaults (they are only passed on when
given), so a default is defined in one place.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from . import __version__

# VAEDetector parameters exposed by `vaedetect fit`: (option, parameter, click type, help).
_FIT_OPTIONS = [
    ("--image-size", "image_size", click.IntRange(min=4), "Side of the square images, in pixels."),
    ("--channels", "channels", click.Choice(["1", "3"]), "1 for grayscale, 3 for RGB."),
    ("--latent-dim", "latent_dim", click.IntRange(min=1), "Size of the latent code."),
    ("--base-channels", "base_channels", click.IntRange(min=1), "Channels of the first stage."),
    ("--n-stages", "n_stages", click.IntRange(1, 8), "Stride-2 stages of the encoder."),
    ("--loss", "loss", click.Choice(["elbo", "sharp"]), "Training objective."),
    ("--likelihood", "likelihood", click.Choice(["auto", "gaussian", "bernoulli", "laplace"]), "Decoder distribution (auto: gaussian for images)."),
    ("--perceptual-weight", "perceptual_weight", click.FloatRange(min=0), "VGG16 term of --loss sharp."),
    ("--kl-schedule", "kl_schedule", click.Choice(["warmup", "cyclical", "constant"]), "KL weight over epochs."),
    ("--epochs", "epochs", click.IntRange(min=1), "Training epochs (default: 25, fewer where they exceed 2,500 steps)."),
    ("--batch-size", "batch_size", click.IntRange(min=2), "Training batch size."),
    ("--learning-rate", "learning_rate", click.FloatRange(min=0, min_open=True), "AdamW learning rate."),
    ("--validation-fraction", "validation_fraction", click.FloatRange(0, 1, max_open=True),
     "Share held out for early stopping and the threshold."),
    ("--n-samples", "n_samples", click.IntRange(min=1), "Latent draws per image when scoring."),
    ("--score", "score", click.Choice(["auto", "elbo", "iwae", "kl", "reconstruction", "latent", "typicality",
                                     "complexity", "bits_typicality", "regret"]), "Score written by `vaedetect score`."),
    ("--regret-steps", "regret_steps", click.IntRange(min=1), "Optimiser steps per image of --score regret."),
    ("--complexity-codec", "complexity_codec", click.Choice(["png", "webp"]), "Codec of --score complexity."),
    ("--contamination", "contamination", None, "Expected share of outliers: 'auto' or a float in (0, 0.5]."),
    ("--device", "device", str, "auto, cpu, cuda, cuda:1, mps, ..."),
    ("--mixed-precision", "mixed_precision", click.Choice(["auto", "on", "off"]),
     "bfloat16 training: auto (on for CUDA GPUs with bfloat16), on or off."),
    ("--seed", "random_state", int, "Random seed, for reproducible models."),
]


def _contamination(value):
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"must be 'auto' or a float in (0, 0.5]; got {value!r}.") from None
    if not 0 < number <= 0.5:
        raise click.BadParameter(f"must be 'auto' or a float in (0, 0.5]; got {value!r}.")
    return number


def _fit_options(command):
    for option, parameter, kind, text in reversed(_FIT_OPTIONS):
        kwargs = {"callback": lambda ctx, param, value: _contamination(value)} if parameter == "contamination" else {}
        command = click.option(option, parameter, type=kind, default=None,
                               help=f"{text} [default: VAEDetector's {parameter}]", **kwargs)(command)
    return command


def _existing_paths(ctx, param, values):
    for value in values:
        if not Path(value).exists():
            raise click.BadParameter(f"path {value!r} does not exist.", ctx=ctx, param=param)
    return values


def _load_model(path):
    from .persistence import load_detector

    try:
        return load_detector(path)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vaedetect")
def main():
    """Find anomalies and out-of-distribution inputs with variational autoencoders.

    Train once on a folder of normal images (`vaedetect fit`), then score new folders
    (`vaedetect score`) to get a table of which files look out of place.
    """


# ------------------------------------------------------------------ fit


@main.command()
@click.argument("folders", nargs=-1, required=True, callback=_existing_paths)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the model file (e.g. model.vae).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding images.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--preset", type=click.Choice(["default", "sharp"]), default="default", show_default=True,
              help="Named settings; 'sharp' is the tutorial's full-size SharpVAE. Other options override it.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train data-parallel on this many processes (torchrun; one per GPU, or Gloo on CPUs).")
@_fit_options
def fit(folders, output, workers, quiet, preset, nproc, **params):
    """Train a detector on the images in FOLDERS (searched recursively) and save it."""
    from .distributed import launched_by_torchrun

    if nproc > 1 and not launched_by_torchrun():
        raise SystemExit(_run_under_torchrun(nproc, folders, output, workers, quiet, preset, params))
    from .estimator import VAEDetector

    given = {name: value for name, value in params.items() if value is not None}
    if "channels" in given:
        given["channels"] = int(given["channels"])
    if given.get("mixed_precision") in ("on", "off"):
        given["mixed_precision"] = given["mixed_precision"] == "on"
    detector = VAEDetector.from_preset(preset, **given, verbose=0 if quiet else 1)
    try:
        if launched_by_torchrun():
            _fit_distributed(detector, folders, output, workers)
            return
        detector.fit_paths(list(folders), n_jobs=workers)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    _report_fit(detector, output)


def _report_fit(detector, output):
    for skipped in detector.skipped_files_:
        click.echo(f"skipped {skipped.path}: {skipped.reason}", err=True)
    detector.save(output)
    summary = detector.training_summary_
    click.echo(f"Trained on {summary['n_samples']} images ({summary['n_files_skipped']} skipped); "
               f"model written to {output}")


def _fit_distributed(detector, folders, output, workers):
    """One rank of ``vaedetect fit`` under torchrun: train together, rank 0 alone reports and writes."""
    from .distributed import fit_distributed, init_process_group

    world = init_process_group()
    if world.rank != 0:
        detector.set_params(verbose=0)
    try:
        fit_distributed(detector, paths=list(folders), world=world, n_jobs=workers)
    except Exception as error:
        # torchrun stops the other ranks when this one exits; say which rank failed and why
        click.echo(f"vaedetect fit: rank {world.rank} of {world.size} failed: {type(error).__name__}: {error}",
                   err=True)
        raise
    if world.rank == 0:
        _report_fit(detector, output)


def _run_under_torchrun(nproc, folders, output, workers, quiet, preset, params) -> int:
    """Start ``nproc`` copies of this ``vaedetect fit`` under torchrun on this machine; their exit code."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "vaedetect", "fit", *map(str, folders), "-o", str(output), "--workers", str(workers),
               "--preset", preset]
    command += ["--quiet"] if quiet else []
    for option, parameter, _, _ in _FIT_OPTIONS:
        if params.get(parameter) is not None:
            command += [option, str(params[parameter])]
    # torchrun would give every process one thread; share the cores out instead
    environment = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc)), **os.environ}
    return subprocess.run(command, env=environment).returncode


# ------------------------------------------------------------------ score


def write_table(table, path: Path) -> None:
    """Write ``table`` as CSV, Parquet or JSON lines by ``path``'s extension, atomically."""
    suffix = path.suffix.lower()
    writers = {
        ".csv": lambda file: table.to_csv(file, index=False),
        ".parquet": lambda file: table.to_parquet(file, index=False),
        ".jsonl": lambda file: table.to_json(file, orient="records", lines=True),
    }
    if suffix not in writers:
        raise click.BadParameter(f"unknown extension {suffix!r}; use .csv, .parquet or .jsonl.", param_hint="'-o'")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise click.BadParameter("writing .parquet needs pyarrow (pip install pyarrow).", param_hint="'-o'") from None
    from ._files import write_atomically

    write_atomically(path, writers[suffix])


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("paths", nargs=-1, required=True, callback=_existing_paths)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table here (.csv, .parquet or .jsonl); printed when omitted.")
@click.option("--threshold", type=float, help="Flag scores below this instead of the model's threshold.")
@click.option("--fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Flag files whose conformal p-value is at most this target false-positive rate.")
@click.option("--contamination", callback=lambda ctx, param, value: _contamination(value),
              help="Flag this share of held-out training data instead ('auto' or a float in (0, 0.5]).")
@click.option("--top", type=click.IntRange(min=1), help="Print the N most anomalous files.")
@click.option("--fail-on-outlier", is_flag=True, help="Exit with code 1 when any file is an outlier.")
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Save a heat-map overlay of where each flagged image is anomalous to this folder.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML report (histogram, most anomalous and most normal images "
                   "with anomaly maps, latent PCA) here.")
@click.option("--report-top", type=click.IntRange(min=1), default=24, show_default=True,
              help="Thumbnails of this many most anomalous and most normal files in the report.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding images; 0 decodes in this process, as fast on 2 cores (docs/benchmarks_full.md).")
@click.option("--shard", callback=lambda ctx, param, value: _shard(value), metavar="I/N",
              help="Score only the I-th of N equal shares of the files (0 <= I < N), e.g. for a job array.")
@click.option("--dask-scheduler", metavar="ADDRESS", help="Score on this Dask cluster (needs vaedetect[dask]).")
@click.option("--dask-workers", type=click.IntRange(min=1),
              help="Score on a local Dask cluster of this many single-threaded workers (needs vaedetect[dask]).")
def score(model, paths, output, threshold, fpr, contamination, top, fail_on_outlier, maps_dir, report_path,
          report_top, workers, shard, dask_scheduler, dask_workers):
    """Score the images in PATHS with the detector in MODEL; one row per file found.

    Columns: path, score (higher = more normal), p_value (small for anomalies), is_outlier,
    error (why a file could not be scored).
    """
    overrides = {"threshold": threshold, "fpr": fpr, "contamination": contamination}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if len(overrides) > 1:
        raise click.UsageError("Give at most one of --threshold, --fpr and --contamination.")
    if dask_scheduler and dask_workers:
        raise click.UsageError("Give at most one of --dask-scheduler and --dask-workers.")
    detector = _load_model(model)
    if overrides:
        detector.set_threshold(**overrides)
    targets = list(paths)
    if shard is not None:
        from .images import discover_entries

        index, count = shard
        targets = discover_entries(paths)[index::count]
    if dask_scheduler or dask_workers:
        table = _score_on_dask(model, targets, overrides, maps_dir, dask_scheduler, dask_workers)
    else:
        table = detector.score_paths(targets, n_jobs=workers, maps_dir=maps_dir)
    if output is None:
        click.echo(table.to_string(index=False) if len(table) else "No image files found.")
    else:
        write_table(table, output)
        click.echo(f"Wrote {len(table)} rows to {output}", err=True)
    if top:
        ranked = table.dropna(subset=["score"]).nsmallest(top, "score")
        click.echo(f"\nThe {len(ranked)} most anomalous:")
        click.echo(ranked[["path", "score", "is_outlier"]].to_string(index=False))
    if report_path is not None:
        from .report import write_report

        note = ", ".join(f"--{name} {value}" for name, value in overrides.items()) or "(the model's own)"
        write_report(report_path, detector, table, model_path=str(model), inputs=[str(p) for p in paths],
                     threshold_note=note, top=report_top)
        click.echo(f"Wrote the report to {report_path}", err=True)
    n_outliers, n_errors = int(table["is_outlier"].sum()), int((table["error"] != "").sum())
    click.echo(f"{len(table)} files: {n_outliers} outliers, {n_errors} could not be scored "
               f"(threshold {detector.offset_:.6g})", err=True)
    if fail_on_outlier and n_outliers:
        raise SystemExit(1)


def _shard(value):
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise click.BadParameter(f"must be I/N with 0 <= I < N, e.g. 0/4; got {value!r}.")
    return int(match[1]), int(match[2])


def _score_on_dask(model, targets, overrides, maps_dir, scheduler, n_workers):
    """The score table computed by :func:`vaedetect.dask.score_paths` on a cluster: the one at
    ``scheduler``, or a local one of ``n_workers`` processes started for this command."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise click.UsageError('--dask-scheduler and --dask-workers need dask: pip install "vaedetect[dask]".') from None
    from .dask import score_paths

    import dask

    cluster = None
    if n_workers:
        # one task at a time per worker, its torch threads sharing out the cores (Dask would give it one)
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        with dask.config.set({"distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": threads}):
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True)
    try:
        with Client(cluster if cluster is not None else scheduler):
            return score_paths(model, targets, maps_dir=maps_dir, **overrides).compute()
    finally:
        if cluster is not None:
            cluster.close()


# ------------------------------------------------------------------ looking inside


def _save_mosaic(images, path: Path, ncols=None, min_tile=64) -> None:
    """Save images tiled into one PNG, small tiles enlarged (nearest neighbour) to ``min_tile`` pixels."""
    import numpy as np
    from PIL import Image

    from .plotting import mosaic

    canvas = np.rint(mosaic(images, ncols=ncols) * 255).astype(np.uint8)
    side = np.asarray(images).shape[1 if np.asarray(images).ndim == 3 else 2]
    factor = max(1, -(-min_tile // side))
    Image.fromarray(canvas.repeat(factor, axis=0).repeat(factor, axis=1)).save(path)


def _load_image_model(path, command):
    detector = _load_model(path)
    if detector.layout_.kind != "image":
        raise click.UsageError(f"`vaedetect {command}` needs a model fitted on images; {path} was fitted on tabular data.")
    return detector


def _call(function, *args, **kwargs):
    """Run a library call; its ValueError (bad input, unsuitable model) becomes a usage error."""
    try:
        return function(*args, **kwargs)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=1), default=64, show_default=True, help="Images to generate.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file for the grid.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Scale of the prior draws; lower gives more typical images.")
@click.option("--seed", type=int, default=0, show_default=True)
def generate(model, count, output, temperature, seed):
    """Decode COUNT draws from the latent prior of MODEL into a grid of images."""
    detector = _load_image_model(model, "generate")
    samples = _call(detector.sample, count, temperature=temperature, random_state=seed)
    _save_mosaic(samples, output)
    click.echo(f"Wrote {count} generated images to {output}")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("start", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("end", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Images on the path.")
@click.option("--method", type=click.Choice(["slerp", "lerp"]), default="slerp", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file for the strip.")
def interpolate(model, start, end, steps, method, output):
    """Decode a latent path from image START to image END into a strip of images.

    The strip begins and ends with the two inputs as read for the model, and shows the decoded
    path between them.
    """
    import numpy as np

    detector = _load_image_model(model, "interpolate")
    X, used, skipped = detector.read_images([start, end])
    if skipped:
        raise click.UsageError(f"could not read {skipped[0].path}: {skipped[0].reason}")
    X = X[[used.index(str(start)), used.index(str(end))]]
    path = _call(detector.interpolate, X[0], X[1], steps=steps, method=method)
    _save_mosaic(np.concatenate([X[:1], path, X[1:]]), output, ncols=steps + 2)
    click.echo(f"Wrote {steps} interpolated images between {start} and {end} to {output}")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("folders", nargs=-1, required=True, callback=_existing_paths)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file for the scatter plot.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding images.")
def pca(model, folders, output, workers):
    """Plot the latent means of the images in FOLDERS on their first two principal components.

    Points are coloured by the folder each image lies in (e.g. test/dog, test/cat).
    """
    from .plotting import latent_scatter

    detector = _load_image_model(model, "pca")
    X, used, skipped = detector.read_images(list(folders), n_jobs=workers)
    for item in skipped:
        click.echo(f"skipped {item.path}: {item.reason}", err=True)
    if len(X) < 2:
        raise click.UsageError(f"need at least 2 readable images in {', '.join(folders)}; found {len(X)}.")
    _, coordinates = _call(detector.latent_pca, X, n_components=2)
    ax = latent_scatter(coordinates, labels=[Path(p).parent.name for p in used])
    ax.set_title(f"latent PCA of {len(X)} images")
    ax.figure.savefig(output, dpi=120, bbox_inches="tight")
    click.echo(f"Wrote the latent PCA of {len(X)} images to {output}")


# ------------------------------------------------------------------ info


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info(model):
    """Show a model file's parameters, training data, threshold and versions."""
    import json

    from .persistence import read_header

    try:
        header, _ = read_header(model)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    fitted = header["fitted"]
    click.echo(f"model file:   {model}")
    click.echo(f"written by:   vaedetect {header['vaedetect_version']}, torch {header['torch_version']} "
               f"(format {header['format_version']})")
    layout = header["layout"]
    click.echo(f"input:        {layout['kind']} {tuple(layout['shape'])} ({layout['form']})")
    click.echo(f"training:     {json.dumps(fitted.get('training_summary_', {}))}")
    click.echo(f"epochs run:   {len(header['history'].get('epoch', []))}")
    click.echo(f"threshold:    {fitted['offset_']:.6g} (scores below it are outliers)")
    click.echo("parameters:")
    for name, value in sorted(header["params"].items()):
        click.echo(f"  {name} = {value!r}")


# ------------------------------------------------------------------ demo


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("vaedetect-demo"),
              show_default=True, help="Folder for the images, the model file and the scores.")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, epochs: int, seed: int):
    """Build image folders from data that ship with scikit-learn, train, score, show what was flagged.

    Normal: handwritten zeros from scikit-learn's digits. Scored: held-out zeros, other digits, and
    crops of scikit-learn's sample photos. Needs no download.
    """
    from .demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, echo=click.echo)
