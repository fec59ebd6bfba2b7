"""The engine (tinyft/autograd.py): a float64 gradcheck for every op, then the graph's behaviour.

Map: elementwise and unary ops, matmul, reductions, shape ops and indexing, concatenate/stack/split
(each checked against central differences by tinyft.gradcheck); then broadcasting, diamonds,
explicit and accumulated gradients, deep graphs, no_grad/detach, dtypes, comparisons and bad input.
"""

import numpy as np
import pytest

import tinyft
from tinyft import Tensor, gradcheck
from tinyft.autograd import Function, topological_order, unbroadcast


def rand(*shape, seed=0, low=-1.0, high=1.0, requires_grad=True):
    """A float64 Tensor of uniform numbers in [low, high)."""
    data = np.random.default_rng(seed).uniform(low, high, size=shape)
    return Tensor(data, requires_grad=requires_grad)


def away_from_zero(*shape, seed=0):
    """Magnitudes in [0.5, 1.5) with random signs: for relu and max, whose kinks must not be nudged."""
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return Tensor(data, requires_grad=True)


def distinct(*shape, seed=0):
    """A permutation of well-separated values, so a max has no near-ties for eps to cross."""
    data = np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape) * 0.1
    return Tensor(data.astype(np.float64), requires_grad=True)


# ----------------------------------------------------------------------------------------------------
# Elementwise binary ops, with broadcasting in both directions
# ----------------------------------------------------------------------------------------------------

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
}
SHAPE_PAIRS = [
    ((3, 4), (3, 4)),  # same shape
    ((3, 1), (1, 4)),  # both sides broadcast
    ((4,), (2, 3, 4)),  # leading axes added to a
    ((2, 3, 4), (4,)),  # leading axes added to b
    ((2, 1, 4), (3, 1)),  # mixed
    ((), (2, 3)),  # a scalar tensor
]


@pytest.mark.parametrize("a_shape, b_shape", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("op", BINARY)
def test_binary_op_gradient_matches_finite_differences(op, a_shape, b_shape):
    a = rand(*a_shape, seed=1, low=0.5, high=2.0)  # positive: pow needs log(a), div needs b away from 0
    b = rand(*b_shape, seed=2, low=0.5, high=2.0)
    assert gradcheck(BINARY[op], [a, b])


@pytest.mark.parametrize("op", BINARY)
def test_binary_op_with_python_scalar_on_either_side(op):
    x = rand(2, 3, seed=3, low=0.5, high=2.0)
    assert gradcheck(lambda x: BINARY[op](x, 1.7), [x])
    assert gradcheck(lambda x: BINARY[op](1.7, x), [x])


def test_pow_tensor_to_scalar_power_gradient():
    x = rand(3, 4, seed=4, low=0.5, high=2.0)
    for power in (2, 3, 0.5, -1.5):
        assert gradcheck(lambda x: x**power, [x])


def test_pow_tensor_to_tensor_power_gradient_reaches_both_inputs():
    base, exponent = rand(3, 4, seed=5, low=0.5, high=2.0), rand(3, 4, seed=6, low=-2.0, high=2.0)
    assert gradcheck(lambda a, b: a**b, [base, exponent])
    (base**exponent).sum().backward()
    np.testing.assert_allclose(exponent.grad, base.data**exponent.data * np.log(base.data))


# ----------------------------------------------------------------------------------------------------
# Unary ops
# ----------------------------------------------------------------------------------------------------

UNARY = {
    "neg": (lambda x: -x, rand),
    "exp": (lambda x: x.exp(), rand),
    "log": (lambda x: x.log(), lambda *s, seed: rand(*s, seed=seed, low=0.5, high=2.0)),
    "tanh": (lambda x: x.tanh(), lambda *s, seed: rand(*s, seed=seed, low=-2.0, high=2.0)),
    "relu": (lambda x: x.relu(), away_from_zero),
    "sqrt": (lambda x: x.sqrt(), lambda *s, seed: rand(*s, seed=seed, low=0.5, high=2.0)),
}


@pytest.mark.parametrize("op", UNARY)
def test_unary_op_gradient_matches_finite_differences(op):
    fn, make = UNARY[op]
    assert gradcheck(fn, [make(3, 4, seed=7)])


def test_relu_gradient_is_zero_for_negative_inputs_and_one_for_positive():
    x = Tensor(np.array([-2.0, -0.5, 0.5, 2.0]), requires_grad=True)
    x.relu().sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0, 1.0])


