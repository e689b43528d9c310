"""What does a base's frozen encoder keep? Block by block, on a config's labelled patients (issue 27).

For each base (a base card or safetensors, or ``random`` for the config's architecture at random init) the
encoder runs once, frozen, over the config's training, validation and test images, and every transformer
block's patch tokens are read. Two probes per block:

* **study probe**: a logistic regression (scikit-learn, standardised features, C chosen on the validation
  studies) on each study's mean over its images of the tokens pooled by mean and by max → test AUROC;
* **patch decodability**: ridge regression from each token to its own patch's mean and maximum input
  intensity (fitted on training images, R² on validation images): does the token still say how bright its
  patch is, or how bright its brightest pixel?

The demo's question: LoRA on some masked-autoencoder bases of ``configs/demo_base.yaml`` finds the phantoms'
nodules (test AUROC 0.79-0.85) and on others does not (0.48-0.67), at equal final loss. These probes ask
whether the failing bases lost what the nodule looks like, or keep it where LoRA does not get at it.

    .venv/bin/python benchmarks/base_probe.py bases/demo/base_card.md random [--config configs/demo.yaml]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

POOLS = ("mean", "max")


def block_tokens(cfg: Any, work: Path) -> dict[str, dict[str, Any]]:
    """Per split: every block's patch tokens (n, tokens, dim), the images, labels and study keys."""
    import numpy as np
    import torch

    from medlora.models.backbone import create_base
    from medlora.models.build import input_config
    from medlora.train.loaders import make_datasets, make_loader
    from medlora.transforms.samples import prepare_samples

    data = prepare_samples(cfg.data, cfg.preprocess, work)
    model, _ = create_base(cfg.model, 2, seed=cfg.train.seed, save_init=False)
    model.eval()
    datasets = make_datasets(data, cfg, input_config(model, cfg.preprocess.image_size), cache=False)
    out = {}
    for split, dataset in datasets.items():
        blocks: list[list[torch.Tensor]] = [[] for _ in model.blocks]
        hooks = [blk.register_forward_hook(lambda _m, _i, o, kept=blocks[b]: kept.append(o.detach()))
                 for b, blk in enumerate(model.blocks)]
        images, labels, keys = [], [], []
        with torch.no_grad():
            for batch in make_loader(dataset, cfg.train, False):
                model.forward_features(batch["image"])
                images.append(batch["image"])
                labels += list(np.asarray(batch["label"]))
                keys += list(batch["study_key"])
        for h in hooks:
            h.remove()
        out[split] = {"tokens": [torch.cat(b)[:, model.num_prefix_tokens:] for b in blocks],
                      "images": torch.cat(images), "labels": np.array(labels), "keys": np.array(keys),
                      "patch": model.patch_embed.patch_size[0]}
    return out


def study_probe(feats: dict[str, tuple[Any, Any]]) -> tuple[float, float]:
    """(validation, test) AUROC of a logistic regression on per-study features, C chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(feats["train"][0])
    best = (-1.0, 0.0)
    for c in (0.001, 0.01, 0.1, 1.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(scale.transform(feats["train"][0]), feats["train"][1])
        val = roc_auc_score(feats["val"][1], clf.decision_function(scale.transform(feats["val"][0])))
        if val > best[0]:
            best = (val, roc_auc_score(feats["test"][1], clf.decision_function(scale.transform(feats["test"][0]))))
    return best


def per_study(x: Any, labels: Any, keys: Any) -> tuple[Any, Any]:
    import numpy as np

    from medlora.evaluate.familiarity import study_means

    studies, means = study_means(x, keys)
    label = dict(zip(keys, labels, strict=True))
    return means, np.array([label[k] for k in studies])


def patch_targets(images: Any, patch: int) -> Any:
    """(n * tokens, 2): each patch's mean and maximum of the first channel."""
    import torch

    x = images[:, 0]
    p = x.unfold(1, patch, patch).unfold(2, patch, patch).reshape(x.shape[0], -1, patch * patch)
    return torch.stack([p.mean(-1), p.amax(-1)], -1).reshape(-1, 2).numpy()


def probe(cfg: Any, work: Path) -> list[dict[str, float]]:
    from sklearn.linear_model import RidgeCV

    data = block_tokens(cfg, work)
    targets = {s: patch_targets(data[s]["images"], data[s]["patch"]) for s in ("train", "val")}
    rows = []
    for b in range(len(data["train"]["tokens"])):
        row: dict[str, float] = {"block": b + 1}
        for pool in POOLS:
            feats = {}
            for split, d in data.items():
                t = d["tokens"][b]
                pooled = (t.mean(1) if pool == "mean" else t.amax(1)).numpy()
                feats[split] = per_study(pooled, d["labels"], d["keys"])
            row[f"{pool}_val"], row[f"{pool}_test"] = study_probe(feats)
        tok = {s: data[s]["tokens"][b].reshape(-1, data[s]["tokens"][b].shape[-1]).numpy() for s in ("train", "val")}
        ridge = RidgeCV(alphas=[0.1, 1.0, 10.0, 100.0]).fit(tok["train"], targets["train"])
        pred, y = ridge.predict(tok["val"]), targets["val"]
        r2 = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
        row["r2_patch_mean"], row["r2_patch_max"] = float(r2[0]), float(r2[1])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    import logging

    import torch

    from medlora.config import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bases", nargs="+", help="base cards or safetensors, or 'random'")
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"), help="labelled patients and architecture")
    p.add_argument("--work", default=None, help="where the config's samples are prepared (default: a temporary folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="medlora-base-probe-"))
    os.environ.setdefault("MEDLORA_SECRET_FILE", str(work / "site.key"))
    print("| base | block | study probe, mean-pooled: test (val) | max-pooled: test (val) | R² patch mean | R² patch max |")
    print("|---|---|---|---|---|---|")
    for base in args.bases:
        cfg = load_config(args.config, [f"model.weights={'null' if base == 'random' else base}", "train.threads=1"])
        for r in probe(cfg, work / "samples"):
            print(f"| {base} | {r['block']} | {r['mean_test']:.3f} ({r['mean_val']:.3f}) | {r['max_test']:.3f} "
                  f"({r['max_val']:.3f}) | {r['r2_patch_mean']:.3f} | {r['r2_patch_max']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
