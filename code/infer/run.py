"""A whole run: load the model, write the log's header, restore this process's videos, report.

Alone (`run_alone`), each frame's line is logged as the frame completes. Under torchrun (`run_shared`) every process
makes the same plan and restores its share of the videos (`planning.shard`); at the end every process hands its
results, or its error, to the others, and rank 0 writes one log and one results.json, those of a run in one
process. Whatever fails in a process, it still takes part in that exchange, so no process waits forever.

Every output is written into a staging folder (infer/staging.py) and committed as a whole when the run succeeds:
an earlier run's results in the same place stay untouched until then. Rank 0 makes the staging folder and tells
the others where it is; it commits, or removes it if any process failed.
"""

import argparse
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from infer.pipeline import Pipeline
from infer.planning import N_SEQUENCE, SIZE_MULTIPLE, Job, Plan, make_demo_data, make_plan, shard
from infer.ranks import ProcessGroup
from infer.report import Report, Results, RunLog, merge, write_header, write_summary, write_videos
from infer.staging import Staging
from model.cdvd_tsp import CDVD_TSP
from model.checkpoint import load_weights
from model.correlation import SELECTOR
from utils.atomic import writing
from utils.distributed import Ranks
from utils.errors import EXIT_USER_ERROR, UserError
from utils.precision import tf32_switched
from utils.showcase import ShowcaseWriter

logger = logging.getLogger(__name__)


def load_model(path: Path, device: torch.device) -> CDVD_TSP:
    model = CDVD_TSP(n_sequence=N_SEQUENCE)
    load_weights(model, path)
    return model.to(device).eval()


def device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def run_settings(plan: Plan, processes: int) -> dict[str, object]:
    """The run's settings as results.json records them (JSON values): speed, how the dataset was read, the
    metrics' convention, self-ensemble and tiles."""
    return {
        "precision": plan.precision.name,
        "cuda_graphs": plan.cuda_graphs,
        "compile": plan.compile,
        "workers": plan.workers,
        "runner": plan.runner,
        "device": device_name(plan.device),
        "processes": processes,
        **plan.dataset,
        "metric_channel": plan.metric_channel,
        "crop_border": plan.crop_border,
        "self_ensemble": plan.self_ensemble,
        "tile": plan.tile,
        "tile_overlap": plan.tile_overlap if plan.tile is not None else None,
    }


ENSEMBLE_TEXT = {
    None: "off",
    "x8": "x8 (the 8 flips and transpositions of every frame: 8x the model's time)",
    "x16": "x16 (the 8 flips and transpositions, forwards and backwards in time: 16x the model's time)",
}


def header(plan: Plan, processes: int) -> dict[str, object]:
    """The settings at the head of the log: the release's (``device`` as it writes it: the device's type), then
    ours (report.write_header writes them as extra lines)."""
    settings = run_settings(plan, processes)
    return {
        **plan.settings,
        "model_path": plan.model_path,
        "border": plan.border,
        "n_seq": N_SEQUENCE,
        "size_must_mode": SIZE_MULTIPLE,
        "device": plan.device.type,
        "device_name": settings["device"],
        "runner": "window (every window from scratch)" if plan.window else "streaming",
        **plan.dataset,
        "metric_channel": plan.metric_channel,
        "crop_border": plan.crop_border,
        "self_ensemble": ENSEMBLE_TEXT[plan.self_ensemble],
        "tile": "off" if plan.tile is None else f"{plan.tile} (overlap {plan.tile_overlap})",
        **{name: settings[name] for name in ("precision", "cuda_graphs", "compile", "workers", "processes")},
    }


@contextlib.contextmanager
def on_device(plan: Plan) -> Iterator[None]:
    """The run's device as this process's current one, with the precision's TF32 switch (CUDA)."""
    if plan.device.type != "cuda":
        yield
        return
    torch.cuda.set_device(plan.device)
    with tf32_switched(plan.precision.tf32):
        yield


def restore(plan: Plan, model: CDVD_TSP, jobs: list[Job], report: Report, progress: bool = True) -> None:
    """Restore ``jobs``, reporting every output in order; each video is finished when its showcase is written."""
    showcase = ShowcaseWriter(plan.showcase_dir) if plan.showcase_dir is not None else None

    def finished(name: str) -> None:
        if showcase is not None:
            with writing(showcase.folder):
                showcase.finish_video(name)
        report.video_finished(name)

    with on_device(plan), torch.inference_mode(), Pipeline(model, plan, report, progress) as pipeline:
        for job in jobs:
            pipeline.video(job, showcase, functools.partial(finished, job.source.name))


def open_log(plan: Plan, processes: int) -> RunLog:
    with writing(plan.report_dir):
        plan.report_dir.mkdir(parents=True, exist_ok=True)
        log = RunLog(plan.report_dir, plan.log_prefix)
    write_header(log, header(plan, processes), plan.model_path)
    return log


def cost_volume_code(device: torch.device) -> str:
    """Which code computed the cost volumes (known once the run has computed some)."""
    return SELECTOR.describe() if device.type == "cuda" else "PyTorch"


def begin_staging(plan: Plan) -> Staging:
    """The staging folder of this run (rank 0 only); refuses files that are no earlier run's outputs."""
    with writing(plan.results_path.parent):
        return Staging.begin(plan.results_path, plan.outputs, plan.option)


