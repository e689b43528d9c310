"""Studies as bags: grouping by study, the bound on training bags, padding, the refusal for 2D-only data."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medlora.train.bags import (
    BagAugment,
    BagBatchSampler,
    BagIndex,
    StudyBags,
    bag_loader,
    collate_bags,
    studies_per_step,
)


class _Samples(torch.utils.data.Dataset):
    """Manifest-like samples (``data``: the items) whose image's first pixel is its own index."""

    def __init__(self, studies: dict[str, int]) -> None:
        self.data = [{"study_key": k, "patient_key": f"p{k}", "sample_id": f"{k}-{i}", "label": int(k == "b"),
                      "image": float(j) + torch.tensor([[[0.0, 0.1], [0.2, 0.3]]])}  # [..., 0, 0]: its index
                     for j, (k, i) in enumerate((k, i) for k, n in studies.items() for i in range(n))]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        return self.data[i]


def test_training_bags_hold_at_most_max_slices_in_slice_order_and_evaluation_bags_all(caplog) -> None:
    samples = _Samples({"a": 10, "b": 3, "c": 1})
    with caplog.at_level(logging.INFO, logger="medlora.train.bags"):
        train = StudyBags(samples, max_slices=4, seed=0, name="train")
    assert sum("max_slices=4" in r.message for r in caplog.records) == 1  # said once
    assert train.sizes() == [10, 3, 1]
    draws = [train[BagIndex(0, draw=epoch)]["image"][:, 0, 0, 0].tolist() for epoch in range(5)]
    assert all(len(d) == 4 and d == sorted(d) and set(d) <= set(range(10)) for d in draws)
    assert len({tuple(d) for d in draws}) > 1  # drawn anew each epoch
    # the draw is a function of the seed, study and epoch key: the same whichever rank or worker reads it
    assert train[BagIndex(0, draw=3)]["image"].equal(train[BagIndex(0, draw=3)]["image"])
    assert len(train[1]["image"]) == 3 and len(train[2]["image"]) == 1  # smaller studies whole; one slice: a bag of one
    evaluation = StudyBags(samples)
    assert evaluation[0]["image"][:, 0, 0, 0].tolist() == list(range(10))
    assert evaluation[1]["label"] == 1 and evaluation[1]["sample_id"] == "b"
    assert evaluation[1]["members"] == ["b-0", "b-1", "b-2"]


def test_collate_pads_shorter_studies_with_nan_slices() -> None:
    bags = StudyBags(_Samples({"a": 3, "b": 1}))
    batch = collate_bags([bags[0], bags[1]])
    assert batch["image"].shape == (2, 3, 1, 2, 2)
    assert torch.isnan(batch["image"][1, 1:]).all() and not torch.isnan(batch["image"][1, 0]).any()
    assert batch["label"].tolist() == [0, 1] and batch["study_key"] == ["a", "b"]


def test_a_training_step_holds_batch_size_worth_of_full_bags() -> None:
    from medlora.config import TrainConfig

    cfg = TrainConfig(batch_size=32)
    assert studies_per_step(cfg, 16) == 2 and studies_per_step(cfg, 64) == 1
    loader = bag_loader(StudyBags(_Samples({"a": 2, "b": 2, "c": 2}), max_slices=2), cfg, True, studies=2)
    assert [len(b["label"]) for b in loader] == [2, 1]


def test_attention_is_refused_when_every_study_is_one_image(tmp_path) -> None:
    from medlora.config import config_from_dict
    from medlora.errors import ConfigError
    from medlora.experiment.study import require_bags

    cfg = config_from_dict({"data": {"name": "xrays", "root": str(tmp_path)},
                            "preprocess": {"view": {"aggregate": "attention"}}})
    with pytest.raises(ConfigError, match="every study of data 'xrays' has one sample.*nothing to pool"):
        require_bags({"train": [1, 1], "val": [1], "test": [1]}, cfg)
    require_bags({"train": [1, 3], "val": [1], "test": [1]}, cfg)  # one study with several images is enough


