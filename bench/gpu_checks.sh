#!/usr/bin/env bash
# The checks and measurements that need a GPU, in one pass of about three minutes (what docs/gpu.md reports): the
# CUDA tests, the cost-volume and training benchmarks with each path, the inference sweep of every precision, the
# accuracy of each precision on the demo set, and inference.py's pipeline on 720p frames.
#
#   OUT=gpu-results bash bench/gpu_checks.sh          # from the repository root, on a CUDA machine with CuPy
#
# Each step's output goes to $OUT/log.txt; a step that fails or runs out of time is reported and the next one runs.
# The steps come in order of importance, so a run cut short still has the first ones.
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
SCRATCH=$(mktemp -d)

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output into the log
    local name=$1 limit=$2
    shift 2
    echo "===== $name ($(date +%T))" >>"$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    echo "===== $name: exit $? ($(date +%T))" >>"$LOG"
}

step machine 30 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "
import torch, cupy, sys
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"CUDA\", torch.version.cuda,
      \"cuDNN\", torch.backends.cudnn.version(), \"CuPy\", cupy.__version__, torch.cuda.get_device_name())"'

# a 720p evaluation set (3 videos of 12 frames with their sharp frames), made while the tests run
python3 code/data/synthesize.py photos "$SCRATCH/clip720" --photos held_out --frames 12 --size 720x1280 \
    --subframes 7 >"$SCRATCH/synthesize.txt" 2>&1 &
SYNTHESIS=$!

step tests 90 python3 -m pytest -q -p no:cacheprovider -k "cuda or cupy or gpu" -rs \
    tests/test_correlation.py tests/test_model_parity.py tests/test_precision.py tests/test_metrics_device.py
step bench_cost_volume 30 python3 bench/bench_cost_volume.py --dtypes float32 float16 --repeats 10
step sweep_720p 60 python3 bench/bench_inference.py --sweep --sizes 1280x720 --outputs 6
step postprocessing_720p 25 python3 bench/bench_inference.py --sizes 1280x720 --outputs 1 --runners
step bench_train_torch 30 python3 bench/bench_train.py --cost_volume torch --steps 3 --warmup 1
step bench_train_cupy 30 python3 bench/bench_train.py --cost_volume cupy --steps 3 --warmup 1

# accuracy of each precision: the demo model on the demo set (60 held-out frames), totals against fp32
step demo_precisions 60 python3 - "$SCRATCH" <<'PY'
import contextlib, io, json, sys
from pathlib import Path
sys.path.insert(0, "code")
from inference import main
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

wait "$SYNTHESIS"
cat "$SCRATCH/synthesize.txt" >>"$LOG"
step pipeline_720p 60 python3 bench/bench_inference.py --pipeline "$SCRATCH/clip720" \
    --model_path pretrain_models/CDVD_TSP_DEMO.pt
echo "done ($(date +%T))" >>"$LOG"
