"""LLM-ESR's exact speed-ups against the straightforward computations, and that it learns."""

import pytest

torch = pytest.importorskip("torch")

from llmesr.models import LLMESR  # noqa: E402


def model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    semantic = torch.randn(31, 24)
    semantic[0] = 0
    return LLMESR(semantic, hidden=8, max_len=12, dropout=dropout)


def sequences(seed=1):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, 31, (4, 10), generator=g)
    seq[0, :6] = 0
    seq[2, :9] = 0
    return seq


def test_adapter_once_per_item_equals_per_position():
    m = model()
    seq = sequences()
    fast = m.semantic_items(seq)
    slow = m.adapter(m.semantic[seq]) * (seq != 0)[..., None]  # the adapter at every position
    torch.testing.assert_close(fast, slow)
    g_fast = torch.autograd.grad(fast.pow(2).sum(), m.adapter.down.weight)[0]
    g_slow = torch.autograd.grad(slow.pow(2).sum(), m.adapter.down.weight)[0]
    torch.testing.assert_close(g_fast, g_slow)


def test_teacher_without_autograd_gives_the_same_loss_and_gradients():
    m = model()
    seq, similar = sequences(1), torch.stack([sequences(s) for s in (2, 3, 4)], dim=1)
    loss = m.distillation_loss(seq, similar)
    grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
    # The straightforward way: the teacher with autograd, then detached.
    b, k, length = similar.shape
    teacher = m.user_vector(similar.reshape(b * k, length)).reshape(b, k, -1).mean(1).detach()
    slow = torch.nn.functional.mse_loss(m.user_vector(seq), teacher)
    slow_grads = torch.autograd.grad(slow, list(m.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, slow)
    for a, b_ in zip(grads, slow_grads, strict=True):
        if a is None:
            assert b_ is None
        else:
            torch.testing.assert_close(a, b_)


def test_padding_positions_do_not_count_and_training_lowers_the_loss():
    m = model(dropout=0.1)
    seq = sequences()
    targets = torch.roll(seq, -1, dims=1) * (seq != 0)
    negatives = torch.randint(1, 31, seq.shape) * (targets != 0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = m.sequence_loss(seq, targets, negatives)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    assert not m.semantic.requires_grad  # the language-model table stays frozen
    assert m.user_vector(seq).shape == (4, 16)  # [u_id; u_llm]
