"""The built-in synthetic long-tail dataset."""

import numpy as np

from llmesr import prepare_synthetic
from llmesr.data import pareto_threshold, summarize


def test_deterministic_for_a_seed(tmp_path):
    a = prepare_synthetic(tmp_path / "a", n_users=300, n_items=200, seed=3)
    b = prepare_synthetic(tmp_path / "b", n_users=300, n_items=200, seed=3)
    c = prepare_synthetic(tmp_path / "c", n_users=300, n_items=200, seed=4)
    np.testing.assert_array_equal(a.items, b.items)
    assert a.item_text() == b.item_text()
    assert not np.array_equal(a.indptr, c.indptr) or not np.array_equal(a.items, c.items)


def test_long_tail_shape(tmp_path):
    ds = prepare_synthetic(tmp_path / "s", n_users=1000, n_items=500)
    s = summarize(ds)
    assert 3 <= s["history_length"]["q50"] <= 10
    assert s["history_length"]["q0"] >= 3
    pop = np.sort(ds.train_popularity[1:])[::-1]
    assert pop[: len(pop) // 5].sum() / pop.sum() > 0.5  # the top fifth of items carry most interactions
    assert s["tail_item_share"] > 0.5


def test_item_text_carries_topic_signal(tmp_path):
    ds = prepare_synthetic(tmp_path / "s", n_users=500, n_items=300)
    text = ds.item_text()
    assert all(t["title"] and t["categories"] and t["description"] for t in text)
    # Items that users consume one after the other share a category far more often than chance.
    cat = np.array([hash(t["categories"][0]) for t in text])
    same = [
        cat[a - 1] == cat[b - 1]
        for u in range(1, ds.n_users + 1)
        for a, b in zip(ds.history(u)[:-1], ds.history(u)[1:], strict=False)
    ]
    chance = np.mean([np.mean(cat == c) for c in cat])
    assert np.mean(same) > 3 * chance


def test_pareto_threshold():
    assert pareto_threshold(np.array([10, 9, 1, 1, 1, 1, 1, 1, 1, 1])) == 9
    assert pareto_threshold(np.array([10, 1, 1, 1, 1, 1, 1, 1, 1, 1])) == 1  # every 1 ties the cut
    assert pareto_threshold(np.array([5, 5, 5, 1, 1])) == 5  # ties at the cut go to head
    assert pareto_threshold(np.array([], dtype=int)) == 0
