"""Speed suite: every figure a ratio of two measurements taken in the same run, so that it survives a
noisy machine.

- training throughput of vaedetect's loop against a plain PyTorch loop of the same network, written the
  obvious way (float32, contiguous NCHW, ``.item()`` every step);
- achieved training FLOP/s (``torch.utils.flop_counter``) as a share of the machine's measured float32
  matrix-multiply peak;
- scoring throughput on a real JPEG folder, decoding included, against model-only throughput on tensors;
- peak resident memory of ``vaedetect score`` over a whole folder (a separate process), and over a
  tenth of it, to show that it does not grow with the folder.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 FLOP/s of ``size x size`` matrix products on this machine's CPU."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm up
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


def training_step_flops(model, x) -> int:
    """FLOPs of one forward and backward pass of the ELBO on batch ``x``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vaedetect.training import TrainConfig, batch_loss

    eps = torch.randn((len(x), *model.latent_shape))
    with FlopCounterMode(display=False) as counter:
        batch_loss(model, x, eps, TrainConfig(), 1.0)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def plain_loop_images_per_second(model, x, batch_size: int, steps: int) -> float:
    """The obvious PyTorch loop: Adam on MSE + KL, float32 NCHW, ``.item()`` every step."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    model.train()
    losses = []
    started = None
    for step in range(-1, steps):  # step -1 warms up (kernel selection, allocations), untimed
        if step == 0:
            started = time.perf_counter()
        batch = x[(step * batch_size) % len(x) :][:batch_size]
        mean, logvar, features = model.encode(batch)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        reconstruction = torch.tanh(model.decode(z, features))
        kl = -0.5 * torch.mean(1 + logvar - mean.pow(2) - logvar.exp())
        loss = F.mse_loss(reconstruction, batch) + kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return steps * batch_size / (time.perf_counter() - started)


def vaedetect_loop_images_per_second(model, x, batch_size: int, epochs: int) -> float:
    import torch

    from vaedetect.training import TrainConfig, train

    config = TrainConfig(epochs=epochs, batch_size=batch_size, early_stopping=False)
    train(model, x[:batch_size], None, TrainConfig(epochs=1, batch_size=batch_size), torch.Generator().manual_seed(1))
    started = time.perf_counter()
    train(model, x, None, config, torch.Generator().manual_seed(0))
    return epochs * len(x) / (time.perf_counter() - started)


def default_network():
    """The network configuration and batch size ``VAEDetector()`` uses for images by default."""
    from vaedetect import VAEDetector
    from vaedetect.networks import NetworkConfig
    from vaedetect.settings import resolve_batch_size

    defaults = VAEDetector().get_params()
    config = NetworkConfig(latent_dim=defaults["latent_dim"], base_channels=defaults["base_channels"],
                           n_stages=defaults["n_stages"], residual=defaults["residual"],
                           spatial_latent=defaults["spatial_latent"], skip_connections=defaults["skip_connections"],
                           activation=defaults["activation"])
    return config, resolve_batch_size(defaults["batch_size"], "image", n_train=0)


def default_model(image_size: int, seed: int = 0):
    """The default network for ``image_size`` RGB images, seeded and in channels-last memory format as
    ``VAEDetector.fit`` prepares it."""
    import torch

    from vaedetect.acceleration import use_channels_last
    from vaedetect.networks import VAE

    torch.manual_seed(seed)
    return use_channels_last(VAE((3, image_size, image_size), default_network()[0]), "cpu")


def fit_speed_model(path: Path, image_size: int) -> Path:
    """A default-architecture detector for ``image_size`` RGB files, fitted for one epoch on random
    images (its weights do not matter for speed), saved to ``path``."""
    from vaedetect import VAEDetector

    images = np.random.RandomState(0).randint(0, 256, size=(256, image_size, image_size, 3), dtype=np.uint8)
    VAEDetector(image_size=image_size, epochs=1, random_state=0).fit(images).save(path)
    return path


def training_suite(image_size: int, n_images: int, epochs: int) -> dict:
    """Both loops on the default network and random images of ``image_size``; FLOP/s share of peak."""
    import torch

    from vaedetect.networks import VAE

    config, batch_size = default_network()
    shape = (3, image_size, image_size)
    x = torch.rand((n_images, *shape)) * 2 - 1
    torch.manual_seed(0)
    plain = plain_loop_images_per_second(VAE(shape, config), x, batch_size, steps=epochs * n_images // batch_size)
    ours = vaedetect_loop_images_per_second(default_model(image_size), x, batch_size, epochs)
    flops_per_image = training_step_flops(VAE(shape, config).train(), x[:batch_size]) / batch_size
    peak = matmul_peak_flops()
    return {
        "image_shape": list(shape),
        "batch_size": batch_size,
        "plain_loop_images_per_second": plain,
        "vaedetect_images_per_second": ours,
        "speed_up": ours / plain,
        "training_gflop_per_image": flops_per_image / 1e9,
        "achieved_gflops": ours * flops_per_image / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "share_of_peak": ours * flops_per_image / peak,
    }


def scoring_suite(folder: Path, model_path: Path, n_files: int, workers: tuple[int, ...] = (0, 2),
                  rounds: int = 2) -> dict:
    """Scoring throughput of ``score_paths`` on the first ``n_files`` JPEGs of ``folder``, decoding in
    the scoring process (``vaedetect score``'s default) and in each number of ``workers``, against the
    model alone on the same images as tensors.

    The measurements take turns for ``rounds`` rounds and each keeps its best: timed once each, one
    after the other, the ratio followed whatever the machine's speed did between the two timings.
    """
    import torch

    import vaedetect
    from vaedetect.images import discover_images

    detector = vaedetect.load(model_path)
    files = discover_images(folder).files[:n_files]
    x = torch.rand((len(files), *detector.layout_.shape)) * 2 - 1
    rates, model_rate = {}, 0.0
    for _ in range(rounds):
        for n_jobs in dict.fromkeys((0, *workers)):
            started = time.perf_counter()
            table = detector.score_paths(files, n_jobs=n_jobs)
            rates[str(n_jobs)] = max(rates.get(str(n_jobs), 0.0), len(table) / (time.perf_counter() - started))
        started = time.perf_counter()
        detector._score_tensor(x)
        model_rate = max(model_rate, len(files) / (time.perf_counter() - started))
    return {"n_files": len(files), "rounds": rounds, "folder_images_per_second": rates["0"],
            "folder_images_per_second_by_workers": rates, "model_images_per_second": model_rate,
            "share_of_model_only": rates["0"] / model_rate}


def _peak_rss_mb(pid: int) -> float | None:
    """``VmHWM`` (the peak resident set) of a live process, in MB; None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_measured(arguments: list[str], module: str = "vaedetect") -> dict:
    """Run ``python -m MODULE ARGUMENTS`` (by default the ``vaedetect`` command) in its own process: exit
    code, wall seconds, peak resident memory and what it printed on stdout.

    Memory is read from ``/proc/<pid>/status`` while it runs: the ``ru_maxrss`` that ``wait4`` reports would
    also count the memory of this (large) benchmark process, which a forked child carries until ``exec``.
    """
    import tempfile

    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen([sys.executable, "-m", module, *arguments], stdout=stdout,
                                   stderr=subprocess.DEVNULL)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _peak_rss_mb(process.pid) or 0.0)
            time.sleep(0.2)
        stdout.seek(0)
        printed = stdout.read()
    return {"exit_code": process.returncode, "seconds": time.perf_counter() - started, "peak_rss_mb": peak,
            "stdout": printed}


