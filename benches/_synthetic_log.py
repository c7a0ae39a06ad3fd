"""Shared pieces of the benchmarks: the bench folder, a reproducible large interaction log (cached on disk:
writing it is slow) and how a benchmark records its figures."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def bench_dir() -> Path:
    d = Path(os.environ.get("LLMESR_BENCH_DIR", Path(tempfile.gettempdir()) / "llmesr-bench"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def record(benchmark, name: str, result: dict) -> None:
    """A benchmark's figures: in pytest-benchmark's extra info, as NAME.json in the bench folder, and printed."""
    benchmark.extra_info.update(result)
    (bench_dir() / f"{name}.json").write_text(json.dumps(result, indent=2))
    print("\n" + json.dumps(result, indent=2))


def bench_rows() -> int:
    return int(os.environ.get("LLMESR_BENCH_ROWS", "10000000"))


def interaction_csv(rows: int, seed: int = 0) -> Path:
    """`user,item,timestamp,rating` with Zipf-like item popularity and ~20 interactions per user."""
    path = bench_dir() / f"log_{rows}_{seed}.csv"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, rows // 20), max(10, rows // 100)
    users = rng.integers(1, n_users + 1, rows)
    items = np.minimum((rng.pareto(1.2, rows) * n_items / 50).astype(np.int64) + 1, n_items)
    times = rng.integers(1_300_000_000, 1_700_000_000, rows)
    ratings = rng.integers(1, 6, rows)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("user,item,timestamp,rating\n")
        for s in range(0, rows, 1_000_000):
            block = np.stack(
                [
                    users[s : s + 1_000_000],
                    items[s : s + 1_000_000],
                    times[s : s + 1_000_000],
                    ratings[s : s + 1_000_000],
                ],
                1,
            )
            np.savetxt(f, block, fmt="%d", delimiter=",")
    os.replace(tmp, path)
    return path
