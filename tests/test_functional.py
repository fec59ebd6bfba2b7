"""Differentiable ops (tinyft/functional.py): values against NumPy formulas, gradients against gradcheck.

Map: linear, softmax/log_softmax, cross_entropy (ignore_index, logits of +-1e4), layer_norm, gelu, gelu_exact, erf,
embedding (scatter-add), dropout (seeded mask, eval identity, expectation), where/masked_fill,
attention (causal mask), float32 kept by every op, and bad input.
"""

import math

import numpy as np
import pytest

import tinyft
from tinyft import Tensor, gradcheck
from tinyft import functional as F


def rand(*shape, seed=0, low=-1.0, high=1.0, requires_grad=True, dtype=np.float64):
    data = np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype)
    return Tensor(data, requires_grad=requires_grad)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape", [(5, 3), (2, 4, 3)], ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_x_wt_plus_b_and_its_gradient(x_shape, with_bias):
    x, w, b = rand(*x_shape, seed=1), rand(4, 3, seed=2), rand(4, seed=3)
    out = F.linear(x, w, b if with_bias else None)
    np.testing.assert_allclose(out.data, x.data @ w.data.T + (b.data if with_bias else 0.0))
    if with_bias:
        assert gradcheck(F.linear, [x, w, b])
    else:
        assert gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_linear_shape_mismatch_names_the_op_and_both_shapes():
    with pytest.raises(ValueError, match=r"linear: input has 3 features \(shape \(5, 3\)\) but weight \(4, 2\)"):
        F.linear(rand(5, 3), rand(4, 2))


# ----------------------------------------------------------------------------------------------------
# softmax, log_softmax
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_matches_numpy_and_its_gradient(axis):
    x = rand(3, 4, 2, seed=4, low=-3, high=3)
    np.testing.assert_allclose(F.softmax(x, axis=axis).data, np_softmax(x.data, axis=axis))
    np.testing.assert_allclose(F.softmax(x, axis=axis).data.sum(axis=axis), 1.0)
    assert gradcheck(lambda x: F.softmax(x, axis=axis), [x])


@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax_matches_numpy_and_its_gradient(axis):
    x = rand(3, 5, seed=5, low=-3, high=3)
    np.testing.assert_allclose(F.log_softmax(x, axis=axis).data, np.log(np_softmax(x.data, axis=axis)))
    assert gradcheck(lambda x: F.log_softmax(x, axis=axis), [x])


def test_softmax_and_log_softmax_stay_finite_for_logits_of_1e4():
    x = Tensor(np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4]]), requires_grad=True)
    p, logp = F.softmax(x), F.log_softmax(x)
    np.testing.assert_allclose(p.data, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-12)
    np.testing.assert_allclose(logp.data, [[0, -2e4, -1e4], [-math.log(2), -math.log(2), -2e4 - math.log(2)]])
    (p.sum() + logp.sum()).backward()
    assert np.all(np.isfinite(x.grad))


# ----------------------------------------------------------------------------------------------------
# cross_entropy
# ----------------------------------------------------------------------------------------------------


def cross_entropy_by_hand(logits, targets, ignore_index=None):
    """Loss and its gradient (softmax - one_hot) / n, computed in NumPy."""
    flat, t = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    counted = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    n = max(counted.sum(), 1)
    z = flat - flat.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    rows = np.flatnonzero(counted)
    loss = -logp[rows, t[rows]].sum() / n
    grad = np.exp(logp)
    grad[rows, t[rows]] -= 1.0
    grad[~counted] = 0.0
    return loss, (grad / n).reshape(logits.shape)


