"""RecBole's SASRec and ours, side by side on one prepared dataset folder.

    python benches/peers/run_recbole.py --data FOLDER --epochs N --max-len L --out DIR

Exports FOLDER with `llmesr-export` (the same users, items, order and leave-one-out split), then trains,
one after the other and each in its own process, RecBole's SASRec (`loss_type: CE`) and ours
(`--method base --loss ce`) at the same max length, hidden size, layers, heads, dropout, batch size,
learning rate, epochs and patience, and writes DIR/side_by_side.json: for each side the seconds per
training epoch, the wall seconds to a tested model, the peak RSS, the epochs run and the best one, and the
test NDCG@10 / HR@10.

Protocols. Both rank every item for each user's last item, after training on all but the last two and
selecting the epoch on the one before. RecBole's own full ranking (its `recbole_protocol` figures) leaves
the user's history among the candidates and breaks ties by position; ours excludes the model's input
history (except the target) and counts ties against the target. So the RecBole side is also scored with
our rule on the same targets (`llmesr_protocol`): that is the column to compare. What differs besides:
RecBole trains on every prefix of every history (one target per sequence), ours every position of each
user's sequence at once (the same targets, batched by user); RecBole's blocks are post-norm with GELU,
ours the original SASRec's (the feed-forward width is set equal on both sides).

RecBole 1.2.1 needs three shims on today's numpy and torch (numpy 2 removed `np.float_` and friends,
which its configurator reads; torch >= 2.6 loads checkpoints with `weights_only=True`, which its own
checkpoints do not pass; `recbole.quick_start` imports ray, which is not used here). They live here and
only in the RecBole child process, never in the llmesr package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def apply_recbole_shims() -> None:
    """Only in the RecBole child process: see the module's docstring."""
    import numpy as np
    import torch

    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, old):
            setattr(np, old, new)
    # RecBole's trainer reloads its own best checkpoint (a dict with its config object): let that one
    # module load it in full, through a stand-in for `torch` that differs only in `load`.
    import recbole.trainer.trainer as trainer_module

    torch_for_recbole = types.ModuleType("torch_for_recbole")
    torch_for_recbole.__dict__.update(torch.__dict__)
    torch_for_recbole.load = lambda *a, **k: torch.load(*a, **{**k, "weights_only": False})  # type: ignore[attr-defined]
    trainer_module.torch = torch_for_recbole  # type: ignore[attr-defined]


def llmesr_protocol(model: Any, test_data: Any, exclude_history: bool = True) -> dict[str, float]:
    """RecBole's trained model scored with llmesr's full-ranking rule: every item ranked for the last
    item, the input history excluded except the target, ties counted against the target. With
    `exclude_history=False` it is RecBole's own rule (ties aside), which checks this scoring against
    RecBole's evaluator."""
    import torch

    ndcg, hits, count = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            scores = model.full_sort_predict(interaction).view(len(interaction), -1).clone()
            target = interaction[model.POS_ITEM_ID].long()
            rows = torch.arange(len(target))
            target_score = scores[rows, target].clone()
            if exclude_history:
                scores.scatter_(1, interaction[model.ITEM_SEQ].long(), -torch.inf)
            scores[:, 0] = -torch.inf  # padding
            scores[rows, target] = -torch.inf
            rank = (scores >= target_score[:, None]).sum(1)
            top = rank < 10
            hits += int(top.sum())
            ndcg += float((1.0 / torch.log2(rank[top].double() + 2)).sum())
            count += len(target)
    return {"NDCG@10": ndcg / count, "HR@10": hits / count, "count": count}


