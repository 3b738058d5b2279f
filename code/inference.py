"""Evaluate CDVD-TSP on a dataset like the release, or deblur a folder of frames or a video file.

Evaluation (the release's flags): ``python code/inference.py --default_data DVD`` deblurs every video of
``dataset/DVD/test/blur`` with ``pretrain_models/CDVD_TSP_DVD_Convergent.pt``, scores it against ``gt/`` by the
protocol (docs/faithfulness.md, section 9 "Evaluation protocol") and writes frames, a log and ``results.json`` to
``infer_results/DVD``.
Other dataset layouts (GOPRO_Large, DVD's quantitative_datasets, BSD) are detected or named with ``--layout``;
``--self_ensemble``, ``--tile``, ``--metric_channel``, ``--crop_border`` and ``--border_mode`` are the field's
evaluation variants. The model has the number of stages its checkpoint records (``--n_stages`` for files without
the record, such as the released ones: 2).
Deblurring only: ``python code/inference.py --input my_frames/ --output deblurred/`` (or a video file in and out).
Several GPUs: ``torchrun --nproc_per_node N code/inference.py ...`` shares the videos among N processes.

``--threads`` and ``--deterministic`` are process-wide switches, set here for the run (infer/switches.py); the
OpenMP threads' passive wait policy is set first of all, before torch loads (utils/openmp.py).
Everything that can be checked is checked before any output is written (infer/planning.py, infer/checks.py,
infer/execution.py); the frames are read, restored, written and scored in an overlapped pipeline (infer/pipeline.py);
docs/inference.md has the details and a map of infer/.
"""

from cdvd_tsp.utils.openmp import prefer_passive_waiting

prefer_passive_waiting()  # before anything loads torch: libgomp reads its wait policy once, when it is loaded

import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from cdvd_tsp.infer.options import parse_args  # noqa: E402
from cdvd_tsp.infer.run import run  # noqa: E402
from cdvd_tsp.infer.switches import run_switches  # noqa: E402
from cdvd_tsp.utils.errors import run_cli  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = parse_args(argv)
    with run_switches(args.threads, args.deterministic):  # process-wide, before any CUDA work; put back after
        return run(args)


def cli() -> None:
    """The installed command (``cdvd-tsp-infer``): inference.py as from a clone."""
    run_cli(main)


if __name__ == "__main__":
    cli()
