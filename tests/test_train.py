"""Short training runs end to end: run folder, metrics layout, every backbone, reproducibility for a
seed, exact resume of a killed run, the command line with a TOML config."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from llmesr.cli import train as train_cli  # noqa: E402
from llmesr.config import TrainConfig, resolve_loss  # noqa: E402
from llmesr.metrics import GROUPS  # noqa: E402
from llmesr.runs import read_run_config  # noqa: E402
from llmesr.sampling import histories  # noqa: E402
from llmesr.train import Training, learning_rate, train  # noqa: E402

from conftest import assert_same_loss_and_gradients, embedded_synthetic, epoch_lines  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return embedded_synthetic(tmp_path_factory.mktemp("d") / "syn", n_users=150, n_items=60, seed=7, dim=32)


def config(data, out, **kw):
    settings = dict(epochs=2, patience=5, hidden=8, max_len=20, batch_size=32, dropout=0.2, n_negatives=20)
    return TrainConfig.of(data=str(data), out=str(out), **(settings | kw))


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "llmesr"},
        {"method": "llmesr", "teachers": "step"},
        {"method": "base"},
        {"backbone": "bert4rec", "distill": "cl", "beta": 0.5},
        {"backbone": "gru4rec", "shared_encoder": False},
        {"views": "semantic", "fusion": "concat", "compat": "original"},
        {"method": "base", "compat": "original", "loss": "ce"},
        {"backbone": "gru4rec", "loss": "sampled", "loss_negatives": 16, "negatives": "popularity"},
    ],
)
def test_run_folder_and_metrics(data, tmp_path, kw):
    metrics = train(config(data, tmp_path / "run", **kw), progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "inputs.json",
        "log.txt",
        "best.safetensors",
        "checkpoint.safetensors",
        "metrics.json",
        "metrics.png",
        "ranks.npz",
    }
    with np.load(run / "ranks.npz", allow_pickle=False) as per_user:
        assert set(per_user.files) == {"users", "full", "sampled"}
        np.testing.assert_array_equal(per_user["users"], np.arange(1, 151))
        ndcg = np.where(per_user["full"] <= 10, 1 / np.log2(per_user["full"] + 1.0), 0.0).mean()
        assert ndcg == pytest.approx(metrics["test"]["full"]["overall"]["NDCG@10"])
    assert (run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ops = metrics["environment"]["ops"]
    assert ops["torch"] == torch.__version__ and ops["native_devices"] == (["cpu"] if ops["compiler"] else [])
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["best_epoch"] in (1, 2) and saved["epochs"] == 2
    for split in ("test", "valid"):
        for protocol in ("full", "sampled"):
            groups = saved[split][protocol]
            assert set(GROUPS) <= set(groups) and len(groups) == 15  # + 5 by length, 5 by popularity
            assert 0 <= groups["overall"]["NDCG@10"] <= groups["overall"]["HR@10"] <= 1
            assert sum(groups[f"length_{i}"]["count"] for i in range(1, 6)) == groups["overall"]["count"]
    assert metrics["test"]["full"]["overall"]["count"] == 150
    assert read_run_config(run) | kw == read_run_config(run)
    assert len(epoch_lines(run)) == 2


def test_same_seed_same_metrics(data, tmp_path):
    a = train(config(data, tmp_path / "a"), progress=False)
    b = train(config(data, tmp_path / "b"), progress=False)
    assert a["test"] == b["test"]


class Killed(Exception):
    pass


@pytest.mark.parametrize("teachers", ["step", "epoch"])
def test_resume_ends_like_an_uninterrupted_run(data, tmp_path, teachers):
    whole = train(config(data, tmp_path / "whole", epochs=4, teachers=teachers), progress=False)

    def kill_after_two(epoch):
        if epoch == 2:
            raise Killed

    cfg = config(data, tmp_path / "killed", epochs=4, teachers=teachers)
    with pytest.raises(Killed):
        train(cfg, progress=False, on_epoch=kill_after_two)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, progress=False)
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        train(config(data, tmp_path / "killed", epochs=4, lr=0.5, teachers=teachers), progress=False, resume=True)
    resumed = train(cfg, progress=False, resume=True)
    assert resumed["test"] == whole["test"] and resumed["valid"] == whole["valid"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    # An epoch's wall-clock time covers its steps and its validation.
    assert all(h["epoch_seconds"] > h["train_seconds"] > 0 for h in whole["history"])


def test_a_run_given_more_epochs_on_resume_goes_on_as_if_started_with_them(data, tmp_path):
    whole = train(config(data, tmp_path / "whole", epochs=4, patience=10), progress=False)
    short = config(data, tmp_path / "short", epochs=2, patience=10)
    assert train(short, progress=False)["epochs"] == 2
    longer = short.replace(epochs=4)
    resumed = train(longer, progress=False, resume=True)
    assert resumed["test"] == whole["test"] and resumed["epochs"] == 4
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert read_run_config(tmp_path / "short")["epochs"] == 4  # the next resume's budget
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        train(longer.replace(lr=0.5), progress=False, resume=True)


def test_learning_rate_schedule_warms_up_then_follows_a_half_cosine_to_zero():
    optim = TrainConfig.of(data="d", out="o", lr=0.01, lr_schedule="cosine", warmup=2, epochs=10).optim
    rates = [learning_rate(optim, done) for done in (0.5, 2, 6, 10, 11)]
    assert rates == pytest.approx([0.0025, 0.01, 0.005, 0.0, 0.0])
    constant = TrainConfig.of(data="d", out="o", lr=0.01, warmup=1, epochs=10).optim
    assert [learning_rate(constant, done) for done in (0.25, 1, 9.5)] == pytest.approx([0.0025, 0.01, 0.01])


def test_a_cosine_run_resumes_on_its_curve_and_refuses_another_length(data, tmp_path):
    cosine = dict(epochs=4, patience=10, lr_schedule="cosine", warmup=1, lr=0.01)
    whole = train(config(data, tmp_path / "whole", **cosine), progress=False)
    constant = train(config(data, tmp_path / "constant", epochs=4, patience=10, lr=0.01), progress=False)
    assert [h["loss"] for h in whole["history"]] != [h["loss"] for h in constant["history"]]

    def kill_after_two(epoch):
        if epoch == 2:
            raise Killed

    cfg = config(data, tmp_path / "killed", **cosine)
    with pytest.raises(Killed):
        train(cfg, progress=False, on_epoch=kill_after_two)
    with pytest.raises(ValueError, match="cosine schedule over 4 epochs; resume it without --epochs"):
        train(cfg.replace(epochs=6), progress=False, resume=True)
    resumed = train(cfg, progress=False, resume=True)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["test"] == whole["test"]
    shown = train_cli.summary("o", whole, cfg)
    assert "(the cosine schedule's end)" in shown
    assert re.search(r"popularity penalty +0\.2 x log\(1 \+ popularity\) in the test rankings", shown)
    assert "(budget run: 4 epochs)" in train_cli.summary("o", constant, cfg.replace(lr_schedule="constant"))


def test_epoch_teachers_equal_step_teachers_before_the_weights_move(data, tmp_path):
    """teachers="epoch" looks up vectors computed at the epoch's start: at its first step (weights
    unchanged) the loss and gradients are those of encoding the teachers in the step, and the table
    holds what encoding each user alone gives."""
    t = Training.setup(config(data, tmp_path / "run", teachers="epoch"), progress=False, resume=False, overwrite=False)
    users = t.train_users[:32]
    stepwise = t.inputs(users, 1, 1)
    t.inputs.refresh_teachers(t.model, t.train_users, 0)
    looked_up = t.inputs(users, 1, 1)
    assert stepwise["teacher_vectors"] is None and looked_up["similar"] is None
    assert looked_up["teacher_vectors"].shape == (32, t.cfg.distillation.n_similar, 16)
    losses = []
    for batch in (looked_up, stepwise):
        torch.manual_seed(3)  # the same dropout in both
        losses.append(t.model(**batch, alpha=0.5))
    assert_same_loss_and_gradients(*losses, t.model)
    similar, table = t.inputs.similar, t.inputs.teacher_table
    one = torch.from_numpy(histories(t.ds, similar[users[:1], :1].ravel(), "train", t.cfg.model.max_len)).long()
    torch.testing.assert_close(table[similar[users[0], 0]], t.model.frozen_user_vectors(one)[0])


def test_validation_reads_the_next_epochs_teacher_table_and_scores_as_its_own_pass(data, tmp_path):
    """With teachers="epoch", validation computes the next epoch's teacher table (with the validation
    users' rows) and scores from it: the same metric as evaluating with the model's own pass, and the
    next epoch starts from that table rather than computing it again."""
    t = Training.setup(config(data, tmp_path / "run", teachers="epoch"), progress=False, resume=False, overwrite=False)
    t.run_epoch()
    assert t.inputs.table_epoch == 1
    own = t.evaluate_all("valid", "full", t.valid_users, top_lists=False).result()["overall"]["NDCG@10"]
    assert t.state["history"][-1]["valid_NDCG@10"] == pytest.approx(own, abs=1e-12)
    table = t.inputs.teacher_table
    t.inputs.refresh_teachers = None  # a second computation would fail here
    t.train_epoch()
    assert t.inputs.teacher_table is table


def test_command_line_with_toml_config(data, tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 1\nhidden = 8\nmax-len = 20\nbatch_size = 32\nn_negatives = 20\nbackbone = "gru4rec"\n')
    out = tmp_path / "cli"
    rc = train_cli.main(["--data", str(data), "--out", str(out), "--config", str(toml), "--dropout", "0.1", "-q"])
    assert rc == 0
    saved = read_run_config(out)
    assert saved["backbone"] == "gru4rec" and saved["dropout"] == 0.1 and saved["epochs"] == 1
    assert "test full tail_item" in capsys.readouterr().out
    assert train_cli.main(["--data", str(data), "--out", str(out), "--config", str(toml), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    toml.write_text("epoch = 3\n")
    assert train_cli.main(["--data", str(data), "--config", str(toml)]) == 2
    assert "unknown setting 'epoch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["--backbone", "lstm"])
    assert train_cli.main(["--data", str(data), "--threads", "0"]) == 2
    assert "threads must be at least 1, not 0" in capsys.readouterr().err


def test_settings_in_sections_from_toml_tables_dotted_keys_and_flat_names(tmp_path):
    from llmesr.config import load_toml

    toml = tmp_path / "run.toml"
    toml.write_text('hidden = 8\noptim.lr = 0.01\n[objective]\nloss = "ce"\nlogit-adjust = 0.5\n')
    cfg = TrainConfig.of(data="d", out="o", **load_toml(toml))
    assert (cfg.model.hidden, cfg.optim.lr, cfg.objective.loss, cfg.objective.logit_adjust) == (8, 0.01, "ce", 0.5)
    # config.json holds the sections; older run folders hold flat names: both read back the same settings
    sectioned = json.loads(json.dumps(cfg.to_json()))
    assert set(sectioned) == {
        "data",
        "out",
        "model",
        "fusion",
        "distillation",
        "objective",
        "optim",
        "evaluation",
        "run",
    }
    assert sectioned["optim"]["lr"] == 0.01
    assert TrainConfig.from_saved(sectioned, "config.json") == cfg
    assert TrainConfig.from_saved(cfg.flat(), "config.json") == cfg
    assert cfg.replace(lr=0.5).optim.lr == 0.5 and cfg.replace(lr=0.5).model == cfg.model
    for text, message in [
        ("[model]\nlr = 0.1\n", "unknown setting model.lr (it belongs to optim)"),
        ("lr = 0.1\n[optim]\nlr = 0.2\n", "lr is given twice"),
        ("[optim]\nlr = true\n", "lr must be a number, not True"),
    ]:
        toml.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{toml}: {message}")):
            TrainConfig.of(data="d", out="o", **load_toml(toml))


def test_compare_trains_the_backbone_alone_and_shows_popularity(data, tmp_path, capsys):
    from llmesr.baselines import popularity_metrics, text_neighbours_metrics

    toml = tmp_path / "run.toml"
    toml.write_text("epochs = 1\nhidden = 8\nmax-len = 20\nbatch_size = 32\nn_negatives = 20\n")
    out = tmp_path / "cmp"
    assert train_cli.main(["--data", str(data), "--out", str(out), "--config", str(toml), "--compare", "-q"]) == 0
    printed = capsys.readouterr().out
    base = json.loads((tmp_path / "cmp-base" / "metrics.json").read_text())
    assert read_run_config(tmp_path / "cmp-base")["method"] == "base"
    ours = json.loads((out / "metrics.json").read_text())
    popularity = popularity_metrics(TrainConfig.from_saved(read_run_config(out), "config.json"))
    line = next(x for x in printed.splitlines() if x.strip().startswith("full tail_user"))
    assert ours["popularity"] == json.loads(json.dumps(popularity))  # every run records its reference
    text = text_neighbours_metrics(TrainConfig.from_saved(read_run_config(out), "config.json"))
    for column in (ours["test"], base["test"], popularity, text):
        assert f"{column['full']['tail_user']['NDCG@10']:.4f}" in line
    assert "LLM-ESR-sasrec" in printed and "popularity" in printed and "text neighbours" in printed
    assert (out / "metrics.png").stat().st_mtime_ns >= (tmp_path / "cmp-base" / "metrics.json").stat().st_mtime_ns
    advice = f"llmesr-train --resume {out} --epochs 1000 --compare"
    assert advice in printed  # both were budget runs
    assert train_cli.main(["--resume", str(out), "--epochs", "2", "--compare", "-q"]) == 0  # as advised, shorter
    assert [json.loads((tmp_path / f / "metrics.json").read_text())["epochs"] for f in ("cmp", "cmp-base")] == [2, 2]


def test_no_arguments_trains_both_on_the_built_in_data(tmp_path, capsys, monkeypatch):
    """`llmesr-train` with no option (the README's main job; here with small settings and a stand-in for the
    MiniLM embedding): the built-in catalogue made on first use, LLM-ESR and the backbone alone to early
    stopping, and their comparison."""
    monkeypatch.chdir(tmp_path)
    made = []

    def make(hidden, progress=True):
        if not made:
            embedded_synthetic(Path(train_cli.DEFAULT_DATA), n_users=80, n_items=40, seed=3)
        made.append(hidden)
        return train_cli.DEFAULT_DATA

    monkeypatch.setattr(train_cli, "default_data", make)
    small = ["--hidden", "8", "--max-len", "20", "--n-negatives", "10", "--patience", "1", "--threads", "1", "-q"]
    assert train_cli.main(small) == 0
    printed = capsys.readouterr().out
    assert made == [8] and "text neighbours" in printed and "a comparison after" not in printed  # early stopping
    saved = read_run_config(tmp_path / "runs" / "llmesr-sasrec-42")
    assert saved["data"] == str(tmp_path / train_cli.DEFAULT_DATA) and saved["loss"] == "ce"
    assert (tmp_path / "runs" / "llmesr-sasrec-42-base" / "metrics.json").exists()


def test_auto_loss_is_resolved_by_catalogue_size_and_recorded(data, tmp_path, capsys, monkeypatch):
    from llmesr import config as config_module

    assert resolve_loss("auto", 32768) == ("ce", "--loss auto: 32,768 items <= 32,768, the whole catalogue is scored")
    assert resolve_loss("auto", 32769)[0] == "sampled"
    assert resolve_loss("bce", 10**6) == ("bce", "--loss bce")
    assert resolve_loss("auto", 100, "original")[0] == "bce"  # the original code's loss
    assert resolve_loss("ce", 100, "original")[0] == "ce"
    assert TrainConfig.of(data="d", out="o").objective.loss == "auto"
    for limit, expected in ((10**6, "ce"), (10, "sampled")):  # the data has 60 items
        monkeypatch.setattr(config_module, "CE_MAX_ITEMS", limit)
        out = tmp_path / expected
        train(config(data, out, epochs=1), progress=True)
        assert read_run_config(out)["loss"] == expected  # never "auto"
        first = capsys.readouterr().err.splitlines()[0]
        assert first.startswith(f"LLM-ESR-sasrec, loss {expected} (--loss auto: 60 items")
    train(config(data, tmp_path / "original", epochs=1, compat="original"), progress=False)
    assert read_run_config(tmp_path / "original")["loss"] == "bce"


def test_bf16_precision_trains_end_to_end_and_is_recorded(data, tmp_path):
    out = tmp_path / "bf16"
    train(config(data, out, precision="bf16"), progress=False)
    assert read_run_config(out)["precision"] == "bf16"
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)


def test_recommender_serves_what_the_model_scores(data, tmp_path):
    from safetensors.torch import load_file

    from llmesr.data import load_dataset, load_embeddings
    from llmesr.recommend import Recommender
    from llmesr.runs import build_model

    cfg = config(data, tmp_path / "run", epochs=1, dropout=0.0)
    train(cfg, progress=False)
    rec = Recommender(tmp_path / "run", popularity_penalty=0.0)
    ds = load_dataset(data)
    history = ds.train_history(5).tolist()
    items, scores = rec.recommend([history, [1]], k=5)
    assert items.shape == (2, 5) and (np.diff(scores, axis=1) <= 0).all()
    assert not set(items[0].tolist()) & set(history)
    # The straightforward way: the trained model, adapter at every call, every item scored.
    model = build_model(cfg, ds.n_items, load_embeddings(data)).eval()
    model.load_state_dict(load_file(tmp_path / "run" / "best.safetensors"))
    with torch.no_grad():
        all_scores = (model.user_vector(torch.tensor([history])) @ model.item_vectors(torch.arange(ds.n_items + 1)).T)[
            0
        ]
    all_scores[[0, *history]] = -torch.inf
    np.testing.assert_allclose(scores[0], all_scores.topk(5).values.numpy(), rtol=1e-5)
    raw_items, _ = rec.recommend([[ds.item_ids()[i] for i in history]], k=5, raw=True)
    assert raw_items[0] == [ds.item_ids()[i] for i in items[0]]
    with pytest.raises(KeyError, match="unknown item ids"):
        rec.recommend([["no such item"]], raw=True)
    with pytest.raises(ValueError, match="item ids must be in"):
        rec.recommend([[0]])
    # The popularity penalty: the same scores minus gamma * log(1 + popularity).
    debiased = Recommender(tmp_path / "run", popularity_penalty=2.0)
    penalised = all_scores - 2.0 * torch.log1p(torch.from_numpy(ds.train_popularity.astype(np.float32)))
    items, scores = debiased.recommend([history], k=5)
    np.testing.assert_allclose(scores[0], penalised.topk(5).values.numpy(), rtol=1e-5, atol=1e-5)
    # By default the run's own penalty, which its test metrics were measured with.
    assert Recommender(tmp_path / "run").popularity_penalty == cfg.evaluation.popularity_penalty == 0.2


def test_tail_tradeoff_and_score_parts(data, tmp_path):
    from llmesr import load_dataset
    from llmesr.analysis import score_parts, tail_tradeoff
    from llmesr.recommend import Recommender
    from llmesr.sampling import histories

    metrics = train(config(data, tmp_path / "run", epochs=2), progress=False)
    rows = tail_tradeoff(tmp_path / "run", [0.0, 0.2, 50.0])
    # The run's test metrics are its rankings with its popularity penalty (0.2 by default).
    assert metrics["popularity_penalty"] == 0.2
    assert rows[1]["overall_NDCG@10"] == pytest.approx(metrics["test"]["full"]["overall"]["NDCG@10"])
    assert rows[1]["coverage@10"] == pytest.approx(metrics["test"]["full"]["overall"]["coverage@10"])
    assert rows[0]["overall_NDCG@10"] != rows[1]["overall_NDCG@10"]
    assert rows[2]["mean_popularity@10"] < rows[0]["mean_popularity@10"]  # towards the tail
    # The encoder runs once for every gamma: each row as a whole pass of the debiased model gives it.
    from llmesr.evaluate import PopularityDebiased, evaluate

    rec, ds = Recommender(tmp_path / "run", popularity_penalty=0.0), load_dataset(data)
    plain = evaluate(PopularityDebiased(rec.model, ds, 50.0), ds, protocol="full").result()["overall"]
    assert rows[2]["overall_NDCG@10"] == pytest.approx(plain["NDCG@10"], abs=1e-9)
    assert rows[2]["mean_popularity@10"] == pytest.approx(plain["mean_popularity@10"], abs=1e-9)
    parts = score_parts(tmp_path / "run")
    assert set(parts["top1"]) == {"id", "semantic", "count"}
    assert parts["tail_target"]["count"] + parts["head_target"]["count"] == parts["top1"]["count"] == 150
    # The two parts add up to the score of each user's top item.
    inputs = histories(ds, np.flatnonzero(ds.test > 0), "test", 20)
    _, scores = rec.recommend([row[row != 0].tolist() for row in inputs], k=1)
    assert parts["top1"]["id"] + parts["top1"]["semantic"] == pytest.approx(float(np.mean(scores[:, 0])), rel=1e-4)


def test_compat_original_sets_the_original_model_and_protocol_unless_given():
    ours = TrainConfig.of(data="d", out="o")
    assert (ours.model.block, ours.model.init) == ("original", "xavier")
    assert (ours.evaluation.select_on, ours.evaluation.ties) == ("full", "pessimistic")
    original = TrainConfig.of(data="d", out="o", compat="original")
    assert (original.evaluation.select_on, original.evaluation.ties) == ("sampled", "optimistic")
    mixed = TrainConfig.of(data="d", out="o", compat="original", select_on="full")
    assert mixed.evaluation.select_on == "full" and mixed.evaluation.ties == "optimistic"
    assert (ours.fusion.fusion, original.fusion.fusion) == ("concat", "cross_attention")  # the original code has it
    assert (ours.evaluation.popularity_penalty, original.evaluation.popularity_penalty) == (0.2, 0.0)
    assert (ours.optim.patience_floor, original.optim.patience_floor) == (1.25, 0.0)
    # GRU4Rec: every position, the original's last one under compat; SASRec every position either way
    targets = {
        (backbone, compat): TrainConfig.of(
            data="d", out="o", backbone=backbone, compat=compat
        ).objective.next_item_targets
        for backbone in ("sasrec", "gru4rec")
        for compat in ("none", "original")
    }
    assert targets == {
        ("sasrec", "none"): "every",
        ("sasrec", "original"): "every",
        ("gru4rec", "none"): "every",
        ("gru4rec", "original"): "last",
    }
    given = TrainConfig.of(data="d", out="o", backbone="gru4rec", next_item_targets="last")
    assert given.objective.next_item_targets == "last"
    assert TrainConfig.of(data="d", out="o", compat="original", fusion="concat").fusion.fusion == "concat"
    # the former switch, in a TOML file or an older config.json
    assert (
        TrainConfig.from_saved({"data": "d", "out": "o", "cross_attention": True}, "c").fusion.fusion
        == "cross_attention"
    )
    assert (
        TrainConfig.from_saved({"data": "d", "out": "o", "fusion": {"cross_attention": False}}, "c").fusion.fusion
        == "concat"
    )
    saved = json.loads(json.dumps(original.to_json()))  # what resume reads back
    assert TrainConfig.from_saved(saved, "config.json") == original
    with pytest.raises(ValueError, match="block must be one of"):
        TrainConfig.of(data="d", out="o", block="postnorm")


def test_a_run_folder_written_before_a_setting_existed_reads_as_it_ran(data, tmp_path):
    """Settings added later (`config.ADDED_LATER`) read, in an older record without them, as what that
    run was trained and evaluated with (no popularity penalty, a constant rate), and it resumes."""
    cfg = config(data, tmp_path / "run", epochs=1)
    train(cfg, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    for section, name in (
        ("evaluation", "popularity_penalty"),
        ("optim", "lr_schedule"),
        ("optim", "warmup"),
        ("run", "precision"),
        ("optim", "patience_floor"),
    ):
        del saved[section][name]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    older = read_run_config(tmp_path / "run")
    assert (older["popularity_penalty"], older["lr_schedule"], older["warmup"]) == (0.0, "constant", 0)
    assert (older["precision"], older["patience_floor"]) == ("fp32", 0.0)
    resumed = train(TrainConfig.of(**(older | {"epochs": 2})), progress=False, resume=True)
    assert resumed["epochs"] == 2 and resumed["popularity_penalty"] == 0.0
    # The penalty only re-ranks the final test: a resumed run may be given another.
    again = train(TrainConfig.of(**(older | {"epochs": 3, "popularity_penalty": 0.2})), progress=False, resume=True)
    assert again["popularity_penalty"] == read_run_config(tmp_path / "run")["popularity_penalty"] == 0.2


def test_next_item_targets_every_position_or_the_last(data):
    """GRU4Rec's batch is SASRec's (the item after each position) by default, or has its target and
    negative at the last position only, as the original trains it; an older GRU4Rec record reads as
    the latter, an older SASRec one as the former."""
    from llmesr.batches import training_batch
    from llmesr.config import added_later
    from llmesr.data import load_dataset

    ds, users = load_dataset(str(data)), np.arange(1, 40)
    sasrec = training_batch(config(data, "o"), ds, users, epoch=3)
    every = training_batch(config(data, "o", backbone="gru4rec"), ds, users, epoch=3)
    last = training_batch(config(data, "o", backbone="gru4rec", next_item_targets="last"), ds, users, epoch=3)
    for a, b in zip(sasrec, every, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(last[0], every[0])
    for full, kept in ((every[1], last[1]), (every[2], last[2])):
        assert (full[:, :-1] != 0).sum() > 0 and (kept[:, :-1] == 0).all()
        np.testing.assert_array_equal(kept[:, -1], full[:, -1])
    for backbone, earlier in (("gru4rec", "last"), ("sasrec", "every")):
        assert added_later({"backbone": backbone, "data": "d", "method": "base"})["next_item_targets"] == earlier


def test_fusion_by_name_or_by_the_former_switch_and_its_choices_are_the_registry():
    from llmesr.config import choices_of
    from llmesr.models.fusion import FUSIONS
    from llmesr.models.llmesr import VIEWS

    assert set(choices_of("fusion")) == set(FUSIONS) and choices_of("views") == VIEWS  # the model's own checks agree
    shown = train_cli.build_parser().format_help()
    assert all(shown.count(f"\n{section}:\n") == 1 for section in ("model", "fusion", "optim", "run"))

    def fusion(*argv):
        return train_cli.resolve_config(train_cli.build_parser().parse_args(["--data", "d", *argv])).fusion.fusion

    assert fusion() == "concat" and fusion("--compat", "original") == "cross_attention"
    penalty = train_cli.resolve_config(train_cli.build_parser().parse_args(["--popularity-penalty", "0"]))
    assert penalty.evaluation.popularity_penalty == 0.0  # an optional number is parsed as one
    assert fusion("--cross-attention") == "cross_attention" == fusion("--fusion", "cross_attention")
    assert fusion("--no-cross-attention", "--compat", "original") == "concat"
    with pytest.raises(ValueError, match="--fusion concat and --cross-attention disagree"):
        fusion("--fusion", "concat", "--cross-attention")


def test_patience_counts_above_ranking_by_popularity_computed_as_a_user_would(data, tmp_path):
    """The floor the log names is `patience_floor` times ranking by training popularity's validation
    NDCG@10, recomputed here user by user: the target against every item outside the input history,
    ties against it; `patience_floor` 0 sets none."""
    from llmesr.data import load_dataset

    ds = load_dataset(str(data))
    gains = []
    for user in np.flatnonzero(ds.valid > 0):
        target = ds.valid[user]
        seen = set(ds.items[ds.indptr[user] : ds.train_end[user]][-20:].tolist()) - {target}  # max_len 20
        beaten = [i for i in range(1, ds.n_items + 1) if i != target and i not in seen]
        rank = sum(ds.train_popularity[i] >= ds.train_popularity[target] for i in beaten)
        gains.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    train(config(data, tmp_path / "run", epochs=1, patience_floor=1.5), progress=False)
    first = (tmp_path / "run" / "log.txt").read_text().splitlines()[0]
    logged = re.fullmatch(
        r"patience counts once validation full NDCG@10 beats (.*) \(1.5x ranking by popularity's\)", first
    )
    assert logged and float(logged[1]) == pytest.approx(1.5 * np.mean(gains), abs=5e-5)
    # one epoch does not beat three times popularity's: the log says so
    train(config(data, tmp_path / "high", epochs=1, patience_floor=3), progress=False)
    last = (tmp_path / "high" / "log.txt").read_text().splitlines()[-1]
    assert re.fullmatch(r"validation never beat .* \(3x ranking by popularity's\) by epoch 1: .*", last)
    train(config(data, tmp_path / "none", epochs=1, patience_floor=0), progress=False)
    assert "patience counts" not in (tmp_path / "none" / "log.txt").read_text()