def recbole_side(args: argparse.Namespace) -> None:
    """Trains and tests RecBole's SASRec in this process and writes args.result (JSON)."""
    apply_recbole_shims()
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    settings_file, result_file = Path(args.settings).resolve(), Path(args.result).resolve()
    os.chdir(result_file.parent)  # RecBole writes log/ and log_tensorboard/ where it runs
    settings = {
        "hidden_size": args.hidden,
        "inner_size": args.hidden,
        "n_layers": args.layers,
        "n_heads": args.heads,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "train_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "epochs": args.epochs,
        "stopping_step": args.patience,
        "seed": args.seed,
        "use_gpu": False,
        "checkpoint_dir": "recbole-saved",
        "show_progress": False,
        "state": "WARNING",
    }
    config = Config(model="SASRec", config_file_list=[os.fspath(settings_file)], config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    train_seconds: list[float] = []
    valid_scores: list[float] = []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train_epoch(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        out = train_epoch(*a, **k)
        train_seconds.append(time.perf_counter() - start)
        return out

    def recorded_valid_epoch(*a: Any, **k: Any) -> Any:
        score, result = valid_epoch(*a, **k)
        valid_scores.append(float(score))
        epoch = len(valid_scores)
        print(f"epoch {epoch}: train {train_seconds[-1]:.1f} s, valid NDCG@10 {score:.4f}", file=sys.stderr, flush=True)
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, recorded_valid_epoch
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    own = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    result = {
        "epochs": len(train_seconds),
        "best_epoch": 1 + valid_scores.index(max(valid_scores)),
        "seconds_per_epoch": sum(train_seconds) / len(train_seconds),
        "test": {
            "llmesr_protocol": llmesr_protocol(trainer.model, test_data),
            "recbole_protocol": {"NDCG@10": float(own["ndcg@10"]), "HR@10": float(own["hit@10"])},
            # RecBole's rule recomputed here: equal to its own figures (rounded to 4 places) when the
            # scoring above reads the same model, targets and candidates.
            "recbole_protocol_recomputed": llmesr_protocol(trainer.model, test_data, exclude_history=False),
        },
    }
    result_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def run_measured(command: list[str], log: Path) -> tuple[float, float]:
    """Runs `command` to its end; returns (wall seconds, peak RSS in GiB of it and its children)."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    from llmesr.export import export_recbole

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.data).resolve().name
    exported = export_recbole(args.data, out / "recbole" / name, max_len=args.max_len, overwrite=True)
    same = (
        "epochs",
        "max_len",
        "hidden",
        "layers",
        "heads",
        "dropout",
        "batch_size",
        "lr",
        "patience",
        "seed",
        "threads",
    )
    settings = {name: getattr(args, name) for name in same}
    shared = [str(x) for name, value in settings.items() for x in ("--" + name.replace("_", "-"), value)]
    report: dict[str, Any] = {"data": os.fspath(Path(args.data).resolve()), "settings": settings}

    result = out / "recbole.json"
    command = [sys.executable, os.fspath(HERE), "--recbole-side", "--settings", os.fspath(exported / f"{name}.yaml")]
    seconds, rss = run_measured([*command, "--result", os.fspath(result), *shared], out / "recbole.log")
    report["recbole"] = {**json.loads(result.read_text()), "wall_seconds": seconds, "peak_rss_gib": rss}

    run = out / "llmesr"
    # The model's own scores, as RecBole ranks (no popularity penalty).
    command = [sys.executable, "-m", "llmesr.cli.train", "--data", args.data, "--method", "base", "--loss", "ce"]
    command += ["--popularity-penalty", "0"]
    seconds, rss = run_measured([*command, *shared, "-q", "--out", os.fspath(run), "--overwrite"], out / "llmesr.log")
    metrics = json.loads((run / "metrics.json").read_text())
    train = [h["train_seconds"] for h in metrics["history"]]
    full = metrics["test"]["full"]["overall"]
    report["llmesr"] = {
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "seconds_per_epoch": sum(train) / len(train),
        "test": {"llmesr_protocol": {"NDCG@10": full["NDCG@10"], "HR@10": full["HR@10"], "count": full["count"]}},
        "wall_seconds": seconds,
        "peak_rss_gib": rss,
    }
    report["ratios"] = {
        "seconds_per_epoch": report["recbole"]["seconds_per_epoch"] / report["llmesr"]["seconds_per_epoch"],
        "wall_seconds": report["recbole"]["wall_seconds"] / report["llmesr"]["wall_seconds"],
    }
    tmp = out / "side_by_side.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "side_by_side.json")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help="a prepared llmesr dataset folder")
    p.add_argument("--out", help="folder for the export, both runs and side_by_side.json")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--patience", type=int, default=20, help="epochs without a better validation NDCG@10")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    p.add_argument("--recbole-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.recbole_side:
        recbole_side(args)
        return 0
    if not args.data or not args.out:
        raise SystemExit("give --data FOLDER and --out DIR")
    report = side_by_side(args)
    print(json.dumps({side: report[side] for side in ("recbole", "llmesr", "ratios")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
