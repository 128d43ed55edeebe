"""The ``vaedetect`` command: thin wrappers over the public Python API.

Heavy imports (torch, scikit-learn, pandas) happen inside the commands, so ``vaedetect --help`` and
every subcommand's ``--help`` answer without importing torch. Options of ``fit`` carry the names of
``VAEDetector``'s parameters and default to the estimator's own defaults (they are only passed on when
given), so a default is defined in one place.

Exit codes (docs/guide/security.md): 0 success; 1 ``--fail-on-outlier`` found outliers; 2 a usage error, a
missing or refused input (an invalid or broken model file) or an output that cannot or must not be
written, raised before any work; 3 ``--fail-on-outlier`` found no outlier but some files could not be
scored (``--ignore-errors`` lets them pass); 4 an unexpected internal error, in one line
(``VAEDETECT_TRACEBACK=1`` shows the traceback); 130 and 143 interrupted by Ctrl-C or stopped by SIGTERM (the
output being written removed); 141 the output pipe closed early (``| head``).
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import click

from . import __version__, settings
from . import schema
from ._files import Terminated, check_output_file, check_output_folder, map_name, printable, same_file, write_atomically
from .registry import ScoreMethodChoices

# VAEDetector parameters exposed by `vaedetect fit`: (option, parameter, click type, the estimator's
# default, help). Spelt out here so that `--help` need not import torch; a test checks every parameter
# is here with its real default and choices. Booleans are spelt on/off.
_ON_OFF = click.Choice(["on", "off"])


class _LiveChoice(click.Choice):
    """A choice among ``names()`` as they are when the option is read, not when this module was
    imported: score methods registered later are offered too."""

    def __init__(self, names):
        self._names = names
        super().__init__(names())

    @property
    def choices(self):
        return tuple(self._names())

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ stores a snapshot; the names stay live
        pass


_FIT_OPTIONS = [
    ("--backbone", "backbone", str, None,
     "Model the images' content: embed them with this pretrained backbone (efficientnet_lite0, lite1 or lite2, "
     "installed by pip install 'vaedetect[pretrained]', or a torchvision classifier such as resnet18) and fit the "
     "VAE to the embeddings."),
    ("--image-size", "image_size", click.IntRange(min=4), 64, "Side of the square images, in pixels (pixel model)."),
    ("--channels", "channels", click.Choice(["1", "3"]), 3, "1 for grayscale, 3 for RGB."),
    ("--latent-dim", "latent_dim", click.IntRange(min=1), 16, "Size of the latent code."),
    ("--base-channels", "base_channels", click.IntRange(min=1), 32, "Channels of the first stage."),
    ("--n-stages", "n_stages", click.IntRange(1, 8), 3, "Stride-2 stages of the encoder."),
    ("--residual", "residual", _ON_OFF, True, "A residual block at the end of each stage."),
    ("--spatial-latent", "spatial_latent", _ON_OFF, False, "The tutorial's spatial latent code instead of a vector."),
    ("--skip-connections", "skip_connections", _ON_OFF, False,
     "The tutorial's U-Net skips (they break likelihoods and sampling)."),
    ("--activation", "activation", click.Choice(settings.ACTIVATIONS), "leaky_relu", "Activation of every stage."),
    ("--n-estimators", "n_estimators", click.IntRange(min=1), "auto",
     "Member VAEs side by side, for tables (auto: 5 for tables, 1 for images and backbone features)."),
    ("--loss", "loss", click.Choice(settings.LOSSES), "elbo", "Training objective."),
    ("--likelihood", "likelihood", click.Choice(["auto", *settings.LIKELIHOODS]), "auto",
     "Decoder distribution (auto: gaussian for images, laplace for tables)."),
    ("--perceptual-weight", "perceptual_weight", click.FloatRange(min=0), 0.3, "VGG16 term of --loss sharp."),
    ("--kl-schedule", "kl_schedule", click.Choice(settings.KL_SCHEDULES), "warmup", "KL weight over epochs."),
    ("--epochs", "epochs", click.IntRange(min=1), "auto", "Training epochs (auto: 25, fewer where they exceed 2,500 steps)."),
    ("--batch-size", "batch_size", click.IntRange(min=2), "auto",
     "Training batch size (auto: 32 for images and backbone features, an epoch of 16 steps for tables)."),
    ("--learning-rate", "learning_rate", click.FloatRange(min=0, min_open=True), "auto",
     "AdamW learning rate (auto: 2e-3 for tables, 5e-4 otherwise)."),
    ("--weight-decay", "weight_decay", click.FloatRange(min=0), 1e-5, "AdamW weight decay."),
    ("--trim-fraction", "trim_fraction", click.FloatRange(0, 0.5, max_open=True), "auto",
     "Share of each batch's worst-explained rows left out of the loss (auto: 0.1 for tables, 0 otherwise)."),
    ("--augment", "augment", click.Choice(["auto", "on", "off"]), False,
     "Flips, small rotations and colour jitter in training: off, on, or auto (on for images, off for tables and "
     "backbone features)."),
    ("--scaling", "scaling", click.Choice(["auto", *settings.SCALINGS]), "auto",
     "Scaling of table columns or backbone features: standard (each its own), common (one for all)."),
    ("--validation-fraction", "validation_fraction", click.FloatRange(0, 1, max_open=True), 0.1,
     "Share held out for early stopping."),
    ("--calibration-fraction", "calibration_fraction", click.FloatRange(0, 1, max_open=True), 0.1,
     "Share held out to calibrate the threshold and p-values."),
    ("--early-stopping", "early_stopping", _ON_OFF, True, "Stop when the validation loss stops improving."),
    ("--n-iter-no-change", "n_iter_no_change", click.IntRange(min=1), 10, "Epochs without improvement before stopping."),
    ("--n-samples", "n_samples", click.IntRange(min=1), "auto",
     "Latent draws per input when scoring (auto: 1 per image, 16 per row of a table or of backbone features)."),
    ("--score-method", "score_method", _LiveChoice(ScoreMethodChoices), "auto",
     "Score written by `vaedetect score` (auto: bits_typicality for images, min_evidence for tables, residual for "
     "backbone features)."),
    ("--regret-steps", "regret_steps", click.IntRange(min=1), 20, "Optimiser steps per image of --score-method regret."),
    ("--complexity-codec", "complexity_codec", click.Choice(settings.CODECS), "png", "Codec of --score-method complexity."),
    ("--contamination", "contamination", None, "auto", "Expected share of outliers: 'auto' (0.01) or a float in (0, 0.5]."),
    ("--device", "device", str, "auto", "auto, cpu, cuda, cuda:1, mps, ..."),
    ("--mixed-precision", "mixed_precision", click.Choice(["auto", "on", "off"]), "auto",
     "bfloat16 training: auto (on for CUDA GPUs with bfloat16), on or off."),
    ("--seed", "random_state", int, None, "Random seed, for reproducible models."),
]


def _spelt(value) -> str:
    """A parameter's value as the command line spells it: booleans as on/off."""
    return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def _contamination(value):
    if value is None or value == "auto":
        return value
    from .calibration import check_contamination

    try:
        return check_contamination(float(value))
    except ValueError as error:  # its own words: "... must be a str among {'auto'} or a float in the range (0, 0.5]"
        reason = str(error)[str(error).find("must be"):] if "must be" in str(error) else "must be 'auto' or a number"
        raise click.BadParameter(f"{reason.split('. Got')[0]}; got {value!r}.") from None


