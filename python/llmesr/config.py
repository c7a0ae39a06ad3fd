"""Training settings (kept free of torch, so the command line can be built without it). The defaults
are the paper's settings; `load_toml` reads the same names from a TOML file."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from llmesr.backbones import BACKBONES
from llmesr.errors import SettingsError

CHOICES = {
    "backbone": tuple(BACKBONES),
    "method": ("llmesr", "base"),
    "views": ("both", "id", "semantic"),
    "id_init": ("pca", "random"),
    "distill": ("kd", "cl"),
    "compat": ("none", "original"),
    "negatives": ("uniform", "popularity"),
    "block": ("prenorm", "original"),
    "init": ("normal", "xavier"),
    "select_on": ("full", "sampled"),
    "ties": ("pessimistic", "optimistic"),
    "user_groups": ("input", "history"),
    "loss": ("auto", "bce", "ce", "sampled"),
    "on_nonfinite": ("stop", "skip"),
    "teachers": ("step", "epoch"),
}

# What `compat="original"` sets besides the masking, unless given explicitly: the original code's
# protocol (model selection, ties). Our defaults in the other column.
COMPAT_DEFAULTS = {
    "select_on": ("full", "sampled"),
    "ties": ("pessimistic", "optimistic"),
}


@dataclass
class TrainConfig:
    data: str
    out: str
    backbone: str = "sasrec"
    method: str = "llmesr"  # "base": the backbone alone, ID view only, random ID init, no distillation
    # LLM-ESR's parts; the ablations of the paper's Table 2 switch them off one at a time.
    views: str = "both"  # "id": co-view only, "semantic": se-view only
    cross_attention: bool = True
    shared_encoder: bool = True
    id_init: str = "pca"
    distill: str = "kd"  # self-distillation: "kd" (MSE) or "cl" (contrastive)
    alpha: float = 0.1  # weight of the self-distillation loss; 0 switches it off
    n_similar: int = 10
    # The distillation's teachers: "epoch": every user's vector computed once at the start of each epoch
    # and looked up (an approximation: a teacher is up to one epoch old; ~2.3x faster epochs, no
    # measured quality cost, benches/RESULTS.md), or "step": encoded at every step by the current model
    # (the paper's).
    teachers: str = "epoch"
    beta: float = 0.0  # weight of the item regulariser (contrastive between the two item views)
    temperature: float = 1.0  # of the contrastive losses
    mask_prob: float = 0.6  # Bert4Rec
    negatives: str = "uniform"  # training negatives; "popularity": in proportion to training popularity
    # Next-item loss: "bce" (the paper's), "ce" (whole catalogue), "sampled" (softmax, log-Q), or "auto":
    # resolved by the catalogue's size when training starts (`resolve_loss`); a run records the result.
    loss: str = "auto"
    loss_negatives: int = 256  # negatives shared by a batch, for loss="sampled" (drawn like `negatives`)
    logit_adjust: float = 0.0  # tau: train with tau * log(item prior) added to the logits, rank without (0: off)
    compat: str = "none"  # "original": the original code's masking, model and protocol (see COMPAT_DEFAULTS)
    # The model's details the original differs in; None: ours, or the original's under compat="original".
    embed_scale: bool = True  # input item embeddings times sqrt(hidden) (Transformer backbones, both views)
    # The original's block layout and init are no bug and measured better on paper-yelp: our defaults too.
    block: str = "original"  # Transformer block: "original" (pmixer's SASRec layout) or "prenorm"
    init: str = "xavier"  # "xavier" (xavier_normal_ on every matrix, as the original) or "normal"
    # Protocol: the validation metric that selects the epoch, and how a candidate tied with the target counts.
    select_on: str | None = None  # "full" (ours) or "sampled" (the original's)
    ties: str | None = None  # "pessimistic" (ours: a tie ranks above the target) or "optimistic" (the original's)
    # Long-tail user groups by the length of the model input (the paper's) or of the whole history.
    user_groups: str = "input"
    # A NaN or infinite training loss stops the run with an error, or ("skip") skips that batch's update.
    on_nonfinite: str = "stop"
    epochs: int = 200
    patience: int = 20
    seed: int = 42
    device: str = "auto"
    # CPU threads of torch and the Rust core. None: llmesr-train takes every core other processes leave
    # free at the start (`llmesr.threads`), the Python API torch's current count; the run records the number.
    threads: int | None = None
    max_len: int = 200
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.5
    batch_size: int = 128
    lr: float = 1e-3
    n_negatives: int = 100  # sampled protocol
    tail_user_len: int | None = None
    tail_item_pop: int | None = None

    def __post_init__(self) -> None:
        self._check_types()
        if self.compat in CHOICES["compat"]:
            for name, (ours, original) in COMPAT_DEFAULTS.items():
                if getattr(self, name) is None:
                    setattr(self, name, original if self.compat == "original" else ours)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if not self.out:
            raise SettingsError("out must name a run folder")
        for name in (
            "epochs",
            "patience",
            "max_len",
            "hidden",
            "layers",
            "heads",
            "batch_size",
            "n_similar",
            "n_negatives",
            "loss_negatives",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.hidden % self.heads:
            raise SettingsError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        for name in ("logit_adjust", "alpha", "beta"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise SettingsError(f"{name} must be a finite number >= 0, not {getattr(self, name)}")
        for name in ("temperature", "lr"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be a finite number > 0, not {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise SettingsError(f"dropout must be in [0, 1), not {self.dropout}")
        if not 0 < self.mask_prob < 1:
            raise SettingsError(f"mask_prob must be in (0, 1), not {self.mask_prob}")
        if not 0 <= self.seed < 2**63:
            raise SettingsError(f"seed must be between 0 and 2^63 - 1, not {self.seed}")
        for name in ("tail_user_len", "tail_item_pop", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}")

    def _check_types(self) -> None:
        """Each setting of its declared type (a TOML file or a saved config can hold anything): an int
        is an int (not 1.5, not true), a float any number, a str a str; None where allowed."""
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and "None" in kind:
                continue
            declared = {"int": int, "float": float, "bool": bool}.get(kind.split(" |")[0], str)
            if not is_a(value, declared):
                expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[declared]
                raise SettingsError(f"{f.name} must be {expected}, not {value!r}")
            if declared is float:
                setattr(self, f.name, float(value))

    @classmethod
    def from_saved(cls, saved: dict[str, Any], source: str) -> TrainConfig:
        """The config recorded in a run folder's config.json (`source` names it in errors)."""
        unknown = sorted(set(saved) - set(field_names()))
        if unknown:
            raise SettingsError(f"{source}: unknown settings {', '.join(unknown)} (written by another llmesr version?)")
        try:
            return cls(**saved)
        except (TypeError, SettingsError) as e:  # an edited or damaged file: name it
            raise SettingsError(f"{source}: {e}") from None

    @property
    def uses_semantic(self) -> bool:
        return self.method == "llmesr" and self.views != "id"

    @property
    def uses_similar(self) -> bool:
        return self.method == "llmesr" and self.alpha > 0


