"""Similar-user retrieval against a NumPy brute-force reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmesr import DataError
from llmesr.retrieval import similar_users


def brute_force(emb: np.ndarray, k: int) -> np.ndarray:
    """The straightforward method: full cosine matrix, self excluded, stable sort (ties: lower index)."""
    unit = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k].astype(np.int32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), dim=st.sampled_from([1, 4, 16]), k_frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_exact_ties_match_reference(n, dim, k_frac, seed):
    # Entries of +-1 in 1, 4 or 16 dimensions: norms are powers of two, so every cosine is exact in
    # float32 and float64 alike, and exactly equal cosines (ties) are everywhere.
    rng = np.random.default_rng(seed)
    emb = rng.choice([-1.0, 1.0], size=(n, dim)).astype(np.float32)
    k = 1 + int(k_frac * (n - 2))
    np.testing.assert_array_equal(similar_users(emb, k), brute_force(emb, k))


def test_random_vectors_across_blocks():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 24)).astype(np.float32)  # several query and database blocks
    got, want = similar_users(emb, 10), brute_force(emb, 10)
    assert got.shape == (3000, 10) and got.dtype == np.int32
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    # Float32 products may swap neighbours whose similarities agree to ~1e-6: compare similarities.
    sim_got = np.take_along_axis(unit @ unit.T, got, axis=1)
    sim_want = np.take_along_axis(unit @ unit.T, want, axis=1)
    np.testing.assert_allclose(sim_got, sim_want, atol=1e-5)
    assert (got != np.arange(3000)[:, None]).all()  # never itself
    assert (got == want).mean() > 0.99


@pytest.mark.parametrize(
    ("emb", "k", "message"),
    [
        (np.array([[1.0, np.nan], [1.0, 1.0]]), 1, "row 0 has NaN or infinite"),
        (np.array([[1.0, 1.0], [np.inf, 1.0]]), 1, "row 1 has NaN or infinite"),
        (np.array([[1.0, 1.0], [0.0, 0.0]]), 1, "row 1 is all zeros"),
        (np.ones((3, 2)), 3, "k must be between 1 and the number of rows minus one (2), not 3"),
        (np.ones((3, 2)), 0, "k must be between 1"),
    ],
)
def test_bad_input(emb, k, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        similar_users(emb, k)


def test_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        similar_users(np.ones(5), 1)
    with pytest.raises(DataError, match="do not make"):
        similar_users(np.ones((4, 0)), 1)


def test_approximate_exact_when_probing_everything():
    rng = np.random.default_rng(3)
    emb = rng.choice([-1.0, 1.0], size=(900, 4)).astype(np.float32)
    got = similar_users(emb, 5, approximate=True, lists=10, probe=10)
    np.testing.assert_array_equal(got, brute_force(emb, 5))


def test_approximate_recall_and_determinism():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(40, 32))
    emb = (centres[rng.integers(0, 40, 8000)] + 0.6 * rng.normal(size=(8000, 32))).astype(np.float32)
    exact = similar_users(emb, 10)
    approx = similar_users(emb, 10, approximate=True, seed=5)
    recall = np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    np.testing.assert_array_equal(approx, similar_users(emb, 10, approximate=True, seed=5))
    with pytest.raises(ValueError, match="approximate=True"):
        similar_users(emb, 10, lists=4)


def test_rust_work_in_a_forked_child_does_not_hang():
    # A child forked after the thread pool started (a DataLoader worker) has no pool threads left:
    # without the fork guard its first parallel call waits forever.
    import subprocess
    import sys

    script = """
import multiprocessing as mp, numpy as np
from llmesr.retrieval import similar_users
x = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
first = similar_users(x, 5)
def again(_):
    return similar_users(x, 5)
with mp.get_context("fork").Pool(1) as pool:
    assert (pool.map(again, [0])[0] == first).all()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-1000:]