def peak_memory_suite(folder: Path, model_path: Path, table_path: Path) -> dict:
    """Peak resident memory of ``vaedetect score MODEL FOLDER -o TABLE`` in its own process."""
    row = run_measured(["score", str(model_path), str(folder), "-o", str(table_path), "--workers", "2"])
    n_files = 0
    if Path(table_path).is_file():
        with open(table_path) as table:
            n_files = sum(1 for _ in table) - 1  # less the header
    return {"exit_code": row["exit_code"], "n_files": n_files, "seconds": row["seconds"], "peak_rss_mb": row["peak_rss_mb"]}


def sample_folder(folder: Path, destination: Path, every: int) -> Path:
    """``destination`` holding every ``every``-th image of ``folder`` (hard links where the file system
    allows, copies elsewhere), in the same subfolders: a smaller folder of the same photos."""
    import os
    import shutil

    from vaedetect.images import discover_images

    for file in discover_images(folder).files[::every]:
        target = destination / Path(file).relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, target)
        except OSError:
            shutil.copyfile(file, target)
    return destination


def training_profile(image_size: int, steps: int = 4, top: int = 8) -> list[dict]:
    """Where a training step of the default network spends its time: the ``top`` operators by self CPU
    time over ``steps`` steps (after one warm-up), each with its share of the total."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vaedetect.training import TrainConfig, train

    batch_size = default_network()[1]
    x = torch.rand((batch_size * steps, 3, image_size, image_size)) * 2 - 1
    model = default_model(image_size)
    settings = TrainConfig(epochs=1, batch_size=batch_size, early_stopping=False)
    train(model, x[:batch_size], None, settings, torch.Generator().manual_seed(0))  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        train(model, x, None, settings, torch.Generator().manual_seed(0))
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"operator": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:top]]


def preset_cost(image_size: int, train_batch: int = 8, train_steps: int = 3, n_score: int = 64) -> dict:
    """Training and scoring images/s of the ``"sharp"`` preset's network (with its VGG16 perceptual
    loss, randomly initialised: the cost does not depend on the weights) against the default network,
    both measured here, and the FLOPs of one forward pass of each."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vaedetect.acceleration import inference_network, use_channels_last
    from vaedetect.estimator import PRESETS
    from vaedetect.losses import PerceptualLoss
    from vaedetect.networks import VAE, NetworkConfig
    from vaedetect.training import TrainConfig, train

    shape = (3, image_size, image_size)
    sharp = PRESETS["sharp"]
    configs = {
        "default": (default_network()[0], TrainConfig(epochs=1, batch_size=train_batch, early_stopping=False), None),
        "sharp": (NetworkConfig(base_channels=sharp["base_channels"], n_stages=sharp["n_stages"],
                                spatial_latent=sharp["spatial_latent"]),
                  TrainConfig(epochs=1, batch_size=train_batch, early_stopping=False, loss="sharp",
                              kl_schedule="cyclical", augment=True),
                  PerceptualLoss(weights=None)),
    }
    results = {}
    for name, (config, settings, perceptual) in configs.items():
        torch.manual_seed(0)
        model = use_channels_last(VAE(shape, config), "cpu")
        x = torch.rand((train_batch * train_steps, *shape)) * 2 - 1
        generator = torch.Generator().manual_seed(0)
        train(model, x[:train_batch], None, settings, generator, perceptual)  # warm-up
        started = time.perf_counter()
        train(model, x, None, settings, generator, perceptual)
        train_rate = len(x) / (time.perf_counter() - started)
        network = use_channels_last(inference_network(model), "cpu")
        images = torch.rand((n_score, *shape)) * 2 - 1
        eps = torch.zeros((n_score, *model.latent_shape))
        with torch.inference_mode():
            network(images[:8], eps[:8])
            started = time.perf_counter()
            for start in range(0, n_score, 32):
                network(images[start : start + 32], eps[start : start + 32])
            score_rate = n_score / (time.perf_counter() - started)
            with FlopCounterMode(display=False) as counter:
                network(images[:1], eps[:1])
        results[name] = {"train_images_per_second": train_rate, "score_images_per_second": score_rate,
                         "forward_gflop_per_image": counter.get_total_flops() / 1e9}
    results["image_shape"] = list(shape)
    return results
