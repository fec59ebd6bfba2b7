"""Layer norm over the last axis, forward and backward: the NumPy twin and the fused Numba kernel.

Map of this file:
  layernorm_forward_reference / _numba    x (N, C), w (C,), b (C,) -> y (N, C), mean (N,), rstd (N,)
  layernorm_backward_reference / _numba   g (N, C) -> dx (N, C), dw (C,), db (C,)
  _forward_rows, _backward_chunks         the compiled loops: serial, nogil; the _numba functions hand
                                          blocks of rows to tinyft's threads (kernels/_backend.parallel_rows)
  layernorm_forward / layernorm_backward  dispatch on tinyft.kernels.current()
Why the kernel is fast: NumPy makes ~8 passes over (N, C) with a temporary each (mean, x - mean, square,
mean, sqrt, divide, scale, shift); the kernel reads each row twice from L1 and writes it once.
The backward (derived in docs/kernels.md): dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
"""

import functools
import math

import numpy as np

from ._backend import current, njit, parallel_rows
from ._math import as_type

ROWS_PER_CHUNK = 64  # rows summed into one partial dw/db; a fixed size keeps results thread-count independent
GRAIN = 256  # rows: fewer than this per task and handing them to another thread costs more than it saves


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


@njit(nogil=True)
def _forward_rows(x, w, b, eps, y, mean, rstd, start, stop):
    """Rows start..stop-1 of the forward, written into y, mean, rstd. One serial loop that releases the GIL:
    layernorm_forward_numba hands blocks of rows to tinyft's threads."""
    C = x.shape[1]
    zero, one = as_type(0.0, x), as_type(1.0, x)
    for n in range(start, stop):
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


def layernorm_forward_numba(x, w, b, eps):
    N = x.shape[0]
    y = np.empty_like(x)  # (N, C)
    mean = np.empty(N, dtype=x.dtype)  # (N,)
    rstd = np.empty(N, dtype=x.dtype)  # (N,)
    parallel_rows(functools.partial(_forward_rows, x, w, b, eps, y, mean, rstd), N, GRAIN)  # rows are independent
    return y, mean, rstd


@njit(nogil=True)
def _backward_chunks(g, x, w, mean, rstd, dx, dw_part, db_part, first, stop):
    """Chunks first..stop-1 of ROWS_PER_CHUNK rows: dx of their rows, and each chunk's own partial sums of
    dw and db in its row of dw_part and db_part, so no two threads ever add into the same numbers."""
    N, C = x.shape
    zero = as_type(0.0, x)
    for chunk in range(first, stop):
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


def layernorm_backward_numba(g, x, w, mean, rstd):
    N, C = x.shape
    n_chunks = -(-N // ROWS_PER_CHUNK)
    dx = np.empty_like(x)  # (N, C)
    dw_part = np.empty((n_chunks, C), dtype=x.dtype)  # (n_chunks, C) one partial sum per chunk of rows
    db_part = np.empty((n_chunks, C), dtype=x.dtype)  # (n_chunks, C)
    work = functools.partial(_backward_chunks, g, x, w, mean, rstd, dx, dw_part, db_part)
    parallel_rows(work, n_chunks, max(1, GRAIN // ROWS_PER_CHUNK))
    # The partials added in chunk order, whatever thread made them: the same dw, db on any thread count.
    dw = dw_part.sum(axis=0, dtype=np.float64).astype(x.dtype)  # (C,)
    db = db_part.sum(axis=0, dtype=np.float64).astype(x.dtype)  # (C,)
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
