"""Training LLM-ESR (or a backbone alone) with early stopping on validation NDCG@10, then testing the
best weights with both protocols by long-tail group.

The run folder (`cfg.out`, layout in `llmesr.runs`) is replaced file by file atomically, so a killed
run resumes from its last epoch and ends with the same metrics as an uninterrupted one: every epoch
draws its batches and dropout from (seed, epoch) alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from llmesr import distributed, plots, threads
from llmesr.backbones import backbone
from llmesr.baselines import groups_of, popularity_metrics
from llmesr.batches import StepInputs
from llmesr.callbacks import AFTER_EPOCH, EpochRecord, apply_update
from llmesr.config import OptimSettings, TrainConfig, resolve_loss
from llmesr.data import Dataset, load_dataset, load_embeddings
from llmesr.errors import SettingsError
from llmesr.evaluate import Popularity, PopularityDebiased, Scorer, evaluate
from llmesr.io import atomic_write, atomic_write_text
from llmesr.locks import folder_lock
from llmesr.metrics import GroupedMetrics, Groups
from llmesr.models import LLMESR
from llmesr.models.losses import logit_adjustment
from llmesr.runs import (
    BEST,
    CHECKPOINT,
    LOG,
    METRICS,
    RANKS,
    build_model,
    check_memory,
    load_checkpoint,
    load_weights,
    prepare_run_folder,
    save_npz,
    truncate_log,
)
from llmesr.sampling import eval_negatives

SPLITS = ("valid", "test")


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on `device` (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resolve_device(name: str, ranks: distributed.Ranks | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"--device {name}: no CUDA GPU is visible to torch here; use --device cpu (or auto)")
    if name == "cuda" and ranks is not None and ranks.active:
        return torch.device("cuda", ranks.local_rank)
    return torch.device(name)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def learning_rate(optim: OptimSettings, done: float) -> float:
    """The learning rate after `done` epochs (fractional: steps count): a linear warm-up over
    `optim.warmup` epochs, then constant or a half cosine down to 0 at `optim.epochs`. A function of
    progress alone, so a resumed run follows the same curve."""
    if done < optim.warmup:
        return optim.lr * done / optim.warmup
    if optim.lr_schedule == "constant":
        return optim.lr
    span = max(optim.epochs - optim.warmup, 1)
    return optim.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (done - optim.warmup) / span)))


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """`--precision`: a training step's forward under this context; bf16 runs its matrix products in bfloat16
    (the model computes its losses in float32 either way, see `LLMESR.training_loss`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def check_can_train(cfg: TrainConfig, ds: Dataset, tables: dict[str, np.ndarray] | None, device: torch.device) -> None:
    """Refuses settings this data cannot train, before anything is allocated."""
    if tables is not None and cfg.uses_semantic and ds.n_items > 1:
        items = tables["item_emb"][1:]
        if (items == items[0]).all():  # no item text: every prompt the same ("unknown ...")
            raise SettingsError(
                f"{cfg.data}: every item has the same text embedding (no item text?), so LLM-ESR's semantic "
                "view says nothing: train --method base, or prepare with --items and run llmesr-embed again"
            )
    check_memory(cfg, ds.n_items, 0 if tables is None else tables["item_emb"].shape[1], available_memory(device))
    if cfg.evaluation.n_negatives >= ds.n_items:
        raise SettingsError(
            f"n_negatives is {cfg.evaluation.n_negatives}, but the catalogue has only {ds.n_items} items"
        )
    stored = 0 if tables is None else tables["similar_users"].shape[1]
    if tables is not None and cfg.uses_similar and cfg.distillation.n_similar > stored:
        raise SettingsError(
            f"n_similar is {cfg.distillation.n_similar}, but {cfg.data} stores {stored} similar users per user "
            "(llmesr-embed -k)"
        )


def loop_state(
    run: Path, resume: bool, model: LLMESR, optimizer: torch.optim.Optimizer, progress: bool, main: bool
) -> dict[str, Any]:
    """The loop's state: fresh, or the checkpoint's on resume (the log cut back to it)."""
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "best_epoch": 0, "waited": 0, "history": [], "finished": False}
    if resume and (run / CHECKPOINT).exists():
        state = load_checkpoint(run / CHECKPOINT, model, optimizer)
    if resume and main:
        truncate_log(run, state["epoch"])
        if progress:
            where = f"after epoch {state['epoch']}" if state["epoch"] else "from the start (no checkpoint yet)"
            print(f"resuming {run} {where}", file=sys.stderr)
    return state


