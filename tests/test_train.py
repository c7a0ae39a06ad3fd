"""A short training run end to end: run folder, metrics layout, reproducibility for a seed."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from llmesr import prepare_synthetic  # noqa: E402
from llmesr.config import TrainConfig  # noqa: E402
from llmesr.embed import embed_dataset  # noqa: E402
from llmesr.encoders import HashingEncoder  # noqa: E402
from llmesr.train import train  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "syn"
    prepare_synthetic(path, n_users=150, n_items=60, seed=7)
    embed_dataset(path, HashingEncoder(32), k=10, hidden=8)
    return path


def config(data, out, **kw):
    return TrainConfig(
        data=str(data),
        out=str(out),
        epochs=2,
        patience=5,
        hidden=8,
        max_len=20,
        batch_size=32,
        dropout=0.2,
        n_negatives=20,
        **kw,
    )


@pytest.mark.parametrize("method", ["llmesr", "base"])
def test_run_folder_and_metrics(data, tmp_path, method):
    metrics = train(config(data, tmp_path / "run", method=method), progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.json", "log.txt", "best.safetensors", "metrics.json"}
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best_epoch"] in (1, 2)
    for split in ("test", "valid"):
        for protocol in ("full", "sampled"):
            groups = saved[split][protocol]
            assert set(groups) == {"overall", "tail_user", "head_user", "tail_item", "head_item"}
            assert 0 <= groups["overall"]["NDCG@10"] <= groups["overall"]["HR@10"] <= 1
    assert metrics["test"]["full"]["overall"]["count"] == 150
    assert json.loads((run / "config.json").read_text())["method"] == method


def test_same_seed_same_metrics(data, tmp_path):
    a = train(config(data, tmp_path / "a"), progress=False)
    b = train(config(data, tmp_path / "b"), progress=False)
    assert a["test"] == b["test"]
