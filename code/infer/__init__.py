"""Inference (code/inference.py), one job per module: options (the command line), planning (every check, the
videos and settings, sharing videos among torchrun's processes), run (a whole run, alone or shared), pipeline (the
overlapped execution of a video), reader (reading ahead), workers (writing and scoring beside the model),
transfer (host and device copies that do not wait), ranks (torchrun's processes), report (the log and
results.json)."""