def _fit_options(command):
    # passed on only when given (default None), so that the estimator's own defaults apply
    for option, parameter, kind, default, text in reversed(_FIT_OPTIONS):
        kwargs = {"callback": lambda ctx, param, value: _contamination(value)} if parameter == "contamination" else {}
        shown = "none" if default is None else _spelt(default)
        command = click.option(option, parameter, type=kind, default=None, help=f"{text} [default: {shown}]",
                               **kwargs)(command)
    return command


def _estimator_params(params: dict) -> dict:
    """The options given to `fit`, as ``VAEDetector`` parameters: on/off as booleans, channels as int."""
    given = {name: value for name, value in params.items() if value is not None}
    for name, value in given.items():
        if value in ("on", "off"):
            given[name] = value == "on"
    if "channels" in given:
        given["channels"] = int(given["channels"])
    return given


EXIT_OUTLIERS, EXIT_USAGE, EXIT_UNSCORED, EXIT_INTERNAL, EXIT_BROKEN_PIPE = 1, 2, 3, 4, 141
# the shell's codes of a process stopped by SIGINT (Ctrl-C) and SIGTERM
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_REPORT_SUFFIXES = (".html", ".htm")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# generate and interpolate draw one mosaic, held whole in memory: bounded here, not by the caller's luck
_MAX_MOSAIC_IMAGES = 1024


def _terminate(signum, frame):
    raise Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line on stderr, without the Python source line that raised it."""
    click.echo(f"warning: {printable(message)}", err=True)


class _Group(click.Group):
    """Turns an unexpected exception into one line and exit code 4, so that no traceback reaches a
    cron log and a crash is never read as ``--fail-on-outlier``'s code 1."""

    def invoke(self, ctx):
        import signal
        import warnings

        try:  # only the main thread may set a handler: a command run from another keeps the default
            signal.signal(signal.SIGTERM, _terminate)
        except ValueError:
            pass
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # outputs in progress are gone; never exit 1, the code of outliers found
            click.echo("vaedetect: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Terminated:
            click.echo("vaedetect: terminated", err=True)
            ctx.exit(EXIT_TERMINATED)
        except BrokenPipeError:
            # the reader went away (`| head`); the shell's code for SIGPIPE, never a silent 0
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_BROKEN_PIPE)
        except Exception as error:
            if os.environ.get("VAEDETECT_TRACEBACK"):
                raise
            click.echo(f"vaedetect: internal error: {type(error).__name__}: {printable(error)} "
                       "(set VAEDETECT_TRACEBACK=1 to see where)", err=True)
            ctx.exit(EXIT_INTERNAL)


def _existing_paths(ctx, param, values):
    for value in values:
        if not Path(value).exists() and not Path(value).is_symlink():
            raise click.BadParameter(f"path {printable(value)!r} does not exist.", ctx=ctx, param=param)
    return values


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number; got {value}.", ctx=ctx, param=param)
    return value


class Refused(click.ClickException):
    """An input or output refused before or instead of the work: one line, exit code 2."""

    exit_code = EXIT_USAGE


def _usage(function, *args, **kwargs):
    """Run a check or a library call; its ValueError (bad input, unsuitable or broken model, refused
    output) becomes one line on stderr and exit code 2."""
    try:
        return function(*args, **kwargs)
    except (ValueError, FileNotFoundError) as error:
        raise Refused(printable(" ".join(str(error).split()))) from None  # one line


def _writing(function, path, *args, **options):
    """Write ``path`` with ``function(path, *args, **options)``; a file system that refuses it (disk full,
    permissions changed since the check) is one line and exit code 2, the output left as it was."""
    try:
        return function(path, *args, **options)
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        raise Refused(f"cannot write {printable(path)!r}: {printable(error.strerror or error)}.") from None


