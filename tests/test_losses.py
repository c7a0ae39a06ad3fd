"""The next-item losses against straightforward computations: the chunked full softmax against
torch's cross-entropy over materialised scores, the sampled softmax against a per-row loop, and the
model's fast path against the padded reference for every backbone."""

import math

import numpy as np
import pytest

from conftest import assert_same_loss_and_gradients

torch = pytest.importorskip("torch")

from llmesr.models import LLMESR  # noqa: E402
from llmesr.models.losses import (  # noqa: E402
    LossInputs,
    SharedNegatives,
    full_softmax_loss,
    logit_adjustment,
    sampled_softmax_loss,
)


@pytest.mark.parametrize("chunk_scores", [7, 1 << 22])  # 7: one row per chunk; the default: one chunk
@pytest.mark.parametrize("keep_scores", [0, 1 << 25])  # the backward recomputes the softmax, or keeps it
def test_chunked_full_softmax_equals_cross_entropy(chunk_scores, keep_scores):
    g = torch.Generator().manual_seed(0)
    states = torch.randn(13, 5, dtype=torch.float64, generator=g, requires_grad=True)
    table = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 6, (13,), generator=g)
    got = full_softmax_loss(states, table, targets, chunk_scores=chunk_scores, keep_scores=keep_scores)
    expected = torch.nn.functional.cross_entropy(states @ table.T, targets, reduction="sum")
    torch.testing.assert_close(got, expected)
    for a, b in zip(
        torch.autograd.grad(got, [states, table]), torch.autograd.grad(expected, [states, table]), strict=True
    ):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(
        lambda s, t: full_softmax_loss(s, t, targets, chunk_scores=chunk_scores, keep_scores=keep_scores),
        (states, table),
    )


def test_the_kept_softmax_gives_the_recomputed_bits():
    """Keeping `ce`'s softmax from the forward changes no bit of the loss or its gradients (a run resumed
    across the change goes on as it would have)."""
    g = torch.Generator().manual_seed(0)
    states = torch.randn(300, 64, generator=g, requires_grad=True)
    table = torch.randn(2000, 64, generator=g, requires_grad=True)
    targets = torch.randint(0, 2000, (300,), generator=g)
    runs = []
    for keep in (0, 1 << 25):
        loss = full_softmax_loss(states, table, targets, chunk_scores=1 << 16, keep_scores=keep)
        runs.append((loss, *torch.autograd.grad(loss, [states, table])))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_sampled_softmax_with_no_rows_or_only_accidental_hits():
    candidates = torch.randn(3, 4, requires_grad=True)
    lq = torch.zeros(3)
    none = sampled_softmax_loss(torch.zeros(0, 4), torch.zeros(0, 4), candidates, lq[:0], lq, lq[:0].long(), lq.long())
    none.backward()
    assert none.item() == 0.0 and not candidates.grad.any()
    # every candidate is the row's own target: its softmax is over its positive alone, a zero loss
    states, positives = torch.randn(1, 4, requires_grad=True), torch.randn(1, 4)
    alone = sampled_softmax_loss(states, positives, candidates, lq[:1], lq, torch.tensor([7]), torch.tensor([7, 7, 7]))
    alone.backward()
    assert alone.item() == 0.0 and states.grad.abs().max() < 1e-6


