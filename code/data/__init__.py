"""Data: dataset-form readers, frame and video I/O, the blur synthesizer."""
