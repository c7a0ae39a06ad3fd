"""The shared sequence encoder: causal where asked, blind to padding, independent of padding length."""

import pytest

torch = pytest.importorskip("torch")

from llmesr.models import TransformerEncoder  # noqa: E402


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
    model = TransformerEncoder(hidden=16, max_len=20, heads=heads, causal=True)
    emb, valid = batch(10, 7)
    out = encode(model, emb, valid)
    changed = emb.clone()
    changed[0, 6] += torch.randn(16)  # a later item (not a constant shift: LayerNorm would erase it)
    out2 = encode(model, changed, valid)
    torch.testing.assert_close(out[0, :6], out2[0, :6])
    assert not torch.allclose(out[0, 6:], out2[0, 6:])


def test_bidirectional_sees_both_ways():
    torch.manual_seed(0)
    model = TransformerEncoder(hidden=16, max_len=20, causal=False)
    emb, valid = batch(10, 7)
    changed = emb.clone()
    changed[0, 9] += torch.randn(16)
    assert not torch.allclose(encode(model, emb, valid)[0, 3:6], encode(model, changed, valid)[0, 3:6])


@pytest.mark.parametrize("causal", [True, False])
def test_padding_changes_nothing(causal):
    torch.manual_seed(0)
    model = TransformerEncoder(hidden=16, max_len=50, causal=causal)
    short_emb, short_valid = batch(6, 6)
    long_emb = torch.cat([torch.randn(1, 30, 16), short_emb], dim=1)  # garbage where padded
    long_valid = torch.cat([torch.zeros(1, 30, dtype=torch.bool), short_valid], dim=1)
    short = encode(model, short_emb, short_valid)
    long = encode(model, long_emb, long_valid)
    torch.testing.assert_close(long[0, 30:], short[0], rtol=1e-5, atol=1e-5)
    assert not long[0, :30].any()  # padded positions give zeros


def test_gradients_are_finite_with_fully_padded_rows():
    torch.manual_seed(0)
    model = TransformerEncoder(hidden=16, max_len=20)
    emb = torch.randn(3, 8, 16, requires_grad=True)
    valid = torch.ones(3, 8, dtype=torch.bool)
    valid[1] = False  # a row with no item at all
    valid[2, :5] = False
    model.train()
    model(emb, valid).pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(emb.grad).all()


def test_too_long_sequences_are_an_error():
    model = TransformerEncoder(hidden=16, max_len=4)
    emb, valid = batch(6, 6)
    with pytest.raises(ValueError, match="max_len=4"):
        model(emb, valid)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("compat", [False, True])
def test_attention_equals_scaled_dot_product_attention_under_a_boolean_mask(causal, compat):
    """The module's fused attention against PyTorch's own under the equivalent [B, 1, L, L] mask, at
    the real positions (a padded query's output is zero in ours, unused in both)."""
    from torch.nn import functional as F

    from llmesr.models.compat import strategy
    from llmesr.models.encoder import Attention

    torch.manual_seed(0)
    module = Attention(hidden=12, heads=3, dropout=0.0)
    x, context = torch.randn(4, 9, 12), torch.randn(4, 9, 12)
    valid = torch.arange(9) >= torch.tensor([0, 4, 8, 9])[:, None]  # lengths 9, 5, 1, 0
    got = module(x, context, strategy(compat).key_mask(valid, causal))

    q, k, v = (t.transpose(1, 2) for t in module.project(x, context))
    allowed = torch.ones(4, 1, 9, 9, dtype=torch.bool) if compat else valid[:, None, None, :].expand(4, 1, 9, 9)
    if causal and not compat:
        allowed = allowed & torch.ones(9, 9, dtype=torch.bool).tril()
    allowed = allowed | torch.eye(9, dtype=torch.bool)  # padded queries: defined, unused
    want = module.out(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2).flatten(2))
    rows = torch.ones_like(valid) if compat else valid
    torch.testing.assert_close(got[rows], want[rows], rtol=1e-5, atol=1e-6)
    assert compat or (got[~valid] == module.out.bias).all()  # zero attention output, then the projection
