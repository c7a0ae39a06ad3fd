"""Training settings in sections (kept free of torch, so the command line is built without it).

Each setting is declared once, here: its default, its help and its allowed values (field metadata,
`setting`). The command line (`llmesr.cli.train`), TOML files (`load_toml`) and config.json are built
from these declarations. A setting has one name everywhere: `--max-len` on the command line, `max_len`
in a flat TOML file or an older config.json, `model.max_len` in a sectioned one.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llmesr.backbones import BACKBONES
from llmesr.errors import SettingsError

# The checks a setting's metadata may name (`setting(check=...)`).
CHECKS = {
    "positive_int": (lambda v: v >= 1, "must be at least 1"),
    "non_negative": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    "positive": (lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0"),
    "fraction": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "open_fraction": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "seed": (lambda v: 0 <= v < 2**63, "must be between 0 and 2^63 - 1"),
}


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    check: str | None = None,
    none_means: str | None = None,
) -> Any:
    """A setting's declaration: `choices` its allowed values, `check` a name in CHECKS, `none_means`
    what a None default stands for (shown in --help)."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check, "none_means": none_means})


class Section:
    """A group of settings: each checked on creation against its declaration (type, choices, range)."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and "None" in str(f.type):
                continue
            declared = {"int": int, "float": float, "bool": bool}.get(str(f.type).split(" |")[0], str)
            if not is_a(value, declared):
                expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[declared]
                raise SettingsError(f"{f.name} must be {expected}, not {value!r}")
            if declared is float:
                object.__setattr__(self, f.name, float(value))
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            if choices is not None and value not in choices:
                raise SettingsError(f"{f.name} must be one of {', '.join(choices)}, not {value!r}")
            if check is not None and not CHECKS[check][0](value):
                raise SettingsError(f"{f.name} {CHECKS[check][1]}, not {value}")


@dataclass(frozen=True)
class ModelSettings(Section):
    """The sequence model."""

    backbone: str = setting("sasrec", "sequence encoder", choices=tuple(BACKBONES))
    method: str = setting(
        "llmesr",
        "llmesr: the dual-view model with self-distillation; base: the backbone alone (ID view, random ID init, "
        "no distillation)",
        choices=("llmesr", "base"),
    )
    max_len: int = setting(200, "longest history the model reads (the most recent items)", check="positive_int")
    hidden: int = setting(64, "hidden size", check="positive_int")
    layers: int = setting(2, "encoder layers", check="positive_int")
    heads: int = setting(1, "attention heads", check="positive_int")
    dropout: float = setting(0.5, "dropout", check="fraction")
    mask_prob: float = setting(0.6, "Bert4Rec's masking probability", check="open_fraction")
    # The original's block layout and init are no bug and measured better on paper-yelp: our defaults too.
    block: str = setting(
        "original", "Transformer block: prenorm, or original (pmixer's SASRec layout)", choices=("prenorm", "original")
    )
    init: str = setting(
        "xavier",
        "parameter init: normal, or xavier (xavier_normal_ on every matrix, as the original)",
        choices=("normal", "xavier"),
    )
    # The original scales the input embeddings of its Transformers by sqrt(hidden) (both views).
    embed_scale: bool = setting(
        True, "multiply input item embeddings by sqrt(hidden) (Transformer backbones, both views)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden % self.heads:
            raise SettingsError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


@dataclass(frozen=True)
class FusionSettings(Section):
    """LLM-ESR's two views and how they meet; the ablations of the paper's Table 2 switch parts off."""

    views: str = setting(
        "both",
        "ablation: both views, or the collaborative (id) or semantic view only",
        choices=("both", "id", "semantic"),
    )
    # How the views meet before the encoder (llmesr.models.fusion.FUSIONS). Concatenation (none) by default,
    # as measured at convergence (benches/RESULTS.md, "Cross-attention between the views"): with cross-attention
    # LLM-ESR is level with SASRec alone on ml-100k (without it, ahead) and no better on Yelp or the synthetic
    # data, at dearer epochs. The original code has it: cross_attention under --compat original.
    fusion: str | None = setting(
        None,
        "how the views meet before the encoder: concat (they do not; their states are concatenated) or "
        "cross_attention (two-way, masked like the backbone); --[no-]cross-attention says the same",
        choices=("concat", "cross_attention"),
        none_means="concat; cross_attention under --compat original",
    )
    shared_encoder: bool = setting(
        True, "one encoder for both views (--no-shared-encoder: the separate-encoders ablation)"
    )
    id_init: str = setting(
        "pca", "initial ID item table: the PCA of the semantic table, or random", choices=("pca", "random")
    )


@dataclass(frozen=True)
class DistillationSettings(Section):
    """Retrieval-augmented self-distillation from the most similar users."""

    distill: str = setting("kd", "self-distillation loss: kd (MSE) or cl (contrastive)", choices=("kd", "cl"))
    alpha: float = setting(0.1, "weight of the self-distillation loss (0: off)", check="non_negative")
    n_similar: int = setting(10, "similar users per user in the distillation", check="positive_int")
    # "epoch": every user's vector computed once at the start of each epoch and looked up (an
    # approximation: a teacher is up to one epoch old; ~2.3x faster epochs, no measured quality cost,
    # benches/RESULTS.md), or "step": encoded at every step by the current model (the paper's).
    teachers: str = setting(
        "epoch",
        "distillation teachers computed once per epoch and looked up (an approximation, 2.3x faster epochs), or "
        "encoded at every step (exact, the paper's); see benches/RESULTS.md",
        choices=("step", "epoch"),
    )


@dataclass(frozen=True)
class ObjectiveSettings(Section):
    """What training minimises besides the distillation: the next-item loss and the item regulariser."""

    # "auto" is resolved by the catalogue's size when training starts (`resolve_loss`); a run records the result.
    loss: str = setting(
        "auto",
        "next-item loss: auto (ce up to 32,768 items, sampled beyond, bce under --compat original; the run records "
        "which), bce (one negative per target, the paper's), ce (softmax over the whole catalogue), sampled (softmax "
        "over --loss-negatives shared by the batch, log-Q corrected)",
        choices=("auto", "bce", "ce", "sampled"),
    )
    loss_negatives: int = setting(
        8192, "negatives a batch shares under --loss sampled (drawn with replacement)", check="positive_int"
    )
    # The original code trains GRU4Rec at the last position only, one target per user and epoch: on
    # ml-100k that left it below ranking by popularity (RESULTS, "GRU4Rec at every position").
    next_item_targets: str | None = setting(
        None,
        "SASRec and GRU4Rec: the next-item loss at every position of the history (each predicts the item after it) "
        "or at the last only",
        choices=("every", "last"),
        none_means="every; last for GRU4Rec under --compat original (the original's)",
    )
    negatives: str = setting(
        "uniform",
        "training negatives: uniform, or popularity-weighted (never in the user's training history)",
        choices=("uniform", "popularity"),
    )
    logit_adjust: float = setting(
        0.0,
        "tau: train with tau*log(item's share of interactions) added to every logit and rank without it (logit "
        "adjustment, towards the long tail; 0: off)",
        check="non_negative",
    )
    beta: float = setting(
        0.0, "weight of the item regulariser (contrastive between the two item views; 0: off)", check="non_negative"
    )
    temperature: float = setting(1.0, "temperature of the contrastive losses", check="positive")


@dataclass(frozen=True)
class OptimSettings(Section):
    """The optimiser and the loop."""

    lr: float = setting(1e-3, "Adam's learning rate", check="positive")
    batch_size: int = setting(128, "users per step", check="positive_int")
    epochs: int = setting(200, "most epochs", check="positive_int")
    lr_schedule: str = setting(
        "constant",
        "the learning rate over the run: constant, or cosine (after the warm-up, a half cosine from --lr down to 0 "
        "at the end of --epochs, where the run ends unless it stopped early)",
        choices=("constant", "cosine"),
    )
    warmup: int = setting(0, "epochs over which the learning rate rises linearly to --lr", check="non_negative")
    patience: int = setting(20, "epochs without a better validation NDCG@10 before stopping", check="positive_int")
    # Bert4Rec on ml-100k sits on a plateau at popularity's level (0.84-1.09x its validation NDCG@10) for
    # 30-40 epochs before it learns more: a patience counted from the start stopped it there (RESULTS,
    # "Patience above popularity").
    patience_floor: float | None = setting(
        None,
        "patience counts once the best validation NDCG@10 beats this multiple of ranking by training popularity's "
        "(a model still on the popularity plateau is not stopped on it); 0: from the first epoch",
        check="non_negative",
        none_means="1.25, 0 under --compat original",
    )
    on_nonfinite: str = setting(
        "stop",
        "a NaN or infinite training loss: stop the run with an error, or skip that batch (logged)",
        choices=("stop", "skip"),
    )


@dataclass(frozen=True)
class EvaluationSettings(Section):
    """The protocol: which validation metric selects the epoch, ties, the popularity penalty of the
    rankings, negatives and long-tail groups. `select_on`, `ties` and `popularity_penalty` left None take
    the value of `--compat` (COMPAT_DEFAULTS)."""

    select_on: str | None = setting(
        None,
        "validation protocol whose NDCG@10 selects the best epoch",
        choices=("full", "sampled"),
        none_means="from --compat",
    )
    ties: str | None = setting(
        None,
        "a candidate tied with the target ranks above it (pessimistic) or below it (optimistic)",
        choices=("pessimistic", "optimistic"),
        none_means="from --compat",
    )
    popularity_penalty: float | None = setting(
        None,
        "the rankings of the test metrics and of serving score each item minus this times log(1 + its training "
        "popularity), towards the long tail (0: the model's own scores; the best epoch is chosen on those)",
        check="non_negative",
        none_means="0.2, 0 under --compat original",
    )
    n_negatives: int = setting(100, "negatives per user of the sampled protocol", check="positive_int")
    user_groups: str = setting(
        "input",
        "tail users by the length of the model input (the paper's) or of the whole history",
        choices=("input", "history"),
    )
    tail_user_len: int | None = setting(
        None, "tail users have a history shorter than this", check="positive_int", none_means="the Pareto rule"
    )
    tail_item_pop: int | None = setting(
        None,
        "tail items have fewer training interactions than this",
        check="positive_int",
        none_means="the Pareto rule",
    )


@dataclass(frozen=True)
class RunSettings(Section):
    """Where and how the run executes."""

    seed: int = setting(42, "one seed makes the run reproducible end to end", check="seed")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    precision: str = setting(
        "fp32",
        "training arithmetic: fp32, or bf16 (the step's matrix products in bfloat16 under autocast; weights, losses, "
        "gradients, Adam and evaluation in float32; for GPUs: a CPU without bf16 units only gets slower)",
        choices=("fp32", "bf16"),
    )
    # CPU threads of torch and the Rust core. None: llmesr-train takes every core other processes leave
    # free at the start (`llmesr.threads`), the Python API torch's current count; the run records the number.
    threads: int | None = setting(
        None,
        "CPU threads of torch and the Rust core (one is fastest beside any other busy process)",
        check="positive_int",
        none_means="every core no other process is using at the start",
    )
    compat: str = setting(
        "none",
        "original: reproduce the original code: its masking (no causal mask, padding attended), selection on the "
        "sampled protocol, optimistic ties (its block layout and init are our defaults too)",
        choices=("none", "original"),
    )


SECTIONS: dict[str, type[Section]] = {
    "model": ModelSettings,
    "fusion": FusionSettings,
    "distillation": DistillationSettings,
    "objective": ObjectiveSettings,
    "optim": OptimSettings,
    "evaluation": EvaluationSettings,
    "run": RunSettings,
}

# What `compat="original"` sets besides the masking, unless given explicitly: the original code's
# cross-attention, protocol (model selection, ties, no penalty) and patience. Our defaults in the first column.
COMPAT_DEFAULTS = {
    "fusion": ("concat", "cross_attention"),
    "select_on": ("full", "sampled"),
    "ties": ("pessimistic", "optimistic"),
    "popularity_penalty": (0.2, 0.0),
    "patience_floor": (1.25, 0.0),
}

# Settings added after run folders were first written: what a record without one was trained and
# evaluated with (read into older folders' settings, so they load, serve and resume as they ran).
ADDED_LATER: dict[str, Any] = {
    "lr_schedule": "constant",
    "warmup": 0,
    "popularity_penalty": 0.0,
    "precision": "fp32",
    "patience_floor": 0.0,
}


def added_later(flat: dict[str, Any]) -> dict[str, Any]:
    """An older record's flat settings with those added since filled in as it was trained (`ADDED_LATER`;
    `next_item_targets`: the last position for a backbone the original trains there, GRU4Rec)."""
    spec = BACKBONES.get(flat.get("backbone", ""))
    return ADDED_LATER | {"next_item_targets": spec.original_targets if spec else "every"} | flat


def declared() -> Iterator[tuple[str, Field[Any]]]:
    """Every setting's (section, field), in declaration order."""
    for section, kind in SECTIONS.items():
        for f in fields(kind):  # type: ignore[arg-type]
            yield section, f


