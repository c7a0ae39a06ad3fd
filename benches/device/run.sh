#!/usr/bin/env bash
# One run on the device machine (GPU; see ../shared/DESIGN.md "The device machine": Python 3.12, torch with
# CUDA, nvcc, no Rust, no network). Prepare here first and carry dist/:
#   maturin build --release -o dist                      # the wheel (abi3)
#   cp -r /tmp/llmesr-bench/yelp dist/bench/yelp         # Yelp as benches/_train_step.py prepares it (7 MB)
#   then run tool: command "bash benches/device/run.sh", carry ["dist"]
# It installs the wheel, builds the fused ops for sm_90, runs the op tests (float32/bf16/fp16 against a float32
# reference), compute-sanitizer's memcheck over the CUDA op tests, the op benchmarks, and one LLM-ESR-SASRec
# training step on Yelp with native against reference ops, full-ranking evaluation and a ce step on the GPU,
# bf16 against fp32; results go to $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/llmesr-device-out}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=9.0 LLMESR_OPS=native LLMESR_OPS_CACHE=/tmp/llmesr-ops PYTHONPATH=/tmp/llmesr-site
python -m pip install -q --no-deps --upgrade --target /tmp/llmesr-site dist/llmesr-*.whl
{ nvidia-smi; python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$OUT/device.txt" 2>&1
python -c "from llmesr.ops import native_ops_loaded; print('native ops:', native_ops_loaded())" > "$OUT/build.txt" 2>&1
python -m pytest -q -p no:cacheprovider tests/test_ops.py > "$OUT/test_ops.txt" 2>&1
# memcheck on a few small cases (it slows kernels ~100x): both ops, every dtype, dropout on and off
compute-sanitizer --tool memcheck --error-exitcode 1 \
  python -m pytest -q -p no:cacheprovider tests/test_ops.py -k "cuda and not 200" > "$OUT/memcheck.txt" 2>&1
echo "memcheck exit: $?" >> "$OUT/memcheck.txt"
LLMESR_BENCH_ROUNDS=3 LLMESR_BENCH_ATTENTION_CALLS=20 \
  python -m pytest -q -p no:cacheprovider benches/test_ops_speed.py --benchmark-only -s > "$OUT/bench_ops.txt" 2>&1
# On Yelp at the paper's shapes: a training step with native against reference ops; the full-ranking evaluation
# of every Yelp user and a `--loss ce` step against its matrix products (item 4, and issue "A converged model in
# minutes", item 2); the step under --precision bf16 against fp32 (item 2)
if [ -d dist/bench/yelp ]; then
  export LLMESR_BENCH_DIR=dist/bench LLMESR_BENCH_DEVICE=cuda
  for ops in native ref native ref; do
    LLMESR_OPS=$ops python benches/_train_step.py fast 20 >> "$OUT/train_step.txt" 2>&1
  done
  for kind in evaluate ce; do
    timeout 120 python benches/_train_step.py $kind 20 >> "$OUT/gpu_$kind.txt" 2>&1
  done
  for precision in fp32 bf16 fp32 bf16; do
    LLMESR_BENCH_PRECISION=$precision python benches/_train_step.py fast 20 >> "$OUT/precision_step.txt" 2>&1
  done
fi
# --precision bf16 against fp32, quality: ten epochs of LLM-ESR-SASRec on the built-in synthetic catalogue embedded
# with the hashing encoder (no model download), validation NDCG@10 of both in their log.txt
{ python -m llmesr.cli.prepare --synthetic --out /tmp/syn && python -m llmesr.cli.embed /tmp/syn --encoder hashing \
  && for precision in fp32 bf16; do
       python -m llmesr.cli.train --data /tmp/syn --device cuda --precision "$precision" --epochs 10 --no-compare \
         --out "$OUT/syn-$precision" -q
     done; } > "$OUT/precision_quality.txt" 2>&1
tail -n 3 "$OUT"/*.txt
