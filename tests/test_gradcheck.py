"""The gradient checker (tinyft/gradcheck.py) is itself tested: it must fail loudly on a wrong gradient.

Map: a Function whose backward is off by 1% is rejected with a message naming input, index and values;
a correct one passes; float32 and inputs without requires_grad are refused; .grad is left untouched;
large inputs are sampled deterministically.
"""

import re

import numpy as np
import pytest

import tinyft
from tinyft import Function, GradcheckError, Tensor, gradcheck


def make_cube(scale):
    """A Function computing x**3 whose backward returns `scale` times the true gradient 3 x**2."""

    class Cube(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved
            return scale * 3 * x**2 * g

    return Cube


def rand(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).uniform(0.5, 1.5, size=shape), requires_grad=True)


def test_gradcheck_returns_true_on_a_correct_function():
    assert gradcheck(make_cube(1.0).apply, [rand(3, 4)]) is True


def test_gradcheck_rejects_a_backward_wrong_by_one_percent():
    with pytest.raises(GradcheckError) as info:
        gradcheck(make_cube(1.01).apply, [rand(3, 4, seed=1)])
    message = str(info.value)
    match = re.search(r"input (\d+) \(shape \(3, 4\)\) at index \((\d+), (\d+)\): "
                      r"analytic gradient (\S+) but finite difference (\S+) \(error", message)
    assert match, message
    i, row, col, analytic, numeric = match.groups()
    assert i == "0"
    x = np.random.default_rng(1).uniform(0.5, 1.5, size=(3, 4))
    true_grad = 3 * x[int(row), int(col)] ** 2
    # the reported numbers are the wrong analytic gradient and the (right) finite difference; since
    # gradcheck projects on a random r, both are scaled by the same r[index] (a scalar per element here)
    assert float(analytic) / float(numeric) == pytest.approx(1.01, rel=1e-4)
    assert abs(float(numeric)) <= 4 * true_grad  # r ~ N(0, 1): a plausible multiple of the true gradient


def test_gradcheck_names_the_second_input_when_only_it_is_wrong():
    cube_wrong = make_cube(1.01)
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(2,\)\) at index \(0,\)"):
        gradcheck(lambda a, b: a * 2.0 + cube_wrong.apply(b).sum(), [rand(3, seed=2), rand(2, seed=3)])


def test_gradcheck_rejects_a_gradient_that_is_nan():
    class NanGrad(Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return np.full_like(g, np.nan)

    with pytest.raises(GradcheckError, match="analytic gradient nan"):
        gradcheck(NanGrad.apply, [rand(2)])


def test_gradcheck_refuses_float32_inputs_and_says_why():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="input 0 has dtype float32; finite differences need float64"):
        gradcheck(lambda x: x * 2.0, [x])


def test_gradcheck_refuses_inputs_that_do_not_require_grad():
    with pytest.raises(ValueError, match="no input has requires_grad=True"):
        gradcheck(lambda x: x * 2.0, [Tensor(np.ones(3))])


def test_gradcheck_refuses_arrays_that_are_not_tensors():
    with pytest.raises(TypeError, match="inputs must be Tensors"):
        gradcheck(lambda x: x * 2.0, [np.ones(3)])


def test_gradcheck_checks_only_inputs_that_require_grad():
    frozen = Tensor(np.ones(3))  # float32 would be refused only if it required grad
    frozen32 = Tensor(np.ones(3, dtype=np.float32))
    assert gradcheck(lambda x, c, d: x * c + d, [rand(3), frozen, frozen32])


def test_gradcheck_leaves_existing_grad_untouched():
    x = rand(3, 2, seed=4)
    previous = np.full((3, 2), 7.0)
    x.grad = previous
    data_before = x.data.copy()
    assert gradcheck(lambda x: x.tanh(), [x])
    assert x.grad is previous and np.all(previous == 7.0)
    np.testing.assert_array_equal(x.data, data_before)  # every nudge was undone


def test_gradcheck_samples_large_inputs_deterministically():
    calls = []

    def counting_tanh(x):
        calls.append(1)
        return x.tanh()

    x = rand(40, 40, seed=5)  # 1600 elements
    assert gradcheck(counting_tanh, [x], max_elements=30)
    assert len(calls) == 1 + 2 * 30  # one analytic pass, two evaluations per sampled element

    def first_failure(seed):
        """The index a wrong gradient is first reported at: it depends on the sample only."""
        with pytest.raises(GradcheckError) as info:
            gradcheck(make_cube(1.01).apply, [rand(40, 40, seed=5)], max_elements=30, seed=seed)
        return re.search(r"at index \((\d+, \d+)\)", str(info.value)).group(1)

    assert first_failure(0) == first_failure(0)
    assert {first_failure(s) for s in range(5)} != {first_failure(0)}  # a different seed, a different sample


def test_gradcheck_catches_a_wrong_gradient_on_a_sampled_input():
    with pytest.raises(GradcheckError):
        gradcheck(make_cube(1.01).apply, [rand(50, 50, seed=6)], max_elements=10)


def test_gradcheck_works_through_a_scalar_output_and_a_user_function():
    assert gradcheck(lambda x: tinyft.functional.softmax(x).log().sum() * 0.5, [rand(2, 5, seed=7)])
