"""Fused causal multi-head attention, forward and backward: the NumPy twin and the Numba kernel.

Map of this file:
  attention_forward_reference / _numba   q, k, v (B, H, T, hd) -> out (B, H, T, hd), lse (B, H, T), probs
  attention_backward_reference / _numba  dout -> dq, dk, dv (each (B, H, T, hd))
  attention_forward / attention_backward dispatch on tinyft.kernels.current()
The kernel runs one (batch, head) pair per prange iteration and one query row i at a time: scores
s_j = q_i . k_j / sqrt(hd) for j <= i only (the causal mask is a loop bound, never a -inf), a stable
softmax (subtract the row max m), then out_i = sum_j p_j v_j. K^T and V stay in L1 cache across rows.
What the backward needs: the row's probabilities. Either the forward stores all of them (probs, T x T per
head) or only the row's log-sum-exp lse_i = m + log sum_j exp(s_j - m), from which the backward recomputes
p_ij = exp(s_ij - lse_i) (flash-attention's choice). `SAVE_PROBS` holds the measured winner for our
sizes (see docs/kernels.md); both paths are tested. Backward, with D_i = dout_i . out_i:
  dv_j += p_ij dout_i,   dp_ij = dout_i . v_j,   ds_ij = p_ij (dp_ij - D_i),
  dq_i += ds_ij k_j / sqrt(hd),   dk_j += ds_ij q_i / sqrt(hd).
"""

import math

import numpy as np
from numba import prange

from ._backend import current, njit
from ._math import exp_nonpositive

SAVE_PROBS = True  # measured (docs/kernels.md): storing T x T probabilities beat recomputing them here


def attention_forward_reference(q, k, v, causal, save_probs):
    B, H, T, hd = q.shape
    scores = (q @ np.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(hd))  # (B, H, T, T)
    if causal:
        scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    m = scores.max(axis=-1, keepdims=True)  # (B, H, T, 1)
    e = np.exp(scores - m)
    total = e.sum(axis=-1, keepdims=True)
    probs = (e / total).astype(q.dtype)  # (B, H, T, T)
    out = probs @ v  # (B, H, T, hd)
    lse = (m + np.log(total))[..., 0].astype(q.dtype)  # (B, H, T)
    return out, lse, (probs if save_probs else np.empty((0, 0, 0, 0), dtype=q.dtype))


def attention_backward_reference(dout, q, k, v, out, lse, probs, causal):
    B, H, T, hd = q.shape
    scale = 1.0 / math.sqrt(hd)
    if probs.size == 0:  # recompute from the saved log-sum-exp
        scores = (q @ np.swapaxes(k, -1, -2)) * scale
        if causal:
            scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
        probs = np.exp(scores - lse[..., None]).astype(q.dtype)
    dv = np.swapaxes(probs, -1, -2) @ dout  # (B, H, T, hd)
    dprobs = dout @ np.swapaxes(v, -1, -2)  # (B, H, T, T)
    D = (dout * out).sum(axis=-1, keepdims=True)  # (B, H, T, 1) = sum_j p_ij dp_ij
    dscores = probs * (dprobs - D) * scale  # (B, H, T, T), zero above the diagonal since probs is
    dq = dscores @ k
    dk = np.swapaxes(dscores, -1, -2) @ q
    return dq.astype(q.dtype), dk.astype(q.dtype), dv.astype(q.dtype)


