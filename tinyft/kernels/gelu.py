"""GELU, forward and backward, two forms: the tanh approximation (GPT-2) and the exact x Phi(x) (nanoGPT's
nn.GELU()); for each the NumPy twin and the fused Numba kernel.

Map of this file:
  gelu_forward_reference / _numba     x (n,) -> y (n,)      y = 0.5 x (1 + tanh(u)),  u = c (x + a x^3)
  gelu_backward_reference / _numba    g, x (n,) -> dx (n,)  dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
  gelu_exact_forward_reference / _numba   y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
  gelu_exact_backward_reference / _numba  dy/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
  gelu_forward / gelu_backward, gelu_exact_forward / gelu_exact_backward   dispatch on tinyft.kernels.current()
  _tanh_forward, _tanh_backward, _exact_forward, _exact_backward   the compiled loops, serial and nogil,
                                      over one block of elements; on_blocks(kernel, *inputs) allocates the
                                      output and hands each of tinyft's threads its own slices of it all
Why the kernel is fast: NumPy evaluates the formula as ~8 whole-array passes with temporaries; the
kernel reads x once, keeps every intermediate in registers and writes y once. One catch: Numba's
math.tanh is a scalar libm call (~15 ns each, benchmarks/bench_overheads.py), so the kernels call
_math.tanh: for float32 a rational approximation that LLVM vectorizes (error <= 4.9 float32 ulp,
docs/kernels.md), for float64 libm's tanh. The constants are cast to x's dtype (_math.as_type) so
float32 data is computed in float32: 16 numbers per AVX-512 vector instead of 8 (measured, 2048 x 512
forward: 0.97 -> 0.55 ms, docs/kernels.md).
The backward recomputes t = tanh(u) from x instead of saving it (one array less to keep and read).
The exact GELU works the same way with _math.erf (float32: a rational approximation, float64: libm's erf)
and _math.exp_nonpositive. Measured in float32 against float64 math on 4.4 million x in [-12, 12]: forward
error <= 8.4e-7 * max(|y|, 1), backward <= 2.3e-7 (a few float32 ulp); 2048 x 512 float32 on 2 shared cores,
best of 100: forward 0.47 ms, backward 0.86 ms (tanh: 0.54 and 0.66). NumPy has no erf, so the twin calls
math.erf once per element: the spec, not fast (~125 ms for the same array). benchmarks/check_gelu_exact.py.
"""

import math

import numpy as np

from ._backend import current, njit, parallel_rows
from ._math import as_type, erf, exp_nonpositive, tanh

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715
GRAIN = 1 << 14  # elements: fewer than this per task and handing them to another thread costs more than it saves


def gelu_forward_reference(x):
    u = GELU_C * (x + GELU_A * x * x * x)
    return (0.5 * x * (1.0 + np.tanh(u))).astype(x.dtype, copy=False)


def gelu_backward_reference(g, x):
    u = GELU_C * (x + GELU_A * x * x * x)
    t = np.tanh(u)
    dydx = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)
    return (g * dydx).astype(x.dtype, copy=False)


@njit(nogil=True)
def _tanh_forward(x, y):
    """y = the tanh GELU of x, for one block of elements: a serial loop that releases the GIL
    (gelu_forward_numba hands each of tinyft's threads its own slices of x and y)."""
    c, a, half, one = as_type(GELU_C, x), as_type(GELU_A, x), as_type(0.5, x), as_type(1.0, x)
    for i in range(x.shape[0]):
        xi = x[i]
        t = tanh(c * (xi + a * xi * xi * xi), x)
        y[i] = half * xi * (one + t)


@njit(nogil=True)
def _tanh_backward(g, x, dx):
    c, a, half, one, three = as_type(GELU_C, x), as_type(GELU_A, x), as_type(0.5, x), as_type(1.0, x), as_type(3.0, x)
    for i in range(x.shape[0]):
        xi = x[i]
        t = tanh(c * (xi + a * xi * xi * xi), x)
        dx[i] = g[i] * (half * (one + t) + half * xi * (one - t * t) * c * (one + three * a * xi * xi))


