"""The training loop's after-epoch parts and its non-finite policy, each alone, on a stand-in run."""

import math
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from llmesr import callbacks  # noqa: E402
from llmesr.callbacks import EpochRecord, apply_update, keep_best, log_epoch, stop_early  # noqa: E402
from llmesr.config import TrainConfig  # noqa: E402
from llmesr.errors import SettingsError  # noqa: E402


def stand_in(tmp_path, floor=-math.inf, **settings):
    ranks = SimpleNamespace(main=True, world=1, active=False, barrier=lambda: None)
    lines: list[str] = []
    run = SimpleNamespace(
        cfg=TrainConfig.of(data="d", out=str(tmp_path), **settings),
        ranks=ranks,
        run=tmp_path,
        model=None,
        state={"epoch": 0, "best": -1.0, "best_epoch": 0, "waited": 0, "history": [], "finished": False},
        log=lines.append,
        patience_floor=floor,
    )
    return run, lines


def record(epoch, valid, skipped=0):
    return EpochRecord(
        epoch,
        loss_sum=4.0,
        batches=4,
        skipped=skipped,
        sequences=100,
        started=0.0,
        train_seconds=2.0,
        batch_seconds=0.5,
        valid=valid,
    )


def test_the_best_epoch_is_kept_and_patience_stops_the_run(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(callbacks, "save_weights", lambda path, model: saved.append(path))
    run, lines = stand_in(tmp_path, patience=2)
    for epoch, valid in enumerate([0.1, 0.3, 0.2, 0.3, 0.25], 1):
        rec = record(epoch, valid)
        keep_best(run, rec)
        stop_early(run, rec)
        if run.state["finished"]:
            break
    assert (run.state["best"], run.state["best_epoch"]) == (0.3, 2)  # a tie is not better
    assert saved == [tmp_path / "best.safetensors"] * 2
    assert run.state["finished"] and epoch == 4
    assert lines == ["early stop: no better validation full NDCG@10 for 2 epochs"]


def test_patience_counts_only_once_the_best_beats_the_floor(tmp_path, monkeypatch):
    """A plateau below the floor (a multiple of ranking by popularity's) is not counted (Bert4Rec's first
    30-40 epochs on ml-100k); once the best beats it, every epoch without a better one is."""
    monkeypatch.setattr(callbacks, "save_weights", lambda path, model: None)
    run, lines = stand_in(tmp_path, floor=0.2, patience=2)
    curve = [0.10, 0.15, 0.12, 0.14, 0.15, 0.13, 0.25, 0.24, 0.30, 0.29, 0.28, 0.27]
    for epoch, valid in enumerate(curve, 1):
        rec = record(epoch, valid)
        keep_best(run, rec)
        stop_early(run, rec)
        if run.state["finished"]:
            break
    assert epoch == 11 and (run.state["best"], run.state["best_epoch"]) == (0.30, 9)
    assert lines == [
        "epoch 7: validation beats 0.2000; patience counts",
        "early stop: no better validation full NDCG@10 for 2 epochs",
    ]
    # Counted from the start, the same curve stops on the plateau.
    run, _ = stand_in(tmp_path, patience=2)
    for epoch, valid in enumerate(curve, 1):
        keep_best(run, record(epoch, valid))
        stop_early(run, record(epoch, valid))
        if run.state["finished"]:
            break
    assert epoch == 4 and run.state["best_epoch"] == 2


def test_the_log_line_and_history_of_an_epoch(tmp_path):
    run, lines = stand_in(tmp_path)
    log_epoch(run, record(3, 0.125, skipped=1))
    assert run.state["epoch"] == 3
    entry = run.state["history"][0]
    assert (entry["epoch"], entry["loss"], entry["valid_NDCG@10"], entry["sequences_per_second"]) == (
        3,
        4.0 / 3,
        0.125,
        50,
    )
    assert lines[0] == "epoch 3: skipped 1 of 4 batches with a NaN or infinite loss"
    assert lines[1].startswith("epoch 3: loss 1.3333, valid full NDCG@10 0.1250, 50 seq/s, batches 25.0% of the time")


def test_a_non_finite_loss_stops_the_run_or_skips_the_batch(tmp_path):
    run, _ = stand_in(tmp_path)
    assert apply_update(run, 1.5, 1, 1)
    with pytest.raises(SettingsError, match="epoch 2, batch 7: the training loss is not finite"):
        apply_update(run, float("nan"), 2, 7)
    run, _ = stand_in(tmp_path, on_nonfinite="skip")
    assert not apply_update(run, float("inf"), 2, 7)