# ----------------------------------------------------------------------------------------------------
# matmul
# ----------------------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),  # 2-D
    ((2, 3, 4), (2, 4, 5)),  # batched 3-D
    ((2, 2, 3, 4), (2, 2, 4, 5)),  # batched 4-D (B, H, T, hd) style
    ((2, 1, 3, 4), (5, 4, 2)),  # batch dims broadcast: (2,1) with (5,)
    ((3, 4), (2, 4, 5)),  # a 2-D matrix shared by a batch
]


@pytest.mark.parametrize("a_shape, b_shape", MATMUL_SHAPES, ids=str)
def test_matmul_gradient_matches_finite_differences(a_shape, b_shape):
    assert gradcheck(lambda a, b: a @ b, [rand(*a_shape, seed=8), rand(*b_shape, seed=9)])


def test_matmul_gradient_is_g_bt_and_at_g():
    a, b = rand(3, 4, seed=10), rand(4, 5, seed=11)
    g = np.random.default_rng(12).standard_normal((3, 5))
    (a @ b).backward(g)
    np.testing.assert_allclose(a.grad, g @ b.data.T)
    np.testing.assert_allclose(b.grad, a.data.T @ g)


def test_matmul_with_a_numpy_array_on_either_side():
    x = rand(3, 4, seed=13)
    m = np.random.default_rng(14).standard_normal((4, 3))
    assert gradcheck(lambda x: x @ m, [x])
    assert gradcheck(lambda x: m @ x, [x])


# ----------------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------------

AXES = [None, 0, 1, -1, -2, (0, 2), (-1, 0), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_reduction_gradient_matches_finite_differences(reduction, axis, keepdims):
    x = distinct(2, 3, 4, seed=15)
    out = getattr(x, reduction)(axis=axis, keepdims=keepdims)
    assert out.shape == getattr(np, reduction if reduction != "max" else "amax")(x.data, axis=axis, keepdims=keepdims).shape
    assert gradcheck(lambda x: getattr(x, reduction)(axis=axis, keepdims=keepdims), [x])


def test_mean_gradient_is_one_over_count():
    x = rand(2, 3, 4, seed=16)
    x.mean(axis=(0, 2)).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(x.shape, 1 / 8))


def test_max_splits_gradient_equally_between_tied_maxima():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, 5.0, 1.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0, 1, 0]])


def test_reduction_with_axis_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        rand(2, 3).sum(axis=3)


# ----------------------------------------------------------------------------------------------------
# Shape ops and indexing
# ----------------------------------------------------------------------------------------------------

SHAPE_OPS = {
    "reshape_tuple": lambda x: x.reshape((4, 6)),
    "reshape_varargs_minus_one": lambda x: x.reshape(3, -1, 2),
    "transpose_reverse": lambda x: x.transpose(),
    "transpose_axes": lambda x: x.transpose(1, 2, 0),
    "transpose_negative_axes": lambda x: x.transpose((0, -1, -2)),
    "T": lambda x: x.T,
    "slice": lambda x: x[:, 1:3],
    "slice_step_and_negative": lambda x: x[::-1, :, ::2],
    "integer": lambda x: x[1],
    "integer_array": lambda x: x[np.array([1, 0])],
    "integer_array_pairs": lambda x: x[np.array([0, 1, 1]), np.array([2, 0, 2])],
    "mixed_slice_and_array": lambda x: x[:, np.array([2, 2, 0]), 1:],
    "tensor_index": lambda x: x[Tensor(np.array([1, 1, 0]))],
}


@pytest.mark.parametrize("op", SHAPE_OPS)
def test_shape_op_and_indexing_gradient_matches_finite_differences(op):
    assert gradcheck(SHAPE_OPS[op], [rand(2, 3, 4, seed=17)])


