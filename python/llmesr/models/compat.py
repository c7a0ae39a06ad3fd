"""How the models read a batch of left-padded rows: ours (`OURS`), or the original LLM-ESR code's
(`ORIGINAL`, `--compat original`) for comparisons with its published numbers.

Ours applies the causal mask, never attends to padding or feeds it to the GRU, and evaluates the last
position only. The original attends over every position of a row padded to max_len in both directions
(padding included), runs its GRU over the padding too, and lays its cross-attention out differently.
Every place the two differ is a method of the strategy; the encoders and the dual-view model consult
the one they were given and hold no compat branch of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from llmesr.backbones import Backbone
    from llmesr.models.encoder import SequenceEncoder


class KeyMask(NamedTuple):
    """Which keys each query may attend to: the real items of its row (the last `lengths[b]` positions
    of a left-padded row) and, when `causal`, none after its own position. `padding_copies > 1`
    (the original's reading): the first key of every row is a padding position that stands for that
    many identical padding keys (see `Original.key_mask`)."""

    lengths: torch.Tensor
    causal: bool
    padding_copies: int = 1


def length_chunks(lengths: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Row indices sorted by length and cut into groups whose padded size (rows times the group's
    longest row) stays within `budget` positions, at least one row per group. On real data most
    histories are short and a few are long: one batch padded to its longest row is mostly padding."""
    order = torch.argsort(lengths, stable=True)
    sorted_lengths = lengths[order].clamp(min=1).tolist()
    groups, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or (i - start + 1) * sorted_lengths[i] > budget:
            groups.append(order[start:i])
            start = i
    return groups


class Ours:
    """Causal where the backbone is, padding never read."""

    original = False  # the cross-attention's layout (`llmesr.models.fusion.CrossAttention`)
    gru_reads_padding = False

    def key_mask(self, valid: torch.Tensor, causal: bool, max_len: int | None = None) -> KeyMask:
        return KeyMask(valid.sum(dim=1), causal)

    def cross_mask(self, valid: torch.Tensor, encoder: SequenceEncoder) -> KeyMask:
        """The cross-attention's mask: the encoder's, so it sees no more than the encoder does."""
        return encoder.mask(valid)

    def pad(self, sequences: torch.Tensor, max_len: int, spec: Backbone) -> torch.Tensor:
        return sequences

    def length_groups(self, sequences: torch.Tensor, spec: Backbone, budget: int) -> list[tuple[torch.Tensor, int]]:
        """Row indices grouped by history length (see `length_chunks`), each with the width its rows
        need: its longest row's length. Rows are independent (attention, normalisation and
        recurrence stay within a row), so this is exact."""
        lengths = (sequences != 0).sum(dim=1)
        return self._groups(sequences, lengths, 0, budget)

    @staticmethod
    def _groups(
        sequences: torch.Tensor, lengths: torch.Tensor, extra: int, budget: int
    ) -> list[tuple[torch.Tensor, int]]:
        return [
            (idx, min(sequences.shape[1], max(1, int(lengths[idx].max()) + extra)))
            for idx in length_chunks(lengths + extra, budget)
        ]

    def last_only(self, training: bool) -> bool:
        """Whether an evaluation pass may compute the last position only (exact without dropout)."""
        return not training


class Original(Ours):
    """The original code's reading (`--compat original`)."""

    original = True
    gru_reads_padding = True

    def key_mask(self, valid: torch.Tensor, causal: bool, max_len: int | None = None) -> KeyMask:
        """Every position of the row padded to `max_len`, in both directions. Every padding position
        holds the same zero input, so its keys and values are the same at every position: a row only
        `L < max_len` wide lets its first column (padding, which the caller ensures) stand for itself
        and the `max_len - L` positions left out, the same attention at a fraction of the width."""
        width = valid.shape[1]
        copies = 1 if max_len is None or width >= max_len else max_len - width + 1
        if copies > 1 and bool(valid[:, 0].any()):
            raise ValueError("compat attention over a row without padding in its first column")
        return KeyMask(torch.full_like(valid[:, 0], width, dtype=torch.long), False, copies)

    def cross_mask(self, valid: torch.Tensor, encoder: SequenceEncoder) -> KeyMask:
        """The original's cross-attention masks padding keys but not the future."""
        return KeyMask(valid.sum(dim=1), False)

    def pad(self, sequences: torch.Tensor, max_len: int, spec: Backbone) -> torch.Tensor:
        """The original pads every row to max_len, and its GRU reads the padding: so does GRU4Rec
        here. Transformers need one padding column, which stands for all of a row's padding (see
        `key_mask`)."""
        if sequences.shape[1] >= max_len:
            return sequences
        return F.pad(sequences, (max_len - sequences.shape[1] if spec.compat_pads_to_max_len else 1, 0))

    def length_groups(self, sequences: torch.Tensor, spec: Backbone, budget: int) -> list[tuple[torch.Tensor, int]]:
        """Transformers keep one padding column (standing for all of the row's padding); GRU4Rec keeps
        all of it, which its recurrence reads."""
        if spec.compat_pads_to_max_len:
            return [(torch.arange(len(sequences), device=sequences.device), sequences.shape[1])]
        return self._groups(sequences, (sequences != 0).sum(dim=1), 1, budget)

    def last_only(self, training: bool) -> bool:
        return False


OURS, ORIGINAL = Ours(), Original()


def strategy(original: bool) -> Ours:
    return ORIGINAL if original else OURS