def test_cross_entropy_value_and_gradient_equal_softmax_minus_one_hot():
    logits = rand(2, 3, 5, seed=6, low=-2, high=2)
    targets = np.random.default_rng(7).integers(0, 5, size=(2, 3))
    loss = F.cross_entropy(logits, targets)
    expected_loss, expected_grad = cross_entropy_by_hand(logits.data, targets)
    assert loss.shape == () and loss.item() == pytest.approx(expected_loss, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(logits.grad, expected_grad, atol=1e-14)
    assert gradcheck(lambda x: F.cross_entropy(x, targets), [rand(2, 3, 5, seed=8)])


def test_cross_entropy_with_ignore_index_averages_over_counted_positions_only():
    logits = rand(4, 6, 3, seed=9, low=-2, high=2)
    targets = np.random.default_rng(10).integers(0, 3, size=(4, 6))
    targets[0, :4] = -100
    targets[2, 1] = -100
    loss = F.cross_entropy(logits, targets, ignore_index=-100)
    expected_loss, expected_grad = cross_entropy_by_hand(logits.data, targets, ignore_index=-100)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(logits.grad, expected_grad, atol=1e-14)
    assert np.all(logits.grad[0, :4] == 0) and np.all(logits.grad[2, 1] == 0)
    assert gradcheck(lambda x: F.cross_entropy(x, targets, ignore_index=-100), [rand(4, 6, 3, seed=11)])


def test_cross_entropy_with_every_position_ignored_is_zero():
    logits = rand(2, 3, seed=12)
    loss = F.cross_entropy(logits, np.array([-1, -1]), ignore_index=-1)
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(logits.grad, np.zeros((2, 3)))


def test_cross_entropy_with_logits_of_1e4_is_finite_and_its_gradient_is_right():
    logits = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]]), requires_grad=True)
    targets = np.array([1, 2, 0])
    loss = F.cross_entropy(logits, targets)
    expected_loss, expected_grad = cross_entropy_by_hand(logits.data, targets)
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx(expected_loss, rel=1e-12)
    assert expected_loss == pytest.approx((2e4 + math.log(2) + math.log(2)) / 3, rel=1e-9)  # the hand formula
    loss.backward()
    np.testing.assert_allclose(logits.grad, expected_grad, atol=1e-14)
    np.testing.assert_allclose(logits.grad[0], np.array([1.0, -1.0, 0.0]) / 3, atol=1e-14)
    assert gradcheck(lambda x: F.cross_entropy(x, targets), [logits], atol=1e-4)


def test_cross_entropy_rejects_targets_out_of_range():
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\), found 3"):
        F.cross_entropy(rand(2, 3), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\), found -1"):
        F.cross_entropy(rand(2, 3), np.array([-1, 0]))


def test_cross_entropy_rejects_float_targets():
    with pytest.raises(ValueError, match="targets must be an integer array of class ids, got dtype float64"):
        F.cross_entropy(rand(2, 3), np.array([0.0, 1.0]))


def test_cross_entropy_rejects_targets_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"targets shape \(2, 1\) must equal logits shape without its last \(class\) axis, \(2,\)"):
        F.cross_entropy(rand(2, 3), np.array([[0], [1]]))


# ----------------------------------------------------------------------------------------------------
# layer_norm, gelu
# ----------------------------------------------------------------------------------------------------