def test_chunked_full_softmax_with_no_rows_is_zero_and_differentiable():
    states = torch.zeros(0, 4, requires_grad=True)
    table = torch.randn(5, 4, requires_grad=True)
    loss = full_softmax_loss(states, table, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and not table.grad.any()


@pytest.mark.parametrize("chunk_scores", [5, 1 << 22])  # 5: one row per chunk; the default: one chunk
def test_sampled_softmax_equals_a_per_row_loop(chunk_scores):
    g = torch.Generator().manual_seed(1)
    states = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    positives = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    candidates = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    lq_pos, lq_cand = torch.randn(4, dtype=torch.float64, generator=g), torch.randn(5, dtype=torch.float64, generator=g)
    items, targets = torch.tensor([10, 11, 12, 13, 14]), torch.tensor([99, 12, 98, 10])  # rows 1 and 3: accidental
    accidental = targets[:, None] == items[None, :]
    got = sampled_softmax_loss(states, positives, candidates, lq_pos, lq_cand, targets, items, chunk_scores)
    expected = 0.0
    with torch.no_grad():
        for r in range(4):
            pos = float(states[r] @ positives[r] - lq_pos[r])
            logits = [pos] + [float(states[r] @ candidates[j] - lq_cand[j]) for j in range(5) if not accidental[r, j]]
            expected += math.log(sum(math.exp(x) for x in logits)) - pos
    assert math.isclose(got.item(), expected, rel_tol=1e-9)
    assert torch.autograd.gradcheck(
        lambda s, p, c: sampled_softmax_loss(s, p, c, lq_pos, lq_cand, targets, items, chunk_scores),
        (states, positives, candidates),
    )


def batch(backbone, n_items=30):
    g = torch.Generator().manual_seed(2)
    inputs = torch.randint(1, n_items + 1, (4, 9), generator=g)
    inputs[0, :5] = 0
    inputs[2, :8] = 0
    if backbone == "sasrec":
        targets = torch.roll(inputs, -1, dims=1) * (inputs != 0)
    else:  # the last position (GRU4Rec), or masked ones (Bert4Rec)
        targets = torch.zeros_like(inputs)
        targets[:, -1] = torch.randint(1, n_items + 1, (4,), generator=g)
        targets[1, 4] = 7
    negatives = torch.randint(1, n_items + 1, inputs.shape, generator=g) * (targets != 0)
    return inputs, targets, negatives


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
@pytest.mark.parametrize("loss", ["bce", "ce", "sampled"])
@pytest.mark.parametrize("views", ["both", "id"])
@pytest.mark.parametrize("tau", [0.0, 0.7])
def test_fast_losses_equal_the_straightforward_ones(backbone, loss, views, tau):
    from llmesr.models import reference

    torch.manual_seed(0)
    semantic = torch.randn(31, 24)
    semantic[0] = 0
    m = LLMESR(
        30, None if views == "id" else semantic, views=views, backbone=backbone, hidden=8, max_len=12, dropout=0.0
    )
    inputs, targets, negatives = batch(backbone)
    q = np.concatenate([[0.0], np.arange(1, 31) / np.arange(1, 31).sum()])
    items = torch.tensor([3, 7, 7, 12, 30, 1])  # with a repeat, and 7 is a target (an accidental hit)
    shared = SharedNegatives(items, torch.from_numpy(np.log(np.maximum(q * len(items), 1e-30))).float())
    offset = logit_adjustment(torch.arange(31) % 7, tau) if tau else None
    fast = m.training_loss(inputs, targets, negatives, loss=loss, shared=shared, item_offset=offset)
    slow = reference.training_loss(m, inputs, targets, negatives, loss=loss, shared=shared, item_offset=offset)
    assert_same_loss_and_gradients(fast, slow, m)


def test_sampled_loss_needs_its_negatives_and_unknown_losses_are_refused():
    m = LLMESR(30, views="id", hidden=8, max_len=12)
    inputs, targets, negatives = batch("sasrec")
    with pytest.raises(ValueError, match="shared negatives"):
        m.training_loss(inputs, targets, negatives, loss="sampled")
    with pytest.raises(ValueError, match="loss must be one of"):
        m.training_loss(inputs, targets, negatives, loss="hinge")


def test_shared_negatives_follow_q_and_the_seed(tmp_path):
    from llmesr import prepare_synthetic
    from llmesr.sampling import negative_distribution, shared_negatives

    ds = prepare_synthetic(tmp_path / "s", n_users=200, n_items=40, seed=5)
    uniform = negative_distribution(ds, "uniform")
    assert uniform[0] == 0 and np.allclose(uniform[1:], 1 / 40)
    q = negative_distribution(ds, "popularity")
    np.testing.assert_allclose(q[1:], (ds.train_popularity[1:] + 1) / (ds.train_popularity[1:] + 1).sum())
    draws = np.concatenate([shared_negatives(q, 500, 1, 1, step) for step in range(40)])
    counts = np.bincount(draws, minlength=41) / len(draws)
    assert counts[0] == 0 and np.abs(counts - q).max() < 0.02
    np.testing.assert_array_equal(shared_negatives(q, 50, 1, 2, 3), shared_negatives(q, 50, 1, 2, 3))
    assert not np.array_equal(shared_negatives(q, 50, 1, 2, 3), shared_negatives(q, 50, 1, 2, 4))


def test_logit_adjustment_is_tau_log_prior():
    popularity = torch.tensor([0, 3, 0, 1])  # item 0 is padding
    offset = logit_adjustment(popularity, 0.5)
    prior = torch.tensor([1.0, 4.0, 1.0, 2.0]) / 7.0
    torch.testing.assert_close(offset[1:], 0.5 * torch.log(prior[1:]))


def test_the_losses_registered_are_the_settings_choices_and_a_new_one_trains(monkeypatch):
    """Every `--loss` choice but "auto" has an objective, and a loss registered in one place is what
    the model trains with (here, a squared error towards the target's vector)."""
    from llmesr.config import choices_of
    from llmesr.models.losses import NEXT_ITEM_LOSSES, register_loss

    assert set(choices_of("loss")) - {"auto"} == set(NEXT_ITEM_LOSSES)
    monkeypatch.setitem(NEXT_ITEM_LOSSES, "to_target", None)  # so that the registration is undone afterwards

    @register_loss("to_target")
    def to_target(x):
        return (x.states - x.vectors(x.targets)).pow(2).sum()

    m = LLMESR(20, None, views="id", hidden=8, max_len=6, dropout=0.0)
    inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    loss = m.training_loss(inputs, targets, torch.zeros_like(targets), loss="to_target")
    states = m.user_states(inputs)
    expected = (states - m.item_vectors(targets)).pow(2).sum(-1)[targets != 0].sum() / 7
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="loss must be one of bce, ce, sampled, to_target, not 'focal'"):
        m.training_loss(inputs, targets, torch.zeros_like(targets), loss="focal")


