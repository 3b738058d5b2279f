"""A whole run: load the model (infer/restorer.py), write the log's header, restore this process's videos, report.

One path for every run (`run_in_group`): a process alone is a group of one (utils/runtime.py), whose exchanges are
identities. Under torchrun every process makes the same plan and restores its share of the videos
(`planning.shard`); at the end every process hands its results, or its error, to the others, and rank 0 writes one
log and one results.json, those of a run in one process. Whatever fails in a process, it still takes part in that
exchange, so no process waits forever. Alone, each frame's line is logged as the frame completes.

Every output is written into a staging folder (infer/staging.py) and committed as a whole when the run succeeds:
an earlier run's results in the same place stay untouched until then. Rank 0 makes the staging folder and tells
the others where it is; it commits, or, if any process failed, keeps it for ``--resume`` when it holds finished
videos and removes it otherwise.

Each finished video is recorded in the staging folder by the process that restored it (infer/progress.py). With
``--resume`` a stopped run of the same settings is continued: the videos it finished are not restored again but
reported from their records where they come in the plan (`restore`); under torchrun the others are shared out
anew among the processes.

Stop signals (`run`): SIGTERM and SIGUSR1 (utils/signals.py, `STOP_SIGNALS`) stop a run as Ctrl-C does: they raise
`Interrupted` (a ``KeyboardInterrupt``) in the main thread, the readers and workers are stopped, the finished
videos are kept for ``--resume``, the log says which signal stopped the run, and the command exits with 128 + the
signal's number (`utils.errors.run_cli`). Once the videos are done (rank 0 waiting for the others, the report,
the commit) a stop signal or Ctrl-C is held back (`held_stops`) and honoured when the run is committed, so that
a commit is never cut short: the results are then complete and in place, and the command still exits with the
signal's status. Under torchrun, which forwards SIGTERM to every process, a process stopped by a signal takes
part in the final exchange as a failed one does; rank 0 keeps what every process finished.
"""

import argparse
import atexit
import contextlib
import dataclasses
import datetime
import itertools
import logging
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from cdvd_tsp.data.demo import make_demo_data
from cdvd_tsp.infer.pipeline import Pipeline
from cdvd_tsp.infer.planning import CLAIM_NAME, SHOWCASE_DIR, Job, Plan, demo_folders, make_plan, shard
from cdvd_tsp.infer.progress import Recorder, RunRecord, planned_videos
from cdvd_tsp.infer.report import (
    EXTRA,
    Report,
    Results,
    RunLog,
    VideoResults,
    merge,
    open_log,
    stopped_line,
    write_summary,
    write_videos,
)
from cdvd_tsp.infer.restorer import Restorer, on_device
from cdvd_tsp.infer.settings import RunSettings, cost_volume_code, run_settings
from cdvd_tsp.infer.staging import Staging
from cdvd_tsp.utils import atomic
from cdvd_tsp.utils.atomic import writing
from cdvd_tsp.utils.cli import rerun_command
from cdvd_tsp.utils.errors import EXIT_USER_ERROR, UserError
from cdvd_tsp.utils.runtime import Ranks, Runtime, join
from cdvd_tsp.utils.signals import STOP_SIGNALS, Interrupted, StopRequests, exit_status, signal_name

logger = logging.getLogger(__name__)


def restore(
    plan: Plan,
    restorer: Restorer,
    jobs: list[Job],
    report: Report,
    progress: bool = True,
    kept: Mapping[str, VideoResults] | None = None,
) -> None:
    """Restore ``jobs``, reporting every output and the end of every video in order; a video in ``kept`` (finished
    by an earlier start of a resumed run) is reported from its record where it comes, not restored."""
    kept = kept or {}
    with on_device(plan.execution), torch.inference_mode():
        for finished, group in itertools.groupby(jobs, key=lambda job: job.source.name in kept):
            if finished:
                for job in group:
                    report.keep(job.source.name, kept[job.source.name])
                continue
            jobs_to_restore = list(group)
            with Pipeline(restorer, plan, report, progress) as pipeline:
                pipeline.expect(jobs_to_restore)  # each video's first frames read while the one before runs
                for job in jobs_to_restore:
                    pipeline.video(job)


def claim_video(output: Path, records: Path) -> None:
    """Record, before its video is written, that this project writes ``output`` (so a later run may replace it).
    The partial file a killed run left beside it is written over and renamed by the next run (`VideoWriter`)."""
    with writing(records):
        records.mkdir(parents=True, exist_ok=True)
        atomic.atomic_write_json(records / CLAIM_NAME, {"output": str(output)})
    with writing(output.parent):
        output.parent.mkdir(parents=True, exist_ok=True)


