#!/usr/bin/env bash
# What needs a GPU, in one pass of at most $BUDGET seconds: first the whole test suite, then the measurements that
# docs/gpu.md reports (the cost volume, the inference sweep of every lever and precision, the accuracy of each
# precision on the demo set, inference.py's pipeline on 720p frames), then training's (the step with each cost
# volume, every training lever, each precision's validation PSNR, the data loader). The step limits add up to more
# than one pass of the default BUDGET: the steps come in order of importance and a pass cut short keeps the first
# ones; the training steps are then a second pass of their own:
#   ONLY="bench_train_torch bench_train_levers train_precisions bench_loader" BUDGET=540 bash bench/gpu_checks.sh
#
#   OUT=gpu-results WHEELS=wheels bash bench/gpu_checks.sh      # from the repository root, on a CUDA machine
#
# Environment (all optional):
#   OUT     the results folder (default gpu-results): log.txt (every step's output), junit.xml (every test's
#           result), summary.txt (one line a step, the tests' counts and failures; also printed at the end)
#   WHEELS  a folder holding a PyAV (av) wheel, FFmpeg bundled, installed from there (no index, no dependencies)
#           when av does not import. Without it the steps that need it are skipped, and the test files that
#           import it are reported as collection errors while the rest of the suite runs.
#   BUDGET  seconds for the whole pass (default 420): a step's limit is cut to what is left, and a step left with
#           less than MIN_STEP seconds (default 15) is skipped
#   ONLY    the names of the steps to run, separated by spaces (default: all), for a rerun of a few of them
#   TESTS   what the tests step runs (default: the whole suite), e.g. TESTS=tests/test_model_correlation.py
#
# Each step is one line, `step NAME SECONDS COMMAND...`, with `NEEDS="ffmpeg clip720"` in front when it needs
# PyAV (FFmpeg) or the 720p evaluation set (a requirement R is a function ready_R below). A step that fails or runs
# out of time is reported and the next one runs; the steps come in order of importance, so a pass cut short keeps
# the first ones. tests/test_bench_gpu_checks.py checks on every machine that each file, script, flag, module and
# Python snippet named here exists. The exit status is 0 when every step ran and succeeded.
set -u
OUT=${OUT:-gpu-results}
BUDGET=${BUDGET:-420}
MIN_STEP=${MIN_STEP:-15}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
rm -f "$OUT/junit.xml" "$OUT/summary.txt"
export PYTHONUNBUFFERED=1
SCRATCH=$(mktemp -d)
DEADLINE=$((SECONDS + BUDGET))
SUMMARY=()
ALL_OK=yes

note() {  # a line into the log and onto the terminal
    echo "$*" | tee -a "$LOG"
}

record() {  # record NAME RESULT: one line of the summary
    SUMMARY+=("$(printf '%-22s %s' "$1" "$2")")
    [[ $2 == ok* ]] || ALL_OK=no
}

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit, its output into the log
    local name=$1 limit=$2 need status result started
    shift 2
    [[ -z ${ONLY:-} || " $ONLY " == *" $name "* ]] || return 0
    for need in ${NEEDS:-}; do
        if ! "ready_$need"; then
            note "===== $name: skipped ($REASON)"
            record "$name" "skipped ($REASON)"
            return 0
        fi
    done
    local left=$((DEADLINE - SECONDS))
    ((limit <= left)) || limit=$left
    if ((limit < MIN_STEP)); then
        note "===== $name: skipped (${left}s left of BUDGET=${BUDGET}s)"
        record "$name" "skipped (out of time: ${left}s left of BUDGET=${BUDGET}s)"
        return 0
    fi
    note "===== $name (limit ${limit}s, $(date +%T))"
    started=$SECONDS
    # SIGINT first: pytest then still writes its junit XML and Python prints where it was; SIGKILL 10 s later
    timeout -s INT -k 10 "$limit" "$@" >>"$LOG" 2>&1
    status=$?
    case $status in
        0) result="ok" ;;
        124 | 137) result="timed out (limit ${limit}s)" ;;
        *) result="failed (exit $status)" ;;
    esac
    note "===== $name: $result, $((SECONDS - started))s"
    record "$name" "$result, $((SECONDS - started))s"
}

