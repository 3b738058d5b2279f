"""Kept only so that test files not yet moved to ``from conftest import ...`` still import: everything here lives in
tests/conftest.py (the one home of shared test helpers and fixtures). New code imports from conftest."""

from conftest import blurred, make_dataset, save_seeded_weights, seeded_model, sharp_frames, single_thread, write_image

__all__ = [
    "blurred",
    "make_dataset",
    "save_seeded_weights",
    "seeded_model",
    "sharp_frames",
    "single_thread",
    "write_image",
]
