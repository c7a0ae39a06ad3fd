#!/usr/bin/env bash
# One run on the device machine (GPU; see ../shared/DESIGN.md "The device machine": Python 3.12, torch with
# CUDA, nvcc, no Rust, no network). Build the wheel here first and carry it:
#   maturin build --release -o dist        # then run tool: command "bash benches/device/run.sh", carry ["dist"]
# It installs the wheel, builds the fused ops for sm_90, runs the op tests (float32/bf16/fp16 against a float32
# reference), compute-sanitizer's memcheck over the CUDA op tests, and the op benchmarks; results go to $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/llmesr-device-out}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=9.0 LLMESR_OPS=native LLMESR_OPS_CACHE=/tmp/llmesr-ops PYTHONPATH=/tmp/llmesr-site
python -m pip install -q --no-deps --target /tmp/llmesr-site dist/llmesr-*.whl
{ nvidia-smi; python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$OUT/device.txt" 2>&1
python -c "from llmesr.ops import native_ops_loaded; print('native ops:', native_ops_loaded())" > "$OUT/build.txt" 2>&1
python -m pytest -q -p no:cacheprovider tests/test_ops.py > "$OUT/test_ops.txt" 2>&1
compute-sanitizer --tool memcheck --error-exitcode 1 \
  python -m pytest -q -p no:cacheprovider tests/test_ops.py -k cuda > "$OUT/memcheck.txt" 2>&1
echo "memcheck exit: $?" >> "$OUT/memcheck.txt"
python -m pytest -q -p no:cacheprovider benches/test_ops_speed.py --benchmark-only -s > "$OUT/bench_ops.txt" 2>&1
tail -n 3 "$OUT"/*.txt