def on_blocks(kernel, *inputs):
    """out = np.empty_like(inputs[-1]) filled block by block on tinyft's threads: for each block start:stop,
    kernel(*(a[start:stop] for a in inputs), out[start:stop]). Returns out.
    Why slices and not (start, stop) arguments: a loop over range(x.shape[0]) starts at 0, so Numba's
    index is provably non-negative and needs no wrap-around check for negative indices; from a `start`
    argument it cannot tell and keeps the check in every access (`python benchmarks/bench_vectorize.py`:
    2^20 float32 exact-GELU forward on one thread, 1.67 ms from start to stop, 0.37 ms over a slice)."""
    out = np.empty_like(inputs[-1])  # (n,)

    def block(start, stop):
        kernel(*(a[start:stop] for a in inputs), out[start:stop])

    parallel_rows(block, out.shape[0], GRAIN)
    return out


def gelu_forward_numba(x):
    return on_blocks(_tanh_forward, x)  # y (n,)


def gelu_backward_numba(g, x):
    return on_blocks(_tanh_backward, g, x)  # dx (n,)


def gelu_forward(x):
    """x: a 1-D C-contiguous float array (reshape(-1) of any tensor) -> y of the same shape."""
    if current() == "numba":
        return gelu_forward_numba(x)
    return gelu_forward_reference(x)


def gelu_backward(g, x):
    if current() == "numba":
        return gelu_backward_numba(g, x)
    return gelu_backward_reference(g, x)


# --- the exact GELU: x Phi(x), Phi the standard normal CDF ---------------------------------------------------

SQRT_HALF = math.sqrt(0.5)  # 1 / sqrt(2): Phi(x) = 0.5 (1 + erf(x / sqrt 2))
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
PHI_ZERO_FROM = 87.0  # x^2 / 2 above this: exp(-x^2 / 2) < 1.7e-38, below float32's normal numbers; phi is 0
_erf_each = np.frompyfunc(math.erf, 1, 1)  # math.erf on every element (NumPy has no erf)


def erf_reference(x):
    """erf of every element, computed in float64 by math.erf, returned in x's dtype."""
    return np.asarray(_erf_each(np.asarray(x, dtype=np.float64)), dtype=np.float64).astype(x.dtype)


def gelu_exact_forward_reference(x):
    return (0.5 * x * (1.0 + erf_reference(x * SQRT_HALF))).astype(x.dtype, copy=False)


def gelu_exact_backward_reference(g, x):
    cdf = 0.5 * (1.0 + erf_reference(x * SQRT_HALF))  # Phi(x)
    with np.errstate(over="ignore"):  # x^2 may overflow to inf for huge x: exp(-inf) = 0 is right
        pdf = INV_SQRT_2PI * np.exp(-0.5 * x * x)  # phi(x)
    return (g * (cdf + x * pdf)).astype(x.dtype, copy=False)


@njit(nogil=True)
def _exact_forward(x, y):
    r, half, one = as_type(SQRT_HALF, x), as_type(0.5, x), as_type(1.0, x)
    for i in range(x.shape[0]):
        xi = x[i]
        y[i] = half * xi * (one + erf(xi * r, x))


@njit(nogil=True)
def _exact_backward(g, x, dx):
    r, half, one = as_type(SQRT_HALF, x), as_type(0.5, x), as_type(1.0, x)
    k, zero_from, zero = as_type(INV_SQRT_2PI, x), as_type(PHI_ZERO_FROM, x), as_type(0.0, x)
    for i in range(x.shape[0]):
        xi = x[i]
        h = half * xi * xi  # x^2 / 2 >= 0
        cdf = half * (one + erf(xi * r, x))  # Phi(x)
        pdf = zero if h > zero_from else k * exp_nonpositive(-h, x)  # phi(x); 0 where exp underflows
        dx[i] = g[i] * (cdf + xi * pdf)


def gelu_exact_forward_numba(x):
    return on_blocks(_exact_forward, x)  # y (n,)


def gelu_exact_backward_numba(g, x):
    return on_blocks(_exact_backward, g, x)  # dx (n,)


def gelu_exact_forward(x):
    """x: a 1-D C-contiguous float array (reshape(-1) of any tensor) -> x Phi(x) of the same shape."""
    if current() == "numba":
        return gelu_exact_forward_numba(x)
    return gelu_exact_forward_reference(x)


def gelu_exact_backward(g, x):
    if current() == "numba":
        return gelu_exact_backward_numba(g, x)
    return gelu_exact_backward_reference(g, x)
