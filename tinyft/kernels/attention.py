"""Causal multi-head attention, forward and backward: the NumPy twin and two Numba paths.

The switch (kernels.use / TINYFT_KERNELS) runs attention_forward_numba / _backward_numba, or the NumPy twin
under "numpy": BLAS does the products, Numba only what lies between them (faster than loops). To learn the
algorithm read attention_forward_loops_numba / _backward_loops_numba: every step a written-out loop.

Map of this file:
  attention_forward_reference / _backward_reference   the NumPy twin: the spec, in whole-array steps
  attention_forward_numba / _backward_numba            the path that runs: the six (T, hd) products by
      BLAS (np.matmul over groups of heads, one group per task on tinyft's threads, row blocks skipping
      the masked quarter) and everything between them fused into one Numba pass per row: scale, causal
      mask as a loop bound, stable softmax, log-sum-exp (forward); D_i = dout_i . out_i and
      ds = p (dp - D) / sqrt(hd) (backward)
  attention_forward_loops_numba / _backward_loops_numba   everything in one loop nest per (batch, head):
      for reading, and measured slower than BLAS + fused softmax (docs/kernels.md), so not dispatched
  attention_forward / attention_backward               dispatch on tinyft.kernels.current()
  qkv_attention_forward / _backward (+ _reference, _numba)   the same on c_attn's packed (B, T, 3C) output:
      split_heads and heads_view give each head as a strided view, so nothing is copied out or back
      (what the GPT runs: one (B, T, 3C) in, (B, T, C) out, one (B, T, 3C) gradient back)
Why the split: BLAS runs the products at ~110 GFLOP/s per thread even at (128, 32) @ (32, 128), the hand
loops at 4-7 (benchmarks/bench_overheads.py); NumPy, for its part, needs five or six full (B, H, T, T)
passes for mask + softmax, Numba one.
What the backward needs: the row's probabilities. Either the forward keeps them (probs, T x T per head)
or only the row's log-sum-exp lse_i = m + log sum_j exp(s_j - m), from which the backward recomputes
p_ij = exp(s_ij - lse_i) (flash-attention's choice). `SAVE_PROBS` holds the measured winner for our
sizes; both paths are tested. Backward, with D_i = dout_i . out_i:
  dv_j += p_ij dout_i,   dp_ij = dout_i . v_j,   ds_ij = p_ij (dp_ij - D_i) / sqrt(hd),
  dq_i += ds_ij k_j,   dk_j += ds_ij q_i   (the scale enters once, in ds, as in the code).
"""

import math

import numpy as np
from numba import prange

from ._backend import current, njit, parallel_chunks
from ._math import as_type, exp_nonpositive

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
    dscores = probs * (dprobs - D) * scale  # (B, H, T, T); zero above the diagonal, where probs is 0
    dq = dscores @ k
    dk = np.swapaxes(dscores, -1, -2) @ q
    return dq.astype(q.dtype), dk.astype(q.dtype), dv.astype(q.dtype)


# --- the all-loops kernel: for reading (one (batch, head) per prange iteration, one query row at a time) ----


@njit(parallel=True)
def attention_forward_loops_numba(q, k, v, causal, save_probs):
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
def attention_backward_loops_numba(dout, q, k, v, out, lse, probs, causal):
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


# --- the path that runs: BLAS for the products, one fused Numba pass for the softmax between them -------
# Heads are independent, so parallel_chunks hands groups of HEADS_PER_TASK heads to one Python thread per
# core; each thread runs BLAS single-threaded on its own heads and our row kernels (nogil) between the
# products. The causal mask also saves work in the products: query rows r0..r1-1 need keys 0..r1-1 only,
# so with row blocks of ROW_BLOCK the masked top-right of each T x T matrix is never multiplied (a quarter
# of the product work with two blocks). The row kernels write exact zeros there.

HEADS_PER_TASK = 16  # one task's scores, 16 x 128 x 128 floats (1 MB), stay in L2; 16 and 32 beat 8 (docs/kernels.md)
ROW_BLOCK = 64  # two blocks at T = 128 skip a quarter of the products; smaller blocks skip more but cost more calls


