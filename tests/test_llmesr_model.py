"""LLM-ESR's exact speed-ups against the straightforward computations, and that it learns."""

import pytest

from conftest import assert_same_loss_and_gradients

torch = pytest.importorskip("torch")

from llmesr.models import LLMESR  # noqa: E402
from llmesr.models.distillation import teachers  # noqa: E402
from llmesr.ops import distill_loss  # noqa: E402


def model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    semantic = torch.randn(31, 24)
    semantic[0] = 0
    return LLMESR(30, semantic, hidden=8, max_len=12, dropout=dropout)


def sequences(seed=1):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, 31, (4, 10), generator=g)
    seq[0, :6] = 0
    seq[2, :9] = 0
    return seq


def test_adapter_once_per_item_equals_per_position():
    m = model()
    seq = sequences()
    fast = m.semantic_view(seq)
    slow = (
        m.semantic_view.adapter(m.semantic_view.semantic[seq]) * (seq != 0)[..., None]
    )  # the adapter at every position
    torch.testing.assert_close(fast, slow)
    g_fast = torch.autograd.grad(fast.pow(2).sum(), m.semantic_view.adapter.down.weight)[0]
    g_slow = torch.autograd.grad(slow.pow(2).sum(), m.semantic_view.adapter.down.weight)[0]
    torch.testing.assert_close(g_fast, g_slow)


def test_teacher_without_autograd_gives_the_same_loss_and_gradients():
    m = model()
    seq = sequences(1)
    similar = torch.stack([sequences(s) for s in (2, 3, 4)], dim=1).reshape(12, 10)  # 3 per user
    student = m.user_vector(seq)
    loss = distill_loss(student, teachers(m, similar, 4), "kd", 1.0)
    grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
    # The straightforward way: the teacher with autograd, then detached.
    teacher = m.user_vector(similar).reshape(4, 3, -1).mean(1).detach()
    slow = torch.nn.functional.mse_loss(m.user_vector(seq), teacher)
    slow_grads = torch.autograd.grad(slow, list(m.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, slow)
    for a, b_ in zip(grads, slow_grads, strict=True):
        if a is None:
            assert b_ is None
        else:
            torch.testing.assert_close(a, b_)


def test_distinct_teachers_encoded_once_give_the_same_loss_and_gradients():
    m = model(dropout=0.2)
    seq = sequences(1)
    targets = torch.roll(seq, -1, dims=1) * (seq != 0)
    negatives = torch.randint(1, 31, seq.shape) * (targets != 0)
    distinct = torch.stack([sequences(s)[0] for s in (2, 3, 4, 5)])  # 4 neighbours, shared by the users
    index = torch.tensor([0, 1, 2, 1, 1, 3, 0, 0, 2, 3, 3, 1])  # 3 per user, with repeats
    losses, grads = [], []
    for similar, similar_index in ((distinct, index), (distinct[index], None)):
        torch.manual_seed(7)  # the same dropout in the student
        loss = m.training_loss(seq, targets, negatives, similar, alpha=0.5, similar_index=similar_index)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad], allow_unused=True))
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_padding_positions_do_not_count_and_training_lowers_the_loss():
    m = model(dropout=0.1)
    seq = sequences()
    targets = torch.roll(seq, -1, dims=1) * (seq != 0)
    negatives = torch.randint(1, 31, seq.shape) * (targets != 0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = m.training_loss(seq, targets, negatives)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    assert not m.semantic_view.semantic.requires_grad  # the language-model table stays frozen
    assert m.user_vector(seq).shape == (4, 16)  # [u_id; u_llm]


def batch_for(backbone, seed=5, n_items=30, b=4, length=9):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, n_items + 1, (b, length), generator=g)
    inputs[0, :5] = 0
    inputs[2, :8] = 0
    targets = torch.roll(inputs, -1, dims=1) * (inputs != 0)
    targets[:, -1] = torch.randint(1, n_items + 1, (b,), generator=g)
    if backbone == "bert4rec":
        masked = (torch.rand(inputs.shape, generator=g) < 0.5) & (inputs != 0)
        masked[:, -1] = True
        targets = inputs * masked
        inputs = torch.where(masked, torch.full_like(inputs, n_items + 1), inputs)
    elif backbone == "gru4rec":
        targets[:, :-1] = 0
    negatives = torch.randint(1, n_items + 1, inputs.shape, generator=g) * (targets != 0)
    similar = torch.randint(0, n_items + 1, (b * 3, 7), generator=g)
    similar[:, :3] = 0
    similar[1, :6] = 0
    return inputs, targets, negatives, similar


