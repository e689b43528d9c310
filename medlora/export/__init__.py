"""Exports: peft adapters with the metadata that pins their base and preprocessing."""