def layer_norm_numpy(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + (0.0 if b is None else b)


@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_matches_numpy_and_its_gradient(with_bias):
    x, w, b = rand(2, 3, 5, seed=13, low=-2, high=2), rand(5, seed=14, low=0.5, high=1.5), rand(5, seed=15)
    out = F.layer_norm(x, w, b if with_bias else None)
    np.testing.assert_allclose(out.data, layer_norm_numpy(x.data, w.data, b.data if with_bias else None))
    if with_bias:
        assert gradcheck(F.layer_norm, [x, w, b])
    else:
        assert gradcheck(lambda x, w: F.layer_norm(x, w, None), [x, w])


def test_layer_norm_output_has_zero_mean_and_unit_variance_per_row():
    x = rand(4, 16, seed=16, low=-5, high=5)
    out = F.layer_norm(x, Tensor(np.ones(16)), Tensor(np.zeros(16)), eps=0.0)
    np.testing.assert_allclose(out.data.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.data.var(axis=-1), 1.0)


def test_gelu_matches_the_tanh_formula_and_its_gradient():
    x = rand(3, 7, seed=17, low=-4, high=4)
    expected = 0.5 * x.data * (1 + np.tanh(math.sqrt(2 / math.pi) * (x.data + 0.044715 * x.data**3)))
    np.testing.assert_allclose(F.gelu(x).data, expected)
    assert gradcheck(F.gelu, [x])


def test_gelu_exact_matches_the_erf_formula_per_element_and_its_gradient():
    x = rand(3, 7, seed=18, low=-5, high=5)
    expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.data.ravel()]).reshape(3, 7)
    np.testing.assert_allclose(F.gelu_exact(x).data, expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(F.gelu_exact_composed(x).data, expected, rtol=1e-14, atol=1e-15)
    assert gradcheck(F.gelu_exact, [x])
    assert gradcheck(F.gelu_exact_composed, [x])
    bias = rand(7, seed=19)  # GELU is elementwise; broadcasting enters through what feeds it
    assert gradcheck(lambda x, b: F.gelu_exact(x + b), [x, bias])


def test_erf_matches_math_erf_and_its_gradient():
    x = rand(2, 5, seed=20, low=-3, high=3)
    np.testing.assert_allclose(F.erf(x).data, np.vectorize(math.erf)(x.data), rtol=0, atol=0)
    assert gradcheck(F.erf, [x])
    assert F.erf(Tensor(np.float64(0.5))).item() == math.erf(0.5)  # a 0-d input stays a number
    with pytest.raises(ValueError, match="erf: x must hold floats"):
        F.erf(Tensor(np.array([1, 2])))


def test_exact_and_tanh_gelu_differ_by_at_most_5e_4_largest_near_2_7():
    x = Tensor(np.linspace(-8, 8, 16001))
    diff = np.abs(F.gelu_exact(x).data - F.gelu(x).data)
    assert 4.6e-4 < diff.max() < 4.8e-4  # the figure docs/transformer.md quotes (4.7e-4)
    assert abs(abs(x.data[diff.argmax()]) - 2.7) < 0.01


# ----------------------------------------------------------------------------------------------------
# embedding, dropout
# ----------------------------------------------------------------------------------------------------


def test_embedding_picks_rows_and_scatter_adds_repeated_ids():
    weight = rand(6, 3, seed=18)
    ids = np.array([[4, 1, 4], [4, 0, 1]])
    out = F.embedding(ids, weight)
    np.testing.assert_array_equal(out.data, weight.data[ids])
    g = np.random.default_rng(19).standard_normal(out.shape)
    out.backward(g)
    expected = np.zeros((6, 3))
    for position, row in np.ndenumerate(ids):
        expected[row] += g[position]  # row 4 gets three contributions, row 1 two
    np.testing.assert_allclose(weight.grad, expected)
    assert np.all(weight.grad[[2, 3, 5]] == 0)
    assert gradcheck(lambda w: F.embedding(ids, w), [rand(6, 3, seed=20)])


def test_embedding_accepts_a_tensor_of_ids():
    weight = rand(4, 2, seed=21)
    np.testing.assert_array_equal(F.embedding(Tensor(np.array([3, 0])), weight).data, weight.data[[3, 0]])


def test_embedding_rejects_out_of_range_and_float_ids():
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\), got min 0 and max 4"):
        F.embedding(np.array([0, 4]), rand(4, 2))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\), got min -1"):
        F.embedding(np.array([-1, 2]), rand(4, 2))
    with pytest.raises(ValueError, match="idx must hold integer ids, got dtype float64"):
        F.embedding(np.array([0.0, 1.0]), rand(4, 2))


def test_dropout_gradient_with_a_fixed_mask():
    x = rand(4, 5, seed=22)

    def fn(x):
        tinyft.manual_seed(7)  # the same mask on every call, so finite differences see one function
        return F.dropout(x, p=0.4, training=True)

    assert gradcheck(fn, [x])
    out = fn(x)
    kept = out.data != 0
    np.testing.assert_allclose(out.data[kept], x.data[kept] / 0.6)
    x.grad = None
    out.backward(np.ones(x.shape))
    np.testing.assert_allclose(x.grad, kept / 0.6)


def test_dropout_is_the_identity_in_eval_and_for_p_zero():
    x = rand(3, 4, seed=23)
    assert F.dropout(x, p=0.5, training=False) is x
    assert F.dropout(x, p=0.0, training=True) is x


