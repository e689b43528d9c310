"""A sweep's LoRA points trained together over one frozen base (``fewshot.together: on``, and ``auto``, the
default, on CUDA).

The local executor hands this module every LoRA point still to run. Points whose resolved configs
differ only in the seed (the same base, preprocessing, LoRA and training settings) form groups of at
most ``fewshot.group_size``; each group trains in one :class:`~medlora.models.multi_lora.MultiLora`
(:func:`~medlora.train.together.fit_together`), each point with its own support set, batches,
optimiser, schedule and early stopping, initialised exactly as it would be alone
(:meth:`.workbench.Workbench.model_for`). Then each point's trained adapter is written back into its
own peft model and evaluated and logged as its own child run, by the same code a point trained alone
goes through (:func:`.child.log_trained_child`); the test set is scored for all the group's points in one
pass, as the validation set is every epoch. A kill loses the group's training; the points of the
group are not FINISHED, so the next run of the sweep trains them again (finished ones are skipped).

What cannot train together runs alone, as before: LoRA on frozen-prefix tokens (``model.lora.blocks``
without augmentation: already cheap), study-level points (``aggregate: attention``), ``train.head_norm:
true``, DoRA and whatever :class:`~medlora.models.multi_lora.TogetherUnsupported` names; a group of one;
``fewshot.together: off``, and ``auto`` on a CPU: there one point's batch already keeps the cores busy and
N points together cost what N points cost one by one (measured 0.88x and 1.15x end to end on two 2-core
CPUs, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import Config
from ..device import resolve_device
from ..errors import MedloraError, TrackingUnavailableError
from ..experiment.train_eval import abnormal_index, train_findings, val_metric
from ..models.multi_lora import MultiLora, TogetherUnsupported, adapter_weights
from ..models.prefix import frozen_prefix_depth
from ..tracking import tags as T
from ..train.head import head_for
from ..train.inference import Predictions
from ..train.support import draw_support
from ..train.together import PointRun, fit_together, predict_together
from ..transforms.augment import BatchAugment
from .child import log_trained_child
from .points import SweepPoint
from .workbench import Workbench

log = logging.getLogger(__name__)
Todo = list[tuple[SweepPoint, Config, str]]


def _why_alone(cfg: Config) -> str | None:
    """Why a LoRA point of ``cfg`` trains alone, or ``None``."""
    if cfg.preprocess.view.aggregate == "attention":
        return "preprocess.view.aggregate: attention (trained on bags of studies)"
    if cfg.model.lora.use_dora:
        return "model.lora.use_dora"
    if cfg.train.head_norm is True:
        return "train.head_norm: true"
    if cfg.model.lora.blocks is not None and not cfg.preprocess.augment:
        return "model.lora.blocks without augmentation (frozen-prefix tokens)"
    return None


def _group_key(cfg: Config) -> str:
    dumped = cfg.model_dump(mode="json")
    dumped["train"].pop("seed")
    return json.dumps(dumped, sort_keys=True, default=str)


def plan_groups(cfg: Config, todo: Todo) -> tuple[list[Todo], Todo]:
    """``(groups, alone)``: the LoRA points of ``todo`` that train together, in groups of at most
    ``fewshot.group_size`` points of one training config, and every other point, in ``todo``'s order."""
    fewshot = cfg.fewshot
    if fewshot is None or fewshot.together == "off":
        return [], list(todo)
    if fewshot.together == "auto" and (device := resolve_device(cfg.train.device)).type != "cuda":
        if any(point.method == "lora" for point, _, _ in todo):
            log.info("fewshot.together: auto trains the LoRA points one by one on %s (together they measured "
                     "0.88-1.15x on CPUs); fewshot.together: on trains them together anyway", device.type)
        return [], list(todo)
    by_key: dict[str, Todo] = {}
    alone: Todo = []
    for item in todo:
        point, pcfg, _ = item
        why = _why_alone(pcfg) if point.method == "lora" else "not LoRA"
        if why is None:
            by_key.setdefault(_group_key(pcfg), []).append(item)
        else:
            if point.method == "lora":
                log.info("LoRA point %s trains alone: %s", point.name, why)
            alone.append(item)
    groups: list[Todo] = []
    for items in by_key.values():
        # points of similar size together: a group's step count is its largest point's
        items = sorted(items, key=lambda t: (str(t[0].shots) != "all", -_shots(t[0])))
        chunks = [items[i: i + fewshot.group_size] for i in range(0, len(items), fewshot.group_size)]
        groups += [c for c in chunks if len(c) > 1]
        alone += [c[0] for c in chunks if len(c) == 1]
    order = {id(item): i for i, item in enumerate(todo)}
    return groups, sorted(alone, key=lambda item: order[id(item)])


