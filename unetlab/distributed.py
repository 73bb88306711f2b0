"""One model trained by N processes: PyTorch's DistributedDataParallel (DDP) under ``torchrun``.

``torchrun --nproc_per_node N -m unetlab train ...`` starts N copies of the command; torchrun tells each one its
place in the environment variables RANK, LOCAL_RANK and WORLD_SIZE. :func:`process_group` reads them and joins
the processes (nccl on CUDA, one GPU per process: ``cuda:LOCAL_RANK``; gloo on the CPU). From there on:

- every process starts from the same weights and takes its share of every batch (:func:`sharded_loader`): the
  batch size is the TOTAL over the processes, each process computes ``batch_size / N`` images of it, and the
  samples of an epoch come in the same order as in one process, dealt out in turn. So N processes make the same
  optimiser steps on the same batches as one, with the same learning rate and schedule, and a run can be resumed
  on another number of processes;
- :func:`wrap` puts the model in DDP, which averages the gradients of all processes in every backward pass, so
  the weights stay identical everywhere;
- the first process (rank 0) alone validates, calls ``validate`` callbacks and writes checkpoints; the scores it
  finds reach the others through :func:`on_main`, so every process takes the same best epoch.

BatchNorm stays plain (not SyncBatchNorm): each process normalises over its own ``batch_size / N`` images, and
the running statistics used at evaluation are averaged over the processes after every epoch
(:func:`average_buffers`). A segmentation batch of 4 images of 256 x 256 px still gives a BatchNorm 262,144
values per channel; SyncBatchNorm would add a collective per BatchNorm layer per step, and torch runs it on GPUs
only, so the CPU path could not share it. The price: N processes are close to one process, not bit-identical.

Without torchrun nothing here does anything: :func:`sharded_loader` is a plain DataLoader, :func:`wrap` returns
the model, :func:`on_main` calls its function.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from .checks import is_int

ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """This process's place among the ones torchrun started: ``rank`` in [0, world_size), ``local_rank`` (its
    number on this machine, which picks its GPU)."""

    rank: int
    local_rank: int
    world_size: int


def launched(environ: dict[str, str] | None = None) -> Launch | None:
    """The :class:`Launch` that torchrun's RANK, LOCAL_RANK and WORLD_SIZE describe, or None when none is set
    (a plain ``python -m unetlab`` / ``unetlab`` process). ValueError when only some are set or one is not a
    whole number in range."""
    env = os.environ if environ is None else environ
    found = {name: env[name] for name in ENV_VARS if name in env}
    if not found:
        return None
    missing = [name for name in ENV_VARS if name not in found]
    if missing:
        raise ValueError(f"{', '.join(sorted(found))} set but not {', '.join(missing)}: start the processes with "
                         f"torchrun (it sets all of {', '.join(ENV_VARS)})")
    try:
        rank, local_rank, world_size = (int(found[name]) for name in ENV_VARS)
    except ValueError:
        raise ValueError(f"torchrun's variables must be whole numbers; got "
                         f"{', '.join(f'{k}={v!r}' for k, v in found.items())}") from None
    if not (world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank <= rank):
        raise ValueError(f"inconsistent torchrun variables: RANK={rank}, LOCAL_RANK={local_rank}, "
                         f"WORLD_SIZE={world_size} (expected 0 <= LOCAL_RANK <= RANK < WORLD_SIZE)")
    return Launch(rank, local_rank, world_size)


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Under torchrun, join the other processes for the ``with`` block and yield this process's device:
    ``cuda:LOCAL_RANK`` with the nccl backend when ``device`` is CUDA, the CPU with gloo otherwise. A process that
    has joined already stays in its group (the block neither joins nor leaves). Without torchrun, yield
    ``device`` and join nothing.

    ValueError for an MPS device (neither backend runs on it), a CUDA device with an index (each process takes
    the GPU of its LOCAL_RANK), or more processes on this machine than visible GPUs.
    """
    launch = launched()
    if launch is None:
        yield device
        return
    if device.type == "cuda":
        if device.index not in (None, launch.local_rank):
            raise ValueError(f"under torchrun each process uses the GPU of its LOCAL_RANK; pass --device cuda, not "
                             f"{device}")
        if launch.local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {launch.rank} has LOCAL_RANK {launch.local_rank} but "
                             f"{torch.cuda.device_count()} GPU(s) are visible: start at most that many per machine")
        device = torch.device("cuda", launch.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"distributed training runs on CUDA (nccl) or the CPU (gloo), not on {device.type}; "
                         f"pass --device cpu")
    if dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def world_size() -> int:
    """Number of processes training together: 1 without a process group."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank: 0 without a process group."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True for the process that validates, writes checkpoints and reports: rank 0, or the only one."""
    return rank() == 0