def staged(plan: Plan, staging: Staging) -> Plan:
    """``plan`` with every output (frames, video, showcase, results.json) in the staging folder; the log stays."""

    def stage(path: Path | None) -> Path | None:
        return None if path is None else staging.stage(path)

    jobs = [
        dataclasses.replace(job, frames_dir=stage(job.frames_dir), video_out=stage(job.video_out)) for job in plan.jobs
    ]
    return dataclasses.replace(
        plan, jobs=jobs, showcase_dir=stage(plan.showcase_dir), results_path=staging.stage(plan.results_path)
    )


def finish_report(
    log: RunLog, results: Results, finished: list[str], plan: Plan, processes: int, staging: Staging
) -> None:
    """The log's video and total lines, then results.json and the run's outputs committed into place."""
    write_summary(log, results, finished, complete=True)
    settings = {**run_settings(plan, processes), "cost_volume": cost_volume_code(plan.device)}
    with writing(plan.results_path):
        staging.commit(results.to_json(settings))


@contextlib.contextmanager
def discarded_on_failure(staging: Staging) -> Iterator[None]:
    """Remove the staging folder if the run fails (a committed one is left to be finished by the next run)."""
    try:
        yield
    except BaseException:
        staging.discard()
        raise


def run_alone(args: argparse.Namespace) -> None:
    """The run in this process only."""
    make_demo_data(args)
    plan = make_plan(args)
    model = load_model(plan.model_path, plan.device)
    staging = begin_staging(plan)
    with discarded_on_failure(staging), open_log(plan, 1) as log:
        report = Report(log)
        try:
            staged_plan = staged(plan, staging)
            restore(staged_plan, model, staged_plan.jobs, report)
        except UserError as error:
            with contextlib.suppress(UserError):  # the error in flight is the one to report
                write_summary(log, report.results, report.finished, complete=False)
            log.write_error(f"error: {error}")
            raise
        try:
            finish_report(log, report.results, report.finished, plan, 1, staging)
        except UserError as error:
            log.write_error(f"error: {error}")
            raise


@dataclass(frozen=True)
class Outcome:
    """What a process hands to the others at the end: its results, the videos it finished, or its error."""

    results: Results
    finished: list[str]
    error: str | None


def describe(error: Exception, rank: int) -> str:
    """An error as one line: a `UserError`'s own message, anything else named with its process."""
    if isinstance(error, UserError):
        return str(error)
    logger.exception("process %d failed", rank)
    return f"process {rank} failed: {type(error).__name__}: {error}"


def run_shared(args: argparse.Namespace, ranks: Ranks) -> int:
    """This process's share of a torchrun run; returns the exit status (rank 0 raises the run's error)."""
    group = ProcessGroup(ranks)
    failure: Exception | None = None
    if ranks.is_main:
        try:
            make_demo_data(args)
        except Exception as error:  # reported with the others' outcomes, below
            failure = error
    group.barrier()  # the demo data exists before anyone plans

    report: Report = Report()
    log: RunLog | None = None
    plan: Plan | None = None
    staging: Staging | None = None
    try:
        if failure is not None:
            raise failure
        plan = make_plan(args, ranks.local_rank)
        model = load_model(plan.model_path, plan.device)
        if ranks.is_main:
            staging = begin_staging(plan)
    except Exception as error:  # every process must reach the exchanges below, whatever went wrong
        failure = error
    token = group.broadcast(None if staging is None else staging.token)  # where rank 0 put the staging folder
    try:
        if failure is not None:
            raise failure
        if plan is not None and token is not None:  # without a token rank 0 failed: its error is reported below
            staging = staging or Staging.join(plan.results_path, token)
            jobs = staged(plan, staging).jobs
            mine = [jobs[index] for index in shard(plan.jobs, ranks.world_size)[ranks.rank]]
            if ranks.is_main:
                log = open_log(plan, ranks.world_size)
            restore(staged(plan, staging), model, mine, report, progress=ranks.is_main)
    except Exception as error:  # every process must reach the exchange below, whatever went wrong
        failure = error
    outcomes: list[Outcome] = group.all_gather(
        Outcome(report.results, report.finished, None if failure is None else describe(failure, ranks.rank))
    )
    errors = [outcome.error for outcome in outcomes if outcome.error is not None]
    if not ranks.is_main:
        return EXIT_USER_ERROR if errors else 0

    if staging is None:  # rank 0 failed before it began (so errors holds its error)
        raise UserError(errors[0])
    with discarded_on_failure(staging):
        if log is not None and plan is not None:  # rank 0 planned: every process's lines, in the plan's order
            with log:
                order = [job.source.name for job in plan.jobs]
                results = merge([outcome.results for outcome in outcomes], order)
                write_videos(log, results)
                finished = [name for outcome in outcomes for name in outcome.finished]
                if errors:
                    with contextlib.suppress(UserError):  # the error in flight is the one to report
                        write_summary(log, results, finished, complete=False)
                    log.write_error(f"error: {errors[0]}")
                else:
                    try:
                        finish_report(log, results, finished, plan, ranks.world_size, staging)
                    except UserError as error:
                        log.write_error(f"error: {error}")
                        raise
        if errors:
            raise UserError(errors[0])
    return 0


def run(args: argparse.Namespace) -> int:
    """The run this process is part of: alone, or one of torchrun's processes."""
    ranks = Ranks.from_environment()
    if not ranks.distributed:
        run_alone(args)
        return 0
    return run_shared(args, ranks)