def patience_floor(cfg: TrainConfig, ds: Dataset, users: np.ndarray, negatives: np.ndarray, groups: Groups) -> float:
    """The validation NDCG@10 a run's best must beat before its patience counts: `patience_floor` times
    ranking by training popularity's under the selection protocol (-inf: none, every epoch counts)."""
    if not cfg.optim.patience_floor:
        return -math.inf
    result = evaluate(
        Popularity(ds, cfg.model.max_len),
        ds,
        split="valid",
        protocol=cfg.evaluation.select_on or "full",
        negatives=negatives,
        users=users,
        groups=groups,
        ties=cfg.evaluation.ties or "pessimistic",
        top_lists=False,
    )
    floor = cfg.optim.patience_floor * (result.result()["overall"]["NDCG@10"] or 0.0)
    return floor if floor > 0 else -math.inf  # popularity ranks no target in the top 10: nothing to beat


@dataclass
class Training:
    """One run: set up once (`setup`: data, model, optimizer, the run folder, the loop's state), then
    advanced an epoch at a time (`run_epoch`: train, validate, checkpoint) and finally tested
    (`finish`: the best weights, both protocols, metrics.json)."""

    cfg: TrainConfig
    progress: bool
    ranks: distributed.Ranks
    device: torch.device
    ds: Dataset
    model: LLMESR
    step_model: torch.nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    inputs: StepInputs  # builds each step's batch
    negatives: np.ndarray  # the sampled protocol's candidates
    groups: dict[str, Groups]
    item_offset: torch.Tensor | None  # logit adjustment
    train_users: np.ndarray
    valid_users: np.ndarray
    run: Path
    state: dict[str, Any]
    patience_floor: float  # the validation NDCG@10 to beat before patience counts (-inf: none)
    load: threads.LoadWatch = field(default_factory=threads.LoadWatch)  # other processes' load, per epoch
    crowded_said: bool = False

    @classmethod
    def setup(cls, cfg: TrainConfig, progress: bool, resume: bool, overwrite: bool) -> Training:
        # The run records its thread count: results round differently under another one.
        n_threads = torch.get_num_threads() if cfg.run.threads is None else cfg.run.threads
        cfg = cfg.replace(threads=n_threads)
        torch.set_num_threads(n_threads)
        ranks = distributed.init("cuda" if resolve_device(cfg.run.device).type == "cuda" else "cpu")
        device = resolve_device(cfg.run.device, ranks)
        ds = load_dataset(cfg.data)
        loss, why = resolve_loss(cfg.objective.loss, ds.n_items, cfg.run.compat)
        # config.json records the loss trained with (never "auto") and where the data is from anywhere
        # (a resume or a Recommender may run in another directory).
        cfg = cfg.replace(loss=loss, data=cfg.data if resume else os.path.abspath(cfg.data))
        if progress and ranks.main and not resume:
            print(f"{model_name(cfg)}, loss {loss} ({why}), {cfg.out}", file=sys.stderr)
        tables = load_embeddings(cfg.data) if cfg.model.method == "llmesr" else None
        check_can_train(cfg, ds, tables, device)
        torch.manual_seed(cfg.run.seed)
        model = build_model(cfg, ds.n_items, tables).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
        step_model: torch.nn.Module = model
        if ranks.active:
            step_model = torch.nn.parallel.DistributedDataParallel(model)
        item_offset = None
        if cfg.objective.logit_adjust > 0:
            popularity = torch.from_numpy(ds.train_popularity.astype(np.int64))
            item_offset = logit_adjustment(popularity, cfg.objective.logit_adjust).to(device)
        run = prepare_run_folder(cfg, resume, overwrite) if ranks.main else Path(cfg.out)
        ranks.barrier()
        state = loop_state(run, resume, model, optimizer, progress and ranks.main, ranks.main)
        negatives = eval_negatives(ds, cfg.evaluation.n_negatives, seed=cfg.run.seed)
        groups = {split: groups_of(cfg, ds, split) for split in SPLITS}
        valid_users = np.flatnonzero(ds.valid > 0)
        floor = patience_floor(cfg, ds, valid_users, negatives, groups["valid"])
        training = cls(
            cfg=cfg,
            progress=progress,
            ranks=ranks,
            device=device,
            ds=ds,
            model=model,
            step_model=step_model,
            optimizer=optimizer,
            inputs=StepInputs.of(cfg, ds, tables, device),
            negatives=negatives,
            groups=groups,
            item_offset=item_offset,
            train_users=np.flatnonzero(ds.train_end - ds.indptr[:-1] >= backbone(cfg.model.backbone).min_train_items),
            valid_users=valid_users,
            run=run,
            state=state,
            patience_floor=floor,
        )
        if floor > 0 and state["epoch"] == 0:
            training.log(
                f"patience counts once validation {cfg.evaluation.select_on} NDCG@10 beats {floor:.4f} "
                f"({cfg.optim.patience_floor:g}x ranking by popularity's)"
            )
        return training

    @property
    def done(self) -> bool:
        return self.state["finished"] or self.state["epoch"] >= self.cfg.optim.epochs

    def log(self, line: str) -> None:
        if self.ranks.main:
            with open(self.run / LOG, "a") as f:
                f.write(line + "\n")
            if self.progress:
                tqdm.write(line)

    def evaluate_all(
        self,
        split: str,
        protocol: str,
        users: np.ndarray,
        top_lists: bool = True,
        user_table: torch.Tensor | None = None,
        penalised: bool = False,
    ) -> GroupedMetrics:
        """`users` scored by the model (this rank's share of them); `user_table`: their vectors for this
        split by user id, computed already. `penalised`: the rankings with the popularity penalty (what
        is tested and served) rather than the model's own (what selects the epoch)."""
        shown = self.progress and self.ranks.main
        users = self.ranks.shard(users)
        vectors = None if user_table is None else user_table[torch.from_numpy(users).to(user_table.device)]
        gamma = self.cfg.evaluation.popularity_penalty or 0.0
        scorer: Scorer = self.model
        if penalised and gamma > 0:
            debiased = PopularityDebiased(self.model, self.ds, gamma).to(self.device)
            scorer, vectors = debiased, None if vectors is None else debiased.extend(vectors)
        result = evaluate(
            scorer,
            self.ds,
            split=split,
            protocol=protocol,
            negatives=self.negatives,
            users=users,
            groups=self.groups[split],
            ties=self.cfg.evaluation.ties or "pessimistic",
            top_lists=top_lists,
            progress=f"{split} {protocol}" if shown else None,
            user_vectors=vectors,
        )
        return distributed.reduce_metrics(result, self.ranks)

    def run_epoch(self) -> None:
        """One epoch: the training steps, then what follows each epoch (`llmesr.callbacks.AFTER_EPOCH`:
        validation, the log, the best weights, early stopping, the checkpoint)."""
        record = self.train_epoch()
        for after_epoch in AFTER_EPOCH:
            after_epoch(self, record)

    def train_epoch(self) -> EpochRecord:
        """The epoch's training steps over every training user once, in an order drawn from (seed, epoch)."""
        cfg, ranks = self.cfg, self.ranks
        epoch = self.state["epoch"] + 1
        torch.manual_seed(epoch_seed(cfg.run.seed, epoch) + ranks.rank)  # dropout: a function of (seed, epoch, rank)
        self.model.train()
        t0 = time.perf_counter()
        self.load.others()  # the epoch's load is measured from here: the teacher table and the steps
        if cfg.distillation.teachers == "epoch" and self.inputs.table_epoch != epoch - 1:  # (validation keeps it fresh)
            self.inputs.refresh_teachers(self.model, self.train_users, epoch - 1)
        order = ranks.training_shard(np.random.default_rng([cfg.run.seed, epoch]).permutation(self.train_users))
        starts = range(0, len(order), cfg.optim.batch_size)
        record = EpochRecord(epoch, 0.0, len(starts), 0, len(order), t0, 0.0, 0.0)
        bar = tqdm(starts, desc=f"epoch {epoch}", disable=not (self.progress and ranks.main), leave=False, unit="batch")
        for n, start in enumerate(bar, 1):
            b0 = time.perf_counter()
            users = order[start : start + cfg.optim.batch_size]
            batch = self.inputs(users, epoch, n)
            record.batch_seconds += time.perf_counter() - b0
            for group in self.optimizer.param_groups:  # the rate at the end of this step
                group["lr"] = learning_rate(cfg.optim, epoch - 1 + n / len(starts))
            value = self.step(batch, epoch, n)
            if value is None:
                record.skipped += 1
                continue
            record.loss_sum += value
            bar.set_postfix(
                loss=f"{record.loss_sum / n:.4f}", seq_s=f"{(start + len(users)) / (time.perf_counter() - t0):.0f}"
            )
        record.train_seconds = time.perf_counter() - t0
        return record

    def step(self, batch: dict[str, Any], epoch: int, n: int) -> float | None:
        """One optimiser step on `batch`; its loss, or None where the non-finite policy skipped it."""
        cfg = self.cfg
        with autocast(cfg.run.precision, self.device):
            loss = self.step_model(
                **batch,
                alpha=cfg.distillation.alpha,
                distill=cfg.distillation.distill,
                beta=cfg.objective.beta,
                temperature=cfg.objective.temperature,
                loss=cfg.objective.loss,
                item_offset=self.item_offset,
            )
        value = loss.item()
        if not apply_update(self, value, epoch, n):
            return None
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return value

    def finish(self) -> dict[str, Any]:
        """Tests the best weights with both protocols, writes metrics.json, ranks.npz and the plot."""
        cfg, ranks, ds = self.cfg, self.ranks, self.ds
        if self.state["best"] <= self.patience_floor:
            self.log(
                f"validation never beat {self.patience_floor:.4f} ({cfg.optim.patience_floor:g}x ranking by "
                f"popularity's) by epoch {self.state['epoch']}: the best epoch is still on popularity's level"
            )
        ranks.barrier()
        load_weights(self.run / BEST, self.model)
        metrics: dict[str, Any] = {
            "test": {},
            "valid": {},
            "best_epoch": self.state["best_epoch"],
            "epochs": self.state["epoch"],
            "history": self.state["history"],
            "selected_on": f"valid {cfg.evaluation.select_on} NDCG@10",
            "ties": cfg.evaluation.ties,
            "popularity_penalty": cfg.evaluation.popularity_penalty,  # of the test and valid rankings here
            "groups": self.groups["test"].describe(),
            "environment": environment(self.device),
        }
        per_user: dict[str, np.ndarray] = {}
        for split, users in (("test", np.flatnonzero(ds.test > 0)), ("valid", self.valid_users)):
            for protocol in ("full", "sampled"):
                result = self.evaluate_all(split, protocol, users, penalised=True)
                metrics[split][protocol] = result.result()
                if split == "test":
                    per_user["users"], per_user[protocol] = result.per_user()
        if ranks.main:
            metrics["popularity"] = popularity_metrics(cfg)  # the reference every model should beat
            atomic_write(self.run / RANKS, lambda tmp: save_npz(tmp, per_user))
            atomic_write_text(self.run / METRICS, json.dumps(metrics, indent=2) + "\n")
            plot_run(self.run, cfg, metrics)
        ranks.barrier()
        distributed.shutdown(ranks)
        return metrics