# ----- requirements of steps (each sets REASON when it does not hold)

FFMPEG=no
ensure_ffmpeg() {  # PyAV (FFmpeg bundled) importable, from $WHEELS when it is not installed
    if python3 -c "import av" 2>/dev/null; then
        FFMPEG=yes FFMPEG_NOTE="PyAV installed"
    elif [[ -z ${WHEELS:-} ]]; then
        FFMPEG_NOTE="PyAV (av) not installed and no WHEELS folder given"
    else
        local how
        for how in "" "--user --break-system-packages"; do  # the second for a system Python (PEP 668)
            # shellcheck disable=SC2086
            if timeout 120 python3 -m pip install --no-index --no-deps --find-links "$WHEELS" $how av \
                >>"$LOG" 2>&1 && python3 -c "import av; av.codec.Codec('libx264', 'w')" >>"$LOG" 2>&1
            then
                FFMPEG=yes FFMPEG_NOTE="PyAV installed from $WHEELS"
                return
            fi
        done
        FFMPEG_NOTE="PyAV (av) not installed: pip install from $WHEELS failed (see log.txt)"
    fi
}
ready_ffmpeg() {
    REASON=$FFMPEG_NOTE
    [[ $FFMPEG == yes ]]
}

CLIP720=""
ready_clip720() {  # the 720p evaluation set, made in the background while the tests run
    if [[ -z $CLIP720 ]]; then
        wait "$SYNTHESIS"
        CLIP720=$?
        { echo "----- the 720p set (exit $CLIP720):"; cat "$SCRATCH/synthesize.txt"; } >>"$LOG"
    fi
    REASON="making the 720p set failed (exit $CLIP720, see log.txt)"
    [[ $CLIP720 == 0 ]]
}

SYNTHESIS=""
finish() {
    if [[ -n $SYNTHESIS ]]; then
        kill "$SYNTHESIS" 2>/dev/null
        wait "$SYNTHESIS" 2>/dev/null
    fi
    rm -rf "$SCRATCH"
}
trap finish EXIT

note "gpu_checks.sh $(date '+%F %T'): BUDGET=${BUDGET}s, ONLY=${ONLY:-all steps}, TESTS=${TESTS:-the whole suite}"
ensure_ffmpeg
note "$FFMPEG_NOTE"
COLLECTION=""
[[ $FFMPEG == yes ]] || COLLECTION="--continue-on-collection-errors"
PARALLEL=""  # the suite in 8 processes where pytest-xdist is installed (one file's tests stay in one process)
python3 -c "import xdist" 2>/dev/null && PARALLEL="-n 8 --dist loadfile"

# a 720p evaluation set (3 videos of 12 frames with their sharp frames), made while the tests run
timeout 300 python3 code/synthesize.py photos "$SCRATCH/clip720" --photos held_out --frames 12 --size 720x1280 \
    --subframes 7 >"$SCRATCH/synthesize.txt" 2>&1 &
SYNTHESIS=$!

# ----- the steps, in order of importance

# shellcheck disable=SC2086  # $PARALLEL, $COLLECTION and $TESTS are lists of words
step tests 240 python3 -m pytest -q -p no:cacheprovider -rs --junitxml="$OUT/junit.xml" $PARALLEL $COLLECTION ${TESTS:-}
step machine 30 python3 - <<'PY'
import os, shutil, subprocess, sys
import torch
try:
    import cupy
    cupy_version = cupy.__version__
except ImportError:
    cupy_version = "not installed"