def test_dropout_keeps_the_expectation_and_drops_about_p():
    tinyft.manual_seed(0)
    x = Tensor(np.full(200_000, 2.0))
    out = F.dropout(x, p=0.3, training=True).data
    assert abs((out == 0).mean() - 0.3) < 0.01
    assert abs(out.mean() - 2.0) < 0.02  # E[mask / (1 - p)] = 1


def test_manual_seed_makes_dropout_reproducible():
    x = rand(50, seed=24)
    tinyft.manual_seed(3)
    first = F.dropout(x, p=0.5).data
    tinyft.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, p=0.5).data, first)
    assert not np.array_equal(F.dropout(x, p=0.5).data, first)  # the stream moves on


def test_dropout_rejects_p_outside_zero_one():
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\)"):
            F.dropout(rand(3), p=p)


# ----------------------------------------------------------------------------------------------------
# where, masked_fill
# ----------------------------------------------------------------------------------------------------


def test_where_sends_each_gradient_to_the_chosen_side():
    cond = np.array([[True, False, True], [False, False, True]])
    a, b = rand(2, 3, seed=25), rand(2, 3, seed=26)
    out = F.where(cond, a, b)
    np.testing.assert_array_equal(out.data, np.where(cond, a.data, b.data))
    out.sum().backward()
    np.testing.assert_array_equal(a.grad, cond * 1.0)
    np.testing.assert_array_equal(b.grad, ~cond * 1.0)
    assert gradcheck(lambda a, b: F.where(cond, a, b), [a, b])


def test_where_broadcasts_condition_and_operands():
    cond = np.array([True, False, True])  # (3,)
    assert gradcheck(lambda a, b: F.where(cond, a, b), [rand(2, 1, seed=27), rand(3, seed=28)])


def test_masked_fill_fills_and_stops_the_gradient_there():
    mask = np.array([[False, True], [True, False]])
    x = rand(2, 2, seed=29)
    out = F.masked_fill(x, mask, -5.0)
    np.testing.assert_array_equal(out.data, np.where(mask, -5.0, x.data))
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, ~mask * 1.0)
    assert gradcheck(lambda x: F.masked_fill(x, mask, 0.0) * x, [rand(2, 2, seed=30)])


# ----------------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------------


def attention_numpy(q, k, v, causal):
    T, hd = q.shape[-2:]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(hd)
    if causal:
        scores = np.where(np.triu(np.ones((T, T), bool), k=1), -np.inf, scores)
    return np_softmax(scores) @ v


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_numpy_and_its_gradient(causal):
    q, k, v = (rand(1, 2, 4, 3, seed=s) for s in (31, 32, 33))
    np.testing.assert_allclose(F.attention(q, k, v, causal=causal).data, attention_numpy(q.data, k.data, v.data, causal))
    assert gradcheck(lambda q, k, v: F.attention(q, k, v, causal=causal), [q, k, v])


@pytest.mark.parametrize("causal", [True, False])
def test_qkv_attention_is_each_head_attending_on_its_own_columns(causal):
    """qkv (B, T, 3C) = [q | k | v]; head h owns columns h*hd..(h+1)*hd of each, and its output lands in the
    same columns of y (B, T, C). Written head by head here, with attention_numpy."""
    B, T, H, hd = 2, 4, 3, 2
    C = H * hd
    qkv = rand(B, T, 3 * C, seed=37)
    want = np.zeros((B, T, C))
    for h in range(H):
        cols = slice(h * hd, (h + 1) * hd)
        q, k, v = (qkv.data[:, :, part * C:(part + 1) * C][:, :, cols] for part in range(3))  # (B, T, hd) each
        want[:, :, cols] = attention_numpy(q, k, v, causal)
    np.testing.assert_allclose(F.qkv_attention(qkv, H, causal=causal).data, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.qkv_attention_composed(qkv, H, causal=causal).data, want, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: F.qkv_attention(t, H, causal=causal), [qkv])


