"""Exact top-100 similar users: the Rust core against faiss-cpu's exact inner-product search
(`IndexFlatIP` on unit vectors, same thread count) and against the original LLM-ESR method (sklearn
`cosine_similarity` on the full matrix, then `argsort`), which needs n^2 memory and so runs on fewer
users. Sizes: LLMESR_BENCH_USERS (default 50,000) x 384 dims; the original's method on at most 20,000
users (its full matrix and argsort need 12 bytes per pair: 4.8 GB there, 30 GB at 50,000).

    pip install ".[test,bench]" && pytest benches/test_retrieval_speed.py --benchmark-only -s
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from test_prepare_speed import peak_rss_mib

from llmesr.retrieval import similar_users

from _synthetic_log import record

USERS = int(os.environ.get("LLMESR_BENCH_USERS", "50000"))
DIM, K = 384, 100


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit-free embeddings around 200 topic centres, like text embeddings of users."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    return (centres[rng.integers(0, 200, n)] + 0.7 * rng.normal(size=(n, DIM))).astype(np.float32)


def faiss_top_k(emb: np.ndarray, k: int) -> np.ndarray:
    import faiss

    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    _, idx = index.search(unit, k + 1)
    # Drop each row itself (normally in first place; duplicates could put it later).
    keep = idx != np.arange(len(emb))[:, None]
    return np.stack([row[mask][:k] for row, mask in zip(idx, keep, strict=True)])


def original_method(emb: np.ndarray, k: int) -> np.ndarray:
    from sklearn.metrics.pairwise import cosine_similarity

    sim = cosine_similarity(emb)
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1)[:, :k]


def test_similar_users_vs_faiss_and_original(benchmark):
    faiss = pytest.importorskip("faiss")
    pytest.importorskip("sklearn")
    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    emb = clustered(USERS)
    ours = benchmark.pedantic(similar_users, args=(emb, K), rounds=1, iterations=1)

    t = time.perf_counter()
    theirs = faiss_top_k(emb, K)
    faiss_s = time.perf_counter() - t
    t = time.perf_counter()
    similar_users(emb, K)
    ours_s = time.perf_counter() - t
    # The same neighbours (float32 rounding may swap near-ties at the cut).
    overlap = np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(ours, theirs, strict=True)])
    assert overlap > 0.99

    small = emb[: min(USERS, 20_000)]
    t = time.perf_counter()
    original_method(small, K)
    original_s = time.perf_counter() - t
    t = time.perf_counter()
    similar_users(small, K)
    ours_small_s = time.perf_counter() - t

    code = (
        "import numpy as np; from llmesr.retrieval import similar_users; "
        f"rng = np.random.default_rng(0); e = rng.normal(size=({USERS}, {DIM})).astype(np.float32); "
        f"similar_users(e, {K})"
    )
    result = {
        "users": USERS,
        "dims": DIM,
        "k": K,
        "threads": threads,
        "llmesr_s": round(ours_s, 3),
        "faiss_flat_ip_s": round(faiss_s, 3),
        "throughput_vs_faiss": round(faiss_s / ours_s, 2),
        "neighbour_overlap_with_faiss": round(float(overlap), 4),
        "original_method_users": len(small),
        "original_method_s": round(original_s, 3),
        "llmesr_same_users_s": round(ours_small_s, 3),
        "speedup_vs_original": round(original_s / ours_small_s, 1),
        "llmesr_peak_rss_mib": round(peak_rss_mib(code), 1),
        "input_mib": round(emb.nbytes / 2**20, 1),
    }
    record(benchmark, f"retrieval_{USERS}", result)


APPROX_USERS = int(os.environ.get("LLMESR_BENCH_APPROX_USERS", "1000000"))


def test_approximate_similar_users_recall(benchmark):
    """Approximate search at LLMESR_BENCH_APPROX_USERS (default 1,000,000) x 384: recall@10 against
    exact search on 1,000 sampled users, and the time of the whole search."""
    emb = clustered(APPROX_USERS, seed=1)
    marks: dict[int, float] = {}
    t = time.perf_counter()
    approx = benchmark.pedantic(
        similar_users,
        args=(emb, 10),
        kwargs={
            "approximate": True,
            "progress": lambda stage, done, total: marks.setdefault(done, time.perf_counter()),
        },
        rounds=1,
        iterations=1,
    )
    approx_s = time.perf_counter() - t
    build_s = marks[2] - t  # clusters trained (step 1) and every user assigned (step 2)
    rng = np.random.default_rng(2)
    sample = rng.choice(APPROX_USERS, size=min(1000, APPROX_USERS), replace=False)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    exact = []
    for rows in np.array_split(sample, 20):  # exact top-10 of the sampled users, in slices
        sims = unit[rows] @ unit.T
        sims[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        exact.extend(top)
    recall = float(np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(approx[sample], exact, strict=True)]))
    from llmesr import _native

    lists, probe = _native.default_ivf_settings(APPROX_USERS)
    result = {
        "users": APPROX_USERS,
        "dims": DIM,
        "k": 10,
        "lists": lists,
        "probe": probe,
        "build_s": round(build_s, 1),
        "search_s": round(approx_s - build_s, 1),
        "approximate_s": round(approx_s, 1),
        "recall_at_10": round(recall, 4),
        "sampled_queries": len(sample),
    }
    record(benchmark, f"retrieval_approx_{APPROX_USERS}", result)
    assert recall >= 0.95
