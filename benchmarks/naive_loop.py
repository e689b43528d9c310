"""The baseline: LoRA fine-tuning written the way a user would write it with timm + peft + pydicom.

Kept here as the reference every medlora number is compared with; the library never uses it.
Nothing in it is deliberately slow: it is the ordinary tutorial loop. Each epoch it opens every
DICOM file with pydicom, applies the Modality LUT (rescale slope/intercept) and the file's
window, resizes with PIL, normalises with the ImageNet mean/std and augments with torchvision
(flip, affine); the model is ``timm.create_model`` + ``peft.get_peft_model`` with peft's usual
LoRA settings (r 8, alpha 16, dropout 0.1 on ``qkv``), trained with AdamW.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's ImageNet defaults


class NaiveDicomDataset(Dataset):
    """Decodes, windows and resizes one DICOM file per ``__getitem__``, every epoch."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], size: int, train: bool) -> None:
        from torchvision.transforms import v2

        self.paths, self.labels, self.size = [str(p) for p in paths], list(labels), size
        aug = [v2.RandomHorizontalFlip(0.5),
               v2.RandomApply([v2.RandomAffine(degrees=8.6, translate=(0.05, 0.05), scale=(0.9, 1.1))], p=0.5)]
        self.augment = v2.Compose(aug) if train else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import pydicom
        from PIL import Image

        ds = pydicom.dcmread(self.paths[i])
        img = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(
            getattr(ds, "RescaleIntercept", 0))
        if "WindowCenter" in ds and "WindowWidth" in ds:
            wc, ww = (float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
                      for v in (ds.WindowCenter, ds.WindowWidth))
            img = np.clip((img - (wc - ww / 2)) / ww, 0, 1)
        else:
            img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        img = np.asarray(Image.fromarray(img, mode="F").resize((self.size, self.size), Image.BILINEAR))
        x = torch.from_numpy(img.copy()).unsqueeze(0).repeat(3, 1, 1)
        x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        if self.augment is not None:
            x = self.augment(x)
        return x, self.labels[i]


def naive_model(method: str, model_name: str, model_kwargs: dict, num_classes: int = 2, seed: int = 0) -> nn.Module:
    """timm model (random init) made trainable as ``method`` says, as in the peft docs."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_kwargs)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["qkv"], modules_to_save=["head"])
        return get_peft_model(model, cfg)
    for name, p in model.named_parameters():
        p.requires_grad = method == "full" or name.startswith("head.")
    return model


def naive_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)


def naive_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def naive_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer) -> dict[str, float]:
    """One training epoch; seconds spent waiting for data and in steps, counted separately."""
    model.train()
    data_s = compute_s = 0.0
    n = 0
    t = time.perf_counter()
    for x, y in loader:
        t1 = time.perf_counter()
        data_s += t1 - t
        naive_step(model, opt, x, y)
        t = time.perf_counter()
        compute_s += t - t1
        n += len(y)
    return {"data_s": data_s, "compute_s": compute_s, "images": n}


@torch.no_grad()
def naive_scores(model: nn.Module, loader: DataLoader, abnormal: int = 1) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    scores, labels = [], []
    for x, y in loader:
        scores.append(torch.softmax(model(x), 1)[:, abnormal].numpy())
        labels.append(np.asarray(y))
    return np.concatenate(labels), np.concatenate(scores)


def naive_run(train: tuple[list, list], val: tuple[list, list], test: tuple[list, list], method: str, size: int,
              model_name: str, model_kwargs: dict, epochs: int, batch_size: int, lr: float, seed: int,
              abnormal: int = 1) -> dict[str, float]:
    """One complete run as a user script does it: train, validate every epoch, keep the best, test."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    model = naive_model(method, model_name, model_kwargs, seed=seed)
    opt = naive_optimizer(model, lr)
    loaders = {name: DataLoader(NaiveDicomDataset(*split, size=size, train=name == "train"), batch_size=batch_size,
                                shuffle=name == "train")
               for name, split in (("train", train), ("val", val), ("test", test))}
    best, best_state = -1.0, None
    for _ in range(epochs):
        naive_epoch(model, loaders["train"], opt)
        y, s = naive_scores(model, loaders["val"], abnormal)
        auc = roc_auc_score(y == abnormal, s) if len(set(y)) > 1 else 0.5
        if auc > best:
            best, best_state = auc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    y, s = naive_scores(model, loaders["test"], abnormal)
    return {"val_auroc": best, "test_auroc": float(roc_auc_score(y == abnormal, s))}


def main(argv: list[str] | None = None) -> None:
    """One few-shot point as a user runs the script: ``python -m benchmarks.naive_loop ROOT METHOD SHOTS SEED``
    over a study folder with ``labels.csv`` (``path,label,split``); prints the AUROCs as one JSON line."""
    import argparse
    import json

    from benchmarks.study_folder import CLASSES, study_splits, support_indices

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("root", type=Path)
    p.add_argument("method", choices=["lora", "linear_probe", "full"])
    p.add_argument("shots")
    p.add_argument("seed", type=int)
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--kwargs", default="{}", help="timm.create_model keyword arguments as JSON")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    a = p.parse_args(argv)
    splits = study_splits(a.root)
    paths, labels = splits["train"]
    pos = support_indices(labels, a.shots, a.seed)
    train = ([paths[i] for i in pos], [labels[i] for i in pos])
    res = naive_run(train, splits["val"], splits["test"], a.method, a.size, a.model, json.loads(a.kwargs), a.epochs,
                    a.batch, a.lr, a.seed, abnormal=CLASSES.index("malignant"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
