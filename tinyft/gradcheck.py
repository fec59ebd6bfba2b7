"""gradcheck: compare the engine's gradients with central finite differences, in float64.

Map of this file:
  GradcheckError    raised on the first disagreement; names the input, the index and both values
  gradcheck(...)    projects fn's output on a fixed random direction r, so one scalar L = sum(fn(x) * r)
                    tests every output at once, then checks dL/dx[i] against (L(x+eps) - L(x-eps)) / 2eps
Why float64: the difference quotient loses about a third of the significant digits at its best step (error
~ eps^2 from truncation plus ~ u/eps from rounding, smallest near eps = u^(1/3)); float32 has 7 digits, so at
best about 5 remain (notebooks/02_gradcheck.ipynb measures it), and at this file's eps = 1e-6 about one.
"""

import numpy as np

from .autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, max_elements=200, seed=0):
    """Check the gradients of `fn(*inputs)` with respect to every input that requires grad.

    fn            takes the Tensors in `inputs` and returns a Tensor (any shape)
    inputs        a sequence of Tensors; those with requires_grad=True are checked (they must be float64)
    eps           step of the central difference
    atol, rtol    an element passes when |analytic - numeric| <= atol + rtol * |numeric|
    max_elements  inputs larger than this are checked on a seeded random sample of this many elements
    Returns True when every checked element agrees; raises GradcheckError naming the first that does not.
    """
    inputs = list(inputs)
    if not all(isinstance(x, Tensor) for x in inputs):
        raise TypeError("gradcheck: inputs must be Tensors (wrap arrays with tinyft.Tensor(..., requires_grad=True))")
    checked = [i for i, x in enumerate(inputs) if x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            digits_at_eps = max(0.0, -np.log10(np.finfo(np.float32).eps / eps))  # rounding error ~ u / eps
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; finite differences need float64. "
                            f"In float32 a difference quotient keeps about 5 significant digits at its best step and "
                            f"about {digits_at_eps:.0f} at eps={eps:g} (rounding ~ u/eps), too few to tell a right "
                            f"gradient from a slightly wrong one. Convert with Tensor(x.astype(np.float64), "
                            f"requires_grad=True).")

    rng = np.random.default_rng(seed)

    # Analytic side: L = sum(out * r) for a fixed random r, then one backward pass.
    out = fn(*inputs)
    r = rng.standard_normal(out.shape)
    saved_grads = [x.grad for x in inputs]
    for x in inputs:
        x.grad = None
    out.backward(r)
    analytic = [np.zeros_like(x.data) if x.grad is None else x.grad for x in inputs]
    for x, g in zip(inputs, saved_grads):
        x.grad = g  # leave the caller's gradients as they were

    def projected_loss():
        with no_grad():
            return float(np.sum(fn(*inputs).data * r))

    # Numeric side: nudge one element at a time, up and down.
    for i in checked:
        x = inputs[i].data
        flat_positions = np.arange(x.size)
        if x.size > max_elements:
            flat_positions = np.sort(rng.choice(x.size, size=max_elements, replace=False))
        for flat in flat_positions:
            index = np.unravel_index(flat, x.shape)
            original = x[index]
            x[index] = original + eps
            loss_plus = projected_loss()
            x[index] = original - eps
            loss_minus = projected_loss()
            x[index] = original
            numeric = (loss_plus - loss_minus) / (2 * eps)
            exact = analytic[i][index]
            if not abs(exact - numeric) <= atol + rtol * abs(numeric):  # `not <=` also catches NaN
                raise GradcheckError(
                    f"gradcheck: input {i} (shape {x.shape}) at index {tuple(int(j) for j in index)}: "
                    f"analytic gradient {exact:.8g} but finite difference {numeric:.8g} "
                    f"(error {abs(exact - numeric):.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|)")
    return True