@pytest.mark.parametrize(
    "backbone, kw",
    [
        ("sasrec", {}),
        ("sasrec", {"fusion": "cross_attention"}),
        ("sasrec", {"shared_encoder": False, "heads": 2}),
        ("sasrec", {"views": "semantic"}),
        ("sasrec", {"fusion": "cross_attention", "block": "original", "init": "xavier"}),
        ("bert4rec", {"fusion": "cross_attention"}),
        ("bert4rec", {"embed_scale": False, "block": "original"}),
        # compat: the padding keys counted through one column, against rows padded to max_len
        ("sasrec", {"compat": True, "block": "original", "fusion": "cross_attention", "init": "xavier"}),
        ("bert4rec", {"compat": True}),
        ("gru4rec", {"compat": True, "fusion": "cross_attention"}),
        ("gru4rec", {"fusion": "cross_attention"}),
        ("gru4rec", {"views": "id"}),
    ],
)
@pytest.mark.parametrize("distill, beta", [("kd", 0.0), ("cl", 0.5)])
@pytest.mark.parametrize("chunk_tokens", [2048, 10])  # 10: rows grouped by length, several encoder calls
def test_fast_training_loss_equals_the_straightforward_one(backbone, kw, distill, beta, chunk_tokens):
    from llmesr.models import reference

    torch.manual_seed(0)
    semantic = torch.randn(31, 24)
    semantic[0] = 0
    m = LLMESR(
        30, None if kw.get("views") == "id" else semantic, backbone=backbone, hidden=8, max_len=12, dropout=0.0, **kw
    )
    inputs, targets, negatives, similar = batch_for(backbone)
    opts = dict(alpha=0.3, distill=distill, beta=beta, temperature=0.7)
    fast = m.training_loss(inputs, targets, negatives, similar, **opts)
    slow = reference.training_loss(m, inputs, targets, negatives, similar, **opts)
    assert_same_loss_and_gradients(fast, slow, m)
    with torch.no_grad():
        torch.testing.assert_close(m.user_vector(similar), reference.user_vector(m, similar), rtol=1e-4, atol=1e-5)
        m.eval()  # the encoders' last block computes the last position only
        torch.testing.assert_close(m.user_vector(similar), reference.user_vector(m, similar), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_cross_attention_never_sees_later_items(backbone):
    torch.manual_seed(0)
    semantic = torch.randn(31, 24)
    m = LLMESR(30, semantic, backbone=backbone, hidden=8, max_len=12, dropout=0.0, fusion="cross_attention").eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7]])
    later = seq.clone()
    later[0, -1] = 20
    with torch.no_grad():
        a, b = m.user_states(seq), m.user_states(later)
    torch.testing.assert_close(a[0, :-1], b[0, :-1])
    assert not torch.allclose(a[0, -1], b[0, -1])


def test_compat_original_attends_to_padding_and_the_future():
    torch.manual_seed(0)
    semantic = torch.randn(31, 24)
    correct = LLMESR(30, semantic, hidden=8, max_len=12, dropout=0.0, fusion="concat").eval()
    compat = LLMESR(30, semantic, hidden=8, max_len=12, dropout=0.0, compat=True, fusion="concat").eval()
    compat.load_state_dict(correct.state_dict())
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7]])
    later = seq.clone()
    later[0, -1] = 20
    with torch.no_grad():
        assert not torch.allclose(compat.user_states(seq)[0, -3], compat.user_states(later)[0, -3])
        # The original's results depend on max_len (its padding is attended to); ours do not.
        short = LLMESR(30, semantic, hidden=8, max_len=7, dropout=0.0, compat=True, fusion="concat").eval()
        short.load_state_dict(
            {k: v[:7] if k.endswith("position.weight") else v for k, v in compat.state_dict().items()}
        )
        assert not torch.allclose(compat.user_vector(seq), short.user_vector(seq))
        ours_short = LLMESR(30, semantic, hidden=8, max_len=7, dropout=0.0, fusion="concat").eval()
        ours_short.load_state_dict(short.state_dict())
        torch.testing.assert_close(correct.user_vector(seq), ours_short.user_vector(seq))


