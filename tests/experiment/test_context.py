"""Every run kind starts the same way: the tracking store is configured and checked once per run."""


def test_the_store_is_checked_once_per_run(phantom_root, tmp_path, tiny_cfg, monkeypatch):
    """A single run (which used to check it when configuring and again when opening its MLflow run)."""
    from medlora.tracking import store
    from pipelines import PIPELINES

    calls = []
    real = store.check_store
    monkeypatch.setattr(store, "check_store", lambda uri, *a, **k: (calls.append(uri), real(uri, *a, **k))[1])
    cfg = tiny_cfg(phantom_root, tmp_path, **{"train.epochs": 1})
    summary = PIPELINES["classify"](cfg, tmp_path / "out")
    assert summary.run_id and calls == [cfg.tracking.uri]


def test_start_names_the_experiment_and_resolves_device_and_threads(phantom_root, tmp_path, tiny_cfg):
    import torch

    from medlora.experiment.context import start

    cfg = tiny_cfg(phantom_root, tmp_path, **{"tracking.experiment": "ctx", "train.device": "cpu", "train.threads": 1})
    ctx = start(cfg, tmp_path / "out")
    assert (ctx.experiment, ctx.device, ctx.uri) == ("ctx", torch.device("cpu"), cfg.tracking.uri)
    assert torch.get_num_threads() == 1 and len(ctx.data.split("train")) > 0