def _load_model(path):
    from .persistence import model_kind

    if _usage(model_kind, path) == "CombinedDetector":
        from .combined import CombinedDetector

        return _usage(CombinedDetector.load, path)
    from .estimator import VAEDetector

    return _usage(VAEDetector.load, path)


def _discover(paths, follow_links):
    from .images import discover_images

    return _usage(discover_images, list(paths), follow_links=follow_links)


def _echo_skipped(skipped):
    for item in skipped:
        click.echo(f"skipped {printable(item.path)}: {printable(item.reason)}", err=True)


_id_column_option = click.option(
    "--id-column", metavar="NAME", help="For a .csv or .parquet table: a column that identifies rows, not a feature.")


def _tabular_inputs(paths) -> bool:
    """Whether ``paths`` name one table file (tabular data) rather than images; both at once are refused."""
    from .tables import TABLE_EXTENSIONS, is_table_file

    tables = [path for path in paths if is_table_file(path)]
    if tables and len(paths) > 1:
        raise Refused(f"give one {' or '.join(TABLE_EXTENSIONS)} table alone, not with other paths.")
    return bool(tables)


_follow_links_option = click.option(
    "--follow-links", is_flag=True,
    help="Follow symbolic links that lead out of the folders (by default they are reported and skipped).")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--preset", type=click.Choice(list(settings.PRESETS)), default="default", show_default=True,
              help="Named settings; 'sharp' is the tutorial's full-size SharpVAE. Other options override it.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train data-parallel on this many processes (torchrun; one per GPU, or Gloo on CPUs).")
@click.option("--combined", is_flag=True,
              help="Train the pixel model and a model of --backbone's features (default efficientnet_lite0), and flag "
                   "images either finds foreign, with one calibrated threshold.")
@click.option("--pixel-weight", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="With --combined: the pixel model's share of the false-positive budget (default 0.1); the feature "
                   "model has the rest.")
@click.option("--weights-path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A local weights file for --backbone (a state dict saved by torch.save), instead of the packaged or "
                   "downloaded one.")
@_follow_links_option
@_id_column_option
@_fit_options
def fit(folders, output, workers, quiet, preset, nproc, combined, pixel_weight, weights_path, follow_links, id_column,
        **params):
    """Train a detector on the images in FOLDERS (searched recursively) and save it.

    A single .csv or .parquet file instead trains on the rows of that table (its numeric columns).
    """
    from .distributed import launched_by_torchrun

    found = _discover(folders, follow_links)
    _check_model_output(output, found.files)
    tabular = _tabular_inputs(folders)
    if nproc > 1 and tabular:
        raise Refused("--nproc trains on images; a table trains in one process.")
    if nproc > 1 and (params.get("backbone") or combined):
        raise Refused("--nproc trains the pixel model; with --backbone the VAE on the features trains in one process.")
    if combined and tabular:
        raise Refused("--combined is for images; a table trains one model.")
    if pixel_weight is not None and not combined:
        raise Refused("--pixel-weight weighs the two models of --combined; give --combined too.")
    if weights_path is not None:
        if not (params.get("backbone") or combined):
            raise Refused("--weights-path gives the weights of --backbone (or of --combined's feature model); give one.")
        from .backbones import FeatureExtractor

        params["backbone"] = FeatureExtractor(params.get("backbone") or "efficientnet_lite0", weights_path=weights_path)
    if nproc > 1 and not launched_by_torchrun():
        raise SystemExit(_run_under_torchrun(nproc, folders, output, workers, quiet, preset, follow_links, params))
    from .estimator import VAEDetector

    if combined:
        _fit_combined(found, output, workers, quiet, preset, params, pixel_weight)
        return
    detector = VAEDetector.from_preset(preset, **_estimator_params(params), verbose=0 if quiet else 1)
    if tabular:
        from .tables import read_features

        rows = _usage(read_features, folders[0], id_column)
        _usage(detector.fit, rows)
        _writing(detector.save, output)
        click.echo(f"Trained on {len(rows)} rows of {rows.shape[1]} features; model written to {printable(output)}")
        click.echo(_splits(detector))
        return
    if launched_by_torchrun():
        _usage(_fit_distributed, detector, found, output, workers)
        return
    _usage(detector.fit_paths, found, n_jobs=workers)
    _report_fit(detector, output)


def _fit_combined(found, output, workers, quiet, preset, params, pixel_weight=None):
    """`fit --combined`: the fit options set the pixel model; --backbone and --seed the feature model too."""
    from .combined import CombinedDetector
    from .estimator import VAEDetector

    given = _estimator_params(params)
    backbone, seed = given.pop("backbone", "efficientnet_lite0"), given.get("random_state")
    verbose = 0 if quiet else 1
    detector = CombinedDetector(VAEDetector.from_preset(preset, **given, verbose=verbose),
                                VAEDetector(backbone=backbone, verbose=verbose), random_state=seed,
                                **{name: given[name] for name in ("validation_fraction", "calibration_fraction",
                                                                  "contamination") if name in given},
                                **({"pixel_weight": pixel_weight} if pixel_weight is not None else {}))
    _usage(detector.fit_paths, found, n_jobs=workers)
    _report_fit(detector, output)


def _check_model_output(output, protected) -> None:
    """Refuse a model path that cannot be written, would overwrite an input, or is named like an image
    or a table (in an image folder it would be found as an image next time, and be none)."""
    from .images import IMAGE_EXTENSIONS

    if output.suffix.lower() in IMAGE_EXTENSIONS + schema.SUFFIXES + _REPORT_SUFFIXES:
        raise Refused(f"-o {printable(output)!r} is named like an image or a table, but a model file is neither; "
                      "name it e.g. model.vae.")
    _usage(check_output_file, output, what="-o", protected=protected)