def test_inputs_are_scaled_by_sqrt_hidden_but_scored_items_are_not():
    torch.manual_seed(0)
    m = LLMESR(30, views="id", hidden=16, max_len=12, dropout=0.0).eval()
    seq = sequences()
    with torch.no_grad():
        by_hand = m.encoders[0](m.id_view(seq) * 4.0, seq != 0)
        torch.testing.assert_close(m.user_states(seq), by_hand)
        torch.testing.assert_close(m.item_vectors(seq), m.id_view(seq))
    gru = LLMESR(30, views="id", backbone="gru4rec", hidden=16, max_len=12)
    assert gru.input_scale == 1.0  # the original scales its Transformers' inputs only


def test_original_block_is_the_pmixer_layout():
    from llmesr.models.encoder import KeyMask, OriginalBlock

    torch.manual_seed(0)
    block = OriginalBlock(8, 1, dropout=0.0).eval()
    x = torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        got = block(x, KeyMask(lengths, causal=True))
        for row, n in enumerate(lengths.tolist()):
            xr = x[row, -n:]
            q = torch.nn.functional.layer_norm(xr, (8,), block.norm1.weight, block.norm1.bias, eps=1e-8)
            k, v = block.attention.kv(xr).chunk(2, dim=-1)  # keys and values from the unnormalised input
            scores = (block.attention.q(q) @ k.T) / 8**0.5
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -torch.inf)
            h = q + block.attention.out(scores.softmax(-1) @ v)  # the residual adds the normalised query
            h = torch.nn.functional.layer_norm(h, (8,), block.norm2.weight, block.norm2.bias, eps=1e-8)
            expected = h + block.ffn[3](torch.relu(block.ffn[0](h)))
            torch.testing.assert_close(got[row, -n:], expected, rtol=1e-5, atol=1e-6)


def test_xavier_init_keeps_the_pca_table():
    torch.manual_seed(0)
    semantic, pca = torch.randn(31, 24), torch.randn(31, 8)
    semantic[0], pca[0] = 0, 0
    m = LLMESR(30, semantic, hidden=8, max_len=12, id_init=pca, init="xavier", fusion="cross_attention")
    torch.testing.assert_close(m.id_view.table.weight[:31], pca)
    position = m.encoders[0].position.weight  # [12, 8]: xavier normal std sqrt(2 / (12 + 8))
    assert abs(float(position.detach().std()) - (2 / 20) ** 0.5) < 0.1
    base = LLMESR(30, views="id", hidden=8, max_len=12, init="xavier")
    assert not base.id_view.table.weight[0].any()  # padding stays zero
    with pytest.raises(ValueError, match="init must be"):
        LLMESR(30, views="id", hidden=8, init="uniform")


def test_gru_reads_real_items_only():
    from llmesr.models import GRUEncoder

    torch.manual_seed(0)
    enc = GRUEncoder(hidden=6, layers=2, dropout=0.0).eval()
    emb = torch.randn(3, 5, 6)
    valid = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = enc(emb, valid)
        for row in range(2):
            real = emb[row][valid[row]][None]
            expected = enc.gru(real)[0][0]  # the GRU over the real items alone, from a zero state
            torch.testing.assert_close(out[row][valid[row]], expected)
    assert not out[2].any() and not out[0, :2].any()


def test_length_chunks_respect_the_budget():
    from llmesr.models.compat import length_chunks

    lengths = torch.tensor([3, 200, 1, 0, 7, 7, 50, 2])
    groups = length_chunks(lengths, budget=20)
    assert sorted(torch.cat(groups).tolist()) == list(range(8))
    for g in groups:
        assert len(g) == 1 or len(g) * int(lengths[g].clamp(min=1).max()) <= 20
    assert [lengths[g].tolist() for g in groups] == [[0, 1, 2, 3], [7, 7], [50], [200]]


