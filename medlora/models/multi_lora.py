"""Many LoRA adapters trained over one frozen base: every sample carries the index of its adapter.

A few-shot sweep trains many LoRA points whose bases are the same frozen weights; only the low-rank
matrices and the classifier head differ. :class:`MultiLora` holds one copy of the base and N
adapters (A, B, scaling and dropout per adapter, one head per adapter). A batch is the
concatenation of the points' batches, in point order, and :class:`Routing` says how many samples
each point holds. Every adapted ``nn.Linear`` runs its frozen projection once on the whole batch,
then each point's low-rank update on its own rows: a loop over the segments (``F.linear`` twice,
as peft does), or one ``torch.bmm`` over the segments padded to the longest
(:attr:`Routing.kernel`). A layer that folds the batch into its first dimension (Swin's windows)
holds ``k`` rows per sample, in sample order: the segments scale by ``k``.

Exactness: the gradient of the sum of the points' losses with respect to one point's adapter is that
point's own gradient (the base is frozen, the points' parameters are disjoint, every op below the
head is per sample); only the summation order inside the frozen GEMMs changes. Dropout masks are
drawn per point from the point's own :class:`torch.Generator` exactly as
:class:`~medlora.models.dropout.SharedMaskDropout` draws them from the global one, so a point sees the
masks it would see alone when its generator starts where the global state would.

The adapters come from peft-initialised models (:func:`adapter_weights`), so a point's initial A and
head are exactly those it gets when trained alone; :meth:`MultiLora.write_back` copies a point's
trained tensors into a standard peft model, which ``save_pretrained`` writes in peft's layout.
Refused, with :class:`TogetherUnsupported`: DoRA, LoRA bias, several adapters per model, targets that
are not ``nn.Linear``, heads that are not ``nn.Linear``, and bases with random layers of their own
(dropout or drop-path outside LoRA), whose draws would not follow each point's stream.
rsLoRA needs nothing: its scaling (alpha / sqrt(r)) is read from the peft layer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .backbone import head_names
from .lora import freeze_batchnorm
from .prefix import timm_model

KERNELS = ("loop", "bmm")


class TogetherUnsupported(ConfigError):
    """A model that cannot be trained as one adapter among many (the point then trains alone)."""


@dataclass
class LayerAdapter:
    """One adapted linear layer of one point."""

    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scaling: float
    dropout: float


@dataclass
class AdapterWeights:
    """One point's trainable tensors, read from its peft model."""

    layers: dict[str, LayerAdapter] = field(default_factory=dict)  # by module name in the timm model
    heads: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)  # (weight, bias)


class Routing:
    """How the current batch is split between points, shared by every layer of one :class:`MultiLora`."""

    def __init__(self, n_points: int, kernel: str = "loop") -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r}; allowed: {', '.join(KERNELS)}")
        self.kernel = kernel
        self.counts: list[int] = [0] * n_points
        self.generators: list[torch.Generator | None] = [None] * n_points

    def segments(self, rows: int) -> list[int]:
        """Rows per point of a tensor with ``rows`` rows (``k`` rows per sample, sample-major)."""
        total = sum(self.counts)
        if total == 0 or rows % total:
            raise ValueError(f"a tensor of {rows} rows does not split over a batch of {total} samples "
                             f"({self.counts} per point): the batch must be its first dimension")
        k = rows // total
        return [c * k for c in self.counts]


def _dropout(x: torch.Tensor, p: float, generator: torch.Generator | None, training: bool) -> torch.Tensor:
    """:class:`~medlora.models.dropout.SharedMaskDropout` on one point's rows, drawn from ``generator``."""
    if not training or p == 0:
        return x
    mask = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p, generator=generator)
    return x * mask.div_(1 - p)


class MultiLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus one LoRA update per point, each on its own rows."""

    def __init__(self, base: nn.Linear, adapters: Sequence[LayerAdapter], routing: Routing) -> None:
        super().__init__()
        self.base_layer, self.routing = base, routing
        self.lora_A = nn.ParameterList([nn.Parameter(a.A.detach().clone()) for a in adapters])
        self.lora_B = nn.ParameterList([nn.Parameter(a.B.detach().clone()) for a in adapters])
        self.scaling = [a.scaling for a in adapters]
        self.dropout = [a.dropout for a in adapters]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        rows = self.routing.segments(x.shape[0])
        if self.routing.kernel == "bmm" and sum(c > 0 for c in rows) > 1:
            return result + self._bmm(x, rows).to(result.dtype)
        deltas = []
        for i, xi in enumerate(x.split(rows)):
            if rows[i] == 0:
                continue
            d = _dropout(xi, self.dropout[i], self.routing.generators[i], self.training)
            A, B = self.lora_A[i], self.lora_B[i]
            deltas.append(F.linear(F.linear(d.to(A.dtype), A), B) * self.scaling[i])
        return result + torch.cat(deltas).to(result.dtype)

    def _bmm(self, x: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """The updates as one batched product over the segments, padded to the longest."""
        live = [i for i, c in enumerate(rows) if c > 0]
        parts = [p for p in x.split(rows)]
        longest = max(rows)
        padded = torch.zeros((len(live), longest, *x.shape[1:]), dtype=self.lora_A[live[0]].dtype, device=x.device)
        for j, i in enumerate(live):
            padded[j, : rows[i]] = _dropout(parts[i], self.dropout[i], self.routing.generators[i], self.training)
        flat = padded.reshape(len(live), -1, x.shape[-1])
        A = torch.stack([self.lora_A[i] for i in live])  # (n, r, in)
        B = torch.stack([self.lora_B[i] for i in live])  # (n, out, r)
        scale = torch.tensor([self.scaling[i] for i in live], dtype=flat.dtype, device=x.device).view(-1, 1, 1)
        out = torch.bmm(torch.bmm(flat, A.transpose(1, 2)), B.transpose(1, 2)) * scale
        out = out.reshape(len(live), longest, *x.shape[1:-1], B.shape[1])
        return torch.cat([out[j, : rows[i]] for j, i in enumerate(live)])


class MultiHead(nn.Module):
    """One linear classifier per point, each on its own rows."""

    def __init__(self, heads: Sequence[tuple[torch.Tensor, torch.Tensor | None]], routing: Routing) -> None:
        super().__init__()
        self.routing = routing
        self.weight = nn.ParameterList([nn.Parameter(w.detach().clone()) for w, _ in heads])
        self.bias = nn.ParameterList([nn.Parameter(b.detach().clone()) for _, b in heads if b is not None])
        self.has_bias = all(b is not None for _, b in heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.routing.segments(x.shape[0])
        outs = [F.linear(xi, self.weight[i], self.bias[i] if self.has_bias else None)
                for i, xi in enumerate(x.split(rows)) if rows[i] > 0]
        return torch.cat(outs)


def _lora_layers(peft_model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in timm_model(peft_model).named_modules() if isinstance(m, LoraLayer)}


def adapter_weights(peft_model: nn.Module) -> AdapterWeights:
    """One point's LoRA matrices, scalings, dropout rates and head(s) from its peft model (one adapter,
    ``default``); what :class:`MultiLora` cannot train the same way raises :class:`TogetherUnsupported`."""
    from peft import PeftModel
    from peft.tuners.lora import Linear as LoraLinear
    from peft.utils.other import ModulesToSaveWrapper

    if not isinstance(peft_model, PeftModel):
        raise TogetherUnsupported(f"not a peft model: {type(peft_model).__name__}")
    config = peft_model.peft_config.get("default")
    if len(peft_model.peft_config) != 1 or config is None:
        raise TogetherUnsupported(f"one adapter named 'default' expected, found {sorted(peft_model.peft_config)}")
    if getattr(config, "use_dora", False):
        raise TogetherUnsupported("model.lora.use_dora: DoRA's magnitude vector is not trained together")
    if getattr(config, "lora_bias", False) or config.bias != "none":
        raise TogetherUnsupported("LoRA biases are not trained together")
    out = AdapterWeights()
    for name, layer in _lora_layers(peft_model).items():
        if type(layer) is not LoraLinear or not isinstance(layer.base_layer, nn.Linear):
            raise TogetherUnsupported(f"LoRA target {name} is a {type(layer.base_layer).__name__}; only nn.Linear "
                                      "targets are trained together")
        drop = layer.lora_dropout["default"]
        p = drop.p if isinstance(drop, nn.Dropout) else 0.0
        out.layers[name] = LayerAdapter(layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach(),
                                        float(layer.scaling["default"]), float(p))
    timm = timm_model(peft_model)
    for name in head_names(timm):
        wrapper = timm.get_submodule(name)
        head = wrapper.modules_to_save["default"] if isinstance(wrapper, ModulesToSaveWrapper) else None
        if not isinstance(head, nn.Linear):
            raise TogetherUnsupported(f"classifier head {name} is not a trained nn.Linear ({type(head).__name__})")
        out.heads[name] = (head.weight.detach(), None if head.bias is None else head.bias.detach())
    if not out.layers:
        raise TogetherUnsupported("the peft model has no LoRA layer")
    return out


def _random_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if (isinstance(m, nn.Dropout) and m.p > 0) or (type(m).__name__ == "DropPath" and getattr(m, "drop_prob", 0) > 0)]


class MultiLora(nn.Module):
    """One frozen timm base with N points' adapters and heads; set :attr:`routing` before each forward."""

    def __init__(self, base: nn.Module, points: Sequence[AdapterWeights], kernel: str = "loop") -> None:
        super().__init__()
        if not points:
            raise ValueError("MultiLora needs at least one point")
        names, heads = set(points[0].layers), set(points[0].heads)
        if any(set(p.layers) != names or set(p.heads) != heads for p in points):
            raise TogetherUnsupported("the points adapt different modules (model.lora differs between them)")
        model = copy.deepcopy(timm_model(base)).requires_grad_(False)
        random = _random_layers(model)
        if random:
            raise TogetherUnsupported(f"the base has random layers of its own ({', '.join(random[:3])}...): their "
                                      "draws would not follow each point's own random stream")
        self.routing = Routing(len(points), kernel)
        for name in sorted(names):
            base_layer = model.get_submodule(name)
            if not isinstance(base_layer, nn.Linear):
                raise TogetherUnsupported(f"{name} is a {type(base_layer).__name__} in the base, not an nn.Linear")
            _replace(model, name, MultiLoraLinear(base_layer, [p.layers[name] for p in points], self.routing))
        for name in sorted(heads):
            _replace(model, name, MultiHead([p.heads[name] for p in points], self.routing))
        freeze_batchnorm(model)
        self.model, self.n_points = model, len(points)
        self.layer_names, self.head_names = sorted(names), sorted(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def point_parameters(self, i: int) -> dict[str, nn.Parameter]:
        """Point ``i``'s trainable tensors by a stable name (its optimiser's parameters)."""
        out: dict[str, nn.Parameter] = {}
        for name in self.layer_names:
            layer = self.model.get_submodule(name)
            out[f"{name}.lora_A"], out[f"{name}.lora_B"] = layer.lora_A[i], layer.lora_B[i]
        for name in self.head_names:
            head = self.model.get_submodule(name)
            out[f"{name}.weight"] = head.weight[i]
            if head.has_bias:
                out[f"{name}.bias"] = head.bias[i]
        return out

    @torch.no_grad()
    def write_back(self, i: int, peft_model: nn.Module) -> nn.Module:
        """Point ``i``'s trained adapter and head copied into ``peft_model`` (built as the point alone
        builds it), which is returned: ``save_pretrained`` then writes peft's own layout."""
        layers = _lora_layers(peft_model)
        if set(layers) != set(self.layer_names):
            raise ValueError(f"the peft model adapts {sorted(layers)}, this MultiLora {self.layer_names}")
        params = self.point_parameters(i)
        for name, layer in layers.items():
            layer.lora_A["default"].weight.copy_(params[f"{name}.lora_A"])
            layer.lora_B["default"].weight.copy_(params[f"{name}.lora_B"])
        timm = timm_model(peft_model)
        for name in self.head_names:
            head = timm.get_submodule(name).modules_to_save["default"]
            head.weight.copy_(params[f"{name}.weight"])
            if head.bias is not None:
                head.bias.copy_(params[f"{name}.bias"])
        return peft_model


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
