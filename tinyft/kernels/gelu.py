"""GELU, tanh approximation (GPT-2), forward and backward: the NumPy twin and the fused Numba kernel.

Map of this file:
  gelu_forward_reference / _numba     x (n,) -> y (n,)      y = 0.5 x (1 + tanh(u)),  u = c (x + a x^3)
  gelu_backward_reference / _numba    g, x (n,) -> dx (n,)  dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
  gelu_forward / gelu_backward        dispatch on tinyft.kernels.current()
Why the kernel is fast: NumPy evaluates the formula as ~8 whole-array passes with temporaries; the
kernel reads x once, keeps every intermediate in registers and writes y once. One catch: Numba's
math.tanh is a scalar libm call (~15 ns each, benchmarks/bench_overheads.py), so the kernels call
_math.tanh: for float32 a rational approximation that LLVM vectorizes (error <= 4.9 float32 ulp,
docs/kernels.md), for float64 libm's tanh. The constants are cast to x's dtype (_math.as_type) so
float32 data is computed in float32: 16 numbers per AVX-512 vector instead of 8 (measured, 2048 x 512
forward: 0.97 -> 0.55 ms, docs/kernels.md).
The backward recomputes t = tanh(u) from x instead of saving it (one array less to keep and read).
"""

import math

import numpy as np
from numba import prange

from ._backend import current, njit
from ._math import as_type, tanh

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


def gelu_forward_reference(x):
    u = GELU_C * (x + GELU_A * x * x * x)
    return (0.5 * x * (1.0 + np.tanh(u))).astype(x.dtype, copy=False)


def gelu_backward_reference(g, x):
    u = GELU_C * (x + GELU_A * x * x * x)
    t = np.tanh(u)
    dydx = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)
    return (g * dydx).astype(x.dtype, copy=False)


@njit(parallel=True)
def gelu_forward_numba(x):
    c, a, half, one = as_type(GELU_C, x), as_type(GELU_A, x), as_type(0.5, x), as_type(1.0, x)
    y = np.empty_like(x)
    for i in prange(x.shape[0]):
        xi = x[i]
        t = tanh(c * (xi + a * xi * xi * xi), x)
        y[i] = half * xi * (one + t)
    return y


@njit(parallel=True)
def gelu_backward_numba(g, x):
    c, a, half, one, three = as_type(GELU_C, x), as_type(GELU_A, x), as_type(0.5, x), as_type(1.0, x), as_type(3.0, x)
    dx = np.empty_like(x)
    for i in prange(x.shape[0]):
        xi = x[i]
        t = tanh(c * (xi + a * xi * xi * xi), x)
        dx[i] = g[i] * (half * (one + t) + half * xi * (one - t * t) * c * (one + three * a * xi * xi))
    return dx


def gelu_forward(x):
    """x: a 1-D C-contiguous float array (reshape(-1) of any tensor) -> y of the same shape."""
    if current() == "numba":
        return gelu_forward_numba(x)
    return gelu_forward_reference(x)


def gelu_backward(g, x):
    if current() == "numba":
        return gelu_backward_numba(g, x)
    return gelu_backward_reference(g, x)
