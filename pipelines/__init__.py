"""Runnable pipelines, one module per kind of study. Each only wires library stages together.

A config names its pipeline (``pipeline: classify``); :data:`medlora.registry.PIPELINES` maps the
name to its module here, and ``medlora run`` calls that module's ``run(cfg, out)``.
"""
