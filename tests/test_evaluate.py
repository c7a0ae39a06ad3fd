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
def test_protocols_match_a_per_user_loop(setup, protocol, capsys):
    ds, model = setup
    model.eval()
    negatives = eval_negatives(ds, 10, seed=1)
    got = evaluate(model, ds, protocol=protocol, negatives=negatives, max_len=20, batch_size=7).result()
    expected = MetricSums()
    users = np.flatnonzero(ds.test > 0)
    ranks, recommended = [], []
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
            recommended += sorted(candidates, key=lambda i: -scores[i])[:10]
    expected.add(np.array(ranks))
    for name, value in expected.means().items():
        assert got["overall"][name] == pytest.approx(value, abs=1e-6), name
    assert got["overall"]["count"] == len(users)
    if protocol == "full":  # beyond accuracy, from the top-10 lists
        from llmesr.metrics import Groups

        pop, tail = ds.train_popularity, Groups.of(ds).tail_item_pop
        assert got["overall"]["coverage@10"] == pytest.approx(len(set(recommended)) / ds.n_items)
        assert got["overall"]["tail_share@10"] == pytest.approx(np.mean([pop[i] < tail for i in recommended]))
        assert got["overall"]["mean_popularity@10"] == pytest.approx(np.mean([pop[i] for i in recommended]))
    else:
        assert "coverage@10" not in got["overall"]
    # model selection skips the top-10 lists: the same accuracy, no beyond-accuracy figures
    lean = evaluate(model, ds, protocol=protocol, negatives=negatives, max_len=20, batch_size=7, top_lists=False)
    assert "coverage@10" not in lean.result()["overall"]
    assert lean.result()["overall"]["NDCG@10"] == got["overall"]["NDCG@10"]
    # a progress bar (the test pass of a run) shows on stderr and changes nothing
    shown = evaluate(model, ds, protocol=protocol, negatives=negatives, max_len=20, batch_size=7, progress="test x")
    assert shown.result() == got
    assert "test x" in capsys.readouterr().err


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


@pytest.mark.parametrize("recent", [1, 3])
def test_text_neighbours_baseline_matches_numpy(setup, recent):
    from llmesr.evaluate import TextNeighbours

    ds, _ = setup
    table = np.random.default_rng(0).normal(size=(ds.n_items + 1, 6)).astype(np.float32)
    table[0] = 0
    got = evaluate(TextNeighbours(table, 20, recent), ds, protocol="full", max_len=20).result()["overall"]
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    ranks = []
    for u in np.flatnonzero(ds.test > 0):
        history = ds.items[ds.indptr[u] : ds.train_end[u] + 1][-20:]
        query = unit[history[-recent:]].mean(0)  # the mean of the last `recent` items' unit vectors
        scores = unit @ query
        target = int(ds.test[u])
        candidates = [i for i in range(1, ds.n_items + 1) if i == target or i not in set(history.tolist())]
        ranks.append(sum(1 for i in candidates if scores[i] >= scores[target] - 1e-6))
    expected = MetricSums()
    expected.add(np.array(ranks))
    assert got["NDCG@10"] == pytest.approx(expected.means()["NDCG@10"], abs=1e-6)
    assert got["HR@20"] == pytest.approx(expected.means()["HR@20"], abs=1e-6)


def test_popularity_debiasing_subtracts_gamma_log_popularity(setup):
    from llmesr.evaluate import PopularityDebiased

    ds, model = setup
    model.eval()
    debiased = PopularityDebiased(model, ds, gamma=0.7)
    seq = torch.tensor([[0, 3, 5, 9], [1, 2, 3, 4]])
    items = torch.arange(ds.n_items + 1)
    with torch.no_grad():
        got = debiased.user_vector(seq) @ debiased.item_vectors(items).T
        plain = model.user_vector(seq) @ model.item_vectors(items).T
    expected = plain - 0.7 * torch.log1p(torch.from_numpy(ds.train_popularity.astype(np.float32)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # It moves recommendations towards the tail.
    before = evaluate(model, ds, protocol="full", max_len=20).result()["overall"]
    after = evaluate(PopularityDebiased(model, ds, gamma=5.0), ds, protocol="full", max_len=20).result()["overall"]
    assert after["mean_popularity@10"] < before["mean_popularity@10"]