def _report_fit(detector, output):
    _echo_skipped(detector.skipped_files_)
    _writing(detector.save, output)
    summary = detector.training_summary_
    click.echo(f"Trained on {summary['n_samples']} images ({summary['n_files_skipped']} skipped); "
               f"model written to {printable(output)}")
    click.echo(_splits(detector))


def _splits(detector) -> str:
    """How ``fit`` used the samples, and what the calibration scores make reachable."""
    summary = detector.training_summary_
    reference = summary.get("n_reference")  # a combined detector's models held out the same images
    networks, references = ("each network", f"; the {reference} held-out images are the two models' reference scores") \
        if reference else ("the network", "")
    return (f"  {summary['n_train']} to train {networks}, {summary['n_validation']} for early stopping{references}; "
            f"calibration: {detector.calibration_.describe()}")


def _fit_distributed(detector, found, output, workers):
    """One rank of ``vaedetect fit`` under torchrun: train together, rank 0 alone reports and writes."""
    from .distributed import fit_distributed, init_process_group

    world = init_process_group()
    if world.rank != 0:
        detector.set_params(verbose=0)
    try:
        fit_distributed(detector, paths=found, world=world, n_jobs=workers)
    except Exception as error:
        # torchrun stops the other ranks when this one exits; say which rank failed and why
        click.echo(f"vaedetect fit: rank {world.rank} of {world.size} failed: {type(error).__name__}: {error}",
                   err=True)
        raise
    if world.rank == 0:
        _report_fit(detector, output)


