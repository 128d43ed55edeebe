"""What every result file records about how it was made, and how it is written.

A figure without its machine, versions, date and command cannot be checked or repeated, so the runner
and every stand-alone benchmark script start their results from :func:`describe_run`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path


def machine() -> dict:
    """``{"machine": description, "versions": {...}}`` of this process: CPUs, torch threads, GPU."""
    import torch

    import vaedetect

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                   f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
        "versions": {"vaedetect": vaedetect.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def describe_run(program: str, argv: list[str] | None = None) -> dict:
    """Date, command, machine and versions of a run of ``program`` (e.g. ``"python -m benchmarks.scale_out"``)
    with arguments ``argv`` (default: this process's own)."""
    arguments = argv if argv is not None else sys.argv[1:]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([program, *arguments]),
        **machine(),
    }


def write_results(results: dict, out: str | None, markdown: str | None = None, page: str | None = None) -> None:
    """Write ``results`` as JSON to ``out`` and ``page`` to ``markdown``, each only when its path is given."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=1))
    if markdown:
        Path(markdown).write_text(page)


def run_benchmark(name: str, argv, args, run, page) -> int:
    """The body of a benchmark module's ``main``: ``run(args)`` described as a run of ``python -m benchmarks.<name>``
    with ``argv``, its page (``page(results)``) printed, results and page written to ``args.out`` and
    ``args.markdown``. Missing data or a missing extra skips it with the reason (exit code 0)."""
    described = {"benchmark": name, **describe_run(f"python -m benchmarks.{name}", argv)}
    try:
        results = described | run(args)
    except (FileNotFoundError, ImportError) as error:
        print(f"skipped: {error}", file=sys.stderr)
        return 0
    text = page(results)
    print(text)
    write_results(results, args.out, args.markdown, text)
    return 0


def benchmark_parser(doc: str, holds: str) -> argparse.ArgumentParser:
    """A benchmark module's command line: its docstring's first line as the description, ``--data-dir`` (the
    folder holding ``holds``), and ``--out`` and ``--markdown`` for :func:`run_benchmark`; add the rest."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help=f"folder holding {holds} (default: $VAEDETECT_DATA or ../shared/data)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="write the page here")
    return parser
