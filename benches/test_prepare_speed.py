"""Ingest + 5-core + remap + split + write of a large generated CSV: the Rust core against the same
steps in pandas (benches/_pandas_baseline.py), side by side in one process, plus peak memory of each
in a fresh child process. Size: LLMESR_BENCH_ROWS (default 10,000,000; CI smoke runs use fewer).

    pytest benches/test_prepare_speed.py --benchmark-only -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import llmesr

from _pandas_baseline import pandas_prepare
from _synthetic_log import bench_rows, interaction_csv, record

ROUNDS = int(os.environ.get("LLMESR_BENCH_ROUNDS", "3"))


@pytest.fixture(scope="module")
def csv_path() -> Path:
    return interaction_csv(bench_rows())


def rust_prepare(csv: Path, out: Path) -> llmesr.Dataset:
    return llmesr.prepare([csv], out, min_user=5, min_item=5, overwrite=True)


def peak_rss_mib(code: str) -> float:
    """Peak resident memory (VmHWM) of a fresh Python process running `code`. The child reads its own
    high-water mark: rusage of a child also counts the parent's memory at fork time."""
    probe = "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    out = subprocess.run(
        [sys.executable, "-c", code + probe], cwd=Path(__file__).parent, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1]) / 1024


def test_prepare_vs_pandas(benchmark, csv_path, tmp_path):
    out_rust, out_pandas = tmp_path / "rust", tmp_path / "pandas"
    ds = benchmark.pedantic(rust_prepare, args=(csv_path, out_rust), rounds=ROUNDS, iterations=1)
    # Same results, so the comparison is fair.
    ref = pandas_prepare(csv_path, out_pandas)
    for name in ("indptr", "items", "train_end", "valid", "test", "timestamps", "ratings"):
        np.testing.assert_array_equal(ref[name], getattr(ds, name), err_msg=name)

    # Alternate the two implementations so machine noise hits both alike; keep each one's best.
    rust_s, pandas_s = [], []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        rust_prepare(csv_path, out_rust)
        rust_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        pandas_prepare(csv_path, out_pandas)
        pandas_s.append(time.perf_counter() - t)

    csv_mib = csv_path.stat().st_size / 2**20
    rust_rss = peak_rss_mib(
        f"import llmesr; llmesr.prepare([{str(csv_path)!r}], {str(tmp_path / 'm1')!r}, min_user=5, min_item=5)"
    )
    pandas_rss = peak_rss_mib(
        "from pathlib import Path; from _pandas_baseline import pandas_prepare; "
        f"pandas_prepare(Path({str(csv_path)!r}), Path({str(tmp_path / 'm2')!r}))"
    )
    import_rss = peak_rss_mib("import llmesr")
    result = {
        "rows": bench_rows(),
        "csv_mib": round(csv_mib, 1),
        "threads": os.cpu_count(),
        "rust_best_s": round(min(rust_s), 3),
        "pandas_best_s": round(min(pandas_s), 3),
        "speedup": round(min(pandas_s) / min(rust_s), 2),
        "rust_peak_rss_mib": round(rust_rss, 1),
        "pandas_peak_rss_mib": round(pandas_rss, 1),
        "python_import_rss_mib": round(import_rss, 1),
        "rust_peak_over_csv": round(rust_rss / csv_mib, 2),
    }
    record(benchmark, f"prepare_{bench_rows()}", result)