def begin_staging(plan: Plan, settings: RunSettings, resume: bool) -> Staging:
    """The staging folder of this run (rank 0 only), or with ``resume`` the stopped run's it continues; refuses
    files that are no earlier run's outputs, and a stopped run of other settings to continue."""
    destination = plan.destination
    run = RunRecord.of(plan, settings)
    with writing(destination.results_path.parent):
        staging = Staging.begin(
            destination.results_path, destination.files, destination.option, destination.meta, run=run, resume=resume
        )
    for job in plan.jobs:
        if job.video_out is not None:
            claim_video(job.video_out, destination.report_dir)
    return staging


def staged(plan: Plan, staging: Staging) -> Plan:
    """``plan`` with its outputs (frames, showcase, results.json) in the staging folder; the log stays, and so does
    an output video: it is written beside its place and renamed into it when complete (`VideoWriter`), its folder
    being the user's, where nothing else goes (`planning.records_folder`)."""

    def stage(path: Path | None) -> Path | None:
        return None if path is None else staging.stage(path)

    jobs = [dataclasses.replace(job, frames_dir=stage(job.frames_dir)) for job in plan.jobs]
    destination = dataclasses.replace(
        plan.destination,
        showcase_dir=stage(plan.destination.showcase_dir),
        results_path=staging.stage(plan.destination.results_path),
    )
    return dataclasses.replace(plan, jobs=jobs, destination=destination)


WAIT_LIMIT = datetime.timedelta(days=7)
"""How long a process waits for the others: at the final gather, and at exit for rank 0's report (a process that
ended sooner would make torchrun stop the others, perhaps before rank 0 had printed its error). A process with
longer videos may finish hours later on CPUs; a process that dies makes torchrun stop the others, so this only
bounds a hang. The processes talk through gloo (Python objects; on GPU machines too)."""

HELD_SIGNALS = (*STOP_SIGNALS, signal.SIGINT)
"""What `held_stops` holds back: the stop signals and Ctrl-C."""


@contextlib.contextmanager
def held_stops() -> Iterator[StopRequests]:
    """Hold back stop signals and Ctrl-C while the block runs (the final report and the commit: they are not cut
    short); if one came, raise `Interrupted` with its number once the block has ended. An error raised in the
    block goes on as it is."""
    with StopRequests(HELD_SIGNALS) as requests:
        yield requests
    if requests.signal_number is not None:
        interrupt = Interrupted(requests.signal_number)
        interrupt.explanation = "it came as the run was being reported and committed; the run was finished first"
        raise interrupt


def interruption_name(number: int) -> str:
    """``SIGTERM``, or ``Ctrl-C (SIGINT)``."""
    return "Ctrl-C (SIGINT)" if number == signal.SIGINT else signal_name(number)


def signal_of(error: BaseException) -> int | None:
    """The signal that ``error`` stands for: an `Interrupted`'s, SIGINT for Ctrl-C, None for an error."""
    if isinstance(error, KeyboardInterrupt):
        return getattr(error, "signal_number", signal.SIGINT)
    return None


def finish_report(
    log: RunLog,
    results: Results,
    finished: list[str],
    plan: Plan,
    settings: RunSettings,
    staging: Staging,
    held: StopRequests,
) -> None:
    """The log's video and total lines, then results.json and the run's outputs committed into place; called with
    stop signals ``held`` back (`held_stops`): if one came, the log says that the run was committed first."""
    write_summary(log, results, finished, complete=True)
    document = results.to_json(settings.to_json(cost_volume_code(plan.execution)))
    with writing(plan.destination.results_path):
        staging.commit(document)
    if held.signal_number is not None:
        log.write_error(
            f"{EXTRA}{interruption_name(held.signal_number)} came while the run was being reported and committed; "
            "it was committed first: its results are complete"
        )
    log.write(f"{EXTRA}{outputs_line(plan)}")


def outputs_line(plan: Plan) -> str:
    """The run's last line: where its outputs are."""
    destination = plan.destination
    report = f"the log and {destination.results_path.name}"
    videos = [job.video_out for job in plan.jobs if job.video_out is not None]
    if videos:
        return f"outputs: the video {videos[0]}; {report} in {destination.report_dir}"
    made = ["the frames"] if any(job.frames_dir is not None for job in plan.jobs) else []
    made += [f"{SHOWCASE_DIR}/"] if destination.showcase_dir is not None else []
    return f"outputs: {', '.join([*made, report])} in {destination.report_dir}"


