"""Does ``torch.compile`` make the default network faster on this machine? Eager against compiled.

- training: steps of vaedetect's objective (AdamW, gradient clipping, channels-last weights) on random
  images, the median seconds per step of each after a warm-up, and the extra seconds the compiled
  network's first steps took (tracing and code generation, with an empty kernel cache);
- scoring: the ELBO of the folded inference network under ``inference_mode``, median of several batches.

Eager and compiled steps alternate, so that a machine slowed for a while slows both alike.

vaedetect does not call ``torch.compile``: this script is the evidence for that choice, to be re-run
on other machines (a GPU, a CPU with more cores or bfloat16 units) before reconsidering it.

Usage::

    python -m benchmarks.torch_compile [--image-sizes 32 64] [--out FILE.json] [--markdown FILE.md]
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import tempfile
import time

from ._provenance import benchmark_parser, describe_run, write_results
from .speed import default_model, default_network


def _training_steps(network, model, x):
    """Train ``network`` (``model`` or its compiled form) step after step; yield each step's seconds."""
    import torch

    from vaedetect.training import TrainConfig, batch_loss

    config, batch_size = TrainConfig(), default_network()[1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in itertools.count():
        started = time.perf_counter()
        batch = x[(step * batch_size) % len(x) :][:batch_size]
        eps = torch.randn((len(batch), *model.latent_shape), generator=generator)
        loss = batch_loss(network, batch, eps, config, 1.0)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        yield time.perf_counter() - started


def _alternating(eager, compiled, warm_up: int, repeats: int) -> dict:
    """Time two step iterators turn by turn, so that both see the same state of a noisy machine.

    Rates come from each one's median step after ``warm_up``; the compile seconds are what the
    compiled iterator's warm-up steps took beyond as many of its steady steps.
    """
    first = [next(compiled) for _ in range(warm_up)]
    for _ in range(warm_up):
        next(eager)
    pairs = [(next(eager), next(compiled)) for _ in range(repeats)]
    eager_step = statistics.median(pair[0] for pair in pairs)
    compiled_step = statistics.median(pair[1] for pair in pairs)
    return {"eager_step": eager_step, "compiled_step": compiled_step,
            "speed_up": eager_step / compiled_step, "compile_seconds": sum(first) - warm_up * compiled_step}


def _rates(timing: dict, images: int) -> dict:
    return {"eager_images_per_second": images / timing["eager_step"],
            "compiled_images_per_second": images / timing["compiled_step"],
            "speed_up": timing["speed_up"], "compile_seconds": timing["compile_seconds"]}


def training(image_size: int, steps: int = 50, warm_up: int = 5, backend: str = "inductor") -> dict:
    """Training images/s eager and compiled, steps taken turn by turn, and the compile seconds."""
    import torch

    x = torch.rand((512, 3, image_size, image_size)) * 2 - 1
    eager_model, compiled_model = default_model(image_size), default_model(image_size)
    eager = _training_steps(eager_model, eager_model, x)
    compiled = _training_steps(torch.compile(compiled_model, backend=backend), compiled_model, x)
    return _rates(_alternating(eager, compiled, warm_up, steps), default_network()[1])


def scoring(image_size: int, batch_size: int = 256, repeats: int = 8, backend: str = "inductor") -> dict:
    """ELBO scoring images/s of the folded network, eager and compiled, batches scored turn by turn."""
    import torch

    from vaedetect.acceleration import inference_network, use_channels_last
    from vaedetect.scoring import elbo_score, latent_noise

    network = use_channels_last(inference_network(default_model(image_size)), "cpu")
    x = torch.rand((batch_size, 3, image_size, image_size)) * 2 - 1
    noise = latent_noise(network.latent_shape, 1, 0, "cpu")

    def batches(score):
        while True:
            with torch.inference_mode():
                started = time.perf_counter()
                score(x)
            yield time.perf_counter() - started

    eager = batches(lambda batch: elbo_score(network, batch, noise))
    compiled = batches(torch.compile(lambda batch: elbo_score(network, batch, noise), backend=backend))
    return _rates(_alternating(eager, compiled, 1, repeats), batch_size)


def markdown(results: dict) -> str:
    lines = [
        "# `torch.compile` on the default network", "",
        f"`{results['command']}` on {results['date']} ({results['machine']}; torch {results['versions']['torch']}).", "",
        "| image size | task | eager images/s | compiled images/s | speed-up | compile seconds |",
        "|---|---|---|---|---|---|",
    ]
    for size, tasks in results["sizes"].items():
        for task, row in tasks.items():
            lines.append(f"| {size} | {task} | {row['eager_images_per_second']:.0f} | "
                         f"{row['compiled_images_per_second']:.0f} | {row['speed_up']:.2f}x | {row['compile_seconds']:.0f} |")
    lines += [
        "", "Eager and compiled steps alternate, so that both see the same state of the machine; compile seconds "
        "are those of an empty kernel cache. vaedetect does not call `torch.compile`: a fit would pay the "
        "training row's compile seconds for its speed-up, and scoring compiles again when the batch size "
        "first changes (the last batch of a folder), for a gain that decoding JPEGs dilutes. Re-run this on a "
        "GPU, or a CPU with more cores, before reconsidering.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args(argv)
    # compile seconds as a user's first fit pays them: nothing from an earlier run's kernel cache; and
    # compiled in this process, so that no pool of compile workers competes with the timed steps
    with tempfile.TemporaryDirectory() as cache:
        os.environ.update(TORCHINDUCTOR_CACHE_DIR=cache, TORCHINDUCTOR_COMPILE_THREADS="1")
        results = describe_run("python -m benchmarks.torch_compile", argv)
        results["sizes"] = {str(size): {"training": training(size), "scoring": scoring(size)}
                            for size in args.image_sizes}
    page = markdown(results)
    print(page)
    write_results(results, args.out, args.markdown, page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
