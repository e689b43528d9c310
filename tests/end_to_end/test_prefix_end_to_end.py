"""``medlora run`` with LoRA on the last block and no augmentation trains above cached prefix tokens,
and the exported adapter, loaded the plain timm + peft way on images, gives the same test scores."""

import logging

import numpy as np


def test_upper_block_lora_trains_on_cached_tokens_and_exports_the_same_model(phantom_root, tmp_path, tiny_cfg,
                                                                            plain_reload_scores, caplog):
    from pipelines.classify import run

    cfg = tiny_cfg(phantom_root, tmp_path, **{"model.lora.blocks": "[-1]", "preprocess.augment": "false",
                                             "train.epochs": 3, "train.patience": 3, "evaluate.bootstrap": 20})
    with caplog.at_level(logging.INFO, logger="medlora.train.features"):
        summary = run(cfg, tmp_path / "out")
    assert any("training starts at block 1" in r.getMessage() for r in caplog.records)
    assert 0.0 <= summary.metrics["test_auroc"] <= 1.0
    scores, expected = plain_reload_scores(tmp_path / "out", cfg)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
