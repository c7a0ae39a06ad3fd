"""Training LLM-ESR (or a backbone alone) with early stopping on validation NDCG@10, then testing the
best weights with both protocols by long-tail group.

The run folder (`cfg.out`, layout in `llmesr.runs`) is replaced file by file atomically, so a killed
run resumes from its last epoch and ends with the same metrics as an uninterrupted one: every epoch
draws its batches and dropout from (seed, epoch) alone.
"""

from __future__ import annotations

import contextlib
import json
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
from llmesr.config import TrainConfig, resolve_loss
from llmesr.data import Dataset, load_dataset, load_embeddings
from llmesr.errors import SettingsError
from llmesr.evaluate import evaluate
from llmesr.io import atomic_write, atomic_write_text
from llmesr.locks import folder_lock
from llmesr.metrics import GroupedMetrics, Groups
from llmesr.models import LLMESR
from llmesr.models.losses import SharedNegatives, logit_adjustment
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
    save_checkpoint,
    save_npz,
    save_weights,
    truncate_log,
)
from llmesr.sampling import (
    bert4rec_batch,
    eval_negatives,
    histories,
    negative_distribution,
    sasrec_batch,
    shared_negatives,
)

SPLITS = ("valid", "test")
TEACHER_CHUNK = 1024  # users per forward pass when teachers="epoch" builds its table


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


