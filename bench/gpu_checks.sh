#!/usr/bin/env bash
# Every check and measurement that needs a GPU, in one pass (what docs/gpu.md reports): the whole test suite,
# the cost-volume and training benchmarks with each path, the inference sweep of every precision, the accuracy of
# each precision on the demo set, and end-to-end evaluation runs on 720p frames.
#
#   OUT=gpu-results bash bench/gpu_checks.sh          # from the repository root, on a CUDA machine with CuPy
#
# Each step's output goes to $OUT/log.txt; a step that fails or runs out of time is reported and the next one runs.
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
SCRATCH=$(mktemp -d)

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output into the log
    local name=$1 limit=$2
    shift 2
    echo "===== $name ($(date +%T))" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local status=$?
    echo "===== $name: exit $status ($(date +%T))" | tee -a "$LOG"
}

step machine 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "
import torch, cupy, sys
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"CUDA\", torch.version.cuda,
      \"cuDNN\", torch.backends.cudnn.version(), \"CuPy\", cupy.__version__,
      \"driver\", cupy.cuda.runtime.driverGetVersion(), torch.cuda.get_device_name())"'

# a 720p evaluation set (3 videos of 20 frames with their sharp frames), made while the tests run
python3 code/data/synthesize.py photos "$SCRATCH/clip720" --photos held_out --frames 20 --size 720x1280 \
    --subframes 7 >"$SCRATCH/synthesize.txt" 2>&1 &
SYNTHESIS=$!

step tests 300 python3 -m pytest -q -p no:cacheprovider --durations=15
step bench_cost_volume 120 python3 bench/bench_cost_volume.py --dtypes float32 float16 float64
step bench_train_torch 120 python3 bench/bench_train.py --cost_volume torch --steps 4 --warmup 1
step bench_train_cupy 120 python3 bench/bench_train.py --cost_volume cupy --steps 4 --warmup 1
step bench_train_cupy_bf16 120 python3 bench/bench_train.py --cost_volume cupy --amp bf16 --steps 4 --warmup 1
step sweep_720p 240 python3 bench/bench_inference.py --sweep --sizes 1280x720 --outputs 12

# accuracy of each precision: the demo model on the demo set (60 held-out frames), totals against fp32
for precision in fp32 tf32 fp16 bf16; do
    step "demo_$precision" 180 python3 code/inference.py --default_data DEMO --precision "$precision" \
        --result_path "$SCRATCH/demo_$precision" --no_showcase
done
step demo_summary 60 python3 - "$SCRATCH" <<'PY'
import json, sys
from pathlib import Path
results = {p: json.loads((Path(sys.argv[1]) / f"demo_{p}" / "results.json").read_text()) for p in ("fp32", "tf32", "fp16", "bf16")}
base = results["fp32"]
for name, report in results.items():
    print(f"{name}: PSNR {report['psnr']:.4f} dB ({report['psnr'] - base['psnr']:+.4f}), SSIM {report['ssim']:.5f} "
          f"({report['ssim'] - base['ssim']:+.6f}), input {report['input_psnr']:.4f}; model {1000 * report['model_seconds_per_frame']:.1f} ms/frame, "
          f"settings {report['settings']}")
PY

wait "$SYNTHESIS"
cat "$SCRATCH/synthesize.txt" >>"$LOG"
step pipeline_720p 300 python3 bench/bench_inference.py --pipeline "$SCRATCH/clip720" \
    --model_path pretrain_models/CDVD_TSP_DEMO.pt
echo "done ($(date +%T))" | tee -a "$LOG"