SECTION_OF = {f.name: section for section, f in declared()}  # a setting's name -> its section


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings: the data and run folder, and the sections. Built from flat names with
    `TrainConfig.of(data=..., out=..., lr=...)`; read as `cfg.optim.lr`."""

    data: str
    out: str
    model: ModelSettings = field(default_factory=ModelSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    distillation: DistillationSettings = field(default_factory=DistillationSettings)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        for name in ("data", "out"):
            if not isinstance(getattr(self, name), str):
                raise SettingsError(f"{name} must be a string, not {getattr(self, name)!r}")
        if not self.out:
            raise SettingsError("out must name a run folder")
        for name, values in COMPAT_DEFAULTS.items():
            section = SECTION_OF[name]
            if getattr(getattr(self, section), name) is None:
                resolved = replace(getattr(self, section), **{name: values[self.run.compat == "original"]})
                object.__setattr__(self, section, resolved)
        if self.objective.next_item_targets is None:
            spec = BACKBONES.get(self.model.backbone)  # (an unknown backbone is refused where it is built)
            targets = spec.original_targets if spec and self.run.compat == "original" else "every"
            object.__setattr__(self, "objective", replace(self.objective, next_item_targets=targets))

    @classmethod
    def of(cls, data: str, out: str, **settings: Any) -> TrainConfig:
        """From flat settings (`lr=...`, as the command line and older config.json files name them)."""
        unknown = sorted(set(settings) - SECTION_OF.keys())
        if unknown:
            raise SettingsError(f"unknown settings {', '.join(unknown)}")
        grouped: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        for name, value in settings.items():
            grouped[SECTION_OF[name]][name] = value
        sections: dict[str, Any] = {section: SECTIONS[section](**values) for section, values in grouped.items()}
        return cls(data, out, **sections)

    def replace(self, **settings: Any) -> TrainConfig:
        """A copy with the given flat settings (and `data`, `out`) changed."""
        return TrainConfig.of(**(self.flat() | settings))

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name, `data` and `out` first."""
        out = {"data": self.data, "out": self.out}
        for section in SECTIONS:
            out |= asdict(getattr(self, section))
        return out

    def to_json(self) -> dict[str, Any]:
        """config.json's content: `data`, `out`, then one object per section."""
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict[str, Any], source: str) -> TrainConfig:
        """The config recorded in a run folder's config.json, sectioned or flat (older versions);
        `source` names the file in errors."""
        try:
            return cls.of(**flatten(saved))
        except (TypeError, SettingsError) as e:  # an edited or damaged file: name it
            raise SettingsError(f"{source}: {e}") from None

    @property
    def uses_semantic(self) -> bool:
        return self.model.method == "llmesr" and self.fusion.views != "id"

    @property
    def uses_similar(self) -> bool:
        return self.model.method == "llmesr" and self.distillation.alpha > 0