def training_batch(cfg: TrainConfig, ds: Dataset, users: np.ndarray, epoch: int) -> tuple[np.ndarray, ...]:
    """(inputs, targets, negatives) for the backbone's loss: next item at every position (SASRec),
    at the last position only (GRU4Rec), or at the masked positions (Bert4Rec)."""
    spec = backbone(cfg.model.backbone)
    if spec.batch == "masked":
        return bert4rec_batch(
            ds, users, cfg.model.max_len, cfg.model.mask_prob, cfg.run.seed, epoch, cfg.objective.negatives
        )
    inputs, targets, negatives = sasrec_batch(
        ds, users, cfg.model.max_len, cfg.run.seed, epoch, cfg.objective.negatives
    )
    if spec.last_target_only:
        targets[:, :-1] = 0
        negatives[:, :-1] = 0
    return inputs, targets, negatives


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


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
    similar: np.ndarray | None  # each user's similar users (the distillation's teachers)
    teacher_table: torch.Tensor | None  # teachers="epoch": every user's vector at the epoch's start
    negatives: np.ndarray  # the sampled protocol's candidates
    groups: dict[str, Groups]
    shared_q: np.ndarray | None  # loss="sampled": the negatives' distribution
    log_q: torch.Tensor | None
    item_offset: torch.Tensor | None  # logit adjustment
    train_users: np.ndarray
    valid_users: np.ndarray
    run: Path
    state: dict[str, Any]
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
        loss, why = resolve_loss(cfg.objective.loss, ds.n_items)
        # config.json records the loss trained with (never "auto") and where the data is from anywhere
        # (a resume or a Recommender may run in another directory).
        cfg = cfg.replace(loss=loss, data=cfg.data if resume else os.path.abspath(cfg.data))
        if progress and ranks.main and not resume:
            print(f"{model_name(cfg)}, loss {loss} ({why}), {cfg.out}", file=sys.stderr)
        tables = load_embeddings(cfg.data) if cfg.model.method == "llmesr" else None
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
        torch.manual_seed(cfg.run.seed)
        model = build_model(cfg, ds.n_items, tables).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
        step_model: torch.nn.Module = model
        if ranks.active:
            step_model = torch.nn.parallel.DistributedDataParallel(model)
        similar = None
        if tables is not None and cfg.uses_similar:
            if cfg.distillation.n_similar > tables["similar_users"].shape[1]:
                raise SettingsError(
                    f"n_similar is {cfg.distillation.n_similar}, but {cfg.data} stores {tables['similar_users'].shape[1]} similar "
                    "users per user (llmesr-embed -k)"
                )
            similar = np.array(tables["similar_users"])[:, : cfg.distillation.n_similar]
        q = negative_distribution(ds, cfg.objective.negatives) if cfg.objective.loss == "sampled" else None
        log_q = None
        if q is not None:
            log_q = torch.from_numpy(np.log(np.maximum(q * cfg.objective.loss_negatives, 1e-30))).float().to(device)
        item_offset = None
        if cfg.objective.logit_adjust > 0:
            popularity = torch.from_numpy(ds.train_popularity.astype(np.int64))
            item_offset = logit_adjustment(popularity, cfg.objective.logit_adjust).to(device)

        run = prepare_run_folder(cfg, resume, overwrite) if ranks.main else Path(cfg.out)
        ranks.barrier()
        state: dict[str, Any] = {
            "epoch": 0,
            "best": -1.0,
            "best_epoch": 0,
            "waited": 0,
            "history": [],
            "finished": False,
        }
        if resume and (run / CHECKPOINT).exists():
            state = load_checkpoint(run / CHECKPOINT, model, optimizer)
        if resume and ranks.main:
            truncate_log(run, state["epoch"])
            if progress:
                where = f"after epoch {state['epoch']}" if state["epoch"] else "from the start (no checkpoint yet)"
                print(f"resuming {run} {where}", file=sys.stderr)
        return cls(
            cfg=cfg,
            progress=progress,
            ranks=ranks,
            device=device,
            ds=ds,
            model=model,
            step_model=step_model,
            optimizer=optimizer,
            similar=similar,
            teacher_table=None,
            negatives=eval_negatives(ds, cfg.evaluation.n_negatives, seed=cfg.run.seed),
            groups={
                s: Groups.of(
                    ds, cfg.evaluation.tail_user_len, cfg.evaluation.tail_item_pop, cfg.evaluation.user_groups, s
                )
                for s in SPLITS
            },
            shared_q=q,
            log_q=log_q,
            item_offset=item_offset,
            train_users=np.flatnonzero(ds.train_end - ds.indptr[:-1] >= backbone(cfg.model.backbone).min_train_items),
            valid_users=np.flatnonzero(ds.valid > 0),
            run=run,
            state=state,
        )

    @property
    def done(self) -> bool:
        return self.state["finished"] or self.state["epoch"] >= self.cfg.optim.epochs

    def log(self, line: str) -> None:
        if self.ranks.main:
            with open(self.run / LOG, "a") as f:
                f.write(line + "\n")
            if self.progress:
                tqdm.write(line)

    def evaluate_all(self, split: str, protocol: str, users: np.ndarray, top_lists: bool = True) -> GroupedMetrics:
        shown = self.progress and self.ranks.main
        result = evaluate(
            self.model,
            self.ds,
            split=split,
            protocol=protocol,
            negatives=self.negatives,
            users=self.ranks.shard(users),
            groups=self.groups[split],
            ties=self.cfg.evaluation.ties or "pessimistic",
            top_lists=top_lists,
            progress=f"{split} {protocol}" if shown else None,
        )
        return distributed.reduce_metrics(result, self.ranks)

    def step_inputs(self, users: np.ndarray, epoch: int, step: int) -> dict[str, Any]:
        """The model's batch arguments for one batch of users (named as `LLMESR.training_loss`'s)."""
        cfg, ds = self.cfg, self.ds
        arrays = training_batch(cfg, ds, users, epoch)
        sim_rows = sim_index = None
        teacher_vectors = None
        if self.teacher_table is not None and self.similar is not None:
            teacher_vectors = self.teacher_table[torch.from_numpy(self.similar[users]).to(self.device, torch.long)]
        elif self.similar is not None:  # each distinct neighbour encoded once (see LLMESR.teachers)
            neighbours, sim_index = np.unique(self.similar[users].ravel(), return_inverse=True)
            sim_rows = histories(ds, neighbours, "train", cfg.model.max_len)
        inputs, targets, negs, sim, sim_idx = (
            None if a is None else torch.from_numpy(a).to(self.device, torch.long)
            for a in (*arrays, sim_rows, sim_index)
        )
        shared = None
        if self.shared_q is not None and self.log_q is not None:
            items = shared_negatives(self.shared_q, cfg.objective.loss_negatives, cfg.run.seed, epoch, step)
            shared = SharedNegatives(torch.from_numpy(items).to(self.device), self.log_q)
        return dict(
            inputs=inputs,
            targets=targets,
            negatives=negs,
            similar=sim,
            similar_index=sim_idx,
            teacher_vectors=teacher_vectors,
            shared=shared,
        )

    def epoch_teachers(self) -> torch.Tensor:
        """teachers="epoch": `[n_users + 1, D]`, the vector of every user who teaches a training user,
        from their training history, by the current model without dropout or autograd (what a step
        would compute for them if the weights did not change during the epoch). Every rank computes
        the same table."""
        assert self.similar is not None
        needed = np.unique(self.similar[self.train_users])
        table: torch.Tensor | None = None
        with self.model.cached_items():
            for start in range(0, len(needed), TEACHER_CHUNK):
                users = needed[start : start + TEACHER_CHUNK]
                rows = torch.from_numpy(histories(self.ds, users, "train", self.cfg.model.max_len)).to(
                    self.device, torch.long
                )
                vectors = self.model.frozen_user_vectors(rows)
                if table is None:
                    table = vectors.new_zeros(self.ds.n_users + 1, vectors.shape[1])
                table[torch.from_numpy(users).to(self.device, torch.long)] = vectors
        assert table is not None
        return table

    def run_epoch(self) -> None:
        """One epoch: the training steps, validation, the best weights if better, the checkpoint."""
        cfg, ranks, state = self.cfg, self.ranks, self.state
        epoch = state["epoch"] + 1
        torch.manual_seed(epoch_seed(cfg.run.seed, epoch) + ranks.rank)  # dropout: a function of (seed, epoch, rank)
        self.model.train()
        loss_sum, batch_seconds, skipped, t0 = 0.0, 0.0, 0, time.perf_counter()
        self.load.others()  # the epoch's load is measured from here: the teacher table and the steps
        if cfg.distillation.teachers == "epoch" and self.similar is not None:
            self.teacher_table = self.epoch_teachers()
        order = ranks.training_shard(np.random.default_rng([cfg.run.seed, epoch]).permutation(self.train_users))
        starts = range(0, len(order), cfg.optim.batch_size)
        bar = tqdm(starts, desc=f"epoch {epoch}", disable=not (self.progress and ranks.main), leave=False, unit="batch")
        for n, start in enumerate(bar, 1):
            b0 = time.perf_counter()
            users = order[start : start + cfg.optim.batch_size]
            batch = self.step_inputs(users, epoch, n)
            batch_seconds += time.perf_counter() - b0
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
            if not distributed.all_finite(value, ranks):
                if cfg.optim.on_nonfinite == "stop":
                    raise SettingsError(
                        f"epoch {epoch}, batch {n}: the training loss is not finite ({value}; diverged): lower --lr, "
                        "or pass --on-nonfinite skip to skip such batches"
                    )
                skipped += 1
                continue
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss_sum += value
            bar.set_postfix(
                loss=f"{loss_sum / n:.4f}", seq_s=f"{(start + len(users)) / (time.perf_counter() - t0):.0f}"
            )
        train_seconds = time.perf_counter() - t0
        self.say_if_crowded(epoch)
        if skipped:
            self.log(f"epoch {epoch}: skipped {skipped} of {len(starts)} batches with a NaN or infinite loss")
        ndcg = self.evaluate_all(
            "valid", cfg.evaluation.select_on or "full", self.valid_users, top_lists=False
        ).result()["overall"]["NDCG@10"]
        ndcg = ndcg or 0.0
        epoch_seconds = time.perf_counter() - t0
        mean_loss = loss_sum / max(1, len(starts) - skipped)
        speed = len(order) * ranks.world / train_seconds
        state["history"].append(
            {
                "epoch": epoch,
                "loss": mean_loss,
                "valid_NDCG@10": ndcg,  # the selection metric (metrics.json: selected_on)
                "train_seconds": train_seconds,
                "batch_seconds": batch_seconds,
                "sequences_per_second": speed,
                "epoch_seconds": epoch_seconds,  # the steps, the teacher table and validation
            }
        )
        self.log(
            f"epoch {epoch}: loss {mean_loss:.4f}, valid {cfg.evaluation.select_on} NDCG@10 {ndcg:.4f}, {speed:.0f} seq/s, "
            f"batches {100 * batch_seconds / train_seconds:.1f}% of the time, {epoch_seconds:.1f} s"
        )
        state["epoch"] = epoch
        if ndcg > state["best"]:
            state.update(best=ndcg, best_epoch=epoch, waited=0)
            if ranks.main:
                save_weights(self.run / BEST, self.model)
        else:
            state["waited"] += 1
            if state["waited"] >= cfg.optim.patience:
                state["finished"] = True
                self.log(
                    f"early stop: no better validation {cfg.evaluation.select_on} NDCG@10 for {cfg.optim.patience} epochs"
                )
        if ranks.main:
            save_checkpoint(self.run / CHECKPOINT, self.model, self.optimizer, state)
        ranks.barrier()

    def say_if_crowded(self, epoch: int) -> None:
        """Once a run, where processes that started after it leave fewer free cores than its threads:
        the count is kept (another one rounds differently), so the user is told how to change it."""
        if self.crowded_said or self.ranks.active or self.device.type != "cpu" or self.cfg.run.threads is None:
            return  # (threads is set by setup; None only narrows the type)
        others = self.load.others()
        if threads.crowded(self.cfg.run.threads, others):
            self.crowded_said = True
            self.log(
                f"epoch {epoch}: other processes kept {others:.1f} of {threads.cores()} cores busy, fewer free than "
                f"this run's {self.cfg.run.threads} threads; one thread is faster beside busy processes: stop and "
                f"llmesr-train --resume {self.run} --threads 1"
            )

    def finish(self) -> dict[str, Any]:
        """Tests the best weights with both protocols, writes metrics.json, ranks.npz and the plot."""
        cfg, ranks, ds = self.cfg, self.ranks, self.ds
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
            "groups": self.groups["test"].describe(),
            "environment": environment(self.device),
        }
        per_user: dict[str, np.ndarray] = {}
        for split, users in (("test", np.flatnonzero(ds.test > 0)), ("valid", self.valid_users)):
            for protocol in ("full", "sampled"):
                result = self.evaluate_all(split, protocol, users)
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


