"""The paper-style table from run folders (`llmesr-report`): test HR@10 / NDCG@10 by long-tail group and
protocol, mean +- std over seeds, per dataset and method, with a paired test over users against the
backbone alone (`base`) on the same data: each user's NDCG@10 averaged over the seeds both share, then
a paired t-test (normal approximation: thousands of users). Markdown, CSV and a PNG (group metrics and
validation curves side by side)."""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmesr import plots
from llmesr.config import SECTION_OF, TrainConfig, declared
from llmesr.errors import SettingsError
from llmesr.io import atomic_write
from llmesr.metrics import GROUPS
from llmesr.plots import PROTOCOLS
from llmesr.runs import read_run_config

# Settings that do not make another method: where, which seed, how long (the stopping rule), and the group
# thresholds.
UNLABELLED = {
    "data",
    "out",
    "seed",
    "device",
    "threads",
    "method",
    "backbone",
    "epochs",
    "patience",
    "patience_floor",
    "tail_user_len",
    "tail_item_pop",
}
# Settings a run of the backbone alone ignores: the views, their fusion, the distillation, the item regulariser.
LLMESR_ONLY = {f.name for section, f in declared() if section in ("fusion", "distillation")} | {"beta"}
METRICS = ("HR@10", "NDCG@10")
BEYOND = ("coverage@10", "tail_share@10", "mean_popularity@10")


