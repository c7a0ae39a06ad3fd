# Developer entry points; .ci/run uses the same targets.
PY ?= python3

.PHONY: dev lint test bench bench-smoke

dev:  ## editable install with every extra (the extension rebuilt in place)
	$(PY) -m pip install -q ".[test,bench,embed,train]"
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

lint:  ## formatters and linters of both languages, mypy over the package, the stub check
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(PY) -m ruff check python tests benches
	$(PY) -m ruff format --check python tests benches
	$(PY) -m mypy
	$(PY) -m mypy.stubtest llmesr._native

test:  ## the Rust core's tests, then the README's test command
	cargo test -p llmesr-core
	$(PY) -m pytest

bench:  ## the benchmarks at full size (minutes; one heavy job at a time)
	$(PY) -m pytest benches

bench-smoke:  ## every benchmark once at a tiny size (CI)
	LLMESR_BENCH_ROWS=200000 LLMESR_BENCH_ROUNDS=1 LLMESR_BENCH_USERS=3000 LLMESR_BENCH_APPROX_USERS=20000 \
	LLMESR_BENCH_TEXTS=100 LLMESR_BENCH_EVAL_USERS=1000 LLMESR_BENCH_PCA_ROWS=2000 LLMESR_BENCH_TRAIN_BATCH=16 LLMESR_BENCH_TRAIN_MAXLEN=50 LLMESR_BENCH_TRAIN_STEPS=2 LLMESR_BENCH_REFERENCE_STEPS=1 LLMESR_BENCH_LOSS_DRAWS=512 \
	LLMESR_BENCH_DIR="$$(mktemp -d)" $(PY) -m pytest benches --benchmark-disable -q
