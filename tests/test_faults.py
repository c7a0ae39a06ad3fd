"""Regressions of the fault and bad-input probe: every case here once crashed, corrupted, leaked or
reported nonsense. Small and fast; each names the defect it guards against."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from llmesr import DataError, prepare, prepare_synthetic  # noqa: E402
from llmesr.cli import embed as embed_cli  # noqa: E402
from llmesr.cli import prepare as prepare_cli  # noqa: E402
from llmesr.cli import train as train_cli  # noqa: E402
from llmesr.config import TrainConfig  # noqa: E402
from llmesr.data import load_dataset, load_embeddings  # noqa: E402
from llmesr.embed import embed_dataset  # noqa: E402
from llmesr.encoders import HashingEncoder, OpenAIEncoder  # noqa: E402
from llmesr.evaluate import evaluate  # noqa: E402
from llmesr.io import atomic_write_text  # noqa: E402
from llmesr.models import LLMESR  # noqa: E402
from llmesr.runs import read_run_config  # noqa: E402
from llmesr.train import train  # noqa: E402

from conftest import embedded_synthetic, epoch_lines, serve, write  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return embedded_synthetic(tmp_path_factory.mktemp("d") / "syn", n_users=80, n_items=40, seed=3)


def copy_of(data, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(data, dst)
    return dst


class Killed(Exception):
    pass


def killed_after(epochs):
    """Trains `cfg` and stops it (as a kill would) after `epochs` epochs."""

    def run(cfg):
        def stop(epoch):
            if epoch == epochs:
                raise Killed

        with pytest.raises(Killed):
            train(cfg, progress=False, on_epoch=stop)

    return run


def config(data, out, **kw):
    settings = dict(epochs=1, patience=5, hidden=8, max_len=10, batch_size=32, dropout=0.2, n_negatives=10)
    return TrainConfig.of(data=str(data), out=str(out), **(settings | kw))


# 1. A diverged run is never reported as perfect.


def test_a_nan_loss_stops_the_run_and_writes_no_metrics(data, tmp_path, monkeypatch):
    monkeypatch.setattr(LLMESR, "forward", lambda self, *a, **k: self.id_view.table.weight.sum() * np.nan)
    with pytest.raises(ValueError, match=r"epoch 1, batch 1: the training loss is not finite \(nan"):
        train(config(data, tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_skipping_nonfinite_batches_is_logged(data, tmp_path, monkeypatch):
    real = LLMESR.forward
    calls = [0]

    def every_other_nan(self, *a, **k):
        calls[0] += 1
        loss = real(self, *a, **k)
        return loss * np.nan if calls[0] % 2 else loss

    monkeypatch.setattr(LLMESR, "forward", every_other_nan)
    metrics = train(config(data, tmp_path / "run", on_nonfinite="skip"), progress=False)
    assert "skipped 2 of 3 batches with a NaN or infinite loss" in (tmp_path / "run" / "log.txt").read_text()
    assert np.isfinite(metrics["history"][0]["loss"])


def test_nan_scores_are_refused_by_evaluation(data):
    ds = load_dataset(data)
    model = LLMESR(ds.n_items, hidden=8, max_len=10, views="id")
    with torch.no_grad():
        model.id_view.table.weight[3] = np.nan
    with pytest.raises(ValueError, match="item vectors hold NaN or infinite values"):
        evaluate(model, ds)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"alpha": float("nan")}, "alpha must be a finite number >= 0"),
        ({"lr": float("inf")}, "lr must be a finite number > 0"),
        ({"mask_prob": 1.0}, r"mask_prob must be in \(0, 1\)"),
        ({"patience": 0}, "patience must be at least 1"),
        ({"out": ""}, "out must name a run folder"),
        ({"tail_user_len": 0}, "tail_user_len must be at least 1"),
    ],
)
def test_invalid_settings_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.of(**({"data": "d", "out": "o"} | setting))


def test_embedding_tables_with_nan_are_refused_at_load(data, tmp_path):
    ds = copy_of(data, tmp_path)
    table = np.load(ds / "item_emb.npy")
    table[2, 1] = np.inf
    np.save(ds / "item_emb.npy", table)
    info = json.loads((ds / "embed.json").read_text())
    from llmesr.data import file_sha256

    info["files"]["item_emb.npy"] = file_sha256(ds / "item_emb.npy")  # consistent hashes, bad values
    (ds / "embed.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="item_emb.npy: NaN or infinite values"):
        load_embeddings(ds)


# 2. --overwrite replaces only what we wrote.


def test_overwrite_never_deletes_a_dataset_or_a_foreign_folder(data, tmp_path):
    ds = copy_of(data, tmp_path)
    with pytest.raises(FileExistsError, match="is not a run folder"):
        train(config(ds, ds), progress=False, overwrite=True)
    assert (ds / "meta.json").exists() and (ds / "items.npy").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="is not a run folder"):
        train(config(ds, foreign), progress=False, overwrite=True)
    with pytest.raises(FileExistsError, match="is not a folder this command wrote"):
        prepare_synthetic(foreign, n_users=20, n_items=10, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "precious"


def test_prepare_refuses_a_file_or_an_empty_out(tmp_path, capsys):
    src = write(tmp_path / "x.csv", "user,item\n1,2\n1,3\n1,4\n")
    target = write(tmp_path / "keep.txt", "keep me")
    assert prepare_cli.main([str(src), "--out", str(target), "--overwrite", "-q"]) == 2
    assert "is not a folder this command wrote" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    assert prepare_cli.main([str(src), "--out", "", "-q"]) == 2
    assert "does not name a folder" in capsys.readouterr().err


# 4. Resume continues the folder it is given, on the data it started with.


def test_resume_writes_into_the_given_folder_and_notices_changed_data(data, tmp_path, capsys):
    ds = copy_of(data, tmp_path)
    run = tmp_path / "run"
    killed_after(1)(config(ds, run, epochs=2))
    copied = tmp_path / "copied"
    shutil.copytree(run, copied)
    assert train_cli.main(["--resume", str(copied), "-q"]) == 0
    assert (copied / "metrics.json").exists() and not (run / "metrics.json").exists()
    # The data changes under the killed run: resume refuses.
    embed_dataset(ds, HashingEncoder(16), k=10, hidden=8, item_template="{title}")
    assert train_cli.main(["--resume", str(run), "-q"]) == 2
    assert "changed since the run started (embed.json)" in capsys.readouterr().err


def test_serving_and_the_tail_curve_refuse_a_run_whose_data_changed(data, tmp_path, capsys):
    from llmesr.cli import report as report_cli
    from llmesr.recommend import Recommender

    ds = copy_of(data, tmp_path)
    run = tmp_path / "run"
    train(config(ds, run, epochs=1), progress=False)
    Recommender(run)  # the data it was trained on: served
    prepare_synthetic(ds, n_users=80, n_items=40, seed=4, overwrite=True)  # other interactions, same item count
    embed_dataset(ds, HashingEncoder(16), k=10, hidden=8)
    with pytest.raises(ValueError, match=r"changed since the run started \(.*items.npy.*\): train again"):
        Recommender(run)
    assert report_cli.main([str(run), "--tail-curve", "0,1"]) == 2
    assert "changed since the run started" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--layers", "1000000", "GiB to train"),
        ("--hidden", "10000000", "GiB to train"),
        ("--max-len", "1000000000", "GiB to train"),
        ("--batch-size", "100000000", "GiB to train"),
        ("--n-negatives", "1000000000", "but the catalogue has only 40 items"),
        ("--loss-negatives", "10000000000", "GiB to train"),
    ],
)
def test_settings_too_large_for_the_machine_are_refused_before_allocating(
    data, tmp_path, capsys, option, value, message
):
    argv = ["--data", str(data), "--out", str(tmp_path / "r"), "--method", "base", "--epochs", "1", "-q"]
    if option == "--loss-negatives":
        argv += ["--loss", "sampled"]
    assert train_cli.main(argv + [option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_the_memory_estimate_bounds_a_real_step():
    from llmesr.runs import training_bytes

    # the paper's settings on a Yelp-sized catalogue, 256 shared negatives: measured, a 0.2-0.3 GB step
    paper = TrainConfig.of(data="-", out="-", loss="sampled", loss_negatives=256)
    assert 0.05 * 2**30 < training_bytes(paper, 20_033, 384) < 2 * 2**30
    # 8,192 (6,726 distinct) at every position of a full batch: the chunked loss peaked 254 MiB above its inputs
    assert 254 * 2**20 < training_bytes(paper.replace(loss_negatives=8192), 20_033, 384) < 2 * 2**30


def test_a_run_started_with_a_relative_data_folder_resumes_from_anywhere(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data.parent)
    run = tmp_path / "run"
    killed_after(1)(config(data.name, run, epochs=2))  # --data given relative to the working directory
    assert read_run_config(run)["data"] == str(data)  # recorded absolute
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["--resume", str(run), "-q"]) == 0


def test_llmesr_on_a_dataset_without_item_text_is_refused(tmp_path, capsys):
    ds = prepare_synthetic(tmp_path / "d", n_users=80, n_items=40, seed=3)
    rng = np.random.default_rng(0)
    embed_dataset(
        ds.path, item_table=np.ones((40, 16), np.float32), user_table=rng.normal(size=(80, 16)), k=10, hidden=8
    )
    argv = ["--data", str(ds.path), "--out", str(tmp_path / "r"), "--hidden", "8", "--n-negatives", "10", "-q"]
    assert train_cli.main(argv) == 2
    assert "every item has the same text embedding (no item text?)" in capsys.readouterr().err
    assert train_cli.main([*argv, "--method", "base", "--epochs", "1"]) == 0  # the backbone alone trains


def test_resume_log_has_each_epoch_once(data, tmp_path):
    run = tmp_path / "run"
    cfg = config(data, run, epochs=3)
    killed_after(2)(cfg)
    # A kill after the epoch-3 line was logged but before its checkpoint: the line is there twice otherwise.
    with open(run / "log.txt", "a") as f:
        f.write("epoch 3: loss 9.9, logged before the kill\n")
    train(cfg, progress=False, resume=True)
    epochs = [line.split(":")[0] for line in epoch_lines(run)]
    assert epochs == ["epoch 1", "epoch 2", "epoch 3"]


def test_corrupt_checkpoint_and_config_are_clear_errors(data, tmp_path, capsys):
    run = tmp_path / "run"
    killed_after(1)(config(data, run, epochs=2))
    (run / "checkpoint.safetensors").write_bytes(b"\x00" * 50)
    assert train_cli.main(["--resume", str(run), "-q"]) == 2
    assert "checkpoint.safetensors: not a readable safetensors file" in capsys.readouterr().err
    (run / "config.json").write_text("{not json")
    assert train_cli.main(["--resume", str(run), "-q"]) == 2
    assert "config.json: not valid JSON" in capsys.readouterr().err


def test_tampered_checkpoints_and_float16_weights_are_refused(data, tmp_path, capsys):
    from safetensors.torch import load_file, safe_open, save_file

    from llmesr.recommend import Recommender

    run = tmp_path / "run"
    killed_after(1)(config(data, run, epochs=2))
    path = run / "checkpoint.safetensors"
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    state = json.loads(meta["state"])
    save_file(tensors, path, metadata=meta | {"state": json.dumps({k: v for k, v in state.items() if k != "epoch"})})
    assert train_cli.main(["--resume", str(run), "-q"]) == 2
    assert "its loop state is damaged (needs epoch, best" in capsys.readouterr().err
    half = {k: v.half() if k.startswith("model.") and v.is_floating_point() else v for k, v in tensors.items()}
    save_file(half, path, metadata=meta)
    assert train_cli.main(["--resume", str(run), "-q"]) == 2
    assert "is torch.float16, the model's torch.float32: not this run's weights" in capsys.readouterr().err
    save_file(tensors, path, metadata=meta)
    assert train_cli.main(["--resume", str(run), "-q"]) == 0  # the genuine checkpoint still resumes
    best = load_file(run / "best.safetensors")
    save_file({k: v[..., :1].contiguous() if v.dim() == 2 else v for k, v in best.items()}, run / "best.safetensors")
    with pytest.raises(ValueError, match="best.safetensors: not this run's weights"):
        Recommender(run)


# 5. The OpenAI-compatible encoder neither leaks the key nor hangs.


class Hostile(BaseHTTPRequestHandler):
    mode = "redirect"
    seen_keys: list[str] = []

    def do_POST(self):
        type(self).seen_keys.append(self.headers.get("Authorization", ""))
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.mode == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://attacker.invalid/steal")
            self.end_headers()
        elif self.mode == "echo":
            body = f"bad request, your key was {self.headers['Authorization']}".encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.mode == "garbage":
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not json!")
        elif self.mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b" ")
                self.wfile.flush()
                threading.Event().wait(0.1)


@pytest.fixture
def hostile():
    with serve(Hostile) as url:
        yield url


def test_openai_encoder_does_not_follow_redirects_with_the_key(hostile):
    Hostile.mode, Hostile.seen_keys = "redirect", []
    with pytest.raises(RuntimeError, match="HTTP 307, redirected to .*not followed"):
        OpenAIEncoder(hostile, "m", api_key="sk-secret-123456").encode(["x"])
    assert len(Hostile.seen_keys) == 1


def test_openai_encoder_redacts_an_echoed_key(hostile):
    Hostile.mode = "echo"
    with pytest.raises(RuntimeError) as err:
        OpenAIEncoder(hostile, "m", api_key="sk-secret-123456").encode(["x"])
    assert "HTTP 400" in str(err.value) and "sk-secret" not in str(err.value) and "[redacted]" in str(err.value)


def test_openai_encoder_retries_malformed_answers_and_cuts_off_a_trickle(hostile):
    Hostile.mode, Hostile.seen_keys = "garbage", []
    with pytest.raises(RuntimeError, match=r"malformed answer .*\(after 2 retries\)"):
        OpenAIEncoder(hostile, "m", retries=2, sleep=lambda s: None).encode(["x"])
    assert len(Hostile.seen_keys) == 3
    Hostile.mode = "trickle"
    with pytest.raises(RuntimeError, match=r"no complete answer within 1 s"):
        OpenAIEncoder(hostile, "m", timeout=1.0, retries=0).encode(["x"])


def test_embed_cli_failure_is_one_line(data, tmp_path, capsys):
    ds = copy_of(data, tmp_path)
    code = embed_cli.main(
        [str(ds), "--encoder", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
        + ["--retries", "0", "-q", "--no-cache", "-k", "10", "--hidden", "8"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: http://127.0.0.1:9/v1/embeddings:") and "Traceback" not in err


# 6. The embedding tables are one set.


def test_a_mixed_embedding_folder_is_refused(data, tmp_path):
    ds = copy_of(data, tmp_path)
    before = np.load(ds / "item_emb.npy")
    embed_dataset(ds, HashingEncoder(16), k=10, hidden=8, item_template="{title} {categories}")
    np.save(ds / "item_emb.npy", before)  # as a kill between two tables would leave it: old and new mixed
    with pytest.raises(DataError, match="item_emb.npy: not the table embed.json describes"):
        load_embeddings(ds)


# 7. and 8. Clear errors instead of tracebacks; dataset folders checked at load.


def test_cli_errors_name_the_problem(tmp_path, capsys):
    src = write(tmp_path / "x.csv", "user,item\n1,2\n1,3\n1,4\n")
    truncated = tmp_path / "t.csv.gz"
    whole = gzip.compress(b"user,item\n" + "".join(f"{u},{u * 7 % 13}\n" for u in range(3000)).encode())
    truncated.write_bytes(whole[: len(whole) // 2])
    for argv, message in [
        ([str(truncated), "--out", str(tmp_path / "o1")], "t.csv.gz"),
        ([str(tmp_path), "--out", str(tmp_path / "o2")], str(tmp_path)),
        ([str(src), "--out", str(src / "sub")], "x.csv/sub: cannot write here"),
    ]:
        assert prepare_cli.main(argv + ["-q"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (argv, err)
    for argv, message in [
        ([str(src), "--out", str(tmp_path / "o3"), "--min-user", "-5"], "must be at least 0, not -5"),
        (["--synthetic", "--n-items", "-3", "--out", str(tmp_path / "o4")], "must be at least 2, not -3"),
    ]:
        with pytest.raises(SystemExit):  # argparse's usage error, exit status 2
            prepare_cli.main(argv)
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: np.save(d / "indptr.npy", np.load(d / "indptr.npy")[::-1].copy()), "indptr.npy: row 0 is"),
        (lambda d: _set(d, "items.npy", 4, 0), "items.npy: entry 4 (user "),
        (lambda d: _set(d, "items.npy", 0, 10**6), "is item 1000000, outside 1..=40"),
        (lambda d: _set(d, "train_end.npy", 5, 10**6), "train_end.npy: row 5 is 1000000, outside the user's history"),
        (lambda d: _set(d, "test.npy", 7, -2), "test.npy: row 7 is item -2"),
        (lambda d: (d / "valid.npy").write_bytes(b""), "valid.npy: not a valid .npy file"),
        (lambda d: _meta(d, "n_items", None), "'n_items' must be a count, found None"),
        (lambda d: _meta(d, "has_ratings", "yes"), "'has_ratings' must be true or false"),
    ],
)
def test_damaged_dataset_folders_are_refused_at_load(data, tmp_path, damage, message):
    ds = copy_of(data, tmp_path)
    damage(ds)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_dataset(ds)


def _set(folder, name, index, value):
    array = np.load(folder / name)
    array[index] = value
    np.save(folder / name, array)


def _meta(folder, key, value):
    meta = json.loads((folder / "meta.json").read_text())
    meta[key] = value
    (folder / "meta.json").write_text(json.dumps(meta))


def test_a_repeated_header_column_is_refused(tmp_path):
    src = write(tmp_path / "dup.csv", "user,item,user\n1,2,3\n")
    with pytest.raises(DataError, match="the header names column 'user' 2 times"):
        prepare([src], tmp_path / "out")


# 9. The Recommender keeps its promises.


@pytest.fixture(scope="module")
def recommender(data, tmp_path_factory):
    from llmesr.recommend import Recommender

    run = tmp_path_factory.mktemp("r") / "run"
    train(config(data, run, max_len=5), progress=False)
    return Recommender(run)


def test_recommender_edge_cases(recommender, data):
    ds = load_dataset(data)
    long_history = list(range(1, 21))  # 20 items, the model reads the last 5
    items, scores = recommender.recommend([long_history], k=ds.n_items)
    assert not set(items[0][items[0] > 0]) & set(long_history)  # none of the history, beyond max_len too
    assert (items[0] == 0).sum() == 20 and np.isneginf(scores[0][items[0] == 0]).all()  # 20 left, then 0
    top, _ = recommender.recommend([[]], k=3)
    np.testing.assert_array_equal(top[0], np.argsort(-ds.train_popularity, kind="stable")[:3])  # popularity
    for bad, error, message in [
        ([[1.7]], TypeError, "item ids must be integers, found 1.7"),
        ([[True]], TypeError, "found True"),
    ]:
        with pytest.raises(error, match=message):
            recommender.recommend(bad)
    with pytest.raises(ValueError, match="k must be between 1 and the number of items"):
        recommender.recommend([[1]], k=0)
    none, none_scores = recommender.recommend([], k=4)
    assert none.shape == (0, 4) and none_scores.shape == (0, 4)


# 10. Leftovers of killed writers are cleaned.


def test_temporaries_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "out.json"
    script = (
        f"import os, sys; from llmesr.io import atomic_write\natomic_write({str(target)!r}, lambda tmp: os._exit(9))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # left behind by the kill
    atomic_write_text(target, "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert os.path.exists(target)


def test_the_samplers_handle_refuses_inconsistent_arrays_instead_of_panicking(data):
    from llmesr import _native

    ds = load_dataset(data)
    train_end = np.array(ds.train_end)
    train_end[3] = ds.indptr[4] + 5  # past the user's history: a sampler would slice out of range
    with pytest.raises(DataError, match="train_end.npy: row 3 is"):
        _native.DatasetHandle(str(data), ds.indptr, train_end, ds.items, ds.valid, ds.test, ds.n_items)


def test_train_refuses_an_empty_out(data, capsys):
    assert train_cli.main(["--data", str(data), "--out", "", "-q"]) == 2
    assert "out must name a run folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("epochs = 1.5", "epochs must be an integer, not 1.5"),
        ("threads = 1.5", "threads must be an integer, not 1.5"),
        ('lr = "fast"', "lr must be a number, not 'fast'"),
        ("cross_attention = 1", "cross_attention must be true or false, not 1"),
        ("seed = 18446744073709551615", "seed must be between 0 and 2^63 - 1, not 18446744073709551615"),
    ],
)
def test_toml_values_of_the_wrong_type_are_refused_in_one_line(data, tmp_path, capsys, toml, message):
    (tmp_path / "run.toml").write_text(toml + "\n")
    argv = ["--data", str(data), "--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "-q"]
    assert train_cli.main(argv) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'run.toml'}: {message}\n"


def test_serving_refuses_a_nan_popularity_penalty(data, tmp_path):
    from llmesr.recommend import Recommender

    train(config(data, tmp_path / "run", epochs=1), progress=False)
    with pytest.raises(ValueError, match="popularity_penalty must be a finite number, not nan"):
        Recommender(tmp_path / "run", popularity_penalty=float("nan"))


def test_a_symlinked_out_is_refused_and_nothing_is_left_behind(data, tmp_path, capsys):
    from llmesr.cli import prepare as prepare_cli

    real = tmp_path / "real"
    prepare_synthetic(real, n_users=30, n_items=20, seed=1)
    link = tmp_path / "link"
    link.symlink_to(real)
    argv = ["--synthetic", "--n-users", "30", "--n-items", "20", "--out", str(link), "--overwrite", "-q"]
    assert prepare_cli.main(argv) == 2
    assert f"{link} is a symbolic link: give the folder it points to ({real})" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"] and link.is_symlink()
    assert (
        train_cli.main(
            ["--data", str(data), "--out", str(link), "--overwrite", "-q", "--n-negatives", "10", "--hidden", "8"]
        )
        == 2
    )
    assert "is a symbolic link" in capsys.readouterr().err


def test_a_full_disk_while_saving_weights_is_one_line_naming_the_file(tmp_path, capsys):
    # A file-size limit makes the write fail as a full disk does (EFBIG instead of ENOSPC).
    import resource
    import signal

    from llmesr.cli.common import run_command
    from llmesr.runs import save_weights

    model = LLMESR(50, views="id", hidden=16, max_len=10)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        code = run_command(lambda: save_weights(tmp_path / "best.safetensors", model))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith(f"error: {tmp_path / 'best.safetensors'}: cannot write (") and "File too large" in err
    assert os.listdir(tmp_path) == []  # no partial file, no temporary left
