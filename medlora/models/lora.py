"""Adaptation methods on a timm backbone: peft LoRA, linear probe, full fine-tuning.

LoRA targets are named by presets (regular expressions over timm's module names, the same across the
attention families, so that ``attn.proj`` never catches ``patch_embed.proj``: :mod:`.families`) or by
explicit module names. The classifier head(s) are trained through peft's ``modules_to_save`` and saved
inside the adapter. A backbone without attention blocks is refused for LoRA with the methods that fit it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..config import LoraConfigModel
from ..errors import ConfigError
from .backbone import head_names, head_prefixes
from .families import LORA_TARGET_PRESETS, require_targets, transformer_blocks

__all__ = ["LORA_TARGET_PRESETS", "ParamCount", "apply_method", "count_params", "for_inference", "lora_config",
           "resolve_targets"]


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    total: int

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} / {self.total:,} ({100 * self.trainable / max(self.total, 1):.3f}%)"


def count_params(model: nn.Module) -> ParamCount:
    return ParamCount(
        sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())
    )


def for_inference(model: nn.Module) -> nn.Module:
    """The model to evaluate: a LoRA model's adapters merged into a copy of its weights
    (``merge_and_unload``: the base architecture again, one matrix product per adapted layer
    instead of three and no adapter temporaries), any other model itself. ``model`` itself is left
    untouched, so training can go on; the copy costs one model's memory while it lives."""
    from peft import PeftModel
    from peft.tuners.lora import LoraModel

    from .prefix import SuffixModel

    if isinstance(model, SuffixModel):
        return SuffixModel(for_inference(model.inner), model.depth).eval()
    if isinstance(model, PeftModel) and isinstance(model.base_model, LoraModel):
        return copy.deepcopy(model).merge_and_unload().eval()
    return model


MERGE_MIN_FLOPS = 1e11  # below this a scoring pass is shorter than the merged copy's cost makes worthwhile


def merge_pays(model: nn.Module, samples: int) -> bool:
    """Whether scoring ``samples`` inputs through :func:`for_inference` (a merged copy) beats scoring them
    with ``model`` as it is. Deterministic, from sizes alone: a pass costs about 2 · parameters · tokens
    FLOPs per input; an unmerged adapter makes it ~20 % slower (ViT-S/16 at 224 px: 0.78–0.80× the merged
    speed), while the copy costs ~0.1–0.3 s whatever the data (0.13 s for ViT-Ti, mostly Python). The
    copy pays above ~1e11 FLOPs: ViT-S at 224 px over a hundred images, not a ViT-Ti at 64 px over the
    demo's 120. A model without a patch grid is assumed to be worth merging."""
    tokens = next((int(m.num_patches) for m in model.modules() if isinstance(getattr(m, "num_patches", None), int)),
                  None)
    if tokens is None:
        return True
    params = sum(p.numel() for p in model.parameters())
    return 2 * params * tokens * samples >= MERGE_MIN_FLOPS


def resolve_targets(targets: str | list[str], blocks: list[int] | None = None,
                    block_names: Sequence[str] | None = None) -> str | list[str]:
    """A preset name → its regex, restricted to ``blocks`` (indexes into ``block_names``, the backbone's
    transformer blocks in order: :func:`.families.transformer_blocks`; negative counts from the end)
    when given; a list of module names passes through."""
    if isinstance(targets, list):
        if not targets:
            raise ConfigError("model.lora.targets is an empty list")
        if blocks is not None:
            raise ConfigError("model.lora.blocks selects blocks for a target preset; explicit module names in "
                              "model.lora.targets already name their blocks: drop one of the two")
        return targets
    if targets not in LORA_TARGET_PRESETS:
        raise ConfigError(f"model.lora.targets={targets!r} is not a preset; presets: {', '.join(LORA_TARGET_PRESETS)} "
                          "(or give a list of module names)")
    regex = LORA_TARGET_PRESETS[targets]
    if blocks is None:
        return regex
    if not block_names:
        raise ConfigError("model.lora.blocks needs a backbone with transformer blocks (timm's model.blocks, or "
                          "Swin's model.layers[S].blocks)")
    depth = len(block_names)
    bad = [b for b in blocks if not -depth <= b < depth]
    if bad or not blocks:
        staged = " counted over all stages in order" if "." in block_names[0].removeprefix("blocks.") else ""
        raise ConfigError(f"model.lora.blocks={blocks}: this backbone has blocks 0..{depth - 1}{staged} "
                          "(negative counts from the end)")
    chosen = [block_names[i] for i in sorted({b % depth for b in blocks})]
    # a block's full name, at the start or after a dot: layers.1.blocks.0 is not layers.0.blocks.0
    return regex.replace(r".*blocks\.\d+", r"(.*\.)?(" + "|".join(map(re.escape, chosen)) + ")")


def lora_config(cfg: LoraConfigModel, head: str | list[str] = "head", block_names: Sequence[str] | None = None):
    """The peft ``LoraConfig`` for a medlora LoRA config (``head``: the classifier module(s) trained and
    saved with the adapter; ``block_names``: the backbone's transformer blocks, which ``cfg.blocks`` indexes)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=resolve_targets(cfg.targets, cfg.blocks, block_names),
        modules_to_save=[head] if isinstance(head, str) else list(head),
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
        bias="none",
    )


def _eval_mode(module: nn.Module, _inputs: tuple) -> None:
    module.training = False


def freeze_batchnorm(model: nn.Module) -> None:
    """Batch-norm layers whose weights are frozen run in eval mode in training too: their running
    statistics are part of the base, which LoRA and linear probing must leave unchanged (otherwise the
    adapter or head would be exported for a base that no longer exists)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.register_forward_pre_hook(_eval_mode)


def apply_method(model: nn.Module, method: str, lora: LoraConfigModel) -> nn.Module:
    """Make ``model`` trainable the way ``method`` says; returns the (possibly peft-wrapped) model."""
    if method == "lora":
        from peft import get_peft_model

        config = lora_config(lora, list(head_names(model)), transformer_blocks(model))
        require_targets(model, config.target_modules if isinstance(lora.targets, str) else lora.targets, lora.targets)
        peft_model = get_peft_model(model, config)
        freeze_batchnorm(peft_model)
        if not any("lora_" in n for n, _ in peft_model.named_parameters()):
            raise ConfigError(f"model.lora.targets={lora.targets!r} matched no module of this backbone")
        return peft_model
    if method in {"linear_probe", "full"}:
        heads = head_prefixes(model)
        for name, p in model.named_parameters():
            p.requires_grad = method == "full" or name.startswith(heads)
        if method == "linear_probe":
            freeze_batchnorm(model)
        return model
    raise ConfigError(f"model.method={method!r}; allowed: lora, linear_probe, full")