# `loss="auto"`: the softmax over the whole catalogue while scoring every item at every position is
# cheap, the sampled softmax beyond. Measured at convergence (benches/RESULTS.md, "Defaults"): `ce` is the
# best loss on ml-100k (1,008 items), `sampled` beats `bce` by 9-35 % on Yelp (20,033 items) and a 12k-item
# Amazon catalogue, where a `ce` epoch costs 5.7x a `sampled` one (SASRec alone on Yelp). The cut keeps a
# `ce` step within about twice a `bce` step on CPU.
CE_MAX_ITEMS = 4096


def resolve_loss(loss: str, n_items: int) -> tuple[str, str]:
    """The loss to train with, and why: `loss` itself unless it is "auto"."""
    if loss != "auto":
        return loss, "--loss " + loss
    if n_items <= CE_MAX_ITEMS:
        return "ce", f"--loss auto: {n_items:,} items <= {CE_MAX_ITEMS:,}, the whole catalogue is scored"
    return "sampled", f"--loss auto: {n_items:,} items > {CE_MAX_ITEMS:,}, a sampled softmax"


def is_a(value: object, kind: type) -> bool:
    """Whether `value` is of `kind` as a setting or a JSON value reads: an int is never a bool, a float
    may be written as an int."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def load_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys named like the options (`max_len` or `max-len`)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: not valid TOML: {e}") from None
    known = set(field_names())
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise SettingsError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        out[name] = value
    return out
