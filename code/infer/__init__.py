"""Inference (code/inference.py), one job per module, in the order a run meets them: options (the command line),
planning (the run's Plan, made of typed parts; sharing videos among torchrun's processes) and checks (each check of
the plan), settings (the one record of the run's settings: the log's header and results.json's), run (a whole run,
alone or shared), staging (outputs committed as a whole), progress (the finished videos recorded for --resume),
pipeline (the overlapped execution of a video), inputs (a video's frames as the runner takes them), reader (reading
ahead), conversion (frames to tensors and back), runners (each video's runner), outputs (an output's way to the
disk and the report), transfer (host and device copies that do not wait), workers (writing and scoring beside the
model), report (the log and results.json), ranks (torchrun's processes)."""