def _row_blocks(T, causal):
    """[(r0, r1), ...]: query-row blocks; with the causal mask, rows r0..r1-1 look at keys 0..r1-1 only."""
    if not causal:
        return [(0, T)]
    return [(r0, min(r0 + ROW_BLOCK, T)) for r0 in range(0, T, ROW_BLOCK)]


def _rows_by_keys(a, b, out, blocks):
    """out[..., r0:r1, :r1] = a[..., r0:r1, :] @ b[..., :r1, :]^T per block, over stacks of heads: scores
    q k^T, and dp = dout v^T."""
    for r0, r1 in blocks:
        np.matmul(a[..., r0:r1, :], np.swapaxes(b[..., :r1, :], -1, -2), out=out[..., r0:r1, :r1])


def _weights_times(w, b, out, blocks):
    """out[..., r0:r1, :] = w[..., r0:r1, :r1] @ b[..., :r1, :] per block: out = p v, and dq = ds k."""
    for r0, r1 in blocks:
        np.matmul(w[..., r0:r1, :r1], b[..., :r1, :], out=out[..., r0:r1, :])


def _weights_transposed_times(w, b, out, blocks):
    """out[..., c0:c1, :] = w[..., c0:, c0:c1]^T @ b[..., c0:, :] per block of keys c0..c1-1 (rows before c0
    are masked for them): dv = p^T dout, and dk = ds^T q."""
    for c0, c1 in blocks:
        np.matmul(np.swapaxes(w[..., c0:, c0:c1], -1, -2), b[..., c0:, :], out=out[..., c0:c1, :])


def _causal_softmax_rows(s, scale, causal, lse):
    """In place: s (S, T, T) raw scores q k^T -> probabilities; lse (S, T) gets each row's log-sum-exp.
    The mask is the loop bound j <= i: entries above the diagonal are never read (the products may have
    skipped them) and are written as exact zeros."""
    S, T, _ = s.shape
    for h in range(S):
        for i in range(T):
            row = s[h, i]
            n_keys = i + 1 if causal else T
            m = row[0]
            for j in range(1, n_keys):
                m = max(m, row[j])
            m *= scale  # scale > 0, so the largest scaled score is the scaled largest score
            total = as_type(0.0, s)  # in the rows' own dtype: float32 rows keep 16 lanes per vector
            for j in range(n_keys):
                e = exp_nonpositive(row[j] * scale - m, s)
                row[j] = e
                total += e  # (fast-math lets LLVM keep 16 partial sums, so rounding stays tiny)
            inv = as_type(1.0, s) / total
            for j in range(n_keys):
                row[j] *= inv
            for j in range(n_keys, T):
                row[j] = 0.0
            lse[h, i] = m + math.log(total)


def _probs_from_lse(s, scale, causal, lse):
    """In place: s (S, T, T) raw scores -> p_ij = exp(s_ij * scale - lse_i), zeros above the diagonal."""
    S, T, _ = s.shape
    for h in range(S):
        for i in range(T):
            row = s[h, i]
            n_keys = i + 1 if causal else T
            li = lse[h, i]
            for j in range(n_keys):
                row[j] = exp_nonpositive(row[j] * scale - li, s)
            for j in range(n_keys, T):
                row[j] = 0.0


def _softmax_backward_rows(dp, p, D, scale, causal):
    """In place: dp (S, T, T) = dout v^T -> ds = p (dp - D) * scale, with D (S, T) holding D_i = dout_i . out_i
    (which equals sum_j p_ij dp_ij). Entries above the diagonal are not read (the product may have skipped
    them) and are written as 0."""
    S, T, _ = dp.shape
    for h in range(S):
        for i in range(T):
            n_keys = i + 1 if causal else T
            Di = D[h, i]
            for j in range(n_keys):
                dp[h, i, j] = p[h, i, j] * (dp[h, i, j] - Di) * scale
            for j in range(n_keys, T):
                dp[h, i, j] = 0.0


# One thread runs each call on its own heads, so these compile without prange and release the GIL.
_causal_softmax_rows = njit(nogil=True)(_causal_softmax_rows)
_probs_from_lse = njit(nogil=True)(_probs_from_lse)
_softmax_backward_rows = njit(nogil=True)(_softmax_backward_rows)