@contextlib.contextmanager
def stopped_on_failure(staging: Staging) -> Iterator[None]:
    """End the staging folder if the run fails (`Staging.stop`: kept for --resume if it holds finished videos; a
    committed one is left to be finished by the next run)."""
    try:
        yield
    except BaseException:
        stop(staging)
        raise


def stop(staging: Staging, log: RunLog | None = None, error: BaseException | None = None) -> None:
    """End a run that failed or was interrupted: its staging folder kept for --resume (said on stderr and in the
    log) or removed, then the error's line in the log, or the line naming the signal that stopped the run."""
    kept = staging.stop()
    number = None if error is None else signal_of(error)
    if number is not None:  # said once, by the command, as the reason it stopped (`utils.errors.run_cli`)
        error.explanation = interrupt_explanation(kept, staging)  # type: ignore[union-attr]
    if kept:
        line = stopped_line(kept, staging.total_videos, staging.root)
        if number is None:
            logger.warning("%s", line.removeprefix(EXTRA))
        if log is not None:
            log.write_error(line)
    if log is None or error is None:
        return
    if isinstance(error, UserError):
        log.write_error(f"error: {error}")
    if number is not None:
        log.write_error(f"{EXTRA}interrupted by {interruption_name(number)}")


def interrupt_explanation(kept: int, staging: Staging) -> str:
    """What an interrupted run kept and the command that continues it, for the command's last line."""
    if kept:
        return (
            f"{kept} of {staging.total_videos} videos are finished and kept in {staging.root}; "
            f"{rerun_command('--resume')} continues the run"
        )
    return (
        "no video was finished, so nothing was kept (a video is kept once all its frames are done; earlier results "
        f"in the same place are untouched); {rerun_command()} starts it again"
    )


@dataclass(frozen=True)
class Outcome:
    """What a process hands to the others at the end: its results, the videos it finished, and its error, or the
    signal that stopped it."""

    results: Results
    finished: list[str]
    error: str | None
    signal_number: int | None = None


def describe(error: BaseException, ranks: Ranks) -> str:
    """An error as one line: a `UserError`'s own message, a stop by signal named, anything else named with its
    process (and its traceback logged, under torchrun)."""
    if isinstance(error, UserError):
        return str(error)
    number = signal_of(error)
    if number is not None:
        return f"process {ranks.rank} was interrupted by {interruption_name(number)}"
    if ranks.distributed:
        logger.exception("process %d failed", ranks.rank)
    return f"process {ranks.rank} failed: {type(error).__name__}: {error}"


def outcome_of(report: Report, failure: BaseException | None, ranks: Ranks) -> Outcome:
    """This process's `Outcome`: what it finished, and its failure (an error, or the signal that stopped it)."""
    if failure is None:
        return Outcome(report.results, report.finished, None)
    return Outcome(report.results, report.finished, describe(failure, ranks), signal_of(failure))


