"""Evaluation negatives and training batches against straightforward Python constructions."""

import numpy as np
import pytest

from llmesr import DataError, prepare_synthetic
from llmesr.sampling import bert4rec_batch, eval_negatives, histories, sasrec_batch


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return prepare_synthetic(tmp_path_factory.mktemp("d") / "syn", n_users=300, n_items=200, seed=2)


def test_eval_negatives(ds):
    neg = eval_negatives(ds, 50, seed=3)
    assert neg.shape == (ds.n_users + 1, 50) and neg.dtype == np.int32 and not neg[0].any()
    for u in range(1, ds.n_users + 1):
        row = neg[u]
        assert len(set(row.tolist())) == 50
        assert not set(row.tolist()) & set(ds.history(u).tolist())  # never touched, test item included
        assert row.min() >= 1 and row.max() <= ds.n_items
    np.testing.assert_array_equal(neg, eval_negatives(ds, 50, seed=3))
    assert (neg != eval_negatives(ds, 50, seed=4)).any()
    # Uniform over the items a user never touched: every item shows up about equally often.
    counts = np.bincount(eval_negatives(ds, 100, seed=5)[1:].ravel(), minlength=ds.n_items + 1)[1:]
    assert counts.min() > 0.5 * counts.mean()
    with pytest.raises(DataError, match=f"the catalogue has only {ds.n_items} items"):
        eval_negatives(ds, ds.n_items, seed=0)  # refused before any allocation
    with pytest.raises(DataError, match="the catalogue has only"):
        eval_negatives(ds, 10**12, seed=0)  # not an abort of the process
    longest = max(len(set(ds.history(u).tolist())) for u in range(1, ds.n_users + 1))
    with pytest.raises(DataError, match="too many items"):
        eval_negatives(ds, ds.n_items - longest + 1, seed=0)


def reference_batch(ds, users, max_len):
    trains = [ds.train_history(u) for u in users]
    length = max(1, min(max_len, max(len(t) - 1 for t in trains)))
    inputs = np.zeros((len(users), length), np.int32)
    targets = np.zeros((len(users), length), np.int32)
    for row, t in enumerate(trains):
        if len(t) >= 2:
            x, y = t[:-1][-length:], t[1:][-length:]
            inputs[row, length - len(x) :] = x
            targets[row, length - len(y) :] = y
    return inputs, targets


@pytest.mark.parametrize("max_len", [1, 5, 200])
def test_sasrec_batch_matches_reference(ds, max_len):
    users = np.array([5, 1, 77, 300, 12])
    inputs, targets, negatives = sasrec_batch(ds, users, max_len=max_len, seed=9, epoch=1)
    ref_inputs, ref_targets = reference_batch(ds, users, max_len)
    np.testing.assert_array_equal(inputs, ref_inputs)
    np.testing.assert_array_equal(targets, ref_targets)
    assert ((negatives == 0) == (targets == 0)).all()  # a negative exactly where there is a target
    for row, u in enumerate(users):
        assert not set(negatives[row][negatives[row] > 0].tolist()) & set(ds.train_history(u).tolist())


def test_sasrec_batch_rows_do_not_depend_on_batch_composition(ds):
    alone = sasrec_batch(ds, np.array([42]), max_len=500, seed=1, epoch=3)[2]
    together = sasrec_batch(ds, np.array([7, 42, 99]), max_len=500, seed=1, epoch=3)[2]
    np.testing.assert_array_equal(together[1, -alone.shape[1] :], alone[0])
    other_epoch = sasrec_batch(ds, np.array([42]), max_len=500, seed=1, epoch=4)[2]
    assert (other_epoch != alone).any()
    with pytest.raises(DataError, match="user 0 is not in"):
        sasrec_batch(ds, np.array([0]))


@pytest.mark.parametrize("split, max_len", [("train", 200), ("test", 200), ("test", 3)])
def test_histories_match_reference(ds, split, max_len):
    users = np.array([3, 250, 1, 99])
    rows = [ds.items[ds.indptr[u] : ds.train_end[u] + (split == "test")][-max_len:] for u in users]
    ref = np.zeros((len(users), max(len(r) for r in rows)), np.int32)
    for i, r in enumerate(rows):
        ref[i, ref.shape[1] - len(r) :] = r
    np.testing.assert_array_equal(histories(ds, users, split, max_len), ref)
    with pytest.raises(ValueError, match="split must be"):
        histories(ds, users, "nope")


def test_bert4rec_batch_masks_about_mask_prob(ds):
    users = np.arange(1, ds.n_users + 1)
    inputs, targets, negatives = bert4rec_batch(ds, users, max_len=200, mask_prob=0.6, seed=4, epoch=2)
    plain = histories(ds, users, "train", 200)
    masked = targets != 0
    mask_token = ds.n_items + 1
    np.testing.assert_array_equal(inputs == mask_token, masked)
    np.testing.assert_array_equal(np.where(masked, targets, inputs), plain)  # unmasked items unchanged
    assert masked.any(axis=1).all()  # every row trains on something
    assert 0.55 < masked.sum() / (plain != 0).sum() < 0.65
    np.testing.assert_array_equal(negatives != 0, masked)
    for row, u in enumerate(users[:50]):
        assert not set(negatives[row][masked[row]].tolist()) & set(ds.train_history(u).tolist())
    again = bert4rec_batch(ds, users, max_len=200, mask_prob=0.6, seed=4, epoch=2)
    np.testing.assert_array_equal(again[0], inputs)


def test_popularity_weighted_negatives(ds):
    users = np.arange(1, ds.n_users + 1)
    counts = np.zeros(ds.n_items + 1)
    for epoch in range(5):
        _, targets, negatives = sasrec_batch(ds, users, 200, seed=1, epoch=epoch, negatives="popularity")
        assert ((negatives == 0) == (targets == 0)).all()
        for row, u in enumerate(users[:40]):
            assert not set(negatives[row][negatives[row] > 0].tolist()) & set(ds.train_history(u).tolist())
        counts += np.bincount(negatives[negatives > 0], minlength=ds.n_items + 1)
    pop = ds.train_popularity
    head, tail = pop >= np.quantile(pop[1:], 0.9), (pop <= np.quantile(pop[1:], 0.5)) & (np.arange(len(pop)) > 0)
    assert counts[head].mean() > 3 * counts[tail].mean()  # popular items are drawn far more often
    _, _, masked_negs = bert4rec_batch(ds, users, 200, seed=1, negatives="popularity")
    assert (masked_negs[masked_negs > 0] <= ds.n_items).all()
    with pytest.raises(ValueError, match="negatives must be one of"):
        sasrec_batch(ds, users, negatives="zipf")
