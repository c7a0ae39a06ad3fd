"""The shared sequence encoder: causal where asked, blind to padding, independent of padding length."""

import pytest

torch = pytest.importorskip("torch")

from llmesr.models import SequenceEncoder  # noqa: E402


def encode(model, emb, valid):
    model.eval()
    with torch.no_grad():
        return model(emb, valid)


def batch(length, real, hidden=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(1, length, hidden, generator=g)
    valid = torch.zeros(1, length, dtype=torch.bool)
    valid[0, length - real :] = True
    return emb * valid[..., None], valid


@pytest.mark.parametrize("heads", [1, 2])
def test_causal_positions_never_see_the_future(heads):
    torch.manual_seed(0)
    model = SequenceEncoder(hidden=16, max_len=20, heads=heads, causal=True)
    emb, valid = batch(10, 7)
    out = encode(model, emb, valid)
    changed = emb.clone()
    changed[0, 6] += torch.randn(16)  # a later item (not a constant shift: LayerNorm would erase it)
    out2 = encode(model, changed, valid)
    torch.testing.assert_close(out[0, :6], out2[0, :6])
    assert not torch.allclose(out[0, 6:], out2[0, 6:])


def test_bidirectional_sees_both_ways():
    torch.manual_seed(0)
    model = SequenceEncoder(hidden=16, max_len=20, causal=False)
    emb, valid = batch(10, 7)
    changed = emb.clone()
    changed[0, 9] += torch.randn(16)
    assert not torch.allclose(encode(model, emb, valid)[0, 3:6], encode(model, changed, valid)[0, 3:6])


@pytest.mark.parametrize("causal", [True, False])
def test_padding_changes_nothing(causal):
    torch.manual_seed(0)
    model = SequenceEncoder(hidden=16, max_len=50, causal=causal)
    short_emb, short_valid = batch(6, 6)
    long_emb = torch.cat([torch.randn(1, 30, 16), short_emb], dim=1)  # garbage where padded
    long_valid = torch.cat([torch.zeros(1, 30, dtype=torch.bool), short_valid], dim=1)
    short = encode(model, short_emb, short_valid)
    long = encode(model, long_emb, long_valid)
    torch.testing.assert_close(long[0, 30:], short[0], rtol=1e-5, atol=1e-5)
    assert not long[0, :30].any()  # padded positions give zeros


def test_gradients_are_finite_with_fully_padded_rows():
    torch.manual_seed(0)
    model = SequenceEncoder(hidden=16, max_len=20)
    emb = torch.randn(3, 8, 16, requires_grad=True)
    valid = torch.ones(3, 8, dtype=torch.bool)
    valid[1] = False  # a row with no item at all
    valid[2, :5] = False
    model.train()
    model(emb, valid).pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(emb.grad).all()


def test_too_long_sequences_are_an_error():
    model = SequenceEncoder(hidden=16, max_len=4)
    emb, valid = batch(6, 6)
    with pytest.raises(ValueError, match="max_len=4"):
        model(emb, valid)
