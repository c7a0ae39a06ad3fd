"""Ranking metrics against hand computations and a straightforward per-row loop."""

import math

import numpy as np
import pytest

from llmesr import prepare_synthetic
from llmesr.metrics import GroupedMetrics, Groups, MetricSums, quantile_edges, target_ranks, user_lengths


def test_ranks_count_ties_against_the_target():
    scores = np.array([[0.5, 0.9, 0.1], [0.5, 0.5, 0.5], [0.9, 0.1, 0.2], [0.3, -np.inf, 0.3]])
    np.testing.assert_array_equal(target_ranks(scores), [2, 3, 1, 2])
    np.testing.assert_array_equal(target_ranks(scores, np.array([1, 0, 2, 2])), [1, 3, 2, 2])
    # The original's ties: the target first among equals.
    np.testing.assert_array_equal(target_ranks(scores, 0, "optimistic"), [2, 1, 1, 1])
    with pytest.raises(ValueError, match="ties must be"):
        target_ranks(scores, 0, "random")


def test_a_nan_score_ranks_last_never_first():
    scores = np.array([[np.nan, np.nan, np.nan], [np.nan, 0.1, 0.2], [0.3, np.nan, 0.1]])
    for ties in ("pessimistic", "optimistic"):
        np.testing.assert_array_equal(target_ranks(scores, 0, ties), [3, 3, 1])


def test_metric_values_by_hand():
    m = MetricSums(cutoffs=(1, 2))
    m.add(np.array([1, 2, 5]))
    r = m.means()
    assert r["HR@1"] == 1 / 3 and r["HR@2"] == 2 / 3
    assert math.isclose(r["NDCG@2"], (1 + 1 / math.log2(3)) / 3)
    assert math.isclose(r["MRR@2"], (1 + 0.5) / 3)


def test_sums_merge_like_one_pass():
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 200, 1000)
    whole = MetricSums()
    whole.add(ranks)
    parts = [MetricSums() for _ in range(3)]
    for p, chunk in zip(parts, np.array_split(ranks, 3), strict=True):
        p.add(chunk)
    merged = MetricSums()
    for p in parts:
        merged.merge(p)
    for name, value in whole.means().items():
        assert math.isclose(value, merged.means()[name], rel_tol=1e-12)
    # The straightforward loop.
    ndcg10 = np.mean([1 / math.log2(r + 1) if r <= 10 else 0.0 for r in ranks])
    assert math.isclose(whole.means()["NDCG@10"], ndcg10, rel_tol=1e-12)


def test_groups(tmp_path):
    ds = prepare_synthetic(tmp_path / "s", n_users=200, n_items=100, seed=3)
    groups = Groups.of(ds)
    users = np.arange(1, ds.n_users + 1)
    targets = ds.test[1:]
    g = GroupedMetrics(groups)
    ranks = np.random.default_rng(1).integers(1, 30, len(users))
    g.add(users, targets, ranks)
    result = g.result()
    assert result["tail_user"]["count"] + result["head_user"]["count"] == ds.n_users
    assert result["tail_item"]["count"] + result["head_item"]["count"] == ds.n_users
    # The paper's user groups: the length of the test input (training history plus validation item).
    np.testing.assert_array_equal(groups.user_length, ds.train_end - ds.indptr[:-1] + 1)
    tail = groups.user_length[users] < groups.tail_user_len
    expected = MetricSums()
    expected.add(ranks[tail])
    assert result["tail_user"]["HR@10"] == expected.means()["HR@10"]
    # The five-group breakdowns: a partition, ordered by length / popularity, about a fifth each.
    for kind, values in (("length", groups.user_length[users]), ("popularity", ds.train_popularity[targets])):
        counts = [result[f"{kind}_{i}"]["count"] for i in range(1, 6)]
        assert sum(counts) == ds.n_users
        members = [values[groups.masks(users, targets)[f"{kind}_{i}"]] for i in range(1, 6)]
        nonempty = [m for m in members if len(m)]
        assert all(a.max() < b.min() for a, b in zip(nonempty, nonempty[1:], strict=False))
    assert max(result[f"length_{i}"]["count"] for i in range(1, 6)) < 0.5 * ds.n_users
    empty = MetricSums()
    assert empty.means()["HR@10"] is None  # JSON has no NaN


def test_user_group_definitions(tmp_path):
    ds = prepare_synthetic(tmp_path / "s", n_users=100, n_items=50, seed=4)
    evaluable = ds.test[1:] > 0
    history, test_input = user_lengths(ds, "history"), user_lengths(ds, "input", "test")
    valid_input = user_lengths(ds, "input", "valid")
    np.testing.assert_array_equal(history, ds.lengths)
    np.testing.assert_array_equal(test_input[1:][evaluable], ds.lengths[1:][evaluable] - 1)
    np.testing.assert_array_equal(valid_input[1:][evaluable], ds.lengths[1:][evaluable] - 2)
    # A threshold at the shortest history: no tail user by history length, but by input length there
    # are (the case where the two definitions disagree most).
    shortest = int(ds.lengths[1:].min())
    users = np.flatnonzero(ds.test > 0)
    by_history = Groups.of(ds, tail_user_len=shortest, user_groups="history")
    by_input = Groups.of(ds, tail_user_len=shortest, user_groups="input", split="valid")
    assert not by_history.masks(users, ds.test[users])["tail_user"].any()
    assert by_input.masks(users, ds.valid[users])["tail_user"].any()
    assert by_input.describe()["user_groups"] == "input"
    # Validation and test share thresholds and edges (both from the test inputs).
    assert Groups.of(ds, split="test").describe() == Groups.of(ds, split="valid").describe()
    with pytest.raises(ValueError, match="user groups must be"):
        user_lengths(ds, "whole")


def test_quantile_edges():
    assert quantile_edges(np.arange(1, 101)) == [21, 41, 61, 81]
    assert quantile_edges(np.array([], dtype=int)) == [0, 0, 0, 0]