def flatten(saved: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """Settings by flat name from a sectioned mapping (config.json, TOML tables) or a flat one (older
    config.json files), former names renamed (`FORMER`). Strict: a setting unknown, under another section's
    name, or given twice is an error. Not strict (a run folder's record, which may hold settings of other
    versions): those are kept as they are, a later one replacing an earlier, for the caller to check."""
    out: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if name in FORMER:
            try:
                name, value = FORMER[name][0], FORMER[name][1](value)
            except SettingsError:
                if strict:
                    raise
        if strict and name in out:
            raise SettingsError(f"{name} is given twice")
        out[name] = value

    for key, value in saved.items():
        name = key.replace("-", "_")
        if name in SECTIONS and isinstance(value, dict):
            for inner, v in value.items():
                inner_name = inner.replace("-", "_")
                current = FORMER[inner_name][0] if inner_name in FORMER else inner_name
                if strict and SECTION_OF.get(current) != name:
                    where = f" (it belongs to {SECTION_OF[inner_name]})" if inner_name in SECTION_OF else ""
                    raise SettingsError(f"unknown setting {name}.{inner}{where}")
                put(inner_name, v)
        elif not strict or name in SECTION_OF or name in FORMER or name in ("data", "out"):
            put(name, value)
        else:
            raise SettingsError(f"unknown setting {key!r} (the settings are llmesr-train's options)")
    return out


def from_cross_attention(value: Any) -> str:
    if not isinstance(value, bool):
        raise SettingsError(f"cross_attention must be true or false, not {value!r}")
    return "cross_attention" if value else "concat"


# Settings by a former name (in TOML files and older config.json files): the name each became, and its value.
FORMER: dict[str, tuple[str, Callable[[Any], Any]]] = {"cross_attention": ("fusion", from_cross_attention)}


def choices_of(name: str) -> tuple[str, ...]:
    """The values setting `name` allows (the torch-free source the model's and sampler's checks agree with)."""
    return next(f.metadata["choices"] for _, f in declared() if f.name == name)


def defaults() -> dict[str, Any]:
    """Every setting's default by flat name (None where the default is resolved later)."""
    return {f.name: f.default for _, f in declared() if f.default is not MISSING}


# `loss="auto"`: the softmax over the whole catalogue (every item scored at every target) wherever a CPU
# can afford it, the sampled softmax with `loss_negatives` shared negatives beyond. Measured at convergence
# (benches/RESULTS.md, "Defaults" and "Eleventh session"): `ce` is LLM-ESR's best loss on ml-100k (1,008
# items) and on Yelp (20,033 items: +9 % full NDCG@10 over 256 shared negatives, +6 % over 2,048, tail
# items +12 %), at about 4x a 256-negative epoch there. Beyond the cut a `ce` step would cost more than
# 4x that of 8,192 shared negatives, which learn nearly as much per epoch on Yelp.
CE_MAX_ITEMS = 32768


def resolve_loss(loss: str, n_items: int, compat: str = "none") -> tuple[str, str]:
    """The loss to train with, and why: `loss` itself unless it is "auto"."""
    if loss != "auto":
        return loss, "--loss " + loss
    if compat == "original":
        return "bce", "--loss auto under --compat original: the original's, one negative per target"
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


def load_toml(path: str | Path) -> dict[str, Any]:
    """Flat settings from a TOML file: top-level keys named like the options (`max_len` or `max-len`),
    or tables named like the sections (`[optim]` with `lr = ...`, or the dotted `optim.lr = ...`)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: not valid TOML: {e}") from None
    try:
        settings = flatten(raw)
        TrainConfig.of(**({"data": "-", "out": "-"} | settings))  # each value checked here, naming the file
    except SettingsError as e:
        raise SettingsError(f"{path}: {e}") from None
    return settings
