"""Measure torch's CPU threads on a quiet and on a busy machine: seconds per output frame of the streaming runner
(the model's step per stage, at 96x64 by default) with each thread setting, with no other load added and with N
processes spinning on the cores, the settings alternating round by round so that both see the same machine.

    python bench/bench_cpu_threads.py                          # fp32, 2 busy processes for the loaded case
    python bench/bench_cpu_threads.py --precision bf16 --busy 4 --rounds 3

Settings (each in a fresh process, since libgomp reads its wait policy when torch loads):

- ``before``: libgomp's default wait policy (spin, then sleep) and every usable core (the default until issue 31);
- ``passive, N``: ``OMP_WAIT_POLICY=PASSIVE`` and N threads;
- ``spin, 1``: libgomp's default wait policy and one thread;
- ``default``: what inference.py does now: the passive policy (`utils.openmp.prefer_passive_waiting`) and the cores
  found idle at start-up (`utils.cpu.configure_threads` with its idle probe), which the line shows.

The weights are PyTorch's default initialisation from a seed; the step has the options `recommended_options`
picks for this CPU and precision. Nothing is asserted: the numbers are printed, with the load average.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CODE = Path(__file__).resolve().parents[1] / "code"


def child(threads: str, precision_name: str, size: tuple[int, int], frames: int) -> None:
    """One setting, in this process: time the streaming runner's steady output frames; prints one JSON line."""
    sys.path.insert(0, str(CODE))
    if threads == "default":
        from cdvd_tsp.utils.openmp import prefer_passive_waiting

        prefer_passive_waiting()
    import torch

    from cdvd_tsp.model.acceleration import accelerated_step, recommended_options
    from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
    from cdvd_tsp.model.streaming import StreamingRunner
    from cdvd_tsp.utils.cpu import configure_threads, thread_choice
    from cdvd_tsp.utils.openmp import wait_policy
    from cdvd_tsp.utils.precision import PRECISIONS

    configure_threads(None if threads == "default" else int(threads), probe_idle=True)
    device, precision = torch.device("cpu"), PRECISIONS[precision_name]
    torch.manual_seed(0)
    model = CDVD_TSP().eval()
    runner = StreamingRunner(
        model, accelerated_step(model, precision, device, options=recommended_options(device, precision))
    )
    generator = torch.Generator().manual_seed(0)
    clip = [torch.rand(1, 3, *size, generator=generator) for _ in range(frames)]
    seconds, since = [], 0.0
    with torch.inference_mode():
        for frame in clip:
            started = time.perf_counter()
            restored = runner.push(frame)
            since += time.perf_counter() - started
            if restored is not None:
                seconds.append(since)
                since = 0.0
    steady = seconds[1:]  # the first output also filled the queues
    choice = thread_choice()
    print(
        json.dumps(
            {
                "seconds": sum(steady) / len(steady),
                "threads": choice.threads,
                "reason": choice.reason,
                "wait": wait_policy(),
            }
        )
    )


SETTINGS = {
    "before": ({}, "all"),
    "passive, all": ({"OMP_WAIT_POLICY": "PASSIVE"}, "all"),
    "passive, 1": ({"OMP_WAIT_POLICY": "PASSIVE"}, "1"),
    "spin, 1": ({}, "1"),
    "default": ({}, "default"),
}


def run_setting(name: str, precision: str, size: str, frames: int) -> dict:
    extra, threads = SETTINGS[name]
    environ = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    environ.update(extra)
    if threads == "all":
        threads = str(len(os.sched_getaffinity(0)))
    command = [sys.executable, __file__, "--child", threads, "--precision", precision, "--size", size]
    completed = subprocess.run(
        [*command, "--frames", str(frames)], capture_output=True, text=True, env=environ, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--size", default="96x64", help="WxH")
    parser.add_argument("--frames", type=int, default=8, help="frames pushed per run (the first 3 outputs' worth fill)")
    parser.add_argument("--busy", type=int, default=2, help="processes spinning in the loaded case")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(value) for value in args.size.split("x"))
    if args.child:
        child(args.child, args.precision, (height, width), args.frames)
        return
    sys.path.insert(0, str(CODE))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_inference import busy_processes, machine  # imports torch: only in the parent

    print(f"machine: {machine()}; {args.precision}, {args.size}, {args.frames} frames pushed")
    results: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        for load, busy in (("quiet", 0), (f"+{args.busy} busy", args.busy)):
            with busy_processes(busy):
                time.sleep(1 if busy else 0)
                loadavg = Path("/proc/loadavg").read_text().split()[0]
                for name in args.settings:
                    result = run_setting(name, args.precision, args.size, args.frames)
                    result["loadavg"] = loadavg
                    results.setdefault((load, name), []).append(result)
                    print(
                        f"round {round_index + 1} {load:8s} {name:13s}: {result['seconds']:.3f} s/frame, "
                        f"{result['threads']} thread(s) ({result['reason']}), wait {result['wait']}, load {loadavg}",
                        flush=True,
                    )
    print("\nmedian s/frame over the rounds, and against one spinning thread in the same load:")
    for load in dict.fromkeys(key[0] for key in results):
        medians = {name: statistics.median(r["seconds"] for r in results[(load, name)]) for name in args.settings}
        one = medians.get("spin, 1")
        for name, median in medians.items():
            print(f"{load:8s} {name:13s}: {median:.3f}" + (f" ({median / one:.2f}x)" if one else ""))


if __name__ == "__main__":
    main()
