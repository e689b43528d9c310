"""Dropout whose masks do not depend on how a batch is split over torchrun ranks.

``nn.Dropout`` draws one mask for the tensor it gets: a rank holding half of a global batch draws
a half-size mask from the same random state as its peers, so its images get other masks than a
single process would give them (and every rank gives its i-th image the same mask). With
:func:`share_dropout`, a model's dropout layers draw the mask of the whole global batch, as one
process would, and keep the rows of this rank's images (every ``world``-th from ``rank`` on, the
split of :class:`~medlora.train.distributed.GlobalBatchSampler`). Inside :func:`batch_share` the
training loop says which part it holds; outside it (one process, evaluation) a mask covers the
tensor itself. Both ways draw the mask as ``bernoulli_`` over the batch-first tensor, so a
single-process run and an N-rank run of the same global batches give each image the same mask when
the ranks start from the same random state.

What this cannot reach: dropout fused into attention (``F.scaled_dot_product_attention``'s
``dropout_p``, timm's ``attn_drop`` with fused attention) and stochastic depth (timm ``DropPath``)
draw inside other code; they stay per rank (statistically the same, not bitwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

_SHARE: ContextVar[tuple[int, int, int, torch.Tensor | None] | None] = ContextVar("medlora_batch_share", default=None)


@contextmanager
def batch_share(rank: int, world: int, total: int, rows: torch.Tensor | None = None,
                rows_total: int | None = None) -> Iterator[None]:
    """Within this block, batches are this rank's every ``world``-th sample of ``total`` from ``rank`` on;
    or, with ``rows``, the encoder's inputs are those rows of ``rows_total`` (the real slices of a rank's bags
    of studies among the global batch's, :class:`~medlora.train.bags.SliceShare`)."""
    share = (rank, world, total, None) if rows is None else (rank, world, int(rows_total), rows)
    token = _SHARE.set(share if world > 1 else None)
    try:
        yield
    finally:
        _SHARE.reset(token)


class SharedMaskDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same scaling) drawing the global batch's mask under :func:`batch_share`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        share = _SHARE.get()
        rank, world, total, rows = share or (0, 1, x.shape[0], None)
        mask = torch.empty((total, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        mask = mask[rank::world] if rows is None else mask[rows.to(mask.device)]
        if mask.shape[0] != x.shape[0]:
            raise ValueError(f"dropout on rank {rank} of {world}: {x.shape[0]} rows of a global batch of {total}, "
                             f"expected {mask.shape[0]} (the batch must be the tensor's first dimension)")
        return x * mask.div_(1 - self.p)


def share_dropout(model: nn.Module) -> int:
    """Every ``nn.Dropout`` of ``model`` with ``p > 0`` swapped for a :class:`SharedMaskDropout` in place;
    returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                shared = SharedMaskDropout(child.p)
                shared.train(child.training)
                setattr(module, name, shared)
                swapped += 1
    return swapped