@njit(parallel=True)
def attention_forward_numba(q, k, v, causal, save_probs):
    B, H, T, hd = q.shape
    scale = 1.0 / math.sqrt(hd)
    out = np.empty_like(q)
    lse = np.empty((B, H, T), dtype=q.dtype)
    probs = np.zeros((B, H, T, T) if save_probs else (0, 0, 0, 0), dtype=q.dtype)
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        kt = np.ascontiguousarray(k[b, h].T)  # (hd, T): row d holds feature d of every key, contiguous
        s = np.empty(T, dtype=q.dtype)  # one row of scores, then of exp(scores - max)
        acc = np.empty(hd, dtype=q.dtype)
        for i in range(T):
            n_keys = i + 1 if causal else T  # the causal mask is this loop bound
            s[:n_keys] = 0.0
            for d in range(hd):  # s_j += q_id k_jd: loop order i-d-j, the inner loop is contiguous in j
                qd = q[b, h, i, d] * scale
                for j in range(n_keys):
                    s[j] += qd * kt[d, j]
            m = s[0]
            for j in range(1, n_keys):
                m = max(m, s[j])
            total = 0.0
            for j in range(n_keys):
                s[j] = exp_nonpositive(s[j] - m, q)
                total += s[j]
            inv = 1.0 / total
            acc[:] = 0.0
            for j in range(n_keys):  # out_i = sum_j p_j v_j, the inner loop contiguous in d
                p = s[j] * inv
                if save_probs:
                    probs[b, h, i, j] = p
                for d in range(hd):
                    acc[d] += p * v[b, h, j, d]
            out[b, h, i, :] = acc
            lse[b, h, i] = m + math.log(total)
    return out, lse, probs


@njit(parallel=True)
def attention_backward_numba(dout, q, k, v, out, lse, probs, causal):
    B, H, T, hd = q.shape
    scale = 1.0 / math.sqrt(hd)
    recompute = probs.shape[0] == 0
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for bh in prange(B * H):  # each (batch, head) writes only its own slices of dq, dk, dv: no races
        b, h = bh // H, bh % H
        kt = np.ascontiguousarray(k[b, h].T)  # (hd, T)
        vt = np.ascontiguousarray(v[b, h].T)  # (hd, T)
        p = np.empty(T, dtype=q.dtype)
        dp = np.empty(T, dtype=q.dtype)
        dq_i = np.empty(hd, dtype=q.dtype)
        for i in range(T):
            n_keys = i + 1 if causal else T
            if recompute:  # p_ij = exp(q_i . k_j * scale - lse_i)
                p[:n_keys] = 0.0
                for d in range(hd):
                    qd = q[b, h, i, d] * scale
                    for j in range(n_keys):
                        p[j] += qd * kt[d, j]
                li = lse[b, h, i]
                for j in range(n_keys):
                    p[j] = exp_nonpositive(p[j] - li, q)
            else:
                p[:n_keys] = probs[b, h, i, :n_keys]
            dp[:n_keys] = 0.0  # dp_ij = dout_i . v_j
            for d in range(hd):
                gd = dout[b, h, i, d]
                for j in range(n_keys):
                    dp[j] += gd * vt[d, j]
            D = 0.0  # D_i = dout_i . out_i  (equals sum_j p_ij dp_ij)
            for d in range(hd):
                D += dout[b, h, i, d] * out[b, h, i, d]
            dq_i[:] = 0.0
            for j in range(n_keys):
                ds = p[j] * (dp[j] - D) * scale
                pj = p[j]
                for d in range(hd):
                    dq_i[d] += ds * k[b, h, j, d]
                    dk[b, h, j, d] += ds * q[b, h, i, d]
                    dv[b, h, j, d] += pj * dout[b, h, i, d]
            dq[b, h, i, :] = dq_i
    return dq, dk, dv


def attention_forward(q, k, v, causal=True, save_probs=SAVE_PROBS):
    """q, k, v: (B, H, T, hd), one float dtype, C-contiguous -> (out, lse, probs); probs is an empty
    (0, 0, 0, 0) array unless save_probs."""
    if current() == "numba":
        return attention_forward_numba(q, k, v, causal, save_probs)
    return attention_forward_reference(q, k, v, causal, save_probs)


def attention_backward(dout, q, k, v, out, lse, probs, causal=True):
    """-> (dq, dk, dv). Recomputes the probabilities from lse when probs is empty."""
    if current() == "numba":
        return attention_backward_numba(dout, q, k, v, out, lse, probs, causal)
    return attention_backward_reference(dout, q, k, v, out, lse, probs, causal)