def test_original_cross_attention_keeps_each_view_s_own_values():
    # The original code feeds the ID view llm2id(llm_seqs, id_seqs): semantic queries over ID keys and
    # VALUES, so the ID stream stays made of ID vectors. With every position of the view holding the
    # same vector, the attention's weighted mean is that vector, whatever the other view holds.
    from llmesr.models.encoder import KeyMask
    from llmesr.models.fusion import CrossAttention

    torch.manual_seed(0)
    cross = CrossAttention(8, 1, 0.0, original=True).eval()
    view = torch.randn(1, 1, 8).expand(2, 5, 8).contiguous()
    others = torch.randn(2, 5, 8)
    mask = KeyMask(torch.tensor([5, 3]), causal=True)
    with torch.no_grad():
        a, b = cross(view, others, mask), cross(view, 3 * others.flip(1), mask)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[0, 0], cross.attention.out(cross.attention.kv(view[0, :1])[..., 8:])[0])


def test_a_backbone_is_its_spec(monkeypatch):
    # Registering a spec is all a new backbone needs: here SASRec's under another name gives the same model.
    from dataclasses import replace

    from llmesr import backbones

    monkeypatch.setitem(backbones.BACKBONES, "toy", replace(backbones.BACKBONES["sasrec"], name="toy"))
    torch.manual_seed(0)
    semantic = torch.randn(31, 24)
    sasrec = LLMESR(30, semantic, hidden=8, max_len=12, dropout=0.0).eval()
    toy = LLMESR(30, semantic, backbone="toy", hidden=8, max_len=12, dropout=0.0).eval()
    toy.load_state_dict(sasrec.state_dict())
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(toy.user_vector(seq), sasrec.user_vector(seq))
    with pytest.raises(ValueError, match="backbone must be one of sasrec, bert4rec, gru4rec, toy"):
        LLMESR(30, semantic, backbone="mamba")


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
@pytest.mark.parametrize("block", ["original", "prenorm"])
def test_last_position_pass_equals_the_full_encoder_pass(backbone, block):
    """Eval-mode user vectors (the last block computes the last position only) against the full pass's
    last state, rows of every length including an empty one."""
    torch.manual_seed(1)
    semantic = torch.randn(31, 24)
    semantic[0] = 0
    m = LLMESR(30, semantic, backbone=backbone, hidden=8, max_len=12, heads=2, block=block).eval()
    seq = torch.randint(1, 31, (5, 12))
    for row, length in enumerate([0, 1, 4, 11, 12]):
        seq[row, : 12 - length] = 0
    fast = m.user_vector(seq)
    full = torch.cat([m.user_states(seq[i : i + 1, -max(1, int((seq[i] != 0).sum())) :])[:, -1] for i in range(5)])
    if backbone == "bert4rec":  # its input ends with the mask token
        full = m.user_states(torch.cat([seq, torch.full_like(seq[:, :1], m.mask_token)], 1)[:, -12:])[:, -1]
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    assert fast.abs().sum() > 0


def test_weights_saved_under_the_former_names_load_into_the_parts():
    """Run folders written before the views and the fusion were parts of their own name their weights
    item_id.*, adapter.*, semantic_mask and cross.*: they load as they were."""
    from llmesr.models.llmesr import RENAMED

    semantic = torch.randn(31, 12)
    m = LLMESR(30, semantic, backbone="bert4rec", hidden=8, max_len=10, fusion="cross_attention")
    current = m.state_dict()
    former = {}
    for key, value in current.items():
        for old, new in RENAMED:
            if key.startswith(new):
                key = old + key[len(new) :]
        former[key] = value.clone()
    assert {"item_id.weight", "adapter.down.weight", "semantic_mask", "cross.0.norm.weight"} <= former.keys()
    fresh = LLMESR(30, semantic, backbone="bert4rec", hidden=8, max_len=10, fusion="cross_attention")
    fresh.load_state_dict(former)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, current[key])