def test_repeated_integer_indices_accumulate_gradient_by_count():
    x = rand(5, 2, seed=18)
    ids = np.array([3, 1, 3, 3, 0, 1])
    x[ids].sum().backward()
    counts = np.bincount(ids, minlength=5).astype(np.float64)  # row 3 used 3 times, row 1 twice ...
    np.testing.assert_array_equal(x.grad, np.repeat(counts[:, None], 2, axis=1))
    assert gradcheck(lambda x: x[ids] * x[ids], [rand(5, 2, seed=19)])


# ----------------------------------------------------------------------------------------------------
# concatenate, stack, split
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_gradient_matches_finite_differences(axis):
    shapes = {0: [(1, 3, 2), (2, 3, 2)], 1: [(2, 1, 2), (2, 3, 2)], -1: [(2, 3, 1), (2, 3, 3)]}[axis]
    inputs = [rand(*s, seed=20 + i) for i, s in enumerate(shapes)] + [rand(*shapes[0], seed=30)]
    assert gradcheck(lambda a, b, c: tinyft.concatenate([a, b, c], axis=axis), inputs)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack_gradient_matches_finite_differences(axis):
    inputs = [rand(2, 3, seed=21), rand(2, 3, seed=22), rand(2, 3, seed=23)]
    out = tinyft.stack(inputs, axis=axis)
    assert out.shape == np.stack([x.data for x in inputs], axis=axis).shape
    assert gradcheck(lambda a, b, c: tinyft.stack([a, b, c], axis=axis), inputs)


@pytest.mark.parametrize("sections", [3, [1, 4], [2]], ids=str)
@pytest.mark.parametrize("axis", [1, -1])
def test_split_gradient_matches_finite_differences(sections, axis):
    x = rand(2, 6, seed=24)
    pieces = tinyft.split(x, sections, axis=axis)
    for piece, expected in zip(pieces, np.split(x.data, sections, axis=axis)):
        np.testing.assert_array_equal(piece.data, expected)
    weights = [np.random.default_rng(k).standard_normal(p.shape) for k, p in enumerate(pieces)]

    def fn(x):  # every piece used, each with its own weights
        return sum(((p * w).sum() for p, w in zip(tinyft.split(x, sections, axis=axis), weights)), Tensor(0.0))

    assert gradcheck(fn, [x])


def test_split_into_unequal_sections_is_an_error():
    with pytest.raises(ValueError, match="split: axis 1 of size 6 does not divide into 4"):
        tinyft.split(rand(2, 6), 4, axis=1)


# ----------------------------------------------------------------------------------------------------
# Broadcasting, unbroadcast
# ----------------------------------------------------------------------------------------------------


def test_unbroadcast_sums_added_and_stretched_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(unbroadcast(g, (3, 4)), g.sum(axis=0))
    np.testing.assert_array_equal(unbroadcast(g, (3, 1)), g.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(unbroadcast(g, (1, 3, 1)), g.sum(axis=(0, 2), keepdims=True))
    np.testing.assert_array_equal(unbroadcast(g, ()), g.sum())
    assert unbroadcast(g, (2, 3, 4)) is g


def test_broadcast_gradients_sum_over_the_copies():
    a, b = rand(3, 1, seed=25), rand(1, 4, seed=26)
    (a + b).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((3, 1), 4.0))  # each a[i] was copied into 4 columns
    np.testing.assert_array_equal(b.grad, np.full((1, 4), 3.0))  # each b[j] into 3 rows

    v, m = rand(4, seed=27), rand(2, 3, 4, seed=28)
    (v * m).sum().backward()
    np.testing.assert_allclose(v.grad, m.data.sum(axis=(0, 1)))
    np.testing.assert_allclose(m.grad, np.broadcast_to(v.data, m.shape))


def test_scalar_tensor_broadcast_gradient_is_the_sum():
    s, m = Tensor(np.float64(2.0), requires_grad=True), rand(2, 3, seed=29)
    (s * m).sum().backward()
    assert s.grad.shape == ()
    np.testing.assert_allclose(s.grad, m.data.sum())


def test_shape_mismatch_in_elementwise_ops_names_the_op_and_both_shapes():
    a, b = rand(2, 3), rand(4, 3)
    for op, fn in [("add", lambda: a + b), ("sub", lambda: a - b), ("mul", lambda: a * b),
                   ("div", lambda: a / b), ("pow", lambda: a**b)]:
        with pytest.raises(ValueError, match=rf"{op}: shapes \(2, 3\) and \(4, 3\) do not broadcast"):
            fn()


