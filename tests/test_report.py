"""llmesr-report on hand-made run folders: the table's means and stds, the paired test against a hand
computation, the files it writes, and its errors."""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from llmesr import report
from llmesr.cli import report as report_cli
from llmesr.metrics import GROUPS


def make_run(folder, method, seed, ranks_full, loss="bce"):
    folder.mkdir(parents=True)
    users = np.arange(1, len(ranks_full) + 1)
    ndcg = float(np.mean(np.where(ranks_full <= 10, 1 / np.log2(ranks_full + 1.0), 0.0)))
    hr = float(np.mean(ranks_full <= 10))
    groups = {g: {"HR@10": hr, "NDCG@10": ndcg, "count": len(users)} for g in GROUPS}
    groups["overall"] |= {"coverage@10": 0.5, "tail_share@10": 0.1, "mean_popularity@10": 12.0}
    metrics = {
        "test": {"full": groups, "sampled": groups},
        "best_epoch": 3,
        "epochs": 5,
        "history": [{"epoch": e, "loss": 1.0 / e, "valid_NDCG@10": 0.1 * e, "train_seconds": 6.0} for e in range(1, 6)],
    }
    config = {"data": "/x/yelp", "out": str(folder), "method": method, "backbone": "sasrec", "seed": seed, "loss": loss}
    config["popularity_penalty"] = 0.2  # (a record without it is an older run's: no penalty, labelled so)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with open(folder / "ranks.npz", "wb") as f:
        np.savez(f, users=users, full=ranks_full, sampled=ranks_full)
    return ndcg


def test_table_means_stds_and_paired_test(tmp_path):
    rng = np.random.default_rng(0)
    base_ranks = [rng.integers(1, 40, 300) for _ in range(2)]
    ours_ranks = [np.maximum(1, r - rng.integers(0, 4, 300)) for r in base_ranks]
    base = [make_run(tmp_path / f"b{s}", "base", s, r) for s, r in zip((1, 2), base_ranks, strict=True)]
    ours = [make_run(tmp_path / f"l{s}", "llmesr", s, r) for s, r in zip((1, 2), ours_ranks, strict=True)]
    rows = report.build_rows([report.load_run(p) for p in sorted(tmp_path.iterdir())])
    assert [row.label for row in rows] == ["base-sasrec loss=bce", "LLM-ESR-sasrec loss=bce"]
    text = report.markdown(rows)
    assert f"{statistics.mean(ours):.4f} ± {statistics.stdev(ours):.4f}" in text
    assert f"{statistics.mean(base):.4f} ± {statistics.stdev(base):.4f}" in text

    # The paired test by hand: per-user NDCG@10 averaged over the two seeds, then a paired t-test.
    def ndcg(r):
        return np.where(r <= 10, 1 / np.log2(r + 1.0), 0.0)

    d = (ndcg(ours_ranks[0]) + ndcg(ours_ranks[1])) / 2 - (ndcg(base_ranks[0]) + ndcg(base_ranks[1])) / 2
    z = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
    expected = math.erfc(abs(z) / math.sqrt(2))
    assert report.significance(rows[1], rows[0], "full") == pytest.approx(expected)
    assert f"{expected:.2g}" in text
    csv_lines = report.csv_text(rows).splitlines()
    assert csv_lines[0].startswith("data,method,seeds,protocol,group")
    assert len(csv_lines) == 1 + 2 * 2 * len(GROUPS) * 2


def test_paired_test_edge_cases():
    assert report.paired_test(np.ones(5), np.ones(5)) == 1.0
    assert report.paired_test(np.ones(5) * 2, np.ones(5)) == 0.0
    assert report.paired_test(np.ones(1), np.zeros(1)) == 1.0


