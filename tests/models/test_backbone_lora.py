import hashlib

import pytest
import torch

from medlora.config import LoraConfigModel, ModelConfig
from medlora.errors import ConfigError, WeightsError
from medlora.models.backbone import base_state, create_base, rebuild_base
from medlora.models.lora import apply_method

TINY = {"img_size": 32, "patch_size": 8, "depth": 2}


def _tiny(tmp_path, **kw):
    return create_base(ModelConfig(backbone="vit_tiny_patch16_224", kwargs=TINY, **kw), 2, init_dir=tmp_path / "base")


@pytest.mark.parametrize(
    "method, targets, expect",
    [
        ("lora", "attn_qkv", {"lora_A", "lora_B", "head"}),
        ("lora", "attn_all", {"lora_A", "lora_B", "head"}),
        ("linear_probe", "attn_qkv", {"head"}),
        ("full", "attn_qkv", None),
    ],
)
def test_trainable_sets(tmp_path, method, targets, expect):
    base, _ = _tiny(tmp_path)
    model = apply_method(base, method, LoraConfigModel(targets=targets))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if expect is None:
        assert len(trainable) == len(list(model.parameters()))
        return
    for n in trainable:
        assert any(part in n for part in expect), n
    assert not any("patch_embed" in n for n in trainable)
    if method == "lora":
        lora_modules = {n.split(".lora_")[0] for n in trainable if "lora_" in n}
        suffixes = {m.rsplit(".", 2)[-2] + "." + m.rsplit(".", 1)[-1] for m in lora_modules}
        assert suffixes == ({"attn.qkv"} if targets == "attn_qkv" else {"attn.qkv", "attn.proj"})


def test_unknown_preset_is_named(tmp_path):
    base, _ = _tiny(tmp_path)
    with pytest.raises(ConfigError, match="presets: attn_qkv, attn_all, attn_mlp"):
        apply_method(base, "lora", LoraConfigModel(targets="attention"))


def test_init_base_saved_and_rebuilt_by_content(tmp_path):
    base, info = _tiny(tmp_path)
    assert info.source == "init"
    assert info.sha256 == hashlib.sha256(open(info.weights_path, "rb").read()).hexdigest()
    rebuilt = rebuild_base(info.to_dict())
    for k, v in base_state(base).items():
        torch.testing.assert_close(base_state(rebuilt)[k], v)


def test_local_weights_file_records_its_sha256(tmp_path):
    from safetensors.torch import save_file

    base, _ = _tiny(tmp_path)
    f = tmp_path / "weights.safetensors"
    save_file(base_state(base), f)
    model, info = create_base(ModelConfig(backbone="vit_tiny_patch16_224", kwargs=TINY, weights=f), 2)
    assert info.source == "file" and info.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    torch.testing.assert_close(model.state_dict()["blocks.0.attn.qkv.weight"], base.state_dict()["blocks.0.attn.qkv.weight"])
    # .pth through torch.load(weights_only=True)
    p = tmp_path / "weights.pth"
    torch.save({"state_dict": base_state(base)}, p)
    _, info_p = create_base(ModelConfig(backbone="vit_tiny_patch16_224", kwargs=TINY, weights=p), 2)
    assert info_p.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert info_p.state_sha256 == info.state_sha256


def test_missing_or_wrong_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_base(ModelConfig(backbone="vit_tiny_patch16_224", kwargs=TINY, weights=tmp_path / "nope.safetensors"), 2)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="cannot be read as weights"):
        create_base(ModelConfig(backbone="vit_tiny_patch16_224", kwargs=TINY, weights=junk), 2)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(WeightsError, match="does not fit"):
        create_base(ModelConfig(backbone="vit_tiny_patch16_224", kwargs=TINY, weights=other), 2)


def test_tampered_base_is_refused(tmp_path):
    _, info = _tiny(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(info.weights_path)
    state["blocks.0.attn.qkv.weight"] += 1
    save_file(state, info.weights_path)
    with pytest.raises(WeightsError, match="expected"):
        rebuild_base(info.to_dict())


def test_hub_failure_names_the_alternatives(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here, and fail fast
    with pytest.raises(WeightsError, match="model.weights: PATH"):
        create_base(ModelConfig(backbone="vit_tiny_patch16_224", pretrained=True, kwargs=TINY), 2)


def test_a_merged_copy_is_made_only_where_it_pays():
    import timm

    from medlora.models.lora import MERGE_MIN_FLOPS, merge_pays

    small = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=64, patch_size=8,
                              depth=2)
    tokens, params = 64, sum(p.numel() for p in small.parameters())
    enough = int(MERGE_MIN_FLOPS // (2 * params * tokens)) + 1
    assert not merge_pays(small, 120)  # the demo's validation set on a tiny ViT: the copy costs more
    assert not merge_pays(small, enough - 1)
    assert merge_pays(small, enough)
    assert merge_pays(torch.nn.Linear(4, 2), 1)  # no patch grid to size it by: merged, as before