# ----------------------------------------------------------------------------------------------------
# The graph: diamonds, explicit gradients, accumulation, depth
# ----------------------------------------------------------------------------------------------------


def test_diamond_graph_sums_both_paths():
    x0 = np.array([0.3, -1.2, 2.0])
    x = Tensor(x0, requires_grad=True)
    y = x * x + x  # x used twice
    z = y.tanh() + y.exp()  # y used twice
    z.sum().backward()
    dy = (1 - np.tanh(x0**2 + x0) ** 2) + np.exp(x0**2 + x0)
    np.testing.assert_allclose(x.grad, dy * (2 * x0 + 1))
    assert gradcheck(lambda x: ((x * x + x).tanh() + (x * x + x).exp()), [rand(3, seed=30)])


def test_same_tensor_as_both_operands():
    x = rand(3, seed=31)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)


def test_topological_order_lists_each_node_once_after_its_inputs():
    x = rand(3, seed=32)
    y = x * x + x
    z = y.tanh() + y.exp()
    order = topological_order(z)
    assert len(order) == len({id(n) for n in order})
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for inp in node._ctx.inputs if node._ctx else ():
            if inp.requires_grad:
                assert position[id(inp)] < position[id(node)]
    assert order[0] is x and order[-1] is z


def test_non_scalar_backward_uses_the_explicit_gradient():
    x = rand(2, 3, seed=33)
    g = np.random.default_rng(34).standard_normal((2, 3))
    (x * 3.0).backward(g)
    np.testing.assert_allclose(x.grad, 3.0 * g)
    x.grad = None
    (x * 3.0).backward(Tensor(g))  # a Tensor works as the gradient too
    np.testing.assert_allclose(x.grad, 3.0 * g)


def test_two_backward_calls_accumulate_the_gradient():
    x = rand(4, seed=35)
    y = (x * x).sum()
    y.backward(retain_graph=True)  # keep the saved arrays for the second pass
    first = x.grad.copy()
    np.testing.assert_allclose(first, 2 * x.data)  # d sum(x^2) / dx = 2x, by hand
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * first)
    x.zero_grad()
    assert x.grad is None


def test_a_second_backward_through_a_freed_graph_raises_and_changes_nothing():
    x = rand(4, seed=36)
    shared = x * x  # a trunk used by two outputs
    first, second = shared.sum(), (shared * 3.0).sum()
    first.backward()  # frees the trunk's saved arrays
    before = x.grad.copy()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        second.backward()  # its own node is intact, the trunk is not: refused before any work
    np.testing.assert_array_equal(x.grad, before)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        first.backward()


def test_backward_lets_go_of_saved_arrays_and_intermediate_results():
    import weakref

    class Tracked(np.ndarray):  # a plain ndarray cannot be weakly referenced; a subclass can
        pass

    class Square(Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a.view(Tracked))
            return a * a

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved
            return 2 * a * g

    x = rand(3, seed=37)
    saved_probe = []
    hidden = Square.apply(x * 1.0)  # the input of Square is an intermediate result nobody else holds
    saved_probe.append(weakref.ref(hidden._ctx.saved[0]))
    loss = hidden.sum()
    del hidden
    loss.backward()
    assert saved_probe[0]() is None  # the saved array was released once its backward had run
    np.testing.assert_allclose(x.grad, 2 * x.data)
    kept = Square.apply(x * 1.0)
    probe = weakref.ref(kept._ctx.saved[0])
    kept.sum().backward(retain_graph=True)
    assert probe() is not None  # retain_graph=True keeps it


def test_leaf_gradient_is_an_ndarray_of_the_leaf_shape_even_for_scalars():
    x = Tensor(2.0, requires_grad=True)
    (x * x).backward()
    assert isinstance(x.grad, np.ndarray) and x.grad.shape == () and x.grad == 4.0


def test_only_leaves_keep_grad():
    x = rand(3, seed=36)
    y = x * 2.0
    y.sum().backward()
    assert y.grad is None and not y.is_leaf and x.is_leaf


def test_a_chain_of_5000_ops_backpropagates_without_recursion():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001**5000])


