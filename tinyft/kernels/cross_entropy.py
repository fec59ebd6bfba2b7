"""Softmax cross-entropy over rows of logits, forward and backward: the NumPy twin and the fused kernel.

Map of this file:
  cross_entropy_forward_reference / _numba    logits (N, V), targets (N,) ints, ignore -> row_loss (N,), lse (N,)
  cross_entropy_backward_reference / _numba   g_rows (N,) -> dlogits (N, V)
  cross_entropy_forward / _backward           dispatch on tinyft.kernels.current()
  _forward_rows, _backward_rows               the compiled loops over rows start..stop-1: serial, nogil; the
                                              _numba functions hand blocks of rows to tinyft's threads
Rows whose target equals `ignore` get loss 0 and gradient 0 (the caller divides the summed row losses by
the number of counted rows, or by 1 when none counts: the loss is then 0, as in functional.py).
One pass per direction: the forward reads a row to find its max m, then sums exp(x - m) and keeps only
the log-sum-exp lse = m + log(sum); the backward rebuilds softmax = exp(x - lse) from it, so no (N, V)
probability array is ever stored. d loss_n / d logits_n = softmax_n - onehot(target_n).
"""

import functools
import math

import numpy as np

from ._backend import current, njit, parallel_rows
from ._math import as_type, exp_nonpositive

GRAIN = 128  # rows: fewer than this per task and handing them to another thread costs more than it saves


def cross_entropy_forward_reference(logits, targets, ignore):
    m = logits.max(axis=-1, keepdims=True)  # (N, 1)
    lse = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[:, 0]  # (N,)
    counted = targets != ignore  # (N,)
    safe = np.where(counted, targets, 0)  # ignored rows may hold any id; read column 0 and discard it
    picked = logits[np.arange(len(targets)), safe]  # (N,)
    return np.where(counted, lse - picked, 0).astype(logits.dtype), lse.astype(logits.dtype)


def cross_entropy_backward_reference(g_rows, logits, targets, ignore, lse):
    counted = targets != ignore
    grad = np.exp(logits - lse[:, None])  # (N, V) softmax
    grad[np.arange(len(targets))[counted], targets[counted]] -= 1.0  # minus the one-hot target
    return (grad * np.where(counted, g_rows, 0)[:, None]).astype(logits.dtype)


@njit(nogil=True)
def _forward_rows(logits, targets, ignore, row_loss, lse, start, stop):
    """Rows start..stop-1 of the forward: a serial loop that releases the GIL (cross_entropy_forward_numba
    hands blocks of rows to tinyft's threads)."""
    V = logits.shape[1]
    for n in range(start, stop):
        m = logits[n, 0]
        for j in range(1, V):
            m = max(m, logits[n, j])
        s = as_type(0.0, logits)  # in the logits' dtype: float32 rows keep 16 lanes per vector (16 partial sums)
        for j in range(V):
            s += exp_nonpositive(logits[n, j] - m, logits)
        lse[n] = m + math.log(s)
        t = targets[n]
        row_loss[n] = 0.0 if t == ignore else lse[n] - logits[n, t]


def cross_entropy_forward_numba(logits, targets, ignore):
    N = logits.shape[0]
    row_loss = np.empty(N, dtype=logits.dtype)  # (N,)
    lse = np.empty(N, dtype=logits.dtype)  # (N,)
    parallel_rows(functools.partial(_forward_rows, logits, targets, ignore, row_loss, lse), N, GRAIN)
    return row_loss, lse


@njit(nogil=True)
def _backward_rows(g_rows, logits, targets, ignore, lse, grad, start, stop):
    V = logits.shape[1]
    for n in range(start, stop):
        t = targets[n]
        if t == ignore:
            grad[n, :] = 0.0
            continue
        gn, ln = g_rows[n], lse[n]
        for j in range(V):
            grad[n, j] = gn * exp_nonpositive(logits[n, j] - ln, logits)
        grad[n, t] -= gn


def cross_entropy_backward_numba(g_rows, logits, targets, ignore, lse):
    grad = np.empty_like(logits)  # (N, V)
    parallel_rows(functools.partial(_backward_rows, g_rows, logits, targets, ignore, lse, grad), logits.shape[0], GRAIN)
    return grad


def cross_entropy_forward(logits, targets, ignore):
    """logits (N, V) float, C-contiguous; targets (N,) int64; ignore: an int no valid target equals
    unless it is meant to be skipped (pass -1 for "count everything") -> (row_loss (N,), lse (N,))."""
    if current() == "numba":
        return cross_entropy_forward_numba(logits, targets, ignore)
    return cross_entropy_forward_reference(logits, targets, ignore)


def cross_entropy_backward(g_rows, logits, targets, ignore, lse):
    """g_rows (N,): d loss / d row_loss (the mean's 1/count times the incoming gradient) -> dlogits (N, V)."""
    if current() == "numba":
        return cross_entropy_backward_numba(g_rows, logits, targets, ignore, lse)
    return cross_entropy_backward_reference(g_rows, logits, targets, ignore, lse)