def _shots(point: SweepPoint) -> int:
    return 0 if point.shots == "all" else int(point.shots)


def run_group(bench: Workbench, group: Todo, tags: dict[str, str], out: Path,
              dataset: Any | None = None) -> tuple[int, list[str], Todo]:
    """Train ``group`` together, then evaluate and log each point as its child run;
    ``(trained, failed names, points to run alone instead)``."""
    device = bench.device
    try:
        multi, runs, supports = _build(bench, group)
    except TogetherUnsupported as err:
        log.info("these %d LoRA points train one by one: %s", len(group), err)
        return 0, [], group
    log.info("training %d LoRA points together: %s", len(group), ", ".join(p.name for p, _, _ in group))
    cfg0 = group[0][1]
    val_loader = bench.loaders(cfg0, group[0][0], supports[0])["val"]
    try:
        results = fit_together(multi.to(device), runs, val_loader, device, abnormal_index(cfg0),
                               val_metric(cfg0, runs[0].head), cfg0.train.precision)
    except TrackingUnavailableError:
        raise
    except MedloraError as err:  # e.g. a validation split that cannot be scored: each point then fails alone
        log.error("training %d LoRA points together failed (%s); they run one by one", len(group), err)
        return 0, [], group
    tests = _score_test(bench, multi, runs, group, supports)
    ran, failed = 0, []
    for i, ((point, pcfg, phash), support, result) in enumerate(zip(group, supports, results, strict=True)):
        model = multi.write_back(i, bench.model_for(pcfg, point))
        try:
            log_trained_child(bench, pcfg, point, support, model, result, runs[i].head,
                              {**tags, T.POINT_HASH: phash, T.TOGETHER: str(len(group))},
                              out / "children" / point.name, dataset=dataset, test=tests[i])
            ran += 1
        except TrackingUnavailableError:
            raise
        except MedloraError as err:  # this point cannot be measured (e.g. one class); the others can
            log.error("child %s failed: %s", point.name, err)
            failed.append(point.name)
    multi.to("cpu")
    return ran, failed, []


def _score_test(bench: Workbench, multi: MultiLora, runs: list[PointRun], group: Todo,
                supports: list[Any]) -> list[Predictions]:
    """Every point's test predictions in one pass (each with its restored best adapter and head), as
    scoring each point alone would give them to float rounding."""
    cfg0 = group[0][1]
    test_loader = bench.loaders(cfg0, group[0][0], supports[0])["test"]
    return predict_together(multi, test_loader, bench.device, abnormal_index(cfg0), [r.head for r in runs],
                            list(range(len(runs))))


def _build(bench: Workbench, group: Todo) -> tuple[MultiLora, list[PointRun], list[Any]]:
    """The group's MultiLora (each point initialised as alone) and each point's run and support set."""
    weights, runs, supports = [], [], []
    for point, pcfg, _ in group:
        model = bench.model_for(pcfg, point)
        if frozen_prefix_depth(model) and not pcfg.preprocess.augment:
            raise TogetherUnsupported("the points train above frozen blocks, on cached tokens")
        weights.append(adapter_weights(model))
        del model
        support = draw_support(bench.train_frame, point.shots, point.seed, names=pcfg.data.outputs)
        train = bench.loaders(pcfg, point, support)["train"]
        head = head_for(pcfg, train_findings(train) if pcfg.train.pos_weight else None)
        augment = BatchAugment(seed=pcfg.train.seed) if pcfg.preprocess.augment else None
        runs.append(PointRun(train, pcfg.train, head, augment, point.seed))
        supports.append(support)
    return MultiLora(bench.base, weights), runs, supports
