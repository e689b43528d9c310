"""Orchestration: one run, a few-shot sweep, resuming them; the layer that ties training,
evaluation, tracking and export together. Pipelines under ``pipelines/`` call into it."""