def _run_under_torchrun(nproc, folders, output, workers, quiet, preset, follow_links, params) -> int:
    """Start ``nproc`` copies of this ``vaedetect fit`` under torchrun on this machine; their exit code."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "vaedetect", "fit", *map(str, folders), "-o", str(output), "--workers", str(workers),
               "--preset", preset]
    command += ["--quiet"] if quiet else []
    command += ["--follow-links"] if follow_links else []
    for option, parameter, *_ in _FIT_OPTIONS:
        if params.get(parameter) is not None:
            command += [option, str(params[parameter])]
    # torchrun would give every process one thread; share the cores out instead
    environment = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc)), **os.environ}
    return subprocess.run(command, env=environment).returncode


# ------------------------------------------------------------------ score


def _check_table_path(path: Path, protected) -> None:
    """Refuse, before scoring, a table path that :func:`vaedetect.schema.write` could not or must not write."""
    _usage(check_output_file, path, what="-o", suffixes=schema.SUFFIXES, protected=protected)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise click.BadParameter("writing .parquet needs pyarrow (pip install pyarrow).", param_hint="'-o'") from None




@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("paths", nargs=-1, required=True, callback=_existing_paths)
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write the table here (.csv, .parquet or .jsonl; - for standard output, as --format says); "
                   "printed for reading when omitted.")
@click.option("--format", "table_format", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True,
              help="Format of the table written to standard output by -o -.")
@click.option("--threshold", type=float, callback=_finite, help="Flag scores below this instead of the model's threshold.")
@click.option("--fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Flag files whose conformal p-value is at most this target false-positive rate.")
@click.option("--contamination", callback=lambda ctx, param, value: _contamination(value),
              help="Flag this share of held-out training data instead ('auto' or a float in (0, 0.5]).")
@click.option("--top", type=click.IntRange(min=1), help="Print the N most anomalous files.")
@click.option("--quiet", is_flag=True, help="No progress bar (there is none either when stderr is not a terminal).")
@click.option("--fail-on-outlier", is_flag=True,
              help="Exit with code 1 when any file is an outlier, else 3 when any file could not be scored.")
@click.option("--ignore-errors", is_flag=True,
              help="With --fail-on-outlier: files that could not be scored do not fail the run (no exit code 3).")
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Save a heat-map overlay of where each flagged image is anomalous to this folder.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML report (histogram, most anomalous and most normal images "
                   "with anomaly maps, latent PCA) here.")
@click.option("--report-top", type=click.IntRange(min=1), default=24, show_default=True,
              help="Thumbnails of this many most anomalous and most normal files in the report.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding images; 0 decodes in this process, as fast on 2 cores (docs/benchmarks/full.md).")
@click.option("--shard", callback=lambda ctx, param, value: _shard(value), metavar="I/N",
              help="Score only the I-th of N equal shares of the files (0 <= I < N), e.g. for a job array.")
@_follow_links_option
@_id_column_option
@click.option("--dask-scheduler", metavar="ADDRESS", help="Score on this Dask cluster (needs vaedetect[dask]).")
@click.option("--dask-workers", type=click.IntRange(min=1),
              help="Score on a local Dask cluster of this many single-threaded workers (needs vaedetect[dask]).")
def score(model, paths, output, table_format, threshold, fpr, contamination, top, quiet, fail_on_outlier,
          ignore_errors, maps_dir, report_path, report_top, workers, shard, follow_links, id_column, dask_scheduler,
          dask_workers):
    """Score the images in PATHS with the detector in MODEL; one row per file found.

    Columns: path, score (higher = more normal), p_value (small for anomalies), is_outlier,
    error (why a file could not be scored), map (with --maps); a combined model adds each model's
    evidence. A model fitted on a table scores the rows of .csv or .parquet files instead, with the
    columns path, row (and --id-column), score, p_value, is_outlier, top_features (the columns that
    lower the row's score most, in nats) and error.
    """
    from .calibration import threshold_override

    try:
        overrides = threshold_override(threshold=threshold, fpr=fpr, contamination=contamination)
    except ValueError:
        raise click.UsageError("Give at most one of --threshold, --fpr and --contamination.") from None
    if dask_scheduler and dask_workers:
        raise click.UsageError("Give at most one of --dask-scheduler and --dask-workers.")
    # everything that can be refused is refused here, before the work: outputs before the model is even read
    found = _discover(paths, follow_links)
    _check_score_outputs(found, model, output, maps_dir, report_path)
    detector = _load_model(model)
    if fpr is not None:
        _check_reachable(fpr, detector, model)
    if overrides:
        _usage(detector.set_threshold, **overrides)
    takes_images = detector.modality_.images
    if takes_images:
        _usage(detector.modality_.file_geometry)
        _check_image_run(paths)
        found = _files_to_score(found, paths, shard)
    else:
        _check_tabular_run(paths, maps_dir, report_path, shard, dask_scheduler or dask_workers)
    if maps_dir is not None and not detector.modality_.pixels:
        raise Refused(f"--maps needs a pixel model; {printable(model)} models {printable(detector.modality_.describe())}, "
                      "which have no pixels to map.")

    tally = _Tally(top)
    if not takes_images:  # tables stream, chunk by chunk, to the output: memory holds one chunk
        _emit_parts(tally.parts(_table_parts(detector, paths, id_column)), output, table_format)
        table = None
    else:
        if dask_scheduler or dask_workers:
            table = _score_on_dask(model, found, overrides, maps_dir, dask_scheduler, dask_workers)
        else:
            progress = not quiet and sys.stderr.isatty()
            table = detector.score_paths(found, n_jobs=workers, maps_dir=maps_dir, progress=progress)
        _emit_parts(tally.parts([table]), output, table_format)
    tally.echo_top(to_stderr=output is not None and str(output) == "-")
    if report_path is not None:
        from .report import write_report

        note = ", ".join(f"--{name} {value}" for name, value in overrides.items()) or "(the model's own)"
        _writing(write_report, report_path, detector, table, model_path=str(model), inputs=[str(p) for p in paths],
                 threshold_note=note, top=report_top)
        click.echo(f"Wrote the report to {printable(report_path)}", err=True)
    raise SystemExit(_verdict(tally, detector, fail_on_outlier, ignore_errors))


def _files_to_score(found, paths, shard):
    """The entries ``found`` under ``paths`` (one share of them with ``shard``); none at all is refused."""
    if not found.entries():  # a gate over a wrongly mounted, empty folder must not pass
        from .images import IMAGE_EXTENSIONS

        raise Refused(f"Found 0 image files in {printable(', '.join(map(str, paths)))} "
                      f"(extensions {', '.join(IMAGE_EXTENSIONS)}).")
    if shard is not None:
        index, count = shard
        found = found.subset(found.entries()[index::count])
    return found


def _table_parts(detector, paths, id_column):
    """The score tables of the rows of the table files ``paths``, chunk by chunk; none at all is refused."""
    from .tables import iter_table_scores

    n_rows = 0
    for path in paths:
        parts = iter_table_scores(detector, path, id_column=id_column)
        while (part := _usage(next, parts, None)) is not None:  # a file that cannot be read: one line, exit 2
            n_rows += len(part)
            yield part
    if not n_rows:  # a gate over empty tables must not pass, as over an empty folder
        raise Refused(f"{printable(', '.join(map(str, paths)))} hold no rows to score.")


class _Tally:
    """What the summary and ``--top`` say of a score table that passes by in parts: its counts and its ``top``
    most anomalous rows."""

    def __init__(self, top):
        self.top, self.ranked = top, None
        self.rows = self.outliers = self.errors = 0
        self.unit = "files"

    def parts(self, parts):
        import pandas as pd

        for part in parts:
            self.rows += len(part)
            self.outliers += int(part["is_outlier"].sum())
            self.errors += int((part["error"] != "").sum())
            self.unit = "rows" if "row" in part.columns else "files"
            if self.top:
                scored = part.dropna(subset=["score"])
                both = scored if self.ranked is None else pd.concat([self.ranked, scored])
                self.ranked = both.nsmallest(self.top, "score")
            yield part

    def echo_top(self, to_stderr: bool) -> None:
        """The ``top`` most anomalous rows, names escaped (on stderr when stdout carries the table)."""
        if self.top and self.ranked is not None:
            shown = schema.as_written(self.ranked, printable)
            columns = [name for name in shown.columns if name not in ("p_value", "error", "map")]
            click.echo(f"\nThe {len(shown)} most anomalous:", err=to_stderr)
            click.echo(shown[columns].to_string(index=False), err=to_stderr)


def _emit_parts(parts, output, table_format) -> None:
    """The score table, given in parts, to ``output``: a file (written part by part, atomically), ``-`` for
    standard output (part by part), or None: printed to read, names escaped."""
    import pandas as pd

    if output is None:
        table = pd.concat(list(parts), ignore_index=True)
        click.echo(schema.as_written(table, printable).to_string(index=False) if len(table) else "No image files found.")
    elif str(output) == "-":
        for index, part in enumerate(parts):
            click.echo(schema.text(part, table_format, header=index == 0), nl=False)
    else:
        counted = []
        _writing(lambda path: _usage(schema.write_parts, (counted.append(len(p)) or p for p in parts), path), output)
        click.echo(f"Wrote {sum(counted)} rows to {printable(output)}", err=True)


def _verdict(tally, detector, fail_on_outlier, ignore_errors) -> int:
    """Print the summary line; the exit code: 1 for outliers, 3 for unscored entries under the gate."""
    calibration, unit = detector.calibration_, tally.unit
    click.echo(f"{tally.rows} {unit}: {tally.outliers} outliers, {tally.errors} could not be scored "
               f"(threshold {calibration.offset:.6g}: {calibration.describe_rule()})", err=True)
    if fail_on_outlier and tally.outliers:
        return EXIT_OUTLIERS
    if fail_on_outlier and tally.errors and not ignore_errors:
        click.echo(f"failing: {tally.errors} {unit} could not be scored, so they were not checked "
                   "(--ignore-errors to let them pass)", err=True)
        return EXIT_UNSCORED
    return 0


def _check_reachable(fpr, detector, model) -> None:
    """Refuse a target false-positive rate the model's calibration scores are too few to reach: the
    threshold would flag nothing, and a gate would pass silently."""
    calibration = detector.calibration_
    if not calibration.reachable(fpr):
        n, needed = len(calibration), math.ceil(1 / fpr - 1e-9) - 1
        raise Refused(f"--fpr {fpr} is out of reach of the {n} calibration scores in {printable(model)} (the smallest "
                      f"reachable rate is 1/{n + 1} = {calibration.smallest_rate:.3g}); it needs at least {needed}. Add "
                      "normal data with `vaedetect calibrate`, or fit on more.")


def _concat(tables):
    import pandas as pd

    return pd.concat(tables, ignore_index=True)


def _check_image_run(paths) -> None:
    """A model of images scores image files: a table given to it is a usage error, as images given to a table's."""
    from .tables import is_table_file

    tables = [str(path) for path in paths if is_table_file(path) and not Path(path).is_dir()]
    if tables:
        raise Refused(f"the model was fitted on images: give folders or image files, not {printable(tables[0])!r}.")


def _check_tabular_run(paths, maps_dir, report_path, shard, on_dask) -> None:
    """A tabular model scores table files, in this process, without pictures."""
    from .tables import TABLE_EXTENSIONS, is_table_file

    others = [str(path) for path in paths if not is_table_file(path) or Path(path).is_dir()]
    if others:
        raise Refused(f"the model was fitted on a table: give {' or '.join(TABLE_EXTENSIONS)} files, not {others[0]!r}.")
    for given, option in ((maps_dir, "--maps"), (report_path, "--report"), (shard, "--shard"), (on_dask, "--dask-*")):
        if given:
            raise Refused(f"{option} is for image models; this one was fitted on a table.")


def _check_score_outputs(found, model, output, maps_dir, report_path) -> None:
    """Every output of ``score`` checked before the work: folders exist and are writable, extensions are
    known, and nothing written would replace the model or one of the files being scored."""
    protected = [model, *found.files]
    if output is not None and str(output) != "-":
        _check_table_path(output, protected)
    if report_path is not None:
        _usage(check_output_file, report_path, what="--report", suffixes=_REPORT_SUFFIXES, protected=protected)
    if maps_dir is not None:
        folder = _usage(check_output_folder, maps_dir, what="--maps")
        for path in found.files:
            target = folder / map_name(path)
            clash = same_file(target, protected)
            if clash is not None:
                raise Refused(f"--maps {printable(maps_dir)!r}: the map of {printable(path)!r} would overwrite "
                              f"{printable(clash)!r}, an input of this command; write maps elsewhere.")
            if target.is_symlink() or target.exists() and not target.is_file():
                raise Refused(f"--maps {printable(maps_dir)!r}: the map of {printable(path)!r} would replace "
                              f"{printable(target)!r}, which is not a regular file; write maps elsewhere.")


def _shard(value):
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise click.BadParameter(f"must be I/N with 0 <= I < N, e.g. 0/4; got {value!r}.")
    return int(match[1]), int(match[2])


def _score_on_dask(model, found, overrides, maps_dir, scheduler, n_workers):
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
        try:
            client = Client(cluster if cluster is not None else scheduler)
        except (OSError, TimeoutError, ValueError, TypeError) as error:
            raise Refused(f"--dask-scheduler {printable(scheduler)!r}: cannot connect "
                          f"({type(error).__name__}: {printable(error)}).") from None
        with client:
            return score_paths(model, found, maps_dir=maps_dir, **overrides).compute()
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
    picture = Image.fromarray(canvas.repeat(factor, axis=0).repeat(factor, axis=1))
    write_atomically(path, lambda tmp: picture.save(tmp, format=Image.registered_extensions()[path.suffix.lower()]))


def _load_image_model(path, command, *, decodes=True):
    """The model at ``path``, fitted on images; with ``decodes``, one with a pixel model (that decodes images)."""
    detector = _load_model(path)
    modality = detector.modality_
    if not modality.images:
        raise Refused(f"`vaedetect {command}` needs a model fitted on images; {printable(path)} models "
                      f"{printable(modality.describe())}.")
    if decodes and not modality.pixels:
        raise Refused(f"`vaedetect {command}` needs a pixel model; {printable(path)} models "
                      f"{printable(modality.describe())}, which cannot be decoded into images.")
    return detector


def _check_picture(output, protected, suffixes=_IMAGE_SUFFIXES):
    _usage(check_output_file, output, what="-o", suffixes=suffixes, protected=protected)


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-n", "count", type=click.IntRange(1, _MAX_MOSAIC_IMAGES), default=64, show_default=True,
              help="Images to generate.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file for the grid (.png, .jpg, .webp, ...).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Scale of the prior draws; lower gives more typical images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the draws: the same seed, the same images.")