def test_inputs_without_requires_grad_get_no_gradient():
    a, b = rand(3, seed=37), rand(3, seed=38, requires_grad=False)
    (a * b).sum().backward()
    assert b.grad is None and a.grad is not None


# ----------------------------------------------------------------------------------------------------
# no_grad, detach, seeds
# ----------------------------------------------------------------------------------------------------


def test_no_grad_records_nothing():
    x = rand(3, seed=39)
    with tinyft.no_grad():
        assert not tinyft.is_grad_enabled()
        y = (x * x).exp().sum()
    assert tinyft.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_works_as_a_decorator_and_restores_on_error():
    @tinyft.no_grad()
    def evaluate(x):
        return x * 2.0

    assert not evaluate(rand(2)).requires_grad
    with pytest.raises(ZeroDivisionError):
        with tinyft.no_grad():
            1 / 0
    assert tinyft.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = rand(3, seed=40)
    y = x * x
    z = (y.detach() * x).sum()  # d z / d x = y (treated as a constant), not 3 x^2
    z.backward()
    np.testing.assert_allclose(x.grad, x.data**2)
    assert not y.detach().requires_grad and y.detach()._ctx is None


def test_manual_seed_makes_the_default_rng_reproducible():
    tinyft.manual_seed(123)
    first = tinyft.default_rng().random(5)
    tinyft.manual_seed(123)
    np.testing.assert_array_equal(tinyft.default_rng().random(5), first)
    state = tinyft.get_rng_state()
    a = tinyft.default_rng().random(3)
    tinyft.set_rng_state(state)
    np.testing.assert_array_equal(tinyft.default_rng().random(3), a)


def test_rng_preserved_restores_the_state_after_the_block_even_on_error():
    tinyft.manual_seed(7)
    expected = tinyft.default_rng().random(3)  # what the next draws are when nothing intervenes
    tinyft.manual_seed(7)
    with tinyft.rng_preserved():
        tinyft.default_rng().random(1000)  # e.g. building a model whose weights are then loaded
    np.testing.assert_array_equal(tinyft.default_rng().random(3), expected)
    tinyft.manual_seed(7)
    with pytest.raises(RuntimeError), tinyft.rng_preserved():
        tinyft.default_rng().random(10)
        raise RuntimeError("failed while building")
    np.testing.assert_array_equal(tinyft.default_rng().random(3), expected)


def test_manual_seed_rejects_a_negative_seed():
    with pytest.raises(ValueError, match="non-negative int"):
        tinyft.manual_seed(-1)


# ----------------------------------------------------------------------------------------------------
# dtypes and comparisons
# ----------------------------------------------------------------------------------------------------

DTYPE_OPS = {
    "add_scalar": lambda x, y: x + 1.5,
    "radd_int": lambda x, y: 2 + x,
    "sub": lambda x, y: x - y,
    "rsub_scalar": lambda x, y: 1.0 - x,
    "mul": lambda x, y: x * y,
    "rmul_scalar": lambda x, y: 0.5 * x,
    "div": lambda x, y: x / y,
    "rdiv_scalar": lambda x, y: 1.0 / x,
    "pow_scalar": lambda x, y: x**2,
    "pow_float": lambda x, y: x**0.5,
    "rpow_scalar": lambda x, y: 2.0**x,
    "pow_tensor": lambda x, y: x**y,
    "neg": lambda x, y: -x,
    "matmul": lambda x, y: x @ y.T,
    "sum": lambda x, y: x.sum(axis=0),
    "mean": lambda x, y: x.mean(),
    "max": lambda x, y: x.max(axis=-1, keepdims=True),
    "exp": lambda x, y: x.exp(),
    "log": lambda x, y: x.log(),
    "tanh": lambda x, y: x.tanh(),
    "relu": lambda x, y: x.relu(),
    "sqrt": lambda x, y: x.sqrt(),
    "reshape": lambda x, y: x.reshape(-1),
    "transpose": lambda x, y: x.T,
    "getitem": lambda x, y: x[np.array([0, 0])],
    "concatenate": lambda x, y: tinyft.concatenate([x, y], axis=1),
    "stack": lambda x, y: tinyft.stack([x, y]),
    "split": lambda x, y: tinyft.split(x, 2, axis=1)[1],
}