def train(
    cfg: TrainConfig,
    progress: bool = True,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Trains, tests and writes the run folder; returns metrics.json's content. `resume` continues the
    run in `cfg.out` (started with the same settings) from its last finished epoch. `on_epoch(epoch)`
    is called after each epoch's checkpoint (tests use it to interrupt a run)."""
    writer = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the run folder
    with (
        folder_lock(cfg.out, exclusive=True) if writer else contextlib.nullcontext(),
        folder_lock(cfg.data, exclusive=False),  # no prepare or embed replaces the data under the run
    ):
        run = Training.setup(cfg, progress, resume, overwrite)
        if resume and run.done and (run.run / METRICS).exists():  # a finished run: nothing to redo
            if progress and run.ranks.main:
                print(
                    f"{run.run} finished at epoch {run.state['epoch']}; its test results are unchanged", file=sys.stderr
                )
            return json.loads((run.run / METRICS).read_text())
        while not run.done:
            run.run_epoch()
            if on_epoch is not None:
                on_epoch(run.state["epoch"])
        return run.finish()


def environment(device: torch.device) -> dict[str, Any]:
    """What produced the numbers, so a result can be traced: versions, device, threads, the ops."""
    from llmesr import __version__
    from llmesr.ops.loader import ops_description

    return {
        "llmesr": __version__,
        "python": sys.version.split()[0],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "ops": ops_description(),
    }


def model_name(cfg: TrainConfig) -> str:
    return f"LLM-ESR-{cfg.model.backbone}" if cfg.model.method == "llmesr" else f"{cfg.model.backbone} alone"


def plot_run(folder: Path, cfg: TrainConfig, metrics: dict[str, Any], base: dict[str, Any] | None = None) -> None:
    """The run folder's metrics.png: its test NDCG@10 by group beside the backbone alone's (`base`,
    its metrics, when trained with --compare) and popularity's, and the learning curves."""
    tests, histories = {model_name(cfg): metrics["test"]}, {model_name(cfg): metrics["history"]}
    if base is not None:
        tests[f"{cfg.model.backbone} alone"], histories[f"{cfg.model.backbone} alone"] = base["test"], base["history"]
    if "popularity" in metrics:  # (older run folders lack it)
        tests["popularity"] = metrics["popularity"]
    title = f"{model_name(cfg)} on {Path(cfg.data).name}, seed {cfg.run.seed} (best epoch {metrics['best_epoch']})"
    plots.run_figure(tests, histories, folder / "metrics.png", title)
