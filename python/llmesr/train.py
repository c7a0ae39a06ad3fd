"""Training LLM-ESR (or the ID-only SASRec baseline) with early stopping on validation NDCG@10, then
testing the best checkpoint with both protocols by long-tail group. A run folder holds the resolved
config, the log, the best weights (safetensors) and metrics.json."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from llmesr.config import TrainConfig
from llmesr.data import load_dataset
from llmesr.embed import load_embeddings
from llmesr.evaluate import eval_inputs, evaluate
from llmesr.io import atomic_dir
from llmesr.metrics import Groups
from llmesr.models import LLMESR, SASRec
from llmesr.sampling import eval_negatives, sasrec_batch


def build_model(cfg: TrainConfig, n_items: int, tables: dict[str, np.ndarray] | None) -> torch.nn.Module:
    common = dict(hidden=cfg.hidden, max_len=cfg.max_len, layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout)
    if cfg.method == "base":
        return SASRec(n_items, **common)
    if cfg.method != "llmesr":
        raise ValueError(f"method must be 'llmesr' or 'base', not {cfg.method!r}")
    assert tables is not None
    pca = torch.from_numpy(np.array(tables["item_pca"]))
    if pca.shape[1] != cfg.hidden:
        raise ValueError(f"the dataset's PCA table is {pca.shape[1]}-d; run llmesr-embed --hidden {cfg.hidden}")
    return LLMESR(torch.from_numpy(np.array(tables["item_emb"])), id_init=pca, **common)


def train(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    ds = load_dataset(cfg.data)
    tables = load_embeddings(cfg.data) if cfg.method == "llmesr" else None
    model = build_model(cfg, ds.n_items, tables).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    similar = np.array(tables["similar_users"])[:, : cfg.n_similar] if tables is not None else None
    negatives = eval_negatives(ds, cfg.n_negatives, seed=cfg.seed)
    groups = Groups.of(ds, cfg.tail_user_len, cfg.tail_item_pop)
    train_users = np.flatnonzero((ds.train_end - ds.indptr[:-1]) >= 2).astype(np.uint32)  # user 0 has none
    valid_users = np.flatnonzero(ds.valid > 0)

    with atomic_dir(cfg.out, overwrite=True) as run:
        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        (run / "log.txt").write_text("")
        best, best_epoch, waited, history = -1.0, 0, 0, []
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = np.random.default_rng([cfg.seed, epoch]).permutation(train_users)
            losses, t0 = [], time.perf_counter()
            bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}", disable=not progress, leave=False)
            for start in bar:
                users = order[start : start + cfg.batch_size]
                inputs, targets, negs = (
                    torch.from_numpy(a.astype(np.int64)).to(device)
                    for a in sasrec_batch(ds, users, cfg.max_len, cfg.seed, epoch)
                )
                loss = model.sequence_loss(inputs, targets, negs)
                if similar is not None and cfg.alpha > 0:
                    sim_users = similar[users.astype(np.int64)].ravel()
                    sim_seqs, _ = eval_inputs(ds, sim_users, "valid", inputs.shape[1])
                    sim_t = torch.from_numpy(sim_seqs).to(device).view(len(users), -1, inputs.shape[1])
                    loss = loss + cfg.alpha * model.distillation_loss(inputs, sim_t)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            valid = evaluate(model, ds, split="valid", users=valid_users, groups=groups, max_len=cfg.max_len).result()
            ndcg = valid["overall"]["NDCG@10"]
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid_NDCG@10": ndcg, "seconds": seconds})
            line = (
                f"epoch {epoch}: loss {np.mean(losses):.4f}, valid NDCG@10 {ndcg:.4f}, {len(order) / seconds:.0f} seq/s"
            )
            with open(run / "log.txt", "a") as log:
                log.write(line + "\n")
            if progress:
                tqdm.write(line)
            if ndcg > best:
                best, best_epoch, waited = ndcg, epoch, 0
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, run / "best.safetensors"
                )
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        model.load_state_dict(load_file(run / "best.safetensors"))
        metrics: dict[str, Any] = {
            "test": {},
            "valid": {},
            "best_epoch": best_epoch,
            "history": history,
            "tail_user_len": groups.tail_user_len,
            "tail_item_pop": groups.tail_item_pop,
        }
        for split, users in (("test", np.flatnonzero(ds.test > 0)), ("valid", valid_users)):
            for protocol in ("full", "sampled"):
                metrics[split][protocol] = evaluate(
                    model,
                    ds,
                    split=split,
                    protocol=protocol,
                    negatives=negatives,
                    users=users,
                    groups=groups,
                    max_len=cfg.max_len,
                ).result()
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
