"""Layer norm over the last axis, forward and backward: the NumPy twin and the fused Numba kernel.

Map of this file:
  layernorm_forward_reference / _numba    x (N, C), w (C,), b (C,) -> y (N, C), mean (N,), rstd (N,)
  layernorm_backward_reference / _numba   g (N, C) -> dx (N, C), dw (C,), db (C,)
  layernorm_forward / layernorm_backward  dispatch on tinyft.kernels.current()
Why the kernel is fast: NumPy makes ~8 passes over (N, C) with a temporary each (mean, x - mean, square,
mean, sqrt, divide, scale, shift); the kernel reads each row twice from L1 and writes it once.
The backward (derived in docs/kernels.md): dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
"""

import math

import numpy as np
from numba import prange

from ._backend import current, njit
from ._math import as_type

ROWS_PER_CHUNK = 64  # rows summed into one partial dw/db; a fixed size keeps results thread-count independent


def layernorm_forward_reference(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)  # (N, 1)
    xc = x - mean  # (N, C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (N, 1) biased variance
    rstd = 1.0 / np.sqrt(var + eps)  # (N, 1)
    y = xc * rstd * w + b  # (N, C)
    return y, mean[:, 0], rstd[:, 0]


def layernorm_backward_reference(g, x, w, mean, rstd):
    xhat = (x - mean[:, None]) * rstd[:, None]  # (N, C)
    dw = (g * xhat).sum(axis=0)  # (C,)
    db = g.sum(axis=0)  # (C,)
    dxhat = g * w  # (N, C)
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dw, db


@njit(parallel=True)
def layernorm_forward_numba(x, w, b, eps):
    N, C = x.shape
    y = np.empty_like(x)
    mean = np.empty(N, dtype=x.dtype)
    rstd = np.empty(N, dtype=x.dtype)
    zero, one = as_type(0.0, x), as_type(1.0, x)
    for n in prange(N):  # rows are independent: one thread takes a contiguous block of them
        s = zero  # accumulators in x's dtype: 16 float32 lanes per vector; fast-math keeps 16 partial sums,
        for c in range(C):  # and the variance is a second pass over (x - mean), so no digits cancel
            s += x[n, c]
        mu = s / C
        ss = zero
        for c in range(C):
            d = x[n, c] - mu
            ss += d * d
        r = one / math.sqrt(ss / C + eps)
        mean[n] = mu
        rstd[n] = r
        for c in range(C):
            y[n, c] = (x[n, c] - mu) * r * w[c] + b[c]
    return y, mean, rstd


@njit(parallel=True)
def layernorm_backward_numba(g, x, w, mean, rstd):
    N, C = x.shape
    zero = as_type(0.0, x)
    dx = np.empty_like(x)
    n_chunks = (N + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK
    # Per-chunk partial sums: no two threads share a row. np.empty, zeroed inside the prange loop: under
    # parallel=True each np.zeros would become a parallel loop of its own, one more launch of the threads
    # (Numba's parallel diagnostics show it: docs/kernels.md).
    dw_part = np.empty((n_chunks, C), dtype=x.dtype)
    db_part = np.empty((n_chunks, C), dtype=x.dtype)
    for chunk in prange(n_chunks):
        dw_part[chunk, :] = 0.0
        db_part[chunk, :] = 0.0
        for n in range(chunk * ROWS_PER_CHUNK, min(N, (chunk + 1) * ROWS_PER_CHUNK)):
            m, r = mean[n], rstd[n]
            sum_dxhat = zero  # in x's dtype, as in the forward
            sum_dxhat_xhat = zero
            for c in range(C):
                xhat = (x[n, c] - m) * r
                dxhat = g[n, c] * w[c]
                sum_dxhat += dxhat
                sum_dxhat_xhat += dxhat * xhat
                dw_part[chunk, c] += g[n, c] * xhat
                db_part[chunk, c] += g[n, c]
            a = sum_dxhat / C
            bb = sum_dxhat_xhat / C
            for c in range(C):
                xhat = (x[n, c] - m) * r
                dx[n, c] = r * (g[n, c] * w[c] - a - xhat * bb)
    dw = np.empty(C, dtype=x.dtype)  # a short serial sum over the partials, in plain loops (an array
    db = np.empty(C, dtype=x.dtype)  # expression here would become one more parallel region)
    for c in range(C):
        sum_w, sum_b = 0.0, 0.0
        for chunk in range(n_chunks):
            sum_w += dw_part[chunk, c]
            sum_b += db_part[chunk, c]
        dw[c] = sum_w
        db[c] = sum_b
    return dx, dw, db


def layernorm_forward(x, w, b, eps):
    """x (N, C), w (C,), b (C,), all one float dtype and C-contiguous -> (y, mean, rstd)."""
    if current() == "numba":
        return layernorm_forward_numba(x, w, b, x.dtype.type(eps))
    return layernorm_forward_reference(x, w, b, x.dtype.type(eps))


def layernorm_backward(g, x, w, mean, rstd):
    """-> (dx, dw, db) for the forward above."""
    if current() == "numba":
        return layernorm_backward_numba(g, x, w, mean, rstd)
    return layernorm_backward_reference(g, x, w, mean, rstd)
