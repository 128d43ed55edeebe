"""The one training loop: AdamW, cosine decay, gradient clipping, augmentation, KL schedule, early stopping.

:func:`train` knows nothing of scikit-learn: it takes a :class:`~vaedetect.networks.VAE`, tensors and a
:class:`TrainConfig`, and returns the per-epoch history. All randomness comes from one
``torch.Generator``, so a given seed gives the same model on the CPU.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .losses import kl_weight, negative_elbo, sharp_loss
from .settings import AUTO_MAX_EPOCHS


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`; defaults are ``VAEDetector``'s (``epochs``: the most ``epochs="auto"``
    trains), which are the SharpVAE tutorial's where the estimator's documentation does not say why not."""

    epochs: int = AUTO_MAX_EPOCHS
    batch_size: int = 32
    learning_rate: float = 5e-4
    min_learning_rate: float = 1e-6
    weight_decay: float = 1e-5
    # share of each batch's rows with the largest loss left out of it (losses.negative_elbo)
    trim_fraction: float = 0.0
    max_grad_norm: float = 1.0
    loss: str = "elbo"
    likelihood: str = "gaussian"
    perceptual_weight: float = 0.3
    kl_schedule: str = "warmup"
    augment: bool = False
    early_stopping: bool = True
    n_iter_no_change: int = 10
    mixed_precision: bool = False
    verbose: int = 0
    # what the progress bar says it does
    label: str = "training"
    # per-feature lower bound of the decoder's log-scale (tables: losses.log_scale_floor), or None
    log_scale_floor: torch.Tensor | None = None
    # an epoch ends after this many optimiser steps (a random share of the rows), or after all of them
    max_steps_per_epoch: int | None = None


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; anything else goes to ``torch.device``."""
    if device != "auto":
        try:
            chosen = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"The 'device' parameter must be 'auto' or a torch device; got {device!r}.") from error
        available = {"cuda": torch.cuda.is_available, "mps": lambda: torch.backends.mps.is_available()}
        if chosen.type in available and not available[chosen.type]():
            raise ValueError(f"device={device!r} was asked for, but this machine has no {chosen.type.upper()} "
                             "device usable by torch; use device='auto' or 'cpu'.")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def augment_images(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The tutorial's augmentation, drawn per image: horizontal flip (p=0.5), rotation up to 10 degrees
    (p=0.3), and for RGB brightness, contrast and saturation jitter of 0.2.

    Written with batched tensor ops rather than torchvision transforms because those draw one set of
    parameters per call from the global RNG: per image and from a local generator keeps runs reproducible
    without a Python loop over the batch.
    """
    n, device = x.shape[0], x.device

    def uniform(low, high, shape=(n,)):
        return torch.rand(shape, generator=generator, device=device) * (high - low) + low

    flip = uniform(0, 1) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)

    angle = torch.where(uniform(0, 1) < 0.3, uniform(-10, 10), torch.zeros(n, device=device))
    if bool((angle != 0).any()):
        theta = torch.deg2rad(angle)
        cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
        matrix = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)

    if x.shape[1] == 3:
        unit = (x + 1.0) / 2.0
        unit = unit * uniform(0.8, 1.2).view(n, 1, 1, 1)  # brightness
        grey = unit.mean(dim=(1, 2, 3), keepdim=True)
        unit = (unit - grey) * uniform(0.8, 1.2).view(n, 1, 1, 1) + grey  # contrast
        luma = (unit * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        unit = (unit - luma) * uniform(0.8, 1.2).view(n, 1, 1, 1) + luma  # saturation
        x = unit.clamp(0.0, 1.0) * 2.0 - 1.0
    return x


def batch_loss(model, x, eps, config: TrainConfig, weight: float, perceptual=None) -> dict:
    """The training objective of one batch (a dict whose ``loss`` entry is minimised).

    ``model`` may be wrapped in ``DistributedDataParallel``; its attributes are read from the VAE inside.
    With ``config.mixed_precision`` the network runs in bfloat16 autocast, while the loss, its sums
    over pixels and the gradients' accumulation into the float32 weights stay in float32.
    """
    # entered only when asked, so that devices without autocast (MPS in older torch) train as before
    precision = torch.autocast(x.device.type, dtype=torch.bfloat16) if config.mixed_precision else nullcontext()
    with precision:
        outputs = model(x, eps)
    logits, mean, logvar = (output.float() for output in outputs)
    vae = getattr(model, "module", model)
    target = vae.decoder_target(x)
    if config.loss == "sharp":
        return sharp_loss(target, logits, mean, logvar, weight, perceptual, config.perceptual_weight)
    return negative_elbo(target, logits, mean, logvar, vae.log_scale, config.likelihood, vae.bounded, weight,
                         trim_fraction=config.trim_fraction)


def _batches(n: int, batch_size: int, generator: torch.Generator, min_size: int = 2, max_batches: int | None = None):
    """Shuffled index batches, at most ``max_batches`` of them; a last batch under ``min_size`` is dropped
    for the epoch, as batch norm needs two samples (on every process, when training is distributed)."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    stop = n if max_batches is None else min(n, max_batches * batch_size)
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        if len(index) >= min_size:
            yield index


def _mean_terms(sums: dict, count: int) -> dict:
    return {name: float(value) / count for name, value in sums.items()}


def _local(rows: torch.Tensor, world) -> torch.Tensor:
    """This process's share of a global batch: every ``world.size``-th row from ``world.rank``, as
    ``DistributedSampler`` deals them. Alone (``world`` None), the whole batch."""
    return rows if world is None else rows[world.rank :: world.size]


def evaluate_loss(model, x, config: TrainConfig, generator: torch.Generator, perceptual=None, world=None) -> float:
    """Mean objective over ``x`` with the KL weight at 1 (the true negative ELBO for ``loss="elbo"``).

    Distributed, each process evaluates every ``world.size``-th batch and the sums are added up; every
    process still draws the noise of every batch, so that all generators stay in step.
    """
    model.eval()
    total = torch.zeros(2, device=x.device)  # loss sum, sample count
    with torch.inference_mode():
        for number, start in enumerate(range(0, len(x), config.batch_size)):
            batch = x[start : start + config.batch_size]
            eps = torch.randn((len(batch), *model.latent_shape), generator=generator, device=x.device)
            if world is None or number % world.size == world.rank:
                loss = batch_loss(model, batch, eps, config, 1.0, perceptual)["loss"]
                total += torch.stack([loss * len(batch), torch.tensor(float(len(batch)), device=x.device)])
    if world is not None:
        total = world.all_reduce_sum(total)
    return float(total[0] / total[1])


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite: no model worth keeping came out of it."""


def _check_finite(record: dict, config: TrainConfig) -> None:
    losses = {name: record[name] for name in ("loss", "val_loss") if name in record}
    broken = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if broken:
        raise TrainingDiverged(
            f"Training diverged in epoch {record['epoch']}: "
            f"{', '.join(f'{name} = {value}' for name, value in broken.items())}. Try a smaller learning_rate "
            f"(it was {config.learning_rate:g}), and check that the data hold no extreme values (scale features "
            "of very different magnitudes, or clip outliers)."
        )


def _clip_gradients(model, max_norm: float) -> None:
    """Scale the gradient down to a norm of at most ``max_norm``; for a network of several members, each
    member's own gradient, so that members train as they would alone. Every parameter of such a network
    holds one block per member along its first axis (:class:`vaedetect.networks.VAE`)."""
    members = getattr(model, "module", model).members
    if members == 1:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return
    blocks = [p.grad.view(members, -1) for p in model.parameters() if p.grad is not None]
    # one concatenation and one multi-tensor product: a per-tensor loop costs more than the arithmetic here
    norms = torch.cat(blocks, dim=1).pow(2).sum(1).sqrt()
    factors = (max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)
    torch._foreach_mul_(blocks, [factors] * len(blocks))


def adamw(parameters, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW in its fused implementation where this torch has one for the parameters' device (CPUs from torch
    2.4), else the multi-tensor one: a small tabular network spends much of each step in the optimiser's
    per-tensor operator calls on a CPU, which both avoid (torch picks neither for CPU tensors by default)."""
    parameters = list(parameters)
    try:
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # "fused=True requires all the params to be ... of supported devices"
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, foreach=True)


def _respect_floor(model, floor: torch.Tensor | None) -> None:
    """Project the decoder's log-scale back above ``floor`` (a projected-gradient step); None: no floor."""
    if floor is not None:
        with torch.no_grad():
            model.log_scale.clamp_(min=floor)


def train(model, x_train, x_val, config: TrainConfig, generator: torch.Generator, perceptual=None, world=None):
    """Fit ``model`` in place and return its history as a list of per-epoch dicts.

    Parameters
    ----------
    model : VAE
        Already on the device of ``x_train``.
    x_train, x_val : Tensor
        Training and validation data as the network sees it; ``x_val`` may be None (no early stopping).
    config : TrainConfig
    generator : torch.Generator
        The only source of randomness (shuffling, augmentation, latent noise); on the data's device.
    perceptual : PerceptualLoss, optional
        Feature network for ``loss="sharp"``.
    world : vaedetect.distributed.World, optional
        Train data-parallel with ``DistributedDataParallel`` in an initialised process group. Every
        process passes the same data and an identically seeded generator: all draw the same global
        batches and noise and each computes every ``world.size``-th row of them, so the averaged
        gradient is that of the whole ``config.batch_size`` batch. Batch norm normalises over each
        process's rows (see :mod:`vaedetect.distributed`).

    Returns
    -------
    history : list of dict
        One dict per epoch: ``epoch``, the mean loss terms, ``val_loss``, ``kl_weight``, ``lr``,
        ``seconds``. When early stopping ends training, the model holds the best epoch's weights.

    Raises
    ------
    TrainingDiverged
        When a training or validation loss becomes NaN or infinite.
    """
    from tqdm.auto import tqdm

    optimizer = adamw(model.parameters(), config.learning_rate, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_learning_rate)
    network = model if world is None else world.wrap(model)
    min_batch = 2 if world is None else 2 * world.size
    history, best_val, best_state, stale = [], math.inf, None, 0
    floor = None if config.log_scale_floor is None else config.log_scale_floor.to(model.log_scale.device)
    _respect_floor(model, floor)
    show = config.verbose and (world is None or world.rank == 0)
    epochs = tqdm(range(config.epochs), desc=config.label, unit="epoch", disable=not show)
    for epoch in epochs:
        started = time.perf_counter()
        weight = kl_weight(config.kl_schedule, epoch, config.epochs)
        network.train()
        # Terms accumulate on the device; one host sync per epoch instead of one per step.
        sums, count = {}, 0
        for index in _batches(len(x_train), config.batch_size, generator, min_batch, config.max_steps_per_epoch):
            x = x_train[index]
            if config.augment:  # the whole global batch, so that the random stream is the same everywhere
                x = augment_images(x, generator)
            eps = torch.randn((len(x), *model.latent_shape), generator=generator, device=x.device)
            x, eps = _local(x, world), _local(eps, world)
            terms = batch_loss(network, x, eps, config, weight, perceptual)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            _clip_gradients(model, config.max_grad_norm)
            optimizer.step()
            _respect_floor(model, floor)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * len(x)
            count += len(x)
        if world is not None:
            # batch-norm running statistics follow each process's own rows; rank 0's count everywhere
            world.broadcast_buffers(model)
            if sums:
                totals = world.all_reduce_sum(torch.stack([*sums.values(), torch.tensor(float(count), device=x_train.device)]))
                sums, count = dict(zip(sums, totals[:-1])), float(totals[-1])
        record = {"epoch": epoch + 1, **_mean_terms(sums, max(count, 1))}
        if x_val is not None:
            record["val_loss"] = evaluate_loss(model, x_val, config, generator, perceptual, world)
        record.update(kl_weight=weight, lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started)
        scheduler.step()
        history.append(record)
        _check_finite(record, config)
        epochs.set_postfix(loss=f"{record['loss']:.4g}", val=f"{record.get('val_loss', math.nan):.4g}")

        if x_val is None or not config.early_stopping:
            continue
        if record["val_loss"] < best_val:
            best_val, best_state, stale = record["val_loss"], copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.n_iter_no_change:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    optimizer.zero_grad(set_to_none=True)  # a fitted model carries no stale gradients
    model.eval()
    return history
