"""A native 3D ViT on AdrenalMNIST3D: is a volumetric backbone better than medlora's slice encoder + pooling?

Issue 25 asks whether a volumetric ViT (MONAI's ``ViT`` with ``spatial_dims=3``) measures better than the
study-level model (a 2D timm ViT on the volume's slices, gated-attention pooling over them,
``benchmarks/study_level.py``). This trains MONAI's 3D ViT on whole 28³ volumes of AdrenalMNIST3D
(``../shared/data/medmnist/adrenalmnist3d.npz``, MedMNIST's official split: 1,188 / 98 / 298 volumes),
from random initialisation and end to end (there is no pretrained 3D base to put LoRA on), with random flips
along the three axes, AdamW and a one-cycle schedule; the epoch with the best validation AUROC is kept and
scored on the test volumes once (test AUROC with its DeLong interval, :func:`medlora.evaluate.delong.delong_auc`).
Reference: MedMNIST v2 (Yang et al. 2023), ResNet-18 + 3D: AUROC 0.863.

MONAI's ViT needs ``einops`` (``.venv/bin/pip install einops``); medlora itself does not.

    .venv/bin/python benchmarks/native3d.py [--seeds 0 1 2] [--epochs 30] [--patch 7] [--width 192] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "adrenalmnist3d.npz"


def volumes(npz: Path, split: str):
    import torch

    d = np.load(npz)
    return torch.tensor(d[f"{split}_images"], dtype=torch.float32)[:, None] / 255.0, d[f"{split}_labels"][:, 0].astype(int)


def run(seed: int, args) -> dict:
    import torch
    from monai.networks.nets import ViT
    from sklearn.metrics import roc_auc_score

    from medlora.evaluate.delong import delong_auc

    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    (xtr, ytr), (xva, yva), (xte, yte) = (volumes(args.npz, s) for s in ("train", "val", "test"))
    ytr_t = torch.tensor(ytr)
    model = ViT(in_channels=1, img_size=xtr.shape[-1], patch_size=args.patch, hidden_size=args.width,
                mlp_dim=4 * args.width, num_layers=args.depth, num_heads=args.width // 64, classification=True,
                num_classes=2, spatial_dims=3, dropout_rate=0.1, post_activation=None, qkv_bias=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = -(-len(xtr) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.1)

    def scores(x):
        model.eval()
        with torch.no_grad():
            return torch.cat([torch.softmax(model(x[i:i + 64])[0], 1)[:, 1] for i in range(0, len(x), 64)]).numpy()

    best, state, epoch_s = -1.0, None, []
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        for idx in torch.randperm(len(xtr)).split(args.batch):
            x = xtr[idx].clone()
            for axis in (2, 3, 4):
                flip = torch.rand(len(x)) < 0.5
                x[flip] = x[flip].flip(axis)
            loss = torch.nn.functional.cross_entropy(model(x)[0], ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        epoch_s.append(time.perf_counter() - t0)
        val = roc_auc_score(yva, scores(xva))
        if val > best:
            best, state = val, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"  seed {seed} epoch {epoch + 1}/{args.epochs}: val AUROC {val:.3f} ({epoch_s[-1]:.1f} s)", flush=True)
    model.load_state_dict(state)
    test = delong_auc(yte, scores(xte))
    row = {"seed": seed, "val_auroc": round(best, 4), "test_auroc": round(test.auc, 4),
           "delong": [round(test.ci_low, 3), round(test.ci_high, 3)], "s_per_epoch": round(statistics.median(epoch_s), 1),
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--npz", type=Path, default=NPZ)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patch", type=int, default=7, help="7: 4³ = 64 tokens of a 28³ volume")
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if not args.npz.is_file():
        print(f"skipped: {args.npz} not found (the shared MedMNIST data sits beside the repository)")
        return
    rows = [run(seed, args) for seed in args.seeds]
    aurocs = [r["test_auroc"] for r in rows]
    sd = statistics.stdev(aurocs) if len(aurocs) > 1 else 0.0
    print(f"native 3D ViT (MONAI, patch {args.patch}, width {args.width}, depth {args.depth}, {args.epochs} epochs): "
          f"test AUROC {statistics.mean(aurocs):.3f} ± {sd:.3f} over seeds {args.seeds}; reference ResNet-18 + 3D 0.863")


if __name__ == "__main__":
    main()
