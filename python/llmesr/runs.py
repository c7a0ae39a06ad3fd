"""The run folder: its layout, the settings it records, the model they describe, checkpoints and best
weights. Training writes it (`llmesr.train`), serving and reports read it; this module is their one
meeting point.

| file | content |
|---|---|
| `config.json` | the resolved settings (`TrainConfig`) |
| `inputs.json` | SHA-256 of the dataset files the run reads, checked on resume |
| `log.txt` | one line per epoch |
| `best.safetensors` | the best epoch's weights |
| `checkpoint.safetensors` | the last epoch: weights, optimizer state, the loop's state in its metadata |
| `metrics.json`, `metrics.png`, `ranks.npz` | test results, their plot, every test user's rank |
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmesr.config import TrainConfig, added_later, flatten, is_a
from llmesr.data import EMBEDDING_FILES, file_sha256
from llmesr.errors import SettingsError
from llmesr.io import atomic_write, atomic_write_text, remove_stale_temporaries

if TYPE_CHECKING:
    import torch

    from llmesr.models import LLMESR

CONFIG, LOG, METRICS = "config.json", "log.txt", "metrics.json"
CHECKPOINT, BEST = "checkpoint.safetensors", "best.safetensors"
INPUTS = "inputs.json"
RANKS = "ranks.npz"  # each test user's rank under both protocols, for paired tests between runs
# Settings a resumed run may take from the command line instead of config.json (and where it is: `out`):
# none of them changes what the epochs already run did, so a run given more epochs goes on exactly as if it
# had been started with them (the popularity penalty re-ranks the final test only).
RESUME_MAY_CHANGE = ("device", "threads", "epochs", "popularity_penalty")


def load_config(run: Path) -> TrainConfig:
    """The settings a run folder records."""
    return TrainConfig.from_saved(read_run_config(run), str(run / CONFIG))


def read_run_config(run: Path) -> dict[str, Any]:
    """config.json of a run folder by flat setting names (its sections merged; older versions wrote it
    flat), or a clear error naming the file."""
    path = run / CONFIG
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{run} is not a run folder (no config.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(saved, dict):
        raise SettingsError(f"{path}: not the config of an llmesr run")
    flat = flatten(saved, strict=False)
    if not {"method", "backbone", "data"} <= flat.keys():
        raise SettingsError(f"{path}: not the config of an llmesr run")
    return added_later(flat)


def is_run_folder(path: Path) -> bool:
    try:
        read_run_config(path)
        return True
    except (OSError, ValueError):
        return False


def training_bytes(cfg: TrainConfig, n_items: int, semantic_dim: int) -> int:
    """A rough upper estimate of a training run's memory: the parameters with their gradients and
    Adam's two moments, and one step's activations (every position of a full batch, every layer, both
    views), and the scores of the next-item loss. Settings are checked against it before anything
    is allocated, so a mistyped size is a clear refusal, not an allocation failure or a hang."""
    h, views = cfg.model.hidden, 2 if cfg.model.method == "llmesr" and cfg.fusion.views == "both" else 1
    per_layer = 6 * h * h + 10 * h  # attention (4 h^2) and the point-wise feed-forward (2 h^2)
    params = (
        (n_items + 2) * h * views
        + cfg.model.max_len * h
        + cfg.model.layers * per_layer * (1 if cfg.fusion.shared_encoder else views)
    )
    if views == 2:
        params += semantic_dim * (semantic_dim // 2) + (semantic_dim // 2) * h + 8 * h * h  # adapter, cross-attention
    positions = cfg.optim.batch_size * cfg.model.max_len * views
    activations = positions * h * (12 * cfg.model.layers + 8) + positions * cfg.model.max_len * cfg.model.heads * min(
        cfg.model.layers, 2
    )
    # The loss's scores, one row per target (both views' states are one row): ce and sampled score in
    # chunks (the chunk and its softmax), sampled after drawing its negatives (int64, and the sort that
    # finds the distinct ones); bce two per target.
    from llmesr.models.losses import CE_CHUNK_SCORES, CE_KEEP_SCORES, SAMPLED_CHUNK_SCORES

    targets = cfg.optim.batch_size * cfg.model.max_len
    if cfg.objective.loss == "ce":  # and the softmax kept for the backward where it is small enough
        scores = min(targets * n_items, CE_KEEP_SCORES) + 2 * min(targets * n_items, CE_CHUNK_SCORES)
    elif cfg.objective.loss == "sampled":
        columns = min(cfg.objective.loss_negatives, n_items)
        scores = 2 * min(targets * columns, SAMPLED_CHUNK_SCORES) + 6 * cfg.objective.loss_negatives
    else:
        scores = 4 * targets
    return 4 * (4 * params + activations + scores)


def check_memory(cfg: TrainConfig, n_items: int, semantic_dim: int, available: int | None) -> None:
    """Refuses settings whose estimated memory (`training_bytes`) exceeds `available` bytes."""
    need = training_bytes(cfg, n_items, semantic_dim)
    if available is not None and need > available:
        raise SettingsError(
            f"these settings need about {need / 2**30:.1f} GiB to train (hidden {cfg.model.hidden}, layers {cfg.model.layers}, "
            f"max_len {cfg.model.max_len}, batch_size {cfg.optim.batch_size}"
            + (f", loss_negatives {cfg.objective.loss_negatives}" if cfg.objective.loss == "sampled" else "")
            + f", {n_items:,} items), more than the "
            f"{available / 2**30:.1f} GiB available: lower one of them"
        )


def build_model(cfg: TrainConfig, n_items: int, tables: dict[str, np.ndarray] | None) -> LLMESR:
    """The model `cfg` describes; `tables` are the dataset's embedding tables (`load_embeddings`)."""
    import torch

    from llmesr.models import LLMESR

    common: dict[str, Any] = dict(
        backbone=cfg.model.backbone,
        hidden=cfg.model.hidden,
        max_len=cfg.model.max_len,
        layers=cfg.model.layers,
        heads=cfg.model.heads,
        dropout=cfg.model.dropout,
        compat=cfg.run.compat == "original",
        block=cfg.model.block,
        init=cfg.model.init,
        embed_scale=cfg.model.embed_scale,
    )
    if cfg.model.method == "base":
        return LLMESR(n_items, views="id", **common)
    assert tables is not None
    semantic = torch.from_numpy(np.array(tables["item_emb"]))
    id_init = None
    if cfg.fusion.id_init == "pca" and cfg.fusion.views != "semantic":
        id_init = torch.from_numpy(np.array(tables["item_pca"]))
        if id_init.shape[1] != cfg.model.hidden:
            raise SettingsError(
                f"the dataset's PCA table is {id_init.shape[1]}-d, the model's hidden size {cfg.model.hidden}: "
                f"run llmesr-embed --hidden {cfg.model.hidden}, or train with --id-init random"
            )
    return LLMESR(
        n_items,
        semantic,
        views=cfg.fusion.views,
        id_init=id_init,
        fusion=cfg.fusion.fusion or "concat",  # (resolved from --compat when not given)
        shared_encoder=cfg.fusion.shared_encoder,
        **common,
    )