gpus = "no nvidia-smi"
if shutil.which("nvidia-smi"):
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    gpus = subprocess.run(query, capture_output=True, text=True).stdout.strip()
print(f"GPU {gpus}; python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}, CuPy {cupy_version}; {os.cpu_count()} CPU cores")
print(f"CUDA available: {torch.cuda.is_available()}" + (f", {torch.cuda.get_device_name()}, capability "
      f"{torch.cuda.get_device_capability()}" if torch.cuda.is_available() else ""))
PY
step bench_cost_volume 30 python3 bench/bench_cost_volume.py --dtypes float32 float16 --repeats 10
step sweep_720p 60 python3 bench/bench_inference.py --sweep --sizes 1280x720 --outputs 6
step postprocessing_720p 25 python3 bench/bench_inference.py --sizes 1280x720 --outputs 1 --runners
# accuracy of each precision: the demo model on the demo set (60 held-out frames), totals against fp32
NEEDS=ffmpeg step demo_precisions 60 python3 - "$SCRATCH" <<'PY'
import contextlib, io, json, sys
from pathlib import Path
sys.path.insert(0, "code")
from cdvd_tsp.inference import main
reports = {}
for precision in ("fp32", "tf32", "fp16", "bf16"):
    folder = Path(sys.argv[1]) / f"demo_{precision}"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["--default_data", "DEMO", "--precision", precision, "--result_path", str(folder), "--no_showcase"])
    report = reports[precision] = json.loads((folder / "results.json").read_text())
    base = reports["fp32"]
    print(f"{precision}: PSNR {report['psnr']:.4f} dB ({report['psnr'] - base['psnr']:+.4f}), SSIM "
          f"{report['ssim']:.5f} ({report['ssim'] - base['ssim']:+.6f}), input PSNR {report['input_psnr']:.4f}; "
          f"model {1000 * report['model_seconds_per_frame']:.1f} ms/frame; {report['settings']}")
PY
NEEDS="ffmpeg clip720" step pipeline_720p 60 python3 bench/bench_inference.py --pipeline "$SCRATCH/clip720" \
    --model_path pretrain_models/CDVD_TSP_DEMO.pt
step bench_train_torch 30 python3 bench/bench_train.py --cost_volume torch --levers fp32 --steps 3 --warmup 1
# every training lever alone and combined (docs/benchmarks-training.md); the compiled ones compile in their warm-up
step bench_train_levers 240 python3 bench/bench_train.py --steps 5 --warmup 3
# each precision's validation PSNR after 300 steps on one synthetic set from the demo model, beside float32's
step train_precisions 240 python3 bench/bench_train_precision.py --steps 300 --size 128 \
    --pre_train pretrain_models/CDVD_TSP_DEMO.pt
# the data loader alone on 720p PNGs for 0, 2, 4, 8 workers, and with the frames decoded in memory
step bench_loader 120 python3 bench/bench_loader.py --batches 10 --preload

# ----- the summary: one line a step, then the tests' counts and the tests that failed (from junit.xml)

{
    echo "===== summary ($(date +%T), ${SECONDS}s of BUDGET=${BUDGET}s; $FFMPEG_NOTE)"
    printf '%s\n' "${SUMMARY[@]}"
    python3 - "$OUT/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
junit = Path(sys.argv[1])
if not junit.is_file():
    sys.exit(print(f"tests: no {junit.name} (the tests step did not run or did not finish)"))
cases = list(ElementTree.parse(junit).getroot().iter("testcase"))
outcomes = {"passed": [], "failed": [], "error": [], "skipped": []}
for case in cases:
    kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
    outcomes["failed" if kind == "failure" else kind].append(f"{case.get('classname')}::{case.get('name')}")
print("tests: " + ", ".join(f"{len(names)} {kind}" for kind, names in outcomes.items()) + f" of {len(cases)}")
for kind in ("failed", "error"):
    for name in outcomes[kind]:
        print(f"  {kind}: {name}")
PY
} | tee "$OUT/summary.txt" >>"$LOG"
cat "$OUT/summary.txt"
[[ $ALL_OK == yes ]]