def popularity_metrics(cfg: TrainConfig) -> dict[str, Any]:
    """Test metrics of ranking by training popularity, with `cfg`'s groups, negatives and ties: the
    reference every model should beat."""
    from llmesr.evaluate import Popularity

    return reference_metrics(cfg, lambda ds: Popularity(ds, cfg.model.max_len))


def text_neighbours_metrics(cfg: TrainConfig) -> dict[str, Any]:
    """Test metrics of the text-only baseline (`llmesr.evaluate.TextNeighbours`: the items whose text is
    most like the last input item's), with `cfg`'s groups, negatives and ties."""
    from llmesr.evaluate import TextNeighbours

    table = load_embeddings(cfg.data)["item_emb"]
    return reference_metrics(cfg, lambda ds: TextNeighbours(table, cfg.model.max_len))


def reference_metrics(cfg: TrainConfig, scorer: Callable[[Dataset], Any]) -> dict[str, Any]:
    """Test metrics of an untrained `scorer(ds)` under both protocols, as a run of `cfg` is tested."""
    ds = load_dataset(cfg.data)
    groups = Groups.of(
        ds, cfg.evaluation.tail_user_len, cfg.evaluation.tail_item_pop, cfg.evaluation.user_groups, "test"
    )
    negatives = eval_negatives(ds, cfg.evaluation.n_negatives, seed=cfg.run.seed)
    users = np.flatnonzero(ds.test > 0)
    model = scorer(ds)
    return {
        protocol: evaluate(
            model,
            ds,
            protocol=protocol,
            negatives=negatives,
            users=users,
            groups=groups,
            ties=cfg.evaluation.ties or "pessimistic",
        ).result()
        for protocol in ("full", "sampled")
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
