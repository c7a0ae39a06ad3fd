"""One training step of LLM-ESR-SASRec at the paper's settings on Yelp, fast or straightforward, run
in a fresh process so that its peak memory is its own. Used by test_train_speed.py; by hand:

    python benches/_train_step.py fast 5        # or: reference 2, evaluate 1, ce 5

LLMESR_OPS=native|ref picks the fused operators or their PyTorch twins; LLMESR_BENCH_DEVICE=cuda runs
on the GPU (the data folder prepared beforehand, see `yelp`); LLMESR_BENCH_PRECISION=bf16 runs the step's
forward under bf16 autocast as `llmesr-train --precision bf16` does. Prints one JSON line: seconds per step
(after one warm-up step), the share of it spent assembling batches, and the process's peak resident memory
before and after the steps.

`ce`: SASRec alone with `--loss ce` (a softmax over all of Yelp's items), each step against its matrix
products alone (the chunked loss's scores, their recomputation in the backward pass where the softmax is
too large to keep, and the two gradient products) at the step's own shapes, alternated in the same process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from _synthetic_log import bench_dir

# The paper's settings; LLMESR_BENCH_TRAIN_* shrink them for the CI smoke run.
BATCH = int(os.environ.get("LLMESR_BENCH_TRAIN_BATCH", "128"))
MAX_LEN = int(os.environ.get("LLMESR_BENCH_TRAIN_MAXLEN", "200"))
PRECISION = os.environ.get("LLMESR_BENCH_PRECISION", "fp32")
SEMANTIC_DIM = 1536  # the paper's text-embedding-ada-002 size, as in the original's adapter 1536 -> 768 -> 64
HIDDEN, N_SIMILAR = 64, 10


def yelp():
    """Yelp prepared from the shared data (cached), a seeded random semantic table of the paper's width
    (speed does not depend on its values) and 10 similar users per user from random user vectors."""
    from llmesr import load_dataset, prepare
    from llmesr.retrieval import similar_users

    shared = Path(os.environ.get("LLMESR_TEST_DATA", "")) / "yelp"
    folder = bench_dir() / "yelp"
    if not (folder / "meta.json").exists():
        prepare([shared / "sequences.txt"], folder, items=[shared / "items.jsonl"], overwrite=True, progress=None)
    ds = load_dataset(folder)
    rng = np.random.default_rng(0)
    semantic = rng.normal(size=(ds.n_items + 1, SEMANTIC_DIM)).astype(np.float32)
    semantic[0] = 0
    similar_path = folder / "bench_similar.npy"
    if not similar_path.exists():
        users = rng.normal(size=(ds.n_users + 1, 32)).astype(np.float32)
        nearest = similar_users(users[1:], N_SIMILAR) + 1  # 0-based rows to user ids
        np.save(similar_path, np.vstack([np.zeros((1, N_SIMILAR), nearest.dtype), nearest]))
    return ds, semantic, np.load(similar_path)


def peak_rss_mib() -> float:
    return int([line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]) / 1024


def main(kind: str, steps: int) -> dict:
    import torch

    from llmesr.batches import training_batch
    from llmesr.config import TrainConfig
    from llmesr.evaluate import evaluate
    from llmesr.models import LLMESR, reference
    from llmesr.sampling import histories
    from llmesr.train import autocast

    torch.set_num_threads(int(os.environ.get("LLMESR_BENCH_THREADS", "2")))
    device = torch.device(os.environ.get("LLMESR_BENCH_DEVICE", "cpu"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ds, semantic, similar = yelp()
    torch.manual_seed(0)
    model = LLMESR(ds.n_items, torch.from_numpy(semantic), hidden=HIDDEN, max_len=MAX_LEN, fusion="cross_attention")
    model.to(device)
    rss_before = peak_rss_mib()
    if kind == "evaluate":
        t = time.perf_counter()
        evaluate(model, ds, protocol="full", max_len=MAX_LEN)
        return {"kind": kind, "seconds": time.perf_counter() - t, "users": int((ds.test > 0).sum()),
                "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib()}  # fmt: skip
    if kind == "ce":
        return ce_step_vs_products(ds, steps, device, sync, rss_before)
    cfg = TrainConfig.of(data="-", out="-", max_len=MAX_LEN, batch_size=BATCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = np.random.default_rng(0).permutation(np.flatnonzero(ds.train_end - ds.indptr[:-1] >= 2))
    loss_fn = model.training_loss if kind == "fast" else lambda *a, **k: reference.training_loss(model, *a, **k)
    times, batch_times = [], []
    for step in range(steps + 1):  # step 0 warms up
        sync()
        t0 = time.perf_counter()
        users = order[step * BATCH : (step + 1) * BATCH]
        batch = [*training_batch(cfg, ds, users, 1), histories(ds, similar[users].ravel(), "train", MAX_LEN)]
        inputs, targets, negatives, sim = (torch.from_numpy(a).long().to(device) for a in batch)
        t1 = time.perf_counter()
        with autocast(PRECISION, device):
            loss = loss_fn(inputs, targets, negatives, sim, alpha=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()
        if step:
            times.append(time.perf_counter() - t0)
            batch_times.append(t1 - t0)
    return {
        "kind": kind,
        "ops": os.environ.get("LLMESR_OPS", "auto"),
        "device": str(device),
        "precision": PRECISION,
        "seconds_per_step": float(np.mean(times)),
        "sequences_per_second": BATCH / float(np.mean(times)),
        "batch_fraction": float(np.sum(batch_times) / np.sum(times)),
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }


def ce_step_vs_products(ds, steps: int, device, sync, rss_before: float) -> dict:
    import torch

    from llmesr.batches import training_batch
    from llmesr.config import TrainConfig
    from llmesr.models import LLMESR
    from llmesr.models.losses import CE_CHUNK_SCORES, CE_KEEP_SCORES

    torch.manual_seed(0)
    model = LLMESR(ds.n_items, views="id", hidden=HIDDEN, max_len=MAX_LEN).to(device)
    cfg = TrainConfig.of(data="-", out="-", max_len=MAX_LEN, batch_size=BATCH, loss="ce")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = np.random.default_rng(0).permutation(np.flatnonzero(ds.train_end - ds.indptr[:-1] >= 2))
    table = torch.randn(ds.n_items, HIDDEN, device=device)
    rows = max(1, CE_CHUNK_SCORES // ds.n_items)

    def products(n_targets: int) -> float:
        states, grad_table = torch.randn(n_targets, HIDDEN, device=device), torch.zeros_like(table)
        sync()
        t = time.perf_counter()
        for chunk in states.split(rows):
            scores = chunk @ table.T  # forward
            if n_targets * len(table) > CE_KEEP_SCORES:
                scores = chunk @ table.T  # recomputed in the backward pass (else the forward's is kept)
            _ = scores @ table  # gradient of the states
            grad_table.addmm_(scores.T, chunk)  # gradient of the item table
        sync()
        return time.perf_counter() - t

    step_times, product_times, targets_per_step = [], [], []
    for step in range(steps + 1):  # step 0 warms up
        sync()
        t0 = time.perf_counter()
        users = order[step * BATCH : (step + 1) * BATCH]
        inputs, targets, negatives = (torch.from_numpy(a).long().to(device) for a in training_batch(cfg, ds, users, 1))
        loss = model.training_loss(inputs, targets, negatives, loss="ce")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()
        elapsed = time.perf_counter() - t0
        n_targets = int((targets != 0).sum())
        if step:
            step_times.append(elapsed)
            product_times.append(products(n_targets))
            targets_per_step.append(n_targets)
    return {
        "kind": "ce",
        "device": str(device),
        "items": ds.n_items,
        "targets_per_step": float(np.mean(targets_per_step)),
        "seconds_per_step": float(np.mean(step_times)),
        "products_seconds_per_step": float(np.mean(product_times)),
        "step_over_products": float(np.sum(step_times) / np.sum(product_times)),
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)))
