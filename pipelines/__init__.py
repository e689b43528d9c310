"""Runnable pipelines, one module per kind of study. Each only wires library stages together.

A config names its pipeline (``pipeline: classify``); ``medlora run`` imports
``pipelines.<name>`` and calls its ``run(cfg, out)``.
"""