def test_attention_is_refused_for_one_class_runs_and_allowed_in_sweeps(tmp_path) -> None:
    from medlora.config import config_from_dict
    from medlora.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="pipeline: classify and fewshot, not oneclass"):
        config_from_dict({"pipeline": "oneclass", "data": {"name": "x", "root": str(tmp_path)},
                          "preprocess": {"view": {"aggregate": "attention"}}})
    cfg = config_from_dict({"pipeline": "fewshot", "fewshot": {}, "data": {"name": "x", "root": str(tmp_path)},
                            "preprocess": {"view": {"aggregate": "attention"}}})
    assert cfg.preprocess.view.aggregate == "attention"


def test_study_scores_pass_through_the_attention_aggregation() -> None:
    from medlora.evaluate.aggregate import aggregate_scores

    keys, scores, labels = aggregate_scores(np.array(["s2", "s1", "s2"]), np.array([0.7, 0.2, 0.7]),
                                            np.array([1, 0, 1]), how="attention")
    assert keys.tolist() == ["s1", "s2"] and scores.tolist() == [0.2, 0.7] and labels.tolist() == [0, 1]


def test_two_ranks_hold_the_single_process_bags_slices_and_draws() -> None:
    """Under torchrun each rank takes every other study of a global batch; the studies' slice subsets, their
    augmentation and their dropout masks are those one process gives the same slices."""
    from medlora.models.dropout import SharedMaskDropout, batch_share
    from medlora.train.distributed import Dist

    samples = _Samples({"a": 6, "b": 2, "c": 5, "d": 1, "e": 7, "f": 3})
    bags = StudyBags(samples, max_slices=4, seed=3)

    def epochs(dist: Dist) -> list[list[dict]]:
        sampler = BagBatchSampler(bags.bag_sizes(), 4, dist, torch.Generator().manual_seed(7))
        return [[collate_bags([bags[i] for i in batch]) for batch in sampler] for _ in range(2)]

    one, ranks = epochs(Dist()), [epochs(Dist(r, 2)) for r in range(2)]
    for e in range(2):
        for b, whole in enumerate(one[e]):
            parts = [ranks[r][e][b] for r in range(2)]
            assert sorted(whole["study_key"]) == sorted(parts[0]["study_key"] + parts[1]["study_key"])
            assert whole["share"].total == parts[0]["share"].total == parts[1]["share"].total
            augment = {r: BagAugment(seed=1)(p["image"], p["share"]) for r, p in enumerate(parts)}
            single = BagAugment(seed=1)(whole["image"], whole["share"])
            for r, p in enumerate(parts):  # study by study: the same slices, moved the same way
                for s, key in enumerate(p["study_key"]):
                    w = whole["study_key"].index(key)
                    n = len(p["members"][s])
                    assert p["members"][s] == whole["members"][w]
                    torch.testing.assert_close(augment[r][s, :n], single[w, :n])
            drop = SharedMaskDropout(0.5).train()
            real = {r: p["image"][~torch.isnan(p["image"].flatten(2)).any(-1)].flatten(1) for r, p in enumerate(parts)}
            torch.manual_seed(0)
            full = drop(torch.ones(whole["share"].total, real[0].shape[1]))
            for r, p in enumerate(parts):
                torch.manual_seed(0)
                with batch_share(r, 2, 2, rows=p["share"].rows, rows_total=p["share"].total):
                    torch.testing.assert_close(drop(torch.ones_like(real[r])), full[p["share"].rows])


def test_a_global_batch_with_fewer_studies_than_processes_is_refused() -> None:
    from medlora.config import TrainConfig
    from medlora.errors import ConfigError
    from medlora.train.distributed import Dist

    with pytest.raises(ConfigError, match=r"global batch of 1 studies .* 2 processes"):
        bag_loader(StudyBags(_Samples({"a": 3, "b": 2})), TrainConfig(batch_size=4), True, 1, Dist(0, 2))
