"""What the training loop does around its steps, one concern per part: the non-finite-loss policy
within an epoch, and after each epoch the crowded-machine note, validation, the log line, the choice of
the best epoch, early stopping and the checkpoint (`AFTER_EPOCH`, in that order). Each reads and
writes the loop's state (`Training.state`, saved in the checkpoint) and the epoch's `EpochRecord`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from llmesr import distributed, threads
from llmesr.errors import SettingsError
from llmesr.runs import BEST, CHECKPOINT, save_checkpoint, save_weights

if TYPE_CHECKING:
    from llmesr.train import Training


@dataclass
class EpochRecord:
    """One epoch as the steps left it; validation fills `valid`."""

    epoch: int
    loss_sum: float
    batches: int
    skipped: int
    sequences: int  # trained on by this rank
    started: float  # perf_counter at the epoch's start
    train_seconds: float
    batch_seconds: float  # of them, building batches
    valid: float = 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.batches - self.skipped)


class AfterEpoch(Protocol):
    def __call__(self, run: Training, record: EpochRecord) -> None: ...


def apply_update(run: Training, value: float, epoch: int, batch: int) -> bool:
    """The non-finite-loss policy: whether a step with loss `value` updates the weights. A NaN or
    infinite loss (on any rank) stops the run with an error, or (`--on-nonfinite skip`) skips the batch."""
    if distributed.all_finite(value, run.ranks):
        return True
    if run.cfg.optim.on_nonfinite == "stop":
        raise SettingsError(
            f"epoch {epoch}, batch {batch}: the training loss is not finite ({value}; diverged): lower --lr, "
            "or pass --on-nonfinite skip to skip such batches"
        )
    return False


def note_crowding(run: Training, record: EpochRecord) -> None:
    """Once a run, where processes that started after it leave fewer free cores than its threads: the
    count is kept (another one rounds differently), so the user is told how to change it."""
    count = run.cfg.run.threads
    if run.crowded_said or run.ranks.active or run.device.type != "cpu" or count is None:
        return  # (threads is set by setup; None only narrows the type)
    others = run.load.others()
    if threads.crowded(count, others):
        run.crowded_said = True
        run.log(
            f"epoch {record.epoch}: other processes kept {others:.1f} of {threads.cores()} cores busy, fewer free "
            f"than this run's {count} threads; one thread is faster beside busy processes: stop and "
            f"llmesr-train --resume {run.run} --threads 1"
        )


def validate(run: Training, record: EpochRecord) -> None:
    """The selection metric: validation NDCG@10 under the chosen protocol. With teachers="epoch" the
    next epoch's teacher table is computed here, with the validation users' rows in it: one pass of
    the encoder serves both (validation reads the same histories with the same weights)."""
    protocol = run.cfg.evaluation.select_on or "full"
    table = None
    if run.cfg.distillation.teachers == "epoch":
        table = run.inputs.refresh_teachers(run.model, run.train_users, record.epoch, also=run.valid_users)
    result = run.evaluate_all("valid", protocol, run.valid_users, top_lists=False, user_table=table).result()
    record.valid = result["overall"]["NDCG@10"] or 0.0


def log_epoch(run: Training, record: EpochRecord) -> None:
    """The epoch's line in log.txt and its entry in the history (metrics.json's learning curve)."""
    if record.skipped:
        run.log(
            f"epoch {record.epoch}: skipped {record.skipped} of {record.batches} batches with a NaN or infinite loss"
        )
    epoch_seconds = time.perf_counter() - record.started
    speed = record.sequences * run.ranks.world / record.train_seconds
    run.state["history"].append(
        {
            "epoch": record.epoch,
            "loss": record.mean_loss,
            "valid_NDCG@10": record.valid,  # the selection metric (metrics.json: selected_on)
            "train_seconds": record.train_seconds,
            "batch_seconds": record.batch_seconds,
            "sequences_per_second": speed,
            "epoch_seconds": epoch_seconds,  # the steps, the teacher table and validation
        }
    )
    run.log(
        f"epoch {record.epoch}: loss {record.mean_loss:.4f}, valid {run.cfg.evaluation.select_on} NDCG@10 "
        f"{record.valid:.4f}, {speed:.0f} seq/s, batches {100 * record.batch_seconds / record.train_seconds:.1f}% of "
        f"the time, {epoch_seconds:.1f} s"
    )
    run.state["epoch"] = record.epoch


def keep_best(run: Training, record: EpochRecord) -> None:
    """The best epoch so far by the selection metric: its weights in best.safetensors. An epoch without
    a better one counts towards the patience only once the best beats `run.patience_floor` (a multiple
    of ranking by popularity's): a model on the popularity plateau is still learning."""
    state, floor = run.state, run.patience_floor
    if record.valid > state["best"]:
        if state["best"] <= floor < record.valid:
            run.log(f"epoch {record.epoch}: validation beats {floor:.4f}; patience counts")
        state.update(best=record.valid, best_epoch=record.epoch, waited=0)
        if run.ranks.main:
            save_weights(run.run / BEST, run.model)
    elif state["best"] > floor:
        state["waited"] += 1


def stop_early(run: Training, record: EpochRecord) -> None:
    """Early stopping after `patience` epochs without a better selection metric."""
    patience = run.cfg.optim.patience
    if run.state["waited"] >= patience and not run.state["finished"]:
        run.state["finished"] = True
        run.log(f"early stop: no better validation {run.cfg.evaluation.select_on} NDCG@10 for {patience} epochs")


def checkpoint(run: Training, record: EpochRecord) -> None:
    """The weights, the optimizer and the loop's state, so a killed run resumes after this epoch."""
    if run.ranks.main:
        save_checkpoint(run.run / CHECKPOINT, run.model, run.optimizer, run.state)
    run.ranks.barrier()


AFTER_EPOCH: tuple[AfterEpoch, ...] = (note_crowding, validate, log_epoch, keep_best, stop_early, checkpoint)
