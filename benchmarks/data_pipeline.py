"""Epoch time on real DICOM input and the data pipeline's share of it.

Naive: :class:`benchmarks.naive_loop.NaiveDicomDataset` decodes, windows and resizes every file in
every epoch. medlora: :func:`medlora.train.loaders.make_datasets` (MONAI ``CacheDataset`` over the
deterministic chain: decode, Modality LUT, window, resize, normalise, done once when the dataset is
built) and :func:`medlora.train.loop.fit` with its batch augmentation. Both train LoRA on the same files, model, batch size and
epochs; a :class:`~benchmarks.harness.TimedLoader` splits each epoch into waiting for data and steps.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path

from benchmarks.harness import TimedLoader, rss_mb

IMPORTS = {"naive": ["pydicom", "PIL.Image", "torchvision.transforms.v2", "timm", "peft"],
           "medlora": ["pydicom", "monai", "medlora.train.loaders", "medlora.train.loop", "timm", "peft"]}


def _per_epoch(loader: TimedLoader, batches_per_epoch: int) -> list[dict[str, float]]:
    out = []
    for e, epoch_s in enumerate(loader.epoch_s):
        sl = slice(e * batches_per_epoch, (e + 1) * batches_per_epoch)
        out.append({"epoch_s": epoch_s, "data_s": sum(loader.data_s[sl]), "step_s": sum(loader.step_s[sl])})
    return out


def _medlora_loader(paths: list[Path], labels: list[int], root: Path, size: int, batch: int, model_name: str,
                    augment: bool):
    import pandas as pd

    from medlora.config import config_from_dict
    from medlora.io.prepare import PreparedData
    from medlora.train.loaders import make_datasets, make_loader

    cfg = config_from_dict({"data": {"name": "bench", "root": str(root), "label_key": "path", "cache": "memory"},
                            "preprocess": {"window": {"mode": "dicom"}, "image_size": size, "augment": augment},
                            "model": {"backbone": model_name}, "train": {"batch_size": batch}})
    keys = [p.name for p in paths]
    manifest = pd.DataFrame({"sample_id": keys, "path": keys, "patient_key": keys, "study_key": keys,
                             "label": labels, "split": "train"})
    data = PreparedData(manifest, pd.DataFrame(columns=["path", "reason"]), root, "bench", root / "split.csv")
    input_cfg = {"image_size": size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    ds = make_datasets(data, cfg, input_cfg, splits=("train",))["train"]
    return make_loader(ds, cfg.train, shuffle=True), cfg


def measure_epochs(impl: str, model_name: str, model_kwargs: dict, size: int, batch: int, n_images: int,
                   epochs: int, data_dir: str | None = None, lora: dict | None = None, augment: bool = True) -> dict:
    """Per-epoch seconds (total, waiting for data, steps) and the one-off dataset setup time.

    ``augment=False`` (medlora only) drops the random flip/affine that run on each batch in the
    training loop: what is left is the cost of the cache itself. medlora's data time is the loop's
    own ``data_seconds`` (waiting for batches + augmenting them); the naive loop augments inside its
    dataset, so its wait for a batch includes it.
    """
    import torch

    from benchmarks.train_step import _val_batch, medlora_model
    from medlora.device import configure_threads, resolve_device

    root = Path(data_dir or tempfile.mkdtemp(prefix="medlora-bench-ct-"))
    from benchmarks.datasets import ct_study_folder

    paths, labels = ct_study_folder(root, n_images)
    kwargs = {**model_kwargs, "img_size": size}
    for module in IMPORTS[impl]:  # paid once per process, not per epoch or dataset: not timed
        importlib.import_module(module)
    t0 = time.perf_counter()
    if impl == "naive":
        from torch.utils.data import DataLoader

        from benchmarks.naive_loop import NaiveDicomDataset, naive_model, naive_optimizer, naive_step

        loader = DataLoader(NaiveDicomDataset(paths, labels, size, train=True), batch_size=batch, shuffle=True)
        setup_s = time.perf_counter() - t0
        model = naive_model("lora", model_name, kwargs)
        timed = TimedLoader(loader)
        opt = naive_optimizer(model)
        model.train()
        for _ in range(epochs):
            for x, y in timed:
                naive_step(model, opt, x, y)
    else:
        configure_threads(None)
        loader, cfg = _medlora_loader(paths, labels, root, size, batch, model_name, augment)
        setup_s = time.perf_counter() - t0
        model = medlora_model("lora", model_name, kwargs, lora)
        timed = TimedLoader(loader)
        from medlora.train.loop import fit

        train_cfg = cfg.train.model_copy(update={"epochs": epochs, "patience": epochs, "warmup_epochs": 0})
        from medlora.transforms.augment import BatchAugment

        result = fit(model, timed, _val_batch(size), train_cfg, resolve_device("cpu"), 1, val_metric=lambda p: 0.5,
                     augment=BatchAugment(seed=0) if augment else None)
    per_epoch = _per_epoch(timed, len(loader))
    if impl != "naive":  # the loop's own account: waiting for batches plus augmenting them on the batch
        for e, log in zip(per_epoch, result.history, strict=True):
            e["data_s"] = log.data_seconds
    later = per_epoch[1:] or per_epoch
    epoch_s = sum(e["epoch_s"] for e in later) / len(later)
    data_s = sum(e["data_s"] for e in later) / len(later)
    return {"impl": impl if augment else f"{impl} (augment: false)", "size": size, "batch": batch, "images": n_images, "epochs": epochs, "setup_s": setup_s,
            "per_epoch": per_epoch, "epoch_s": epoch_s, "data_s": data_s, "data_share": data_s / epoch_s,
            "first_epoch_incl_setup_s": per_epoch[0]["epoch_s"] + setup_s, "rss_end_mb": rss_mb(),
            "threads": torch.get_num_threads()}


def measure_prefix(model_name: str, model_kwargs: dict, size: int, batch: int, n_images: int, epochs: int,
                   blocks: list[int], cached: bool, data_dir: str | None = None) -> dict:
    """LoRA on ``blocks`` only, no augmentation: epoch time training on images (``cached=False``) or on
    the tokens after the frozen blocks below, computed once (:func:`medlora.train.features.prefix_loaders`,
    their one pass counted in ``setup_s``)."""
    import torch

    from benchmarks.datasets import ct_study_folder
    from benchmarks.train_step import _val_batch, medlora_model
    from medlora.device import configure_threads, resolve_device
    from medlora.models.prefix import frozen_prefix_depth, prefix_tokens
    from medlora.train.features import prefix_loaders
    from medlora.train.loaders import make_loader
    from medlora.train.loop import fit

    root = Path(data_dir or tempfile.mkdtemp(prefix="medlora-bench-ct-"))
    paths, labels = ct_study_folder(root, n_images)
    configure_threads(None)
    device = resolve_device("cpu")
    t0 = time.perf_counter()
    loader, cfg = _medlora_loader(paths, labels, root, size, batch, model_name, augment=False)
    model = medlora_model("lora", model_name, {**model_kwargs, "img_size": size}, {"blocks": blocks})
    val = _val_batch(size)
    trained = model
    if cached:
        trained, loaders = prefix_loaders(model, {"train": loader.dataset}, lambda ds, shuffle: make_loader(ds, cfg.train, shuffle),
                                          device, augment=False)
        loader = loaders["train"]
        with torch.no_grad():  # the validation batch as tokens too
            val = [{**val[0], "image": prefix_tokens(model, val[0]["image"], trained.depth)}]
    setup_s = time.perf_counter() - t0
    timed = TimedLoader(loader)
    train_cfg = cfg.train.model_copy(update={"epochs": epochs, "patience": epochs, "warmup_epochs": 0})
    fit(trained, timed, val, train_cfg, device, 1, val_metric=lambda p: 0.5)
    per_epoch = _per_epoch(timed, len(loader))
    later = per_epoch[1:] or per_epoch
    return {"impl": f"medlora LoRA blocks {blocks}" + (", frozen prefix cached" if cached else ", on images"),
            "size": size, "batch": batch, "images": n_images, "prefix_depth": frozen_prefix_depth(model),
            "setup_s": setup_s, "epoch_s": sum(e["epoch_s"] for e in later) / len(later), "per_epoch": per_epoch}