def generate(model, count, output, temperature, seed):
    """Decode COUNT draws from the latent prior of MODEL into a grid of images."""
    _check_picture(output, [model])
    detector = _load_image_model(model, "generate")
    samples = _usage(detector.sample, count, temperature=temperature, random_state=seed)
    _save_mosaic(samples, output)
    click.echo(f"Wrote {count} generated images to {printable(output)}")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("start", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("end", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--steps", type=click.IntRange(2, _MAX_MOSAIC_IMAGES - 2), default=10, show_default=True,
              help="Images on the path.")
@click.option("--method", type=click.Choice(["slerp", "lerp"]), default="slerp", show_default=True,
              help="slerp follows the sphere Gaussian codes lie near; lerp is the straight line between the two codes.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file for the strip (.png, .jpg, .webp, ...).")
def interpolate(model, start, end, steps, method, output):
    """Decode a latent path from image START to image END into a strip of images.

    The strip begins and ends with the two inputs as read for the model, and shows the decoded
    path between them.
    """
    import numpy as np

    _check_picture(output, [model, start, end])
    detector = _load_image_model(model, "interpolate")
    X, used, skipped = detector.read_images([start, end])
    if skipped:
        raise Refused(f"could not read {printable(skipped[0].path)}: {printable(skipped[0].reason)}")
    X = X[[used.index(str(start)), used.index(str(end))]]
    path = _usage(detector.interpolate, X[0], X[1], steps=steps, method=method)
    _save_mosaic(np.concatenate([X[:1], path, X[1:]]), output, ncols=steps + 2)
    click.echo(f"Wrote a strip of {steps + 2} tiles to {printable(output)}: {printable(start)} as read, the {steps} "
               f"decoded points of the latent path (its ends reconstruct the two images), {printable(end)} as read")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("folders", nargs=-1, required=True, callback=_existing_paths)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file for the scatter plot (.png, .pdf, .svg, ...).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding images.")
@_follow_links_option
def pca(model, folders, output, workers, follow_links):
    """Plot the latent means of the images in FOLDERS on their first two principal components.

    Points are coloured by the folder each image lies in (e.g. test/dog, test/cat).
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from .plotting import latent_scatter

    found = _discover(folders, follow_links)
    _check_picture(output, [model, *found.files],
                   suffixes=tuple(f".{kind}" for kind in FigureCanvasBase.get_supported_filetypes()))
    detector = _load_image_model(model, "pca", decodes=False)
    X, used, skipped = detector.read_images(found, n_jobs=workers)
    _echo_skipped(skipped)
    if len(X) < 2:
        raise Refused(f"need at least 2 readable images in {printable(', '.join(folders))}; found {len(X)}.")
    _, coordinates = _usage(detector.latent_pca, X, n_components=2)
    ax = latent_scatter(coordinates, labels=[Path(p).parent.name for p in used])
    ax.set_title(f"latent PCA of {len(X)} images")
    write_atomically(output, lambda tmp: ax.figure.savefig(tmp, dpi=120, bbox_inches="tight",
                                                           format=output.suffix.lstrip(".").lower()))
    click.echo(f"Wrote the latent PCA of {len(X)} images to {printable(output)}")


# ------------------------------------------------------------------ calibrate


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("paths", nargs=-1, required=True, callback=_existing_paths)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the calibrated model (a new file: the model given is never overwritten).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Processes decoding images.")
@_follow_links_option
@_id_column_option
def calibrate(model, paths, output, workers, follow_links, id_column):
    """Calibrate MODEL's threshold and p-values on the normal data in PATHS, written as a new model.

    The data must be normal and must not be what the model was trained on. They replace the
    calibration scores kept from training (VAEDetector.calibrate); more of them make smaller
    false-positive rates reachable (--fpr) and thresholds less noisy.
    """
    found = _discover(paths, follow_links)
    _check_model_output(output, [model, *found.files])
    detector = _load_model(model)
    if detector.modality_.images:
        _usage(detector.calibrate_paths, found, n_jobs=workers)
        _echo_skipped(detector.skipped_files_)
    else:
        _check_tabular_run(paths, None, None, None, None)
        from .tables import read_features

        _usage(detector.calibrate, _concat([_usage(read_features, path, id_column) for path in paths]))
    _writing(detector.save, output)
    click.echo(f"Calibrated on {detector.calibration_.describe()}; model written to {printable(output)}")


# ------------------------------------------------------------------ export


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="ONNX file to write (.onnx).")
def export(model, output):
    """Export MODEL's scoring to an ONNX file that vaedetect.runtime scores with, without torch.

    The file holds the network, its fixed latent draws and score, the backbone of a feature model, and as
    metadata the threshold, calibration scores and preprocessing: the same scores and verdicts as MODEL.
    """
    _usage(check_output_file, output, what="-o", suffixes=(".onnx",), protected=[model])
    detector = _load_model(model)
    try:
        _writing(detector.export_onnx, output)
    except ImportError as error:
        raise Refused(printable(str(error))) from None
    click.echo(f"Exported the {detector.modality_.name} model's {detector.calibration_.score_method} score to "
               f"{printable(output)} (vaedetect.runtime.load reads it, without torch)")


# ------------------------------------------------------------------ serve


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the default answers this machine only. 0.0.0.0 answers every network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-request-mb", type=click.FloatRange(min=0, min_open=True), default=32, show_default=True,
              help="Largest request body, in MiB; a larger upload gets 413.")
@click.option("--max-files", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most image files in one request.")
def serve(model, host, port, max_request_mb, max_files):
    """Serve MODEL (a model file, or an .onnx file `vaedetect export` wrote) over HTTP until interrupted.

    POST /score takes image files (multipart/form-data) or a table's rows (JSON) and returns the score table's
    rows as JSON; GET / is a page to drop photos on; GET /health; GET /model says what `vaedetect info` says.
    """
    from .serve import create_app

    try:
        app = _usage(create_app, model, max_request_bytes=int(max_request_mb * 2**20), max_files=max_files)
        import uvicorn
    except ImportError as error:
        raise Refused(printable(str(error))) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {printable(host)}: anyone who reaches this address can score with the model.",
                   err=True)
    click.echo(f"Serving {printable(model)} on http://{printable(host)}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


# ------------------------------------------------------------------ info


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info(model):
    """Show a model file's parameters, training data, threshold and versions.

    MODEL may also be an .onnx file `vaedetect export` wrote: its score, threshold, calibration and input. The
    file is checked as fully as for scoring: an invalid or broken model exits with code 2.
    """
    from .persistence import read_model

    if model.suffix.lower() == ".onnx":
        return _info_exported(model)
    detector = _load_model(model)  # refuses what scoring would refuse: forged headers, NaN weights...
    header, _ = _usage(read_model, model)
    click.echo(f"model file:   {printable(model)}")
    click.echo(f"written by:   vaedetect {printable(header['vaedetect_version'])}, "
               f"torch {printable(header['torch_version'])} (format {header['format_version']})")
    _echo_verdict(detector)
    models = header.get("models", {"": header})  # a combined file holds two models, each described as a file is
    for part, model_header in models.items():
        part_detector, indent = (getattr(detector, f"{part}_"), "  ") if part else (detector, "")
        if part:  # the combined verdict is what scoring uses: each model's own threshold is not
            click.echo(f"{ {'features': 'feature'}.get(part, part)} model:")
            click.echo(f"{indent}score:        {part_detector.calibration_.score_method}, of "
                       f"{printable(part_detector.modality_.describe())}")
        _echo_model(model_header, part_detector, indent)


def _echo_verdict(detector):
    """The lines of `vaedetect info` on what scoring writes: the score, the threshold and its calibration."""
    click.echo("\n".join(_calibration_lines(detector.calibration_, detector.modality_.describe())))


def _calibration_lines(calibration, scored: str) -> list[str]:
    return [f"score:        {printable(calibration.score_method)} (higher = more normal), of {printable(scored)}",
            f"threshold:    {calibration.offset:.6g} (scores below it are outliers; {calibration.describe_rule()})",
            f"calibration:  {calibration.describe()}"]


def _info_exported(path):
    """`vaedetect info` of an exported detector: what its metadata says, once onnxruntime has read the graph."""
    from . import runtime

    try:
        detector = _usage(runtime.load, path)  # the graph is read and checked, as for scoring
    except ImportError as error:
        raise Refused(str(error)) from None
    try:
        lines = _exported_lines(path, detector.fields)
    except (KeyError, TypeError, ValueError) as error:  # fields the runtime does not read itself
        raise Refused(printable(str(runtime.malformed_metadata(path, error)))) from None
    click.echo("\n".join(lines))


def _exported_lines(path, fields: dict) -> list[str]:
    from .calibration import Calibration

    lines = [f"model file:   {printable(path)} (exported: scored with onnxruntime, without torch)",
             f"written by:   vaedetect {printable(fields['vaedetect_version'])}, torch {printable(fields['torch_version'])} "
             f"(format {printable(fields['format'])} {fields['format_version']})"]
    if "pixel" not in fields:
        model = fields["model"]
        return lines + _calibration_lines(Calibration(**model["calibration"]), _exported_input(model))
    lines += _calibration_lines(Calibration(**fields["calibration"]), "images, the pixel and the feature models' evidence")
    return lines + [f"{name} model:  {printable(fields[part]['score_method'])}, of {printable(_exported_input(fields[part]))}"
                    for part, name in (("pixel", "pixel"), ("features", "feature"))]


def _exported_input(model_fields: dict) -> str:
    """An exported model's input in words: what it models and the shape of one sample."""
    from .data import InputLayout

    return f"{model_fields['kind']} inputs of shape {InputLayout.from_dict(model_fields['input_layout']).shape}"


def _training_text(summary: dict) -> str:
    """``training_summary_`` in words: how the samples were split, and where from."""
    words = [f"{summary.get('n_samples', '?')} samples: {summary.get('n_train', '?')} to train, "
             f"{summary.get('n_validation', '?')} for early stopping, {summary.get('n_calibration', '?')} to calibrate"]
    if "epochs_run" in summary:
        words.append(f"{summary['epochs_run']} of {summary.get('epochs', '?')} epochs")
    if summary.get("paths"):
        words.append(f"files from {', '.join(summary['paths'])} ({summary.get('n_files_found', '?')} found, "
                     f"{summary.get('n_files_skipped', '?')} skipped)")
    return "; ".join(words)


def _echo_model(header, detector, indent=""):
    """The lines of `vaedetect info` on one model: its input, training and parameters."""
    fitted = header["fitted"]
    click.echo(f"{indent}input:        {printable(detector.modality_.details())}")
    click.echo(f"{indent}training:     {printable(_training_text(fitted.get('training_summary', {})))}")
    click.echo(f"{indent}parameters:")
    for name, value in sorted(header["params"].items()):
        click.echo(f"{indent}  {name} = {printable(repr(value))}")


# ------------------------------------------------------------------ demo


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("vaedetect-demo"),
              show_default=True, help="Folder for the images, the model file and the scores.")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True,
              help="Training epochs of the demo's small model.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the demo's data and model.")
def demo(out: Path, epochs: int, seed: int):
    """Build image folders from data that ship with scikit-learn, train, score, show what was flagged.

    Normal: handwritten zeros from scikit-learn's digits. Scored: held-out zeros, other digits, and
    crops of scikit-learn's sample photos. Needs no download.
    """
    from .demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, echo=click.echo)