OPS_READING_Y = {"sub", "mul", "div", "pow_tensor", "matmul", "concatenate", "stack"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", DTYPE_OPS)
def test_every_op_keeps_the_dtype_forward_and_backward(op, dtype):
    rng = np.random.default_rng(41)
    x = Tensor(rng.uniform(0.5, 2.0, (2, 4)).astype(dtype), requires_grad=True)
    y = Tensor(rng.uniform(0.5, 2.0, (2, 4)).astype(dtype), requires_grad=True)
    out = DTYPE_OPS[op](x, y)
    assert out.dtype == dtype
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype  # every op reads x: a missing gradient is a bug
    if op in OPS_READING_Y:
        assert y.grad is not None and y.grad.dtype == dtype
    else:
        assert y.grad is None  # y is not in this op's graph


def test_comparisons_return_plain_boolean_arrays():
    a, b = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True), Tensor(np.array([3.0, 2.0, 1.0]))
    results = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b, "> 1.5": a > 1.5}
    for name, result in results.items():
        assert type(result) is np.ndarray and result.dtype == bool, name
    np.testing.assert_array_equal(results["<"], [True, False, False])
    np.testing.assert_array_equal(results["=="], [False, True, False])
    np.testing.assert_array_equal(results["> 1.5"], [False, True, True])


def test_tensors_hash_by_identity():
    a, b = Tensor(1.0), Tensor(1.0)
    assert len({a, b}) == 2


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(ValueError, match="only floating-point"):
        Tensor(np.arange(3), requires_grad=True)


# ----------------------------------------------------------------------------------------------------
# Bad input gives errors that say what went wrong
# ----------------------------------------------------------------------------------------------------


def test_backward_on_a_non_scalar_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match=r"output has shape \(2, 3\), not a single number; pass grad="):
        (rand(2, 3) * 2.0).backward()


def test_backward_on_a_tensor_that_does_not_require_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(3)).sum().backward()


def test_backward_with_a_gradient_of_the_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected the output's shape \(2, 3\)"):
        (rand(2, 3) * 2.0).backward(np.ones(3))


def test_matmul_shape_errors_name_the_op_and_both_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) do not align"):
        rand(2, 3) @ rand(4, 5)
    with pytest.raises(ValueError, match=r"matmul: batch dimensions of \(2, 3, 4\) and \(3, 4, 5\)"):
        rand(2, 3, 4) @ rand(3, 4, 5)
    with pytest.raises(ValueError, match=r"matmul: both operands need at least 2 dimensions, got shapes \(3,\)"):
        rand(3) @ rand(3, 2)


def test_reshape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)"):
        rand(2, 3).reshape(4, 2)


def test_concatenate_and_stack_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"concatenate: shapes \[\(2, 3\), \(2, 4\)\] along axis 0"):
        tinyft.concatenate([rand(2, 3), rand(2, 4)], axis=0)
    with pytest.raises(ValueError, match=r"stack: shapes \[\(2, 3\), \(3, 2\)\]"):
        tinyft.stack([rand(2, 3), rand(3, 2)])


def test_transpose_with_a_bad_permutation_is_an_error():
    with pytest.raises(ValueError, match="not a permutation"):
        rand(2, 3, 4).transpose(0, 0, 1)


def test_a_custom_function_returning_the_wrong_number_of_gradients_is_caught():
    class Broken(tinyft.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, g):
            return (g,)  # forgot b's gradient

    with pytest.raises(RuntimeError, match="Broken.backward returned 1 gradients for 2 inputs"):
        Broken.apply(rand(3), rand(3)).sum().backward()


def test_numpy_arrays_and_numpy_scalars_on_the_left_defer_to_the_tensor():
    x = rand(2, 3, seed=44)
    m = np.random.default_rng(45).standard_normal((2, 3))
    for result in (m * x, m + x, m - x, m / x, np.float64(2.0) * x, np.float32(2.0) - x, np.ones((4, 2)) @ x):
        assert isinstance(result, Tensor) and result.requires_grad
    assert gradcheck(lambda x: m * x + m / (x + 3.0), [rand(2, 3, seed=46)])
    assert type(m < x) is np.ndarray and (m < x).dtype == bool
