"""Evaluation protocols against a straightforward per-user loop."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from llmesr import prepare_synthetic  # noqa: E402
from llmesr.evaluate import evaluate  # noqa: E402
from llmesr.metrics import MetricSums  # noqa: E402
from llmesr.models import LLMESR  # noqa: E402
from llmesr.sampling import eval_negatives  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds = prepare_synthetic(tmp_path_factory.mktemp("d") / "s", n_users=60, n_items=40, seed=4)
    torch.manual_seed(0)
    model = LLMESR(ds.n_items, torch.randn(ds.n_items + 1, 16), hidden=8, max_len=20, dropout=0.0)
    return ds, model


@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_protocols_match_a_per_user_loop(setup, protocol):
    ds, model = setup
    model.eval()
    negatives = eval_negatives(ds, 10, seed=1)
    got = evaluate(model, ds, protocol=protocol, negatives=negatives, max_len=20, batch_size=7).result()
    expected = MetricSums()
    users = np.flatnonzero(ds.test > 0)
    ranks = []
    with torch.no_grad():
        for u in users:
            history = ds.items[ds.indptr[u] : ds.train_end[u] + 1][-20:]
            seq = torch.zeros(1, 20, dtype=torch.long)
            seq[0, 20 - len(history) :] = torch.from_numpy(history.astype(np.int64))
            v = model.user_vector(seq)[0]
            target = int(ds.test[u])
            if protocol == "full":
                candidates = [i for i in range(1, ds.n_items + 1) if i == target or i not in set(history.tolist())]
            else:
                candidates = [target, *negatives[u].tolist()]
            scores = {i: float(v @ model.item_vectors(torch.tensor([i]))[0]) for i in candidates}
            ranks.append(sum(1 for i in candidates if scores[i] >= scores[target]))
    expected.add(np.array(ranks))
    for name, value in expected.means().items():
        assert got["overall"][name] == pytest.approx(value, abs=1e-6), name
    assert got["overall"]["count"] == len(users)


def test_popularity_baseline_matches_numpy(setup):
    from llmesr.evaluate import Popularity

    ds, _ = setup
    got = evaluate(Popularity(ds), ds, protocol="full", max_len=20).result()["overall"]
    pop = ds.train_popularity.astype(float)
    ranks = []
    for u in np.flatnonzero(ds.test > 0):
        history = set(ds.items[ds.indptr[u] : ds.train_end[u] + 1][-20:].tolist())
        target = int(ds.test[u])
        candidates = [i for i in range(1, ds.n_items + 1) if i == target or i not in history]
        ranks.append(sum(1 for i in candidates if pop[i] >= pop[target]))
    expected = MetricSums()
    expected.add(np.array(ranks))
    assert got["NDCG@10"] == pytest.approx(expected.means()["NDCG@10"], abs=1e-9)
    assert got["HR@20"] == pytest.approx(expected.means()["HR@20"], abs=1e-9)