@pytest.mark.parametrize("loss", ["bce", "ce", "sampled"])
def test_bf16_autocast_keeps_the_losses_in_float32(loss, monkeypatch):
    """`--precision bf16`: the encoder's products in bfloat16, every loss in float32 (autocast off, float32
    inputs), close to the float32 loss; the weights and their gradients stay float32."""
    from llmesr.models import llmesr as model_module

    seen: list[tuple[bool, torch.dtype]] = []

    def recorded(name):
        original = getattr(model_module, name)

        def call(first, *args, **kwargs):
            states = first.states if isinstance(first, LossInputs) else first
            seen.append((torch.is_autocast_enabled("cpu"), states.dtype))
            return original(first, *args, **kwargs)

        monkeypatch.setattr(model_module, name, call)

    recorded("next_item_loss")
    recorded("distill_loss")
    torch.manual_seed(0)
    semantic = torch.randn(31, 24)
    semantic[0] = 0
    m = LLMESR(30, semantic, hidden=8, max_len=12, dropout=0.0)
    inputs, targets, negatives = batch("sasrec")
    q = np.concatenate([[0.0], np.full(30, 1 / 30)])
    shared = SharedNegatives(torch.tensor([3, 7, 12, 30]), torch.from_numpy(np.log(q * 4 + 1e-30)).float())
    similar = torch.randint(1, 31, (4 * 2, 9), generator=torch.Generator().manual_seed(3))
    kw = dict(loss=loss, shared=shared, alpha=0.1, beta=0.5)
    exact = m.training_loss(inputs, targets, negatives, similar, **kw)
    products: set[torch.dtype] = set()
    for layer in m.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.register_forward_hook(lambda _, __, out: products.add(out.dtype))
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m.training_loss(inputs, targets, negatives, similar, **kw)
    assert torch.bfloat16 in products  # the encoder's products did run in bfloat16
    assert seen == [(False, torch.float32)] * 2  # the next-item loss and the distillation
    assert low.dtype == torch.float32 and low.item() == pytest.approx(exact.item(), rel=2e-2)
    low.backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and p.grad.isfinite().all()) for p in m.parameters())