def run_in_group(args: argparse.Namespace, runtime: Runtime, loaded: Restorer | None = None) -> int:
    """This process's part of the run: all of it in a group of one, its share of the videos under torchrun
    (`planning.shard`). Returns the exit status; rank 0 raises the run's error, or `Interrupted` if a process was
    stopped by a signal.

    Alone, each frame's line goes to the log as the frame completes; under torchrun rank 0 writes every process's
    lines at the end, in the plan's order. Whatever fails in a process, it still takes part in the exchanges, so
    that no process waits forever. ``loaded``: the model already loaded for this plan (the Python API's)."""
    live = not runtime.distributed
    failure: BaseException | None = None
    if runtime.is_main:
        try:
            make_demo_data(demo_folders(args))
        except (Exception, KeyboardInterrupt) as error:  # reported with the others' outcomes, below
            failure = error
    runtime.barrier()  # the demo data exists before anyone plans

    report: Report = Report()
    log: RunLog | None = None
    plan: Plan | None = None
    settings: RunSettings | None = None
    staging: Staging | None = None
    try:
        if failure is not None:
            raise failure
        plan = make_plan(args, runtime.local_rank)
        settings = run_settings(plan, runtime.world_size)
        restorer = loaded or Restorer.load(plan.restoration, plan.execution)
        if not restorer.serves(plan):
            raise ValueError("the model was loaded for another plan")
        if runtime.is_main:
            staging = begin_staging(plan, settings, args.resume)
    except (Exception, KeyboardInterrupt) as error:  # every process must reach the exchanges below
        failure = error
    # where rank 0 put the staging folder, and the videos an earlier start finished (with --resume)
    begun = runtime.broadcast(None if staging is None else (staging.token, list(staging.kept)))
    try:
        if failure is not None:
            raise failure
        if plan is not None and settings is not None and begun is not None:  # None: rank 0 failed (see below)
            token, kept = begun
            staging = staging or Staging.join(plan.destination.results_path, token)
            staged_plan = staged(plan, staging)
            report.recorder = Recorder(staging.root, planned_videos(plan))
            if runtime.is_main:
                destination = plan.destination
                header, model_path = settings.header(), plan.restoration.model_path
                log = open_log(
                    destination.report_dir, destination.log_prefix, header, model_path, len(kept), len(plan.jobs)
                )
            if live:  # every frame's line as it completes, the finished videos' where they come
                report.log = log
                restore(staged_plan, restorer, staged_plan.jobs, report, kept=staging.kept)
            else:
                todo = [job for job in staged_plan.jobs if job.source.name not in kept]
                mine = [todo[index] for index in shard(todo, runtime.world_size)[runtime.rank]]
                restore(staged_plan, restorer, mine, report, progress=runtime.is_main)
    except (Exception, KeyboardInterrupt) as error:  # every process must reach the exchange below
        failure = error
    # from here on a signal waits for the exchange, the report and the commit (`held_stops`)
    with held_stops() as held:
        outcomes: list[Outcome] = runtime.all_gather(outcome_of(report, failure, runtime))
        if runtime.distributed:  # at exit, wait for rank 0's report (see WAIT_LIMIT)
            atexit.register(runtime.barrier)
        errors = [outcome.error for outcome in outcomes if outcome.error is not None and outcome.signal_number is None]
        interrupts = [outcome for outcome in outcomes if outcome.signal_number is not None]
        if not runtime.is_main:
            if errors:
                return EXIT_USER_ERROR
            return exit_status(interrupts[0].signal_number) if interrupts else 0  # type: ignore[arg-type]
        stopping: BaseException | None = None
        if live:
            stopping = failure  # alone, the error itself goes on
        elif errors:
            stopping = UserError(errors[0])
        elif interrupts:
            stopping = Interrupted(interrupts[0].signal_number)  # type: ignore[arg-type]
        if staging is None:  # rank 0 failed before it began
            assert stopping is not None
            raise stopping
        results, finished = report.results, report.finished
        if not live:
            assert plan is not None  # rank 0 planned before it began staging
            order = [job.source.name for job in plan.jobs]
            results = merge([Results(dict(staging.kept)), *(outcome.results for outcome in outcomes)], order)
            finished = [*staging.kept, *(name for outcome in outcomes for name in outcome.finished)]
        report_end(log, plan, settings, staging, results, finished, stopping, live, held)
    return 0


def report_end(
    log: RunLog | None,
    plan: Plan | None,
    settings: RunSettings | None,
    staging: Staging,
    results: Results,
    finished: list[str],
    stopping: BaseException | None,
    live: bool,
    held: StopRequests,
) -> None:
    """Rank 0's end of a run: (under torchrun, every process's lines in the log, then) the summary and the commit,
    or, if a process failed or was stopped by a signal, the staging folder kept for --resume and the error (or
    `Interrupted`) raised."""
    with stopped_on_failure(staging):
        if log is not None and plan is not None and settings is not None:  # rank 0 planned and opened the log
            with log:
                if not live:
                    write_videos(log, results)
                if stopping is not None:
                    with contextlib.suppress(UserError):  # the error in flight is the one to report
                        write_summary(log, results, finished, complete=False)
                    stop(staging, log, stopping)
                else:
                    try:
                        finish_report(log, results, finished, plan, settings, staging, held)
                    except UserError as error:
                        log.write_error(f"error: {error}")
                        raise
        if stopping is not None:
            raise stopping


def run(args: argparse.Namespace, loaded: Restorer | None = None, ranks: Ranks | None = None) -> int:
    """The run this process is part of: alone (a group of one), or one of torchrun's processes (``ranks``: as
    torchrun says; ``loaded``: the model already loaded for it). SIGTERM and SIGUSR1 stop it as Ctrl-C does (see
    the module's docstring)."""
    with StopRequests(STOP_SIGNALS, raise_in_main=True):
        runtime = join(ranks or Ranks.from_environment(), torch.device("cpu"), "gloo", WAIT_LIMIT)
        return run_in_group(args, runtime, loaded)
