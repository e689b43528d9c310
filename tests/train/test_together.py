"""LoRA points trained together over one base equal the same points trained alone (fp32, 1e-5 relative).

Three points of a tiny ViT (different shots and seeds, one with patience 1 so that it stops early,
one with fewer epochs), augmentation on and LoRA dropout 0.1: per-epoch training losses, validation
AUROCs, best epochs, early stopping, final adapter and head tensors and test scores are compared with
:func:`medlora.train.loop.fit` run on each point alone, as the sweep runs it.
"""

import copy

import numpy as np
import pytest
import torch

from medlora.models.multi_lora import MultiLora, adapter_weights
from medlora.sweep.points import SweepPoint

RTOL = 1e-5

POINTS = [SweepPoint("lora", 2, 0), SweepPoint("lora", 5, 1), SweepPoint("lora", "all", 2)]
TRAIN = [{"patience": 1}, {}, {"epochs": 3}]  # point 0 may stop early; point 2 has fewer epochs


@pytest.fixture(scope="module")
def bench(phantom_root, tiny_cfg, tmp_path_factory):
    from medlora.io.prepare import prepare_dataset
    from medlora.sweep.workbench import Workbench

    tmp = tmp_path_factory.mktemp("together")
    cfg = tiny_cfg(phantom_root, tmp, **{"train.epochs": 5, "train.threads": 1, "train.patience": 5,
                                         "train.lr": 0.01, "train.warmup_epochs": 0.5,
                                         "train.precision": "fp32"})  # fp32 on CUDA too (auto: bf16 there)
    data = prepare_dataset(cfg.data)
    return cfg, Workbench(cfg, data, tmp / "out")


def point_setup(bench_pair, i):
    from medlora.experiment.train_eval import abnormal_index, val_metric
    from medlora.sweep.points import point_config
    from medlora.train.head import head_for
    from medlora.train.support import draw_support

    cfg, bench = bench_pair
    point = POINTS[i]
    pcfg = point_config(cfg, point)
    pcfg = pcfg.model_copy(update={"train": pcfg.train.model_copy(update=TRAIN[i])})
    support = draw_support(bench.train_frame, point.shots, point.seed)
    head = head_for(pcfg)
    return pcfg, point, support, head, abnormal_index(pcfg), val_metric(pcfg, head)


def alone(bench_pair, i):
    """The point as the sweep trains it alone: fresh model, torch.manual_seed(seed), fit."""
    from medlora.models.lora import for_inference
    from medlora.train.inference import predict
    from medlora.train.loop import fit
    from medlora.transforms.augment import BatchAugment

    _, bench = bench_pair
    pcfg, point, support, head, abnormal, metric = point_setup(bench_pair, i)
    model = bench.model_for(pcfg, point)
    loaders = bench.loaders(pcfg, point, support)
    torch.manual_seed(point.seed)
    result = fit(model, loaders["train"], loaders["val"], pcfg.train, bench.device, abnormal, metric,
                 augment=BatchAugment(seed=pcfg.train.seed), head=head)
    test = predict(for_inference(model), loaders["test"], bench.device, abnormal, head, autocast=False)
    return model, result, test


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module", params=["loop", "bmm"])
def compared(request, bench):
    from medlora.models.lora import for_inference
    from medlora.train.inference import predict
    from medlora.train.together import PointRun, fit_together
    from medlora.transforms.augment import BatchAugment

    cfg, wb = bench
    setups = [point_setup(bench, i) for i in range(len(POINTS))]
    weights, runs = [], []
    for pcfg, point, support, head, _, _ in setups:
        weights.append(adapter_weights(wb.model_for(pcfg, point)))
        train = wb.loaders(pcfg, point, support)["train"]
        runs.append(PointRun(train, pcfg.train, head, BatchAugment(seed=pcfg.train.seed), point.seed))
    multi = MultiLora(wb.base, weights, kernel=request.param)
    _, _, support0, head0, abnormal, metric = setups[0]
    val_loader = wb.loaders(setups[0][0], POINTS[0], support0)["val"]
    results = fit_together(multi, runs, val_loader, wb.device, abnormal, metric, precision="fp32")
    together = []
    for i, (pcfg, point, support, head, _, _) in enumerate(setups):
        model = multi.write_back(i, wb.model_for(pcfg, point))
        test = predict(for_inference(model), wb.loaders(pcfg, point, support)["test"], wb.device, abnormal, head,
                       autocast=False)
        together.append((model, results[i], test))
    return [alone(bench, i) for i in range(len(POINTS))], together, wb


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))


def test_histories_and_early_stopping_are_those_of_each_point_alone(compared):
    solo, together, _ = compared
    stops = []
    for (_, a, _), (_, b, _) in zip(solo, together, strict=True):
        assert len(a.history) == len(b.history)
        assert rel([e.train_loss for e in a.history], [e.train_loss for e in b.history]) < RTOL
        assert rel([e.val_loss for e in a.history], [e.val_loss for e in b.history]) < RTOL
        assert [e.val_auroc for e in a.history] == pytest.approx([e.val_auroc for e in b.history], rel=RTOL)
        assert [e.lr for e in a.history] == pytest.approx([e.lr for e in b.history], rel=1e-12)
        assert (a.best_epoch, a.stopped_early) == (b.best_epoch, b.stopped_early)
        stops.append(a.stopped_early)
    assert [len(a.history) for _, a, _ in solo] != [5, 5, 5]  # an early stop or fewer epochs shortened one
    assert len(solo[2][1].history) == 3


def test_adapters_and_test_scores_are_those_of_each_point_alone(compared):
    solo, together, _ = compared
    for (ma, _, ta), (mb, _, tb) in zip(solo, together, strict=True):
        wa, wb_ = trainable(ma), trainable(mb)
        assert set(wa) == set(wb_) and any("lora_A" in n for n in wa) and any("modules_to_save" in n for n in wa)
        for name in wa:
            assert rel(wa[name], wb_[name]) < RTOL, name
        assert rel(ta.score, tb.score) < RTOL
        assert not torch.equal(wa[next(n for n in wa if "lora_B" in n)], torch.zeros(1))  # B trained away from 0


def test_a_written_back_adapter_reloads_with_plain_peft(compared, tmp_path):
    from peft import PeftModel

    _, together, wb = compared
    model, _, _ = together[1]
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(copy.deepcopy(wb.base), str(tmp_path / "adapter")).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), model.eval()(x), rtol=1e-5, atol=1e-6)
