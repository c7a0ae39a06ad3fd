"""The sequence encoders LLM-ESR wraps, each described once (torch-free, so the command line and the
config can list them without importing torch).

A backbone is its `Backbone` spec below plus an encoder factory (`encoder`, "module:function") that
builds an `llmesr.models.encoder.SequenceEncoder`. The model, the straightforward reference and training read
everything backbone-specific from the spec. Adding one: write its encoder and factory (its own file
under `llmesr/models/`), then register a spec here (see CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmesr.errors import SettingsError


@dataclass(frozen=True)
class Backbone:
    name: str
    encoder: str  # "module:function" building the encoder: f(hidden, max_len, layers, heads, dropout, *, compat, block)
    batch: str  # training batch: "next_item" (the next item at every position) or "masked" (cloze, Bert4Rec)
    original_targets: str  # where the original code takes the next-item loss: "every" position, or the "last" (GRU4Rec)
    mask_token: bool  # inputs may hold a mask token (item n_items + 1); the user vector reads its state
    scales_input: bool  # `embed_scale` applies (the original scales its Transformers' inputs)
    compat_pads_to_max_len: bool  # under --compat original the encoder reads every padded step (its GRU)
    min_train_items: int  # users with fewer training items are not trained on

    def build_encoder(self, *args: Any, **kwargs: Any) -> Any:
        module, function = self.encoder.split(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module), function)
        return factory(*args, **kwargs)


BACKBONES: dict[str, Backbone] = {
    spec.name: spec
    for spec in (
        Backbone(
            "sasrec",
            "llmesr.models.encoder:causal_transformer",
            batch="next_item",
            original_targets="every",
            mask_token=False,
            scales_input=True,
            compat_pads_to_max_len=False,
            min_train_items=2,
        ),
        Backbone(
            "bert4rec",
            "llmesr.models.encoder:bidirectional_transformer",
            batch="masked",
            original_targets="every",
            mask_token=True,
            scales_input=True,
            compat_pads_to_max_len=False,
            min_train_items=1,
        ),
        Backbone(
            "gru4rec",
            "llmesr.models.encoder:gru",
            batch="next_item",
            original_targets="last",
            mask_token=False,
            scales_input=False,
            compat_pads_to_max_len=True,
            min_train_items=2,
        ),
    )
}


def backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise SettingsError(f"backbone must be one of {', '.join(BACKBONES)}, not {name!r}")
    return BACKBONES[name]