def test_cli_writes_the_files_and_refuses_a_non_run(tmp_path, capsys):
    make_run(tmp_path / "b1", "base", 1, np.arange(1, 50))
    make_run(tmp_path / "l1", "llmesr", 1, np.arange(1, 50) // 2 + 1, loss="ce")
    assert report_cli.main([str(tmp_path / "b1"), str(tmp_path / "l1"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "LLM-ESR-sasrec loss=ce" in out and "| yelp |" in out
    assert (tmp_path / "rep" / "report.md").read_text() == out.rstrip("\n") + "\n" or (
        tmp_path / "rep" / "report.md"
    ).exists()
    assert (tmp_path / "rep" / "report.csv").read_text().startswith("data,")
    pytest.importorskip("matplotlib")
    assert (tmp_path / "rep" / "report.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "empty").mkdir()
    assert report_cli.main([str(tmp_path / "empty")]) == 2
    assert "not a finished run folder" in capsys.readouterr().err


def test_damaged_run_files_are_named_in_one_line(tmp_path, capsys):
    make_run(tmp_path / "r", "base", 1, np.arange(1, 50))
    (tmp_path / "r" / "ranks.npz").write_bytes(b"garbage")
    assert report_cli.main([str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'r' / 'ranks.npz'}: not a ranks file")
    (tmp_path / "r" / "ranks.npz").unlink()
    (tmp_path / "r" / "metrics.json").write_text('{"test": {"full": {}, "sampled": {}}}')
    assert report_cli.main([str(tmp_path / "r")]) == 2
    assert "metrics.json: not the metrics of a finished llmesr run" in capsys.readouterr().err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    (tmp_path / "r" / "config.json").write_text(json.dumps(config | {"method": "foo"}))  # an edited setting
    assert report_cli.main([str(tmp_path / "r")]) == 2
    assert "config.json: method must be one of llmesr, base, not 'foo'" in capsys.readouterr().err
    (tmp_path / "r" / "config.json").write_text('{"foo": 1}')  # a made-up config
    assert report_cli.main([str(tmp_path / "r")]) == 2
    assert "config.json: not the config of an llmesr run" in capsys.readouterr().err


def test_a_tail_curve_of_nan_is_refused(tmp_path, capsys):
    make_run(tmp_path / "r", "base", 1, np.arange(1, 50))
    assert report_cli.main([str(tmp_path / "r"), "--tail-curve", "0,nan"]) == 2
    assert capsys.readouterr().err == "error: --tail-curve: every gamma must be a finite number, not '0,nan'\n"


def test_time_to_quality_reads_the_learning_curve(tmp_path):
    make_run(tmp_path / "r", "llmesr", 1, np.arange(1, 50))
    make_run(tmp_path / "b", "base", 1, np.arange(1, 50))
    for name, curve, seconds in (("r", [0.1, 0.3, 0.28, 0.31, 0.2], 60.0), ("b", [0.1, 0.2, 0.25, 0.24], 30.0)):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        metrics["history"] = [
            {"epoch": e, "loss": 1.0, "valid_NDCG@10": v, "train_seconds": 50.0, "epoch_seconds": seconds}
            for e, v in enumerate(curve, 1)
        ]
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    run, base = report.load_run(tmp_path / "r"), report.load_run(tmp_path / "b")
    # 90 % and 95 % of the best (.31) are first reached at epoch 2, the best at epoch 4, the stop after 5.
    assert [run.minutes_to(s) for s in (0.9, 0.95, 1.0)] == [2.0, 2.0, 4.0] and run.train_minutes() == 5.0
    assert np.isnan(base.minutes_to_level(0.3))
    # The common level is the lower best (.25): LLM-ESR reaches it at epoch 2 (2 min), the base at epoch 3 (1.5).
    table = report.time_to_quality(report.build_rows([run, base]))
    assert "| yelp | LLM-ESR-sasrec loss=bce | 0.3100 | 2.0 | 2.0 | 4.0 | 5.0 | 2.0 (at 0.2500) |" in table
    assert "| yelp | base-sasrec loss=bce | 0.2500 | 1.5 | 1.5 | 1.5 | 2.0 | 1.5 (at 0.2500) |" in table


def test_a_run_from_before_the_popularity_penalty_is_its_own_row(tmp_path):
    """Older records have no popularity_penalty: their rankings had none, so they are labelled with 0.0
    and never paired with (or averaged into) runs tested with the default penalty."""
    ranks = np.arange(1, 31)
    make_run(tmp_path / "new", "base", 1, ranks)
    make_run(tmp_path / "old", "base", 2, ranks)
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["popularity_penalty"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    rows = report.build_rows([report.load_run(tmp_path / name) for name in ("new", "old")])
    assert sorted(row.label for row in rows) == ["base-sasrec loss=bce", "base-sasrec loss=bce popularity_penalty=0.0"]


def test_the_negative_count_labels_sampled_runs_only():
    """`loss_negatives` means nothing to `ce` or `bce`: a run of those recorded with another count than the
    default is not a separate row; a `sampled` run's count is."""

    def label(loss: str, count: int) -> str:
        config = {"method": "llmesr", "backbone": "sasrec", "loss": loss, "loss_negatives": count}
        return report.Run(Path("-"), config, {}, None).label

    assert label("ce", 256) == "LLM-ESR-sasrec loss=ce"
    assert label("sampled", 256) == "LLM-ESR-sasrec loss=sampled loss_negatives=256"
    assert label("sampled", 8192) == "LLM-ESR-sasrec loss=sampled"  # the default count


def test_the_stopping_rule_does_not_make_another_row():
    """Epochs, patience and the patience floor say how long a run trained, not what it is: a run from
    before the floor (0) shares its row with today's runs."""

    def label(**settings) -> str:
        config = {"method": "base", "backbone": "bert4rec", "loss": "ce"} | settings
        return report.Run(Path("-"), config, {}, None).label

    assert label(patience_floor=0.0) == label(patience_floor=1.25) == label(patience=200, epochs=60)
    assert label(lr=0.003) == "base-bert4rec loss=ce lr=0.003"


def test_a_row_is_labelled_against_its_backbone_and_compat_defaults():
    """GRU4Rec at the last position is a setting of its own, except under --compat original, whose
    default it is."""

    def label(**settings) -> str:
        return report.Run(Path("-"), {"method": "base", "backbone": "gru4rec", "loss": "ce"} | settings, {}, None).label

    assert label(next_item_targets="every") == "base-gru4rec loss=ce"
    assert label(next_item_targets="last") == "base-gru4rec loss=ce next_item_targets=last"
    assert label(next_item_targets="last", compat="original") == "base-gru4rec loss=ce compat=original"