def _batch_chunk(H):
    """Batch elements per task: about HEADS_PER_TASK heads, never fewer than one element."""
    return max(1, HEADS_PER_TASK // H)


def _forward_into(q, k, v, out, lse, probs, causal):
    """Attention of q, k, v (B, H, T, hd) into out (B, H, T, hd) and lse (B, H, T); probs (B, H, T, T) keeps
    the probabilities, or is empty. q, k, v and out may be strided views (heads side by side in a (B, T, C)
    array): BLAS reads and writes such (T, hd) slices in place, their rows just lie further apart."""
    B, H, T, hd = q.shape
    scale = q.dtype.type(1.0 / math.sqrt(hd))
    blocks = _row_blocks(T, causal)
    save_probs = probs.size > 0

    def batches(a, b):  # batch elements a..b-1 (all their heads), on one thread
        s = probs[a:b] if save_probs else np.empty((b - a, H, T, T), dtype=q.dtype)  # (n, H, T, T)
        _rows_by_keys(q[a:b], k[a:b], s, blocks)  # raw scores q k^T, BLAS
        _causal_softmax_rows(s.reshape(-1, T, T), scale, causal, lse[a:b].reshape(-1, T))  # s: probabilities
        _weights_times(s, v[a:b], out[a:b], blocks)  # out = p v, BLAS

    parallel_chunks(batches, B, _batch_chunk(H))


def _backward_into(dout, q, k, v, out, lse, probs, dq, dk, dv, causal):
    """The gradients of _forward_into, written into dq, dk, dv (B, H, T, hd), which may be strided views."""
    B, H, T, hd = q.shape
    scale = q.dtype.type(1.0 / math.sqrt(hd))
    blocks = _row_blocks(T, causal)

    def batches(a, b):  # batch elements a..b-1 (all their heads), on one thread
        if probs.size == 0:  # recompute p from the saved log-sum-exp: one more product
            p = np.empty((b - a, H, T, T), dtype=q.dtype)
            _rows_by_keys(q[a:b], k[a:b], p, blocks)
            _probs_from_lse(p.reshape(-1, T, T), scale, causal, lse[a:b].reshape(-1, T))
        else:
            p = probs[a:b]  # (n, H, T, T)
        _weights_transposed_times(p, dout[a:b], dv[a:b], blocks)  # dv = p^T dout
        ds = np.empty((b - a, H, T, T), dtype=q.dtype)
        _rows_by_keys(dout[a:b], v[a:b], ds, blocks)  # dp = dout v^T, then in place:
        D = np.einsum("bhtd,bhtd->bht", dout[a:b], out[a:b])  # (n, H, T): D_i = dout_i . out_i, no temporary
        _softmax_backward_rows(ds.reshape(-1, T, T), p.reshape(-1, T, T), D.reshape(-1, T), scale, causal)
        _weights_times(ds, k[a:b], dq[a:b], blocks)  # dq = ds k
        _weights_transposed_times(ds, q[a:b], dk[a:b], blocks)  # dk = ds^T q

    parallel_chunks(batches, B, _batch_chunk(H))


def _empty_probs(q, save_probs):
    B, H, T, _ = q.shape
    return np.empty((B, H, T, T) if save_probs else (0, 0, 0, 0), dtype=q.dtype)


def attention_forward_numba(q, k, v, causal, save_probs):
    B, H, T, hd = q.shape
    out = np.empty_like(q)  # (B, H, T, hd)
    lse = np.empty((B, H, T), dtype=q.dtype)  # (B, H, T)
    probs = _empty_probs(q, save_probs)  # (B, H, T, T) when saved
    _forward_into(q, k, v, out, lse, probs, causal)
    return out, lse, probs


def attention_backward_numba(dout, q, k, v, out, lse, probs, causal):
    dq, dk, dv = np.empty_like(q), np.empty_like(q), np.empty_like(q)  # (B, H, T, hd) each
    _backward_into(dout, q, k, v, out, lse, probs, dq, dk, dv, causal)
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


# --- packed q|k|v: what the GPT's attention layer runs ----------------------------------------------------
# c_attn makes one (B, T, 3C) array: q, k, v side by side, and inside each, head h in columns h*hd..(h+1)*hd.
# Each head's (T, hd) matrix is then a strided view: T rows of hd numbers, 3C numbers apart. BLAS reads such
# views directly, so the fast path never copies q, k, v out, writes the output straight into (B, T, C) with
# heads side by side, and writes dq, dk, dv straight into one (B, T, 3C) gradient: no slicing, reshaping or
# transposing of the activations, forward or backward.


def split_heads(qkv, n_head):
    """(B, T, 3C) -> q, k, v, each a (B, H, T, hd) view into qkv (no copy)."""
    B, T, C3 = qkv.shape
    hd = C3 // 3 // n_head
    qkv5 = qkv.reshape(B, T, 3, n_head, hd)  # (B, T, 3, H, hd), a view: axis 2 picks q, k or v
    return tuple(qkv5[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # 3 x (B, H, T, hd) views


def heads_view(y, n_head):
    """(B, T, C) -> a (B, H, T, hd) view of it: head h at position t is y[b, t, h*hd:(h+1)*hd]."""
    B, T, C = y.shape
    return y.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def qkv_attention_forward_reference(qkv, n_head, causal, save_probs):
    B, T, C3 = qkv.shape
    q, k, v = (np.ascontiguousarray(a) for a in split_heads(qkv, n_head))  # (B, H, T, hd) each
    out, lse, probs = attention_forward_reference(q, k, v, causal, save_probs)
    return out.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3), lse, probs  # (B, T, C): heads side by side


def qkv_attention_backward_reference(dy, qkv, y, lse, probs, n_head, causal):
    q, k, v = (np.ascontiguousarray(a) for a in split_heads(qkv, n_head))
    dout, out = (np.ascontiguousarray(heads_view(a, n_head)) for a in (dy, y))  # (B, H, T, hd) each
    dq, dk, dv = attention_backward_reference(dout, q, k, v, out, lse, probs, causal)
    B, T, C3 = qkv.shape
    merged = [a.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3) for a in (dq, dk, dv)]  # 3 x (B, T, C)
    return np.concatenate(merged, axis=2)  # (B, T, 3C)


def qkv_attention_forward_numba(qkv, n_head, causal, save_probs):
    B, T, C3 = qkv.shape
    q, k, v = split_heads(qkv, n_head)  # (B, H, T, hd) views
    y = np.empty((B, T, C3 // 3), dtype=qkv.dtype)  # (B, T, C)
    lse = np.empty((B, n_head, T), dtype=qkv.dtype)  # (B, H, T)
    probs = _empty_probs(q, save_probs)
    _forward_into(q, k, v, heads_view(y, n_head), lse, probs, causal)
    return y, lse, probs


def qkv_attention_backward_numba(dy, qkv, y, lse, probs, n_head, causal):
    q, k, v = split_heads(qkv, n_head)
    dqkv = np.empty_like(qkv)  # (B, T, 3C); every element is written below
    dq, dk, dv = split_heads(dqkv, n_head)
    _backward_into(heads_view(dy, n_head), q, k, v, heads_view(y, n_head), lse, probs, dq, dk, dv, causal)
    return dqkv


def qkv_attention_forward(qkv, n_head, causal=True, save_probs=SAVE_PROBS):
    """qkv: (B, T, 3C), C-contiguous -> (y (B, T, C), lse (B, H, T), probs (B, H, T, T) or empty)."""
    if current() == "numba":
        return qkv_attention_forward_numba(qkv, n_head, causal, save_probs)
    return qkv_attention_forward_reference(qkv, n_head, causal, save_probs)


def qkv_attention_backward(dy, qkv, y, lse, probs, n_head, causal=True):
    """dy (B, T, C) -> dqkv (B, T, 3C)."""
    if current() == "numba":
        return qkv_attention_backward_numba(dy, qkv, y, lse, probs, n_head, causal)
    return qkv_attention_backward_reference(dy, qkv, y, lse, probs, n_head, causal)