@dataclass
class Run:
    folder: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    ranks: dict[str, np.ndarray] | None  # users, full, sampled (absent in older run folders)

    @property
    def label(self) -> str:
        return self.label_as(self.config["method"])

    def label_as(self, method: str) -> str:
        """The row a run belongs to: method, backbone and loss (the default loss depends on the data),
        plus every setting that differs from the defaults (those implied by `compat` left out), e.g.
        "base-sasrec loss=ce compat=original"."""
        c = self.config
        parts = [f"{'LLM-ESR' if method == 'llmesr' else 'base'}-{c['backbone']}"]
        if "loss" in c:
            parts.append(f"loss={c['loss']}")
        compat, backbone = c.get("compat", "none"), c["backbone"]  # (defaults differ by both)
        defaults = TrainConfig.of(data="-", out="-", compat=compat, backbone=backbone).flat() | {"compat": "none"}
        ignored = UNLABELLED | {"loss"} | (LLMESR_ONLY if method == "base" else set())
        if c.get("loss") != "sampled":  # the shared negatives' count means nothing to another loss
            ignored |= {"loss_negatives"}
        for key, value in c.items():
            if key not in ignored and key in defaults and value != defaults[key]:
                parts.append(f"{key}={value}")
        return " ".join(parts)

    @property
    def data(self) -> str:
        return Path(self.config["data"]).name

    def train_minutes(self) -> float:
        """Every epoch's wall-clock time (steps, teachers, validation; the steps alone in older runs)."""
        return float(self.elapsed_minutes()[-1]) if self.metrics["history"] else 0.0

    def elapsed_minutes(self) -> np.ndarray:
        """Wall-clock minutes from the start of training to the end of each epoch."""
        return np.cumsum([h.get("epoch_seconds", h["train_seconds"]) for h in self.metrics["history"]]) / 60

    def valid_curve(self) -> np.ndarray:
        """Validation NDCG@10 (the selection metric) at the end of each epoch."""
        return np.array([h["valid_NDCG@10"] for h in self.metrics["history"]])

    def minutes_to(self, share: float) -> float:
        """Minutes until validation NDCG@10 first reached `share` of the run's best."""
        return self.minutes_to_level(share * float(self.valid_curve().max()))

    def minutes_to_level(self, level: float) -> float:
        """Minutes until validation NDCG@10 first reached `level` (NaN if it never did)."""
        reached = self.valid_curve() >= level
        return float(self.elapsed_minutes()[int(np.argmax(reached))]) if reached.any() else float("nan")


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)
    for name in ("config.json", "metrics.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: no {name} (not a finished run folder)")
    config = read_run_config(folder)
    # Every setting valid, as resume checks them; settings of other versions (removed options) are left out.
    TrainConfig.from_saved(
        {k: v for k, v in config.items() if k in SECTION_OF or k in ("data", "out")}, str(folder / "config.json")
    )
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except json.JSONDecodeError as e:
        raise SettingsError(f"{folder}: unreadable JSON: {e}") from None
    test = metrics.get("test") if isinstance(metrics, dict) else None
    if not isinstance(test, dict) or not all(
        isinstance(test.get(p), dict) and all(isinstance(test[p].get(g), dict) for g in GROUPS)
        for p in ("full", "sampled")
    ):
        raise SettingsError(f"{folder / 'metrics.json'}: not the metrics of a finished llmesr run (no test results)")
    ranks = None
    if (folder / "ranks.npz").is_file():
        try:
            with np.load(folder / "ranks.npz", allow_pickle=False) as f:
                ranks = {k: f[k] for k in f.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise SettingsError(f"{folder / 'ranks.npz'}: not a ranks file of an llmesr run ({e})") from None
        if not {"users", "full", "sampled"} <= ranks.keys():
            raise SettingsError(
                f"{folder / 'ranks.npz'}: not a ranks file of an llmesr run (needs users, full, sampled)"
            )
    return Run(folder, config, metrics, ranks)


def ndcg_at_10(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of a paired t-test of mean(a - b) = 0 (normal approximation)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2 or not d.std(ddof=1) > 0:
        return 1.0 if len(d) < 2 or d.mean() == 0 else 0.0
    z = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return math.erfc(abs(z) / math.sqrt(2))


@dataclass
class Row:
    data: str
    label: str
    runs: list[Run] = field(default_factory=list)

    def values(self, protocol: str, group: str, metric: str) -> list[float]:
        out = []
        for r in self.runs:
            v = r.metrics["test"][protocol][group].get(metric)
            if v is not None:
                out.append(float(v))
        return out

    def per_user_ndcg(self, protocol: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """seed -> (users, NDCG@10)."""
        return {
            r.config["seed"]: (r.ranks["users"], ndcg_at_10(r.ranks[protocol]))
            for r in self.runs
            if r.ranks is not None
        }


def significance(row: Row, base: Row, protocol: str) -> float | None:
    """p-value of row against base over the users and seeds they share; None without per-user ranks."""
    mine, theirs = row.per_user_ndcg(protocol), base.per_user_ndcg(protocol)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    users = mine[seeds[0]][0]
    if any(not np.array_equal(mine[s][0], users) or not np.array_equal(theirs[s][0], users) for s in seeds):
        return None  # different users (another dataset or split): no pairing
    a = np.mean([mine[s][1] for s in seeds], axis=0)
    b = np.mean([theirs[s][1] for s in seeds], axis=0)
    return paired_test(a, b)


def build_rows(runs: list[Run]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for r in runs:
        rows.setdefault((r.data, r.label), Row(r.data, r.label)).runs.append(r)
    return sorted(rows.values(), key=lambda row: (row.data, not row.label.startswith("base"), row.label))


def base_of(row: Row, rows: list[Row]) -> Row | None:
    """What an LLM-ESR row is tested against: the backbone alone on the same data with the same
    settings otherwise (base rows are not tested)."""
    run = row.runs[0]
    if run.config["method"] == "base":
        return None
    wanted = run.label_as("base")
    return next((other for other in rows if other.data == row.data and other.label == wanted), None)


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def markdown(rows: list[Row]) -> str:
    out = io.StringIO()
    for protocol in PROTOCOLS:
        out.write(f"\n### Test, {protocol} ranking: NDCG@10 (HR@10 below), mean ± std over seeds\n\n")
        out.write("| data | method | seeds | " + " | ".join(GROUPS) + " | p vs base |\n")
        out.write("|---" * (len(GROUPS) + 4) + "|\n")
        for row in rows:
            base = base_of(row, rows)
            p = significance(row, base, protocol) if base is not None else None
            seeds = ",".join(str(r.config["seed"]) for r in sorted(row.runs, key=lambda r: r.config["seed"]))
            cells = [
                f"{mean_std(row.values(protocol, g, 'NDCG@10'))}<br>{mean_std(row.values(protocol, g, 'HR@10'))}"
                for g in GROUPS
            ]
            sig = "-" if p is None else f"{p:.2g}"
            out.write(f"| {row.data} | {row.label} | {seeds} | " + " | ".join(cells) + f" | {sig} |\n")
    out.write(
        "\n### Runs\n\n| data | method | seed | best epoch | epochs | training time | selected on | "
        + " | ".join(BEYOND)
        + " |\n"
    )
    out.write("|---" * (7 + len(BEYOND)) + "|\n")
    for row in rows:
        for r in sorted(row.runs, key=lambda r: r.config["seed"]):
            overall = r.metrics["test"]["full"]["overall"]
            beyond = [f"{overall[k]:.4g}" if overall.get(k) is not None else "-" for k in BEYOND]
            out.write(
                f"| {row.data} | {row.label} | {r.config['seed']} | {r.metrics['best_epoch']} | {r.metrics['epochs']} | "
                f"{r.train_minutes():.1f} min | {r.metrics.get('selected_on', 'valid full NDCG@10')} | "
                + " | ".join(beyond)
                + " |\n"
            )
    return out.getvalue()


QUALITY_SHARES = (0.9, 0.95, 1.0)


def time_to_quality(rows: list[Row]) -> str:
    """What a user waits for: minutes of training (steps, teachers, validation) until validation NDCG@10
    first reaches 90 %, 95 % and 100 % of the run's best, and until early stopping, mean ± std over
    seeds (busy or idle as the runs were). The last column compares rows of one dataset on the same
    footing: minutes until the level every run of that dataset reaches (the lowest of their bests)."""
    out = io.StringIO()
    out.write("\n### Time to quality: training minutes until validation NDCG@10 first reaches a share of its best\n\n")
    out.write("| data | method | best valid NDCG@10 | " + " | ".join(f"{s:.0%}" for s in QUALITY_SHARES))
    out.write(" | stopped | to the common level |\n" + "|---" * (len(QUALITY_SHARES) + 5) + "|\n")

    def minutes(values: list[float]) -> str:
        return f"{np.mean(values):.1f}" + (f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else "")

    common: dict[str, float] = {}
    for row in rows:
        for r in row.runs:
            if r.metrics["history"]:
                common[row.data] = min(common.get(row.data, np.inf), float(r.valid_curve().max()))
    for row in rows:
        runs = [r for r in row.runs if r.metrics["history"]]
        if not runs:
            continue
        best = [float(r.valid_curve().max()) for r in runs]
        cells = [minutes([r.minutes_to(share) for r in runs]) for share in QUALITY_SHARES]
        cells.append(minutes([r.train_minutes() for r in runs]))
        cells.append(f"{minutes([r.minutes_to_level(common[row.data]) for r in runs])} (at {common[row.data]:.4f})")
        out.write(f"| {row.data} | {row.label} | {mean_std(best)} | " + " | ".join(cells) + " |\n")
    return out.getvalue()


def csv_text(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["data", "method", "seeds", "protocol", "group", "metric", "mean", "std", "p_vs_base"])
    for row in rows:
        base = base_of(row, rows)
        for protocol in PROTOCOLS:
            p = significance(row, base, protocol) if base is not None else None
            for group in GROUPS:
                for metric in METRICS:
                    v = row.values(protocol, group, metric)
                    writer.writerow(
                        [
                            row.data,
                            row.label,
                            len(row.runs),
                            protocol,
                            group,
                            metric,
                            f"{np.mean(v):.6f}" if v else "",
                            f"{np.std(v, ddof=1):.6f}" if len(v) > 1 else "",
                            "" if p is None or metric != "NDCG@10" else f"{p:.4g}",
                        ]
                    )
    return out.getvalue()


def plot(rows: list[Row], path: Path) -> bool:
    """Test NDCG@10 by group (both protocols) and the learning curves, one row of panels per dataset."""
    plt = plots.pyplot()
    if plt is None:
        return False
    datasets = sorted({r.data for r in rows})
    fig, axes = plt.subplots(len(datasets), 4, figsize=(24, 4.2 * len(datasets)), squeeze=False)
    for line, data in zip(axes, datasets, strict=True):
        mine = [r for r in rows if r.data == data]
        for ax, protocol in zip(line[:2], PROTOCOLS, strict=True):
            columns = {
                row.label: {g: float(np.mean(row.values(protocol, g, "NDCG@10") or [0.0])) for g in GROUPS}
                for row in mine
            }
            plots.group_bars(ax, columns, f"{data}: test NDCG@10, {protocol} ranking (mean over seeds)")
        histories = {f"{row.label} seed {r.config['seed']}": r.metrics["history"] for row in mine for r in row.runs}
        plots.learning_curves(line[2], histories, f"{data}: learning curves")
        elapsed = {f"{row.label} seed {r.config['seed']}": r.elapsed_minutes() for row in mine for r in row.runs}
        plots.time_to_quality(line[3], histories, elapsed, f"{data}: validation NDCG@10 against training time")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return True