def test_causal_attention_output_at_t_ignores_later_positions():
    q, k, v = (rand(2, 2, 5, 4, seed=s) for s in (34, 35, 36))
    before = F.attention(q, k, v, causal=True).data
    for t in range(4):
        k2, v2 = k.data.copy(), v.data.copy()
        k2[:, :, t + 1:] += 10.0  # change every position after t
        v2[:, :, t + 1:] -= 10.0
        after = F.attention(q, Tensor(k2), Tensor(v2), causal=True).data
        np.testing.assert_allclose(after[:, :, : t + 1], before[:, :, : t + 1])
        assert not np.allclose(after[:, :, t + 1:], before[:, :, t + 1:])
    # and the gradient to k and v at future positions is exactly zero for an output at t = 0
    out = F.attention(q, k, v, causal=True)
    g = np.zeros(out.shape)
    g[:, :, 0] = 1.0
    out.backward(g)
    assert np.all(k.grad[:, :, 1:] == 0) and np.all(v.grad[:, :, 1:] == 0)


def test_non_causal_attention_output_depends_on_later_positions():
    q, k, v = (rand(1, 1, 3, 2, seed=s) for s in (37, 38, 39))
    v2 = v.data.copy()
    v2[:, :, 2] += 1.0
    assert not np.allclose(F.attention(q, k, Tensor(v2), causal=False).data[:, :, 0],
                           F.attention(q, k, v, causal=False).data[:, :, 0])


def test_attention_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"attention: q, k, v must share one shape \(B, H, T, hd\)"):
        F.attention(rand(1, 1, 3, 2), rand(1, 1, 4, 2), rand(1, 1, 4, 2))


# ----------------------------------------------------------------------------------------------------
# dtype
# ----------------------------------------------------------------------------------------------------

IDS = np.array([[1, 0, 3]])
FUNCTIONAL_OPS = {
    "linear": lambda x, w: F.linear(x, w, w[0]),
    "softmax": lambda x, w: F.softmax(x),
    "log_softmax": lambda x, w: F.log_softmax(x, axis=0),
    "cross_entropy": lambda x, w: F.cross_entropy(x, np.array([[0, 1, 3]]), ignore_index=3),
    "layer_norm": lambda x, w: F.layer_norm(x, w[0], w[1]),
    "gelu": lambda x, w: F.gelu(x),
    "gelu_exact": lambda x, w: F.gelu_exact(x),
    "erf": lambda x, w: F.erf(x),
    "embedding": lambda x, w: F.embedding(IDS, w),
    "dropout": lambda x, w: F.dropout(x, p=0.5),
    "where": lambda x, w: F.where(x > 0, x, w[:3]),
    "where_scalar_first": lambda x, w: F.where(x > 0, 0.0, x),
    "where_scalar_second": lambda x, w: F.where(x > 0, x, 1.0),
    "masked_fill": lambda x, w: F.masked_fill(x, x > 0, -1e9),
    "attention": lambda x, w: F.attention(*(x.reshape(1, 1, 3, 4),) * 3),
}

FUNCTIONAL_OPS_READ = {  # op -> the leaves (x, w) it reads, each of which must get a gradient
    "linear": "xw", "softmax": "x", "log_softmax": "x", "cross_entropy": "x", "layer_norm": "xw", "gelu": "x",
    "gelu_exact": "x", "erf": "x", "embedding": "w", "dropout": "x", "where": "xw", "where_scalar_first": "x", "where_scalar_second": "x",
    "masked_fill": "x", "attention": "x",
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", FUNCTIONAL_OPS)
def test_every_functional_op_keeps_the_dtype(op, dtype):
    x, w = rand(1, 3, 4, seed=40, dtype=dtype), rand(4, 4, seed=41, dtype=dtype)
    out = FUNCTIONAL_OPS[op](x, w)
    assert out.dtype == dtype
    out.sum().backward()
    for name, leaf in (("x", x), ("w", w)):
        if name in FUNCTIONAL_OPS_READ[op]:  # a leaf the op reads must get a gradient of its own dtype
            assert leaf.grad is not None and leaf.grad.dtype == dtype, name
        else:
            assert leaf.grad is None, name


def test_where_with_operands_of_two_float_dtypes_keeps_both_in_the_graph():
    a = rand(3, seed=42, dtype=np.float64)
    b = rand(3, seed=43, dtype=np.float32)
    F.where(np.array([True, False, True]), a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(b.grad, [0.0, 1.0, 0.0])
    assert b.grad.dtype == np.float32