def cpu_weights(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's state as contiguous CPU tensors, as safetensors stores them."""
    return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Weights, optimizer state and the loop's state (JSON in the metadata) in one safetensors file."""
    import torch

    tensors = cpu_weights(model, prefix="model.")
    opt = optimizer.state_dict()
    for pid, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optimizer.{pid}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"])}
    write_safetensors(path, tensors, meta)


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """The model's weights alone (best.safetensors), as `read_weights` reads them back."""
    write_safetensors(path, cpu_weights(model))


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """`tensors` as a safetensors file at `path`, atomically. safetensors reports a failed write (a full
    disk) as its own error type: it becomes an OSError naming `path`, which the commands print as one
    line."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as e:
            raise OSError(f"{path}: cannot write ({e}); free some space and resume") from None

    atomic_write(path, write)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata, or a clear error naming the file."""
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(path), meta
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own error type for a damaged file
        raise SettingsError(f"{path}: not a readable safetensors file ({e})") from None


# The loop's state in a checkpoint, and the type of each entry.
LOOP_STATE = {"epoch": int, "best": float, "best_epoch": int, "waited": int, "history": list, "finished": bool}


def load_weights(path: Path, model: torch.nn.Module, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Loads `path`'s weights (or `tensors` read from it) into `model`, refusing a file whose tensors are
    not the model's in name, shape and dtype (a float16 copy would be converted without a word)."""
    tensors = read_weights(path)[0] if tensors is None else tensors
    expected = model.state_dict()
    for name, value in tensors.items():
        if name in expected and value.dtype != expected[name].dtype:
            raise SettingsError(
                f"{path}: {name} is {value.dtype}, the model's {expected[name].dtype}: not this run's weights"
            )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise SettingsError(f"{path}: not this run's weights ({str(e).splitlines()[0]})") from None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    tensors, meta = read_weights(path)
    load_weights(path, model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    try:
        state = _load_optimizer(tensors, meta, optimizer)
    except (KeyError, RuntimeError, ValueError) as e:
        raise SettingsError(f"{path}: not a checkpoint of this run ({e}); start over with --overwrite") from None
    if not isinstance(state, dict) or not all(is_a(state.get(k), kind) for k, kind in LOOP_STATE.items()):
        raise SettingsError(
            f"{path}: its loop state is damaged (needs {', '.join(LOOP_STATE)}); start over with --overwrite"
        )
    return state


def _load_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, str], optimizer: torch.optim.Optimizer) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, slot = key.split(".", 2)
            state.setdefault(int(pid), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"])


def input_digests(cfg: TrainConfig) -> dict[str, str]:
    """SHA-256 of the dataset files the run reads (embed.json stands for the embedding tables: it holds
    their hashes), so a resume notices that the data or its embeddings changed since the run started."""
    folder = Path(cfg.data)
    names = sorted(p.name for p in folder.glob("*.npy") if p.name not in EMBEDDING_FILES) + ["meta.json"]
    if cfg.model.method == "llmesr":
        names.append("embed.json")
    return {name: file_sha256(folder / name) for name in names}


def check_inputs(run: Path, cfg: TrainConfig, advice: str) -> None:
    """Refuses a run whose dataset files changed since it started (inputs.json holds their SHA-256):
    its item ids and tables would be another dataset's."""
    recorded = json.loads((run / INPUTS).read_text()) if (run / INPUTS).exists() else None
    if recorded is None:
        return
    current = input_digests(cfg)
    if recorded != current:
        changed = sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
        raise SettingsError(f"{run}: {cfg.data} changed since the run started ({', '.join(changed)}): {advice}")


def prepare_run_folder(cfg: TrainConfig, resume: bool, overwrite: bool) -> Path:
    run = Path(cfg.out)
    if run.is_symlink():  # --overwrite would remove the link's target's contents, and resume write through it
        raise SettingsError(f"{run} is a symbolic link: give the folder it points to ({run.resolve()})")
    if resume:
        saved, now = read_run_config(run), cfg.flat()
        # The folder may have been moved or copied: it is resumed where it is now (cfg.out).
        changed = sorted(
            k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k) and k not in ("out", *RESUME_MAY_CHANGE)
        )
        if changed:
            raise SettingsError(f"{run}: the run was started with other settings ({', '.join(changed)})")
        if now["lr_schedule"] != "constant" and saved.get("epochs") != now["epochs"]:
            raise SettingsError(
                f"{run}: the learning rate follows a {now['lr_schedule']} schedule over {saved.get('epochs')} epochs; "
                "resume it without --epochs (another count changes the schedule)"
            )
        check_inputs(run, cfg, "start a new run (--overwrite) rather than resume on other data")
        remove_stale_temporaries(run)
        if saved != now:  # the next resume continues with what this one was given
            atomic_write_text(run / CONFIG, json.dumps(cfg.to_json(), indent=2) + "\n")
        return run
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        if not overwrite:
            raise FileExistsError(f"run folder {run} exists: pass --resume to continue it or --overwrite to start over")
        if not run.is_dir() or not is_run_folder(run):
            raise FileExistsError(
                f"{run} exists and is not a run folder (no config.json of a training run): "
                "--overwrite replaces only run folders; choose another --out"
            )
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / CONFIG, json.dumps(cfg.to_json(), indent=2) + "\n")
    atomic_write_text(run / INPUTS, json.dumps(input_digests(cfg), indent=2) + "\n")
    (run / LOG).write_text("")
    return run


def truncate_log(run: Path, epoch: int) -> None:
    """Drops log lines of epochs after the checkpoint's (a run killed after logging an epoch but before
    its checkpoint repeats that epoch on resume)."""
    path = run / LOG
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        head = line.split(":", 1)[0].split()
        if len(head) == 2 and head[0] == "epoch" and head[1].isdigit() and int(head[1]) > epoch:
            continue
        kept.append(line)
    atomic_write_text(path, "".join(kept))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary name
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
