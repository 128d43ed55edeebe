"""Data-parallel training on several processes with ``torch.distributed`` (e.g. under ``torchrun``).

Every process (rank) holds the whole training set and an identically seeded generator, so all of them
draw the same global batches and latent noise; each computes every ``world_size``-th row of a batch
(as ``DistributedSampler`` deals indices) and ``DistributedDataParallel`` averages the gradients. The
update is then that of one process training on the whole batch, with one difference: **batch norm
normalises over each process's rows**, not the global batch. PyTorch synchronises batch norm on GPUs
only (``SyncBatchNorm``), so vaedetect keeps it local everywhere: the same model on CPUs and GPUs, and
no extra collective per layer. With ``batch_size`` rows split over ``n`` processes, each batch norm
sees ``batch_size / n`` rows: the fewer, the noisier its statistics. Likewise a ``trim_fraction`` (tables)
leaves out each process's own worst-explained rows, not those of the global batch.

Reading files, each rank decodes its own shard (every ``world_size``-th file) and the decoded images
are exchanged, so decoding runs in parallel. After training every rank computes the same reference
statistics and threshold; only rank 0 should write the model (the CLI does so).

Use it from the command line (``vaedetect fit --nproc 2 ...`` or ``torchrun --nproc-per-node 2 -m
vaedetect fit ...``) or from a script that ``torchrun`` starts on every process::

    from vaedetect import VAEDetector
    from vaedetect.distributed import fit_distributed, init_process_group

    world = init_process_group()          # NCCL on GPUs, Gloo on CPUs
    detector = fit_distributed(VAEDetector(random_state=0), paths=["photos/"], world=world)
    if world.rank == 0:
        detector.save("model.vae")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np


@dataclass(frozen=True)
class World:
    """This process's place in an initialised process group."""

    rank: int
    size: int
    local_rank: int = 0

    def all_reduce_sum(self, tensor):
        """``tensor`` summed over all processes (in place, and returned)."""
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather(self, value) -> list:
        """Every process's ``value`` (any picklable object), in rank order."""
        import torch.distributed as dist

        values = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def broadcast_buffers(self, model) -> None:
        """Give every process rank 0's buffers of ``model`` (batch-norm running statistics)."""
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def wrap(self, model):
        """``model`` in ``DistributedDataParallel``, on this process's GPU when it has one."""
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def device(self, requested: str = "auto") -> str:
        """The device of this rank: its own GPU (``cuda:<local rank>``) when CUDA is there and
        ``requested`` allows it, otherwise the CPU."""
        import torch

        if requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        if requested not in ("auto", "cpu"):
            raise ValueError(f"Distributed training runs on 'auto', 'cuda' or 'cpu'; got device={requested!r}.")
        return "cpu"


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(backend: str | None = None, timeout_s: float = 1800) -> World:
    """Join the process group described by ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ...), or use the one already initialised.

    Parameters
    ----------
    backend : {"nccl", "gloo"}, optional
        Default: NCCL when CUDA is available, Gloo otherwise.
    timeout_s : float, default=1800
        How long a collective waits for the other processes before failing, so that a rank that died
        without ``torchrun`` noticing cannot hang the others forever.

    Returns
    -------
    world : World
    """
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"No process group to join: {', '.join(missing)} not set. Start the script with "
                "`torchrun --nproc-per-node N script.py` (or `vaedetect fit --nproc N ...`)."
            )
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        torch.cuda.set_device(local_rank)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank)


def gather_decoded(world: World, files: list[str], images: np.ndarray, used: list[str], skipped: list):
    """Put every rank's decoded shard back together, in the order of ``files``.

    Returns ``(images, used, skipped)`` for all files, the same on every rank.
    """
    shards = world.all_gather((images, used, skipped))
    position = {path: i for i, path in enumerate(files)}
    pairs = [(position[path], shard_images[i]) for shard_images, shard_used, _ in shards
             for i, path in enumerate(shard_used)]
    pairs.sort(key=lambda pair: pair[0])
    all_used = [files[i] for i, _ in pairs]
    all_images = np.stack([image for _, image in pairs]) if pairs else images[:0]
    all_skipped = sorted((s for _, _, shard_skipped in shards for s in shard_skipped), key=lambda s: s.path)
    return all_images, all_used, all_skipped


def fit_distributed(detector, X=None, *, paths=None, world: World | None = None, n_jobs: int = 0):
    """Fit ``detector`` data-parallel; call it on every process of the group with the same arguments.

    Parameters
    ----------
    detector : VAEDetector
        Unfitted; fitted in place on every rank, with identical results.
    X : array-like, optional
        The training data, the same on every rank. Give either ``X`` or ``paths``.
    paths : str, path-like or sequence of them, optional
        Folders and image files; each rank decodes every ``world.size``-th file.
    world : World, optional
        Default: :func:`init_process_group`.
    n_jobs : int, default=0
        Decoding processes per rank.

    Returns
    -------
    detector : VAEDetector
    """
    if (X is None) == (paths is None):
        raise ValueError("Give exactly one of X (an array) and paths (folders or image files).")
    world = world or init_process_group()
    device = world.device(detector.device)
    if X is not None:
        return detector._fit(X, world=world, device=device)
    return detector._fit_paths(paths, n_jobs=n_jobs, world=world, device=device)
