"""Property tests (hypothesis): over random shapes, the engine's gradients equal their closed forms.

Map: broadcastable shape pairs for elementwise ops (d sum(a*b)/da = b summed over the axes a was copied
along, with those axes found here by NumPy's rule, independently of the library's unbroadcast), random axes
for sum/mean/max, and a float64 gradcheck on small random shapes.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyft import Tensor, gradcheck

SETTINGS = settings(max_examples=40, deadline=None)

broadcastable_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4)


def copied_axes(in_shape, out_shape):
    """The axes of out_shape along which NumPy copied an input of in_shape: every leading axis the input
    lacks, and every axis where the input has size 1 and the output does not."""
    lead = len(out_shape) - len(in_shape)
    padded = (1,) * lead + tuple(in_shape)
    return tuple(axis for axis, (n_in, n_out) in enumerate(zip(padded, out_shape))
                 if axis < lead or (n_in == 1 and n_out != 1))


def summed_back(grad, in_shape, out_shape):
    """The gradient of an input that was broadcast: the sum over its copies (np.sum, then its own shape)."""
    return np.sum(np.broadcast_to(grad, out_shape), axis=copied_axes(in_shape, out_shape)).reshape(in_shape)


def positive(shape, seed):
    return np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)


@SETTINGS
@given(shapes=broadcastable_pairs, seed=st.integers(0, 2**16))
def test_elementwise_gradients_equal_closed_forms_under_broadcasting(shapes, seed):
    (a_shape, b_shape), out_shape = shapes.input_shapes, shapes.result_shape
    a0, b0 = positive(a_shape, seed), positive(b_shape, seed + 1)
    g = np.random.default_rng(seed + 2).standard_normal(out_shape)
    closed_forms = {  # op -> (dL/da, dL/db) before summing over the copies, for L = sum(g * op(a, b))
        "add": (lambda a, b: a + b, g, g),
        "sub": (lambda a, b: a - b, g, -g),
        "mul": (lambda a, b: a * b, g * b0, g * a0),
        "div": (lambda a, b: a / b, g / b0, -g * a0 / b0**2),
        "pow": (lambda a, b: a**b, g * b0 * a0 ** (b0 - 1), g * a0**b0 * np.log(a0)),
    }
    for name, (op, grad_a, grad_b) in closed_forms.items():
        a, b = Tensor(a0.copy(), requires_grad=True), Tensor(b0.copy(), requires_grad=True)
        out = op(a, b)
        assert out.shape == out_shape, name
        out.backward(g)
        assert a.grad.shape == a_shape and b.grad.shape == b_shape, name
        np.testing.assert_allclose(a.grad, summed_back(grad_a, a_shape, out_shape), rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(b.grad, summed_back(grad_b, b_shape, out_shape), rtol=1e-10, err_msg=name)


@SETTINGS
@given(shapes=broadcastable_pairs, seed=st.integers(0, 2**16))
def test_elementwise_gradcheck_on_random_broadcast_shapes(shapes, seed):
    a_shape, b_shape = shapes.input_shapes
    a = Tensor(positive(a_shape, seed), requires_grad=True)
    b = Tensor(positive(b_shape, seed + 1), requires_grad=True)
    assert gradcheck(lambda a, b: (a * b + a / b) ** 1.5 - a, [a, b])


@st.composite
def shape_and_axis(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        axis = tuple(ax - ndim if draw(st.booleans()) else ax for ax in chosen)  # mix negative axes in
    return shape, axis, draw(st.booleans())


@SETTINGS
@given(case=shape_and_axis(), seed=st.integers(0, 2**16))
def test_reduction_gradients_equal_closed_forms(case, seed):
    shape, axis, keepdims = case
    rng = np.random.default_rng(seed)
    x0 = rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64)  # distinct: no ties
    expected_out = np.sum(x0, axis=axis, keepdims=True)
    g_kept = rng.standard_normal(expected_out.shape)  # the gradient with the reduced axes kept as size 1
    g = g_kept if keepdims else g_kept.reshape(np.sum(x0, axis=axis).shape)
    count = x0.size // expected_out.size

    for name, closed_form in {
        "sum": np.broadcast_to(g_kept, shape),
        "mean": np.broadcast_to(g_kept / count, shape),
        "max": np.where(x0 == np.max(x0, axis=axis, keepdims=True), g_kept, 0.0),
    }.items():
        x = Tensor(x0.copy(), requires_grad=True)
        out = getattr(x, name)(axis=axis, keepdims=keepdims)
        np.testing.assert_allclose(out.data, getattr(np, name)(x0, axis=axis, keepdims=keepdims), err_msg=name)
        out.backward(g)
        np.testing.assert_allclose(x.grad, closed_form, rtol=1e-12, err_msg=name)


@SETTINGS
@given(case=shape_and_axis(), seed=st.integers(0, 2**16))
def test_reduction_gradcheck_on_random_shapes_and_axes(case, seed):
    shape, axis, keepdims = case
    x0 = np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1
    x = Tensor(x0.astype(np.float64), requires_grad=True)
    assert gradcheck(lambda x: x.max(axis=axis, keepdims=keepdims) * x.mean(axis=axis, keepdims=keepdims)
                     + x.sum(axis=axis, keepdims=keepdims).tanh(), [x])


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4), seed=st.integers(0, 2**16))
def test_transpose_and_reshape_gradients_are_the_inverse_permutation(shape, seed):
    rng = np.random.default_rng(seed)
    axes = tuple(rng.permutation(len(shape)))
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    out = x.transpose(*axes).reshape(-1)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    np.testing.assert_array_equal(x.grad, np.transpose(g.reshape(np.transpose(x.data, axes).shape), np.argsort(axes)))


def test_copied_axes_helper_by_hand():
    assert copied_axes((3, 1), (2, 3, 4)) == (0, 2)  # a new leading axis, and the size-1 axis
    assert copied_axes((), (2, 3)) == (0, 1)
    assert copied_axes((2, 3), (2, 3)) == ()
    assert copied_axes((1, 1), (1, 5)) == (1,)  # size 1 in both: nothing was copied along axis 0
    np.testing.assert_array_equal(summed_back(np.arange(6.0).reshape(2, 3), (3,), (2, 3)), [3.0, 5.0, 7.0])
