"""DDP on CPU (gloo, 2 processes launched by torchrun): the sharded evaluation of a checkpoint equals
the single-process one, and a 2-process training run writes one run folder."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from llmesr.config import TrainConfig  # noqa: E402
from llmesr.train import train  # noqa: E402

from conftest import embedded_synthetic, epoch_lines  # noqa: E402

SHARDED_EVAL = """
import json, sys
import numpy as np
from llmesr import distributed, load_dataset
from llmesr.evaluate import PopularityDebiased, evaluate
from llmesr.metrics import Groups
from llmesr.recommend import Recommender
from llmesr.sampling import eval_negatives

run, out = sys.argv[1], sys.argv[2]
ranks = distributed.init("cpu")
rec = Recommender(run)
ds = load_dataset(rec.config.data)
users = np.flatnonzero(ds.test > 0)
negatives = eval_negatives(ds, rec.config.evaluation.n_negatives, seed=rec.config.run.seed)
scorer = PopularityDebiased(rec.model, ds, rec.popularity_penalty)  # the run's tested rankings
result = {}
for protocol in ("full", "sampled"):
    m = evaluate(scorer, ds, protocol=protocol, negatives=negatives, users=ranks.shard(users),
                 groups=Groups.of(ds), max_len=rec.config.model.max_len, batch_size=7)
    result[protocol] = distributed.reduce_metrics(m, ranks).result()
if ranks.main:
    open(out, "w").write(json.dumps(result))
distributed.shutdown(ranks)
"""


def torchrun(*args, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    env = {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # An odd number of users: the shards differ in size.
    return embedded_synthetic(tmp_path_factory.mktemp("d") / "syn", n_users=101, n_items=50, seed=3)


def test_sharded_evaluation_equals_single_process(data, tmp_path):
    cfg = TrainConfig.of(
        data=str(data), out=str(tmp_path / "run"), epochs=1, hidden=8, max_len=20, batch_size=32, n_negatives=20
    )
    single = train(cfg, progress=False)
    script = tmp_path / "ddp_eval.py"
    script.write_text(textwrap.dedent(SHARDED_EVAL))
    torchrun(str(script), str(tmp_path / "run"), str(tmp_path / "sharded.json"), cwd=tmp_path)
    sharded = json.loads((tmp_path / "sharded.json").read_text())
    for protocol in ("full", "sampled"):
        for group, values in single["test"][protocol].items():
            assert sharded[protocol][group]["count"] == values["count"], group
            for name, v in values.items():
                assert sharded[protocol][group][name] == pytest.approx(v, abs=1e-12), (group, name)


def test_two_process_training_run(data, tmp_path):
    out = tmp_path / "ddp"
    torchrun(
        "-m", "llmesr.cli.train", "--data", str(data), "--out", str(out), "--epochs", "2", "--hidden", "8",
        "--max-len", "20", "--batch-size", "16", "--n-negatives", "20", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["full"]["overall"]["count"] == 101
    lines = (out / "log.txt").read_text().splitlines()
    assert len(epoch_lines(out)) == 2 and len(set(lines)) == len(lines)  # rank 0 alone writes
