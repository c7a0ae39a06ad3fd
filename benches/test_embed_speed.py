"""The offline stage: texts per second of the default encoder (all-MiniLM-L6-v2 on CPU) when the texts
are encoded in the order given against shortest first (what `encode_all` does), on user texts of the
synthetic data (titles of each user's history: lengths vary like real users'); and the PCA of an item
table by the covariance's `eigh` (ours) against the full SVD (the previous code). Sizes:
LLMESR_BENCH_TEXTS (default 2,000 texts), LLMESR_BENCH_PCA_ROWS (default 12,000) x 1536.

    pip install ".[test,bench,embed]" && pytest benches/test_embed_speed.py --benchmark-only -s
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from llmesr.embed import pca
from llmesr.encoders import encode_all
from llmesr.text import DEFAULT_USER_TEMPLATE, user_prompts

from _synthetic_log import record

TEXTS = int(os.environ.get("LLMESR_BENCH_TEXTS", "2000"))
PCA_ROWS = int(os.environ.get("LLMESR_BENCH_PCA_ROWS", "12000"))


def encode_in_order(encoder, texts: list[str], batch: int = 256) -> np.ndarray:
    """The previous way: chunks of `batch` texts in the order given."""
    return np.concatenate([encoder.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def test_texts_per_second_given_order_vs_shortest_first(benchmark, tmp_path):
    pytest.importorskip("sentence_transformers")
    from llmesr import prepare_synthetic
    from llmesr.encoders import SentenceTransformerEncoder

    ds = prepare_synthetic(tmp_path / "syn", n_users=TEXTS, n_items=2000, seed=0)
    texts = user_prompts(ds, DEFAULT_USER_TEMPLATE)[:TEXTS]
    encoder = SentenceTransformerEncoder()
    encoder.encode(texts[:64])  # warm-up
    t = time.perf_counter()
    given = encode_in_order(encoder, texts)
    given_s = time.perf_counter() - t
    t = time.perf_counter()
    ours, _ = benchmark.pedantic(encode_all, args=(texts, encoder), rounds=1, iterations=1)
    ours_s = time.perf_counter() - t
    np.testing.assert_allclose(ours, given, atol=2e-5)  # the same vectors, whatever the batch
    lengths = [len(x) for x in texts]
    result = {
        "texts": len(texts),
        "text_chars_median": int(np.median(lengths)),
        "text_chars_max": max(lengths),
        "threads": os.cpu_count(),
        "given_order_texts_per_s": round(len(texts) / given_s, 1),
        "shortest_first_texts_per_s": round(len(texts) / ours_s, 1),
        "speedup": round(given_s / ours_s, 2),
    }
    record(benchmark, f"embed_{TEXTS}", result)


def test_pca_by_covariance_vs_full_svd(benchmark):
    rng = np.random.default_rng(0)
    table = (rng.normal(size=(PCA_ROWS, 1536)) * np.linspace(2, 0.05, 1536)).astype(np.float32)
    ours = benchmark.pedantic(pca, args=(table, 64), rounds=1, iterations=1)
    t = time.perf_counter()
    pca(table, 64)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    centred = table.astype(np.float64) - table.mean(axis=0)
    reference = centred @ np.linalg.svd(centred, full_matrices=False)[2][:64].T
    svd_s = time.perf_counter() - t
    signs = np.sign((ours * reference).sum(axis=0))
    np.testing.assert_allclose(ours, reference * signs, atol=1e-3)
    result = {
        "rows": PCA_ROWS,
        "dims": 1536,
        "components": 64,
        "eigh_s": round(ours_s, 3),
        "full_svd_s": round(svd_s, 3),
        "speedup": round(svd_s / ours_s, 1),
    }
    record(benchmark, f"pca_{PCA_ROWS}", result)