def describe() -> str:
    """One line for the log: how many processes train, on which backend."""
    if not dist.is_initialized():
        return "1 process"
    n = world_size()
    return (f"{n} processes (torchrun, DistributedDataParallel over {dist.get_backend()}): one model; each process "
            f"computes 1/{n} of every batch (the batch size is the total)")


class Shard(Sampler):
    """Rank ``rank``'s share of ``sampler``'s epoch when ``size`` processes train together.

    The items of one pass over ``sampler`` are dealt out in turn: item k goes to rank ``k % size``. Each rank
    passes over the same ``sampler`` (which must give every process the same order: :class:`EpochShuffle`, or a
    torch sampler with its own seeded generator), and each takes its items by groups of ``size`` consecutive ones,
    so all ranks draw from the sampler exactly what one process would. With a batch of ``b`` per rank, step j of
    the N ranks together covers items ``j*b*N`` to ``(j+1)*b*N - 1``: the batch one process takes with a batch size
    of ``b*N``. When the epoch's length is not a multiple of ``size``, the last group is completed from the start
    of the epoch, so that every rank makes the same number of steps (DDP needs that).

    ``set_epoch`` is passed on to ``sampler`` when it has one (:func:`unetlab.fit` calls it before each epoch).
    """

    def __init__(self, sampler: Sampler, rank: int, size: int) -> None:
        if not (is_int(size) and size >= 1 and is_int(rank) and 0 <= rank < size):
            raise ValueError(f"Shard needs 0 <= rank < size; got rank={rank!r}, size={size!r}")
        if isinstance(sampler, RandomSampler) and sampler.generator is None:
            raise ValueError("a RandomSampler without its own generator shuffles differently in every process; "
                             "give it generator=torch.Generator().manual_seed(seed), or use unetlab.EpochShuffle")
        self.sampler, self.rank, self.size = sampler, int(rank), int(size)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.size)

    def __iter__(self) -> Iterator[Any]:
        items, first = iter(self.sampler), None
        while group := tuple(islice(items, self.size)):
            first = first or group
            yield (group + first * self.size)[self.rank]  # a short last group is completed from the first


def sharded_loader(dataset: Dataset, batch_size: int, sampler: Sampler, **kwargs: Any) -> DataLoader:
    """The training DataLoader of this process: ``DataLoader(dataset, batch_size, sampler=sampler, **kwargs)``
    without a process group; under torchrun, this process's :class:`Shard` of ``sampler`` in batches of
    ``batch_size / N`` (so ``batch_size`` is the total of one step over the N processes; it must be a multiple
    of N)."""
    n = world_size()
    if n == 1:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
    if batch_size % n:
        raise ValueError(f"the batch size ({batch_size}) is the total over the {n} processes and must be a "
                         f"multiple of {n}; got {batch_size} images, {batch_size / n:g} per process")
    return DataLoader(dataset, batch_size=batch_size // n, sampler=Shard(sampler, rank(), n), **kwargs)


def check_sharded(loader: Any, name: str) -> None:
    """ValueError under a process group unless ``loader`` is a DataLoader over a :class:`Shard` (from
    :func:`sharded_loader`): otherwise every process would train on all the data."""
    if world_size() > 1 and not isinstance(getattr(loader, "sampler", None), Shard):
        raise ValueError(f"{name}: under torchrun each of the {world_size()} processes must take its share of the "
                         f"data; build the loader with unetlab.distributed.sharded_loader")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under a process group (gradients averaged over the processes in
    every backward pass; each process keeps its own BatchNorm buffers, see :func:`average_buffers`), else
    ``model`` itself. Train through what it returns; save and validate ``model``."""
    if not dist.is_initialized():
        return model
    ddp = nn.parallel.DistributedDataParallel
    # Buffers are not copied from rank 0 at every forward pass; torch 2.13 renamed the switch.
    no_sync = next(name for name in ("forward_sync_buffers", "broadcast_buffers")
                   if name in inspect.signature(ddp).parameters)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return ddp(model, device_ids=ids, **{no_sync: False})


def average_buffers(model: nn.Module) -> None:
    """Under a process group, replace every floating-point buffer (BatchNorm's running mean and variance) by its
    mean over the processes, so that all of them hold the same model. Integer buffers (the step count) are the
    same everywhere already."""
    if not dist.is_initialized():
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world_size())


def share_weights(model: nn.Module) -> None:
    """Under a process group, copy rank 0's parameters and buffers into every process's ``model``."""
    if not dist.is_initialized():
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def all_sum(*values: float) -> tuple[float, ...]:
    """The sums of ``values`` over the processes (the values themselves without a process group)."""
    if not dist.is_initialized():
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return tuple(total.tolist())


def on_main(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only, its result (plain picklable values) sent to every process; without a
    process group, just ``compute()``. For work that one process should do, such as a validation pass."""
    if not dist.is_initialized():
        return compute()
    box = [compute() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here (nothing without a process group)."""
    if dist.is_initialized():
        dist.barrier()
