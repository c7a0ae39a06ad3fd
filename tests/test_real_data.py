"""The shared real datasets (skipped unless LLMESR_TEST_DATA points at them)."""

import numpy as np

from llmesr import prepare
from llmesr.data import summarize


def test_yelp_sequences_unfiltered(shared_data, tmp_path):
    ds = prepare(
        [shared_data / "yelp" / "sequences.txt"], tmp_path / "yelp", items=[shared_data / "yelp" / "items.jsonl"]
    )
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (30_431, 20_033, 316_354)
    assert ds.meta["input_format"] == "seqlines"
    assert ds.meta["items_with_metadata"] == 20_033
    lengths = ds.lengths[1:]
    assert lengths.min() == 5 and lengths.max() == 350
    assert abs(lengths.mean() - 10.4) < 0.01
    # Ids were already 1..N: numeric order maps them to themselves, so line 1 of the file is user 1.
    first = (shared_data / "yelp" / "sequences.txt").read_text().split("\n", 1)[0].split()
    assert ds.user_ids()[1] == first[0]
    assert [ds.item_ids()[i] for i in ds.history(1)] == first[1:]
    assert all(t["title"] for t in ds.item_text())


def test_movielens_with_ratings_times_and_titles(shared_data, tmp_path):
    ml = shared_data / "ml-100k"
    ds = prepare([ml / "u.data"], tmp_path / "ml", items=[ml / "u.item"])
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert ds.ratings is not None and set(np.unique(ds.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    for u in (1, 500, 943):
        t = ds.timestamps[ds.indptr[u] : ds.indptr[u + 1]]
        assert np.all(np.diff(t) >= 0)
    titles = {r["raw_id"]: r["title"] for r in ds.item_text()}
    assert titles["1"] == "Toy Story (1995)"
    assert ds.meta["items_with_metadata"] == 1682
    s = summarize(ds)
    assert s["users"] == 943 and 0 < s["tail_user_share"] < 1
    filtered = prepare([ml / "u.data"], tmp_path / "ml4", min_rating=4, min_user=5, min_item=5)
    assert filtered.n_interactions < 55_375  # ratings >= 4 only, then the 5-core
    assert filtered.lengths[1:].min() >= 5 and filtered.train_popularity.sum() > 0


def test_yelp_prepare_and_embed_pipeline(shared_data, tmp_path):
    import subprocess
    import sys

    from llmesr.data import load_embeddings

    yelp = shared_data / "yelp"
    out = tmp_path / "yelp"
    for cmd in (
        ["llmesr.cli.prepare", str(yelp / "sequences.txt"), "--items", str(yelp / "items.jsonl"), "--out", str(out)],
        ["llmesr.cli.embed", str(out), "--encoder", "hashing", "-k", "10", "--no-cache"],
    ):
        run = subprocess.run([sys.executable, "-m", *cmd, "-q"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    t = load_embeddings(out)
    assert t["item_emb"].shape[0] == 20_034 and t["item_pca"].shape == (20_034, 64)
    assert t["user_emb"].shape[0] == 30_432 and t["similar_users"].shape == (30_432, 10)
    sim = t["similar_users"][1:]
    assert sim.min() >= 1 and sim.max() <= 30_431 and (sim != np.arange(1, 30_432)[:, None]).all()
