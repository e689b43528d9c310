"""Data-parallel training over processes started by ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc-per-node N -m medlora run CONFIG`` starts N processes; each reads its rank from
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, set by torchrun, also across nodes with
its rendezvous flags). One run is then trained on all of them:

- training: every global batch of ``train.batch_size`` samples is the one a single process would
  draw (same seeded permutation), split across the ranks; the loss is weighted so that the averaged
  gradient equals the single-process gradient of that batch. DDP all-reduces the gradients of the
  trainable parameters only (frozen ones have none).
- dropout: every rank starts training from rank 0's random state and draws the global batch's
  masks, keeping its own images' rows (:mod:`medlora.models.dropout`); batch augmentation likewise
  draws for the global batch (:class:`~medlora.transforms.augment.BatchAugment`). Dropout fused
  into attention and stochastic depth stay per rank.
- evaluation: each rank scores a disjoint shard (no padding, no duplicates); the scores are
  gathered on every rank, so validation metrics and early stopping agree across ranks and the test
  set is scored exactly once.
- only rank 0 ingests, writes caches and files, logs to MLflow and exports (``is_main_process``);
  the other ranks receive the prepared data from it. When one rank fails, torchrun stops the others.

Without torchrun (``WORLD_SIZE`` unset or 1) everything here is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import ConfigError, MedloraError
from .inference import Predictions

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_main_process() -> bool:
    """Whether this process may write files and log: rank 0, or the only process."""
    import torch.distributed as tdist

    return not (tdist.is_available() and tdist.is_initialized()) or tdist.get_rank() == 0


@dataclass(frozen=True)
class Dist:
    """This process's place in the group (``world == 1``: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """This rank's own GPU (``cuda:LOCAL_RANK``) when training on CUDA; ``device`` otherwise."""
        return torch.device("cuda", self.local_rank) if self.enabled and device.type == "cuda" else device

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def main_first(self, make: Callable[[], T]) -> T:
        """``make()`` on rank 0 only, its result sent to every rank; an error on rank 0 is raised on
        every rank (so none waits for data that will never come)."""
        if not self.enabled:
            return make()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", make())
            except Exception as err:  # noqa: BLE001 - re-raised below, and on every other rank
                box[0] = ("error", err)
        torch.distributed.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            if self.is_main:
                raise value
            if isinstance(value, MedloraError):  # a user error stays one on every rank (no traceback)
                raise type(value)(f"rank 0 failed: {value}")
            raise RuntimeError(f"rank 0 failed: {value!r}") from value
        return value

    def same_random_state(self, device: torch.device) -> None:
        """Every rank continues from rank 0's global random state (CPU, and this rank's GPU), so
        that draws made for the whole global batch (dropout masks) agree across ranks."""
        if not self.enabled:
            return
        box = [torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None]
        torch.distributed.broadcast_object_list(box, src=0)
        torch.set_rng_state(box[0])
        if box[1] is not None:
            torch.cuda.set_rng_state(box[1], device)

    def sum(self, *values: float) -> list[float]:
        """Element-wise sums over the ranks."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.enabled:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def gather_studies(self, pred: Predictions, order: dict[str, int]) -> Predictions:
        """Every rank's shard of a study-level evaluation (whole studies, one row per slice) back in the
        studies' dataset ``order`` (by ``study_key``), each study's slices as scored."""
        if not self.enabled:
            return pred
        shards: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(shards, pred)
        keys = [k for s in shards for k in s.study_key]
        return _concat(shards, np.argsort([order[k] for k in keys], kind="stable"))

    def gather_predictions(self, pred: Predictions) -> Predictions:
        """Every rank's shard of an evaluation (from :class:`ShardSampler`) back in dataset order."""
        if not self.enabled:
            return pred
        shards: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(shards, pred)
        n = sum(len(s.score) for s in shards)
        order = np.concatenate([np.arange(r, n, self.world) for r in range(self.world)])
        return _concat(shards, np.argsort(order, kind="stable"))


def _concat(shards: list[Predictions], pick: np.ndarray) -> Predictions:
    """``shards`` joined, rows ``pick`` of the joined rows (extras and per-output scores included)."""
    first = shards[0]

    def cat(field: str) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(s, field)) for s in shards])[pick]

    classes = None if first.class_index is None else cat("class_index").astype(int)
    multi = {} if first.scores is None else {"names": first.names, "scores": cat("scores"), "targets": cat("targets")}
    extra = {k: np.concatenate([s.extra[k] for s in shards])[pick] for k in first.extra}
    return Predictions(cat("sample_id").tolist(), cat("study_key").tolist(), cat("patient_key").tolist(),
                       cat("label").astype(int), cat("score").astype(np.float64), class_index=classes, extra=extra,
                       **multi)


def from_env() -> Dist:
    """The process group torchrun describes in the environment, initialised once (gloo on CPU,
    NCCL when this rank has a GPU); a single process when ``WORLD_SIZE`` is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    import torch.distributed as tdist

    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        tdist.init_process_group(backend)
        log.info("rank %d of %d (%s)", rank, world, backend)
    return Dist(rank, world, local)


def local_batch_size(batch_size: int, dist: Dist) -> int:
    """The per-rank share of ``train.batch_size``; the global batch must divide evenly."""
    if batch_size % dist.world:
        raise ConfigError(f"train.batch_size={batch_size} does not divide over {dist.world} processes; use a multiple "
                          f"of {dist.world} (e.g. {batch_size + dist.world - batch_size % dist.world}): it is the "
                          "global batch, split evenly across the ranks")
    return batch_size // dist.world


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's part of each global batch: one seeded permutation per epoch cut into batches of
    ``batch_size``, every ``world``-th sample of a batch from rank ``rank`` on (a single process,
    ``world == 1``, gets whole batches). Single-process training loaders use this sampler too, so
    the batches are the same whatever the number of ranks: each epoch draws exactly one
    ``randperm`` from ``generator`` (PyTorch's ``RandomSampler`` draws a second, discarded one when
    it runs out, so its later epochs would differ from a sampler that does not).

    A last global batch smaller than the number of ranks would leave a rank without samples (its
    gradient step would hang the others): those few samples are left out of that epoch, with a
    warning.
    """

    def __init__(self, n: int, batch_size: int, dist: Dist, shuffle: bool, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.dist, self.shuffle, self.generator = n, batch_size, dist, shuffle, generator

    def _batches(self) -> list[list[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        batches = [order[i: i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if batches and len(batches[-1]) < self.dist.world:
            log.warning("the last batch of %d samples is smaller than the %d processes: left out this epoch",
                        len(batches[-1]), self.dist.world)
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield batch[self.dist.rank:: self.dist.world]

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.dist.world else 0)


class ShardSampler(Sampler[int]):
    """Samples ``rank, rank + world, ...``: disjoint shards that together cover the dataset once."""

    def __init__(self, n: int, dist: Dist) -> None:
        self.indices = list(range(dist.rank, n, dist.world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (its trainable parameters' gradients all-reduced)."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
