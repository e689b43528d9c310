"""Orchestration of one run: its start (:mod:`.context`), a single run, one-class, pretraining, resuming
them; the layer that ties training, evaluation, tracking and export together. Sweeps are a stage above
(:mod:`medlora.sweep`); pipelines under ``pipelines/`` call into both."""
