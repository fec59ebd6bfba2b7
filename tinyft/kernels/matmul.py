"""Matrix products: the path the GPT's linear layers run, a tiled Numba matmul to learn from, a batched one.

Map of this file:
  matmul_reference(a, b, bias)      (n, k) @ (k, m) (+ bias): np.matmul, BLAS with its own threads (the twin)
  matmuls_threads([(a, b), ...])    the path that runs: independent products at once, one per core, or one
                                    product's rows cut into a block per core; each block one single-threaded
                                    BLAS call on its own thread (kernels/_backend.run_parallel), the bias
                                    added to its rows in the same task (while they are in cache)
  matmul(a, b), matmuls(pairs)      dispatch on tinyft.kernels.current(); functional.linear calls them
  matmul_tiled_numba(a, b)          (n, k) @ (k, m), tiled, loop order i-k-j: for teaching, not used by the GPT
  batched_matmul_reference / _numba (S, n, k) @ (S, k, m): np.matmul / prange over the S stacked products
  batched_matmul                    dispatch on tinyft.kernels.current()
Which path serves which shapes (measured by benchmarks/bench_kernels.py, table in docs/kernels.md):
  * big 2-D products (the GPT's linear layers, (B*T, C) @ (C, out)): BLAS. OpenBLAS packs panels into
    cache, uses register tiles and AVX-512 FMA: 173 GFLOP/s at (2048,128)@(128,512) against a few
    GFLOP/s for the tiled kernel below (measured). Why matmul_threads splits the rows itself instead of
    letting OpenBLAS use its own threads: after each call OpenBLAS's idle threads keep spinning for a
    while (about 0.1 s), holding the cores that the next Numba kernel needs; measured on 2 cores, a
    GELU or attention call right after a two-thread BLAS call ran up to 2x slower. With BLAS held to one
    thread and tinyft's threads splitting the rows, no thread spins between the step's operations.
    (Numba's prange cannot do the splitting: calling BLAS inside Numba needs SciPy.)
  * attention's (B, H, T, hd) products: np.matmul over groups of stacked heads, one group per tinyft
    thread, with kernels/attention.py fusing the masked softmax between them into one Numba pass.
  * batched_matmul_numba: stacks of tiny products, where np.matmul pays a per-slice overhead: 4096 x
    (8,8)@(8,8) took 0.17 ms against np.matmul's 0.20 ms; at 64 x (128,32)@(32,128) np.matmul was 3x
    faster (95 vs 28 GFLOP/s). Nothing in the GPT calls it: it is here to measure and to read.
"""

import functools

import numpy as np
from numba import prange

from ._backend import current, njit, one_blas_thread, run_parallel, thread_count

TILE = 64  # a 64 x 64 float32 tile of b is 16 KB: with a's row strip it stays in a 32-48 KB L1 cache


def matmul_reference(a, b, bias=None):
    out = np.matmul(a, b)
    if bias is not None:
        out += bias
    return out


PARALLEL_MIN_MACS = 1 << 21  # below ~2M multiply-adds (~20 us on one core) a thread hand-off costs more than it saves


def _block(a, b, out, bias):
    """out = a @ b (one single-threaded BLAS call), then + bias on every row while the block is still in
    cache: an "epilogue", as BLAS libraries for GPUs call the work fused onto the end of a product."""
    np.matmul(a, b, out=out)
    if bias is not None:
        out += bias


def matmuls_threads(pairs, biases=None):
    """[(a, b), ...] -> [a @ b (+ bias), ...] for 2-D a (n, k), b (k, m), all at once on the cores: with at
    least as many products as cores each is one task; otherwise each is cut into blocks of a's rows,
    enough blocks to give every core one. a and b may be transposed views: BLAS reads either layout, so
    dW = g^T x needs no copy of g^T. biases: None, or one (m,) row vector (or None) per product."""
    biases = biases or [None] * len(pairs)
    outs = [np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a.dtype, b.dtype)) for a, b in pairs]
    if not pairs or sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs) < PARALLEL_MIN_MACS:
        with one_blas_thread():  # too small to share: one thread, no hand-off, and no BLAS threads left spinning
            for (a, b), out, bias in zip(pairs, outs, biases):
                _block(a, b, out, bias)
        return outs
    blocks = -(-thread_count() // len(pairs))  # ceil(cores / products) row blocks per product
    tasks = []
    for (a, b), out, bias in zip(pairs, outs, biases):
        rows = max(1, -(-a.shape[0] // blocks))  # ceil(n / blocks) rows per block
        for r0 in range(0, a.shape[0], rows):
            tasks.append(functools.partial(_block, a[r0:r0 + rows], b, out[r0:r0 + rows], bias))
    run_parallel(tasks)
    return outs


def matmuls(pairs, biases=None):
    """[(a, b), ...] -> [a @ b (+ bias), ...], 2-D matrices; independent products (a layer's dx and dW) run
    together. biases: None, or one (m,) row vector (or None) per product."""
    if current() == "numba":
        return matmuls_threads(pairs, biases)
    return [matmul_reference(a, b, bias) for (a, b), bias in zip(pairs, biases or [None] * len(pairs))]


def matmul(a, b, bias=None):
    """a (n, k) @ b (k, m) (+ bias (m,) on every row) for 2-D a and b -> (n, m)."""
    return matmuls([(a, b)], [bias])[0]


@njit()
def matmul_tiled_numba(a, b):
    """c = a @ b. Loop order i-k-j: the innermost loop walks a row of b and a row of c, both contiguous,
    so it vectorizes (c[i, j:j+16] += a[i, p] * b[p, j:j+16]). Tiling: the three outer loops step over
    TILE-sized blocks so the block of b being reused stays in cache while every row i of the block uses it."""
    n, kk = a.shape
    m = b.shape[1]
    c = np.zeros((n, m), dtype=a.dtype)
    for i0 in range(0, n, TILE):
        i1 = min(i0 + TILE, n)
        for p0 in range(0, kk, TILE):
            p1 = min(p0 + TILE, kk)
            for j0 in range(0, m, TILE):
                j1 = min(j0 + TILE, m)
                for i in range(i0, i1):
                    c_row = c[i]  # (m,) views: the inner loop sees two plain 1-D arrays
                    for p in range(p0, p1):
                        aip = a[i, p]
                        b_row = b[p]
                        for j in range(j0, j1):
                            c_row[j] += aip * b_row[j]
    return c


def batched_matmul_reference(a, b):
    return np.matmul(a, b)


@njit(parallel=True)
def batched_matmul_numba(a, b):
    S, n, kk = a.shape
    m = b.shape[2]
    c = np.zeros((S, n, m), dtype=a.dtype)
    for s in prange(S):  # one stacked product per iteration: threads never share an output
        for i in range(n):
            for p in range(kk):
                aip = a[s, i, p]
                for j in range(m):
                    c[s, i, j] += aip * b[s, p, j]
    return c


def batched_matmul(a, b):
    """a (..., n, k) @ b (..., k, m) with broadcast batch dimensions -> (..., n, m)."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if current() != "numba":
        return batched_matmul_reference(a, b)
    dtype = np.result_type(a.dtype, b.dtype)
    a3 = np.ascontiguousarray(np.broadcast_to(a, batch + a.shape[-2:]), dtype=dtype).reshape((-1,) + a.shape[-2:])
    b3 = np.ascontiguousarray(np.broadcast_to(b, batch + b.shape[-2:]), dtype=dtype).reshape((-1,) + b.shape[-2:])
    return batched_matmul_numba(a3, b3).reshape(batch + (a.shape[-2], b.shape[-1]))
