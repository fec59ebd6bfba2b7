"""Matrix products: a tiled Numba matmul to learn from, a batched one, and which path serves what.

Map of this file:
  matmul_tiled_numba(a, b)          (n, k) @ (k, m), tiled, loop order i-k-j: for teaching, not used by the GPT
  batched_matmul_reference / _numba (S, n, k) @ (S, k, m): np.matmul / prange over the S stacked products
  batched_matmul                    dispatch on tinyft.kernels.current()
Which path serves which shapes (measured by benchmarks/bench_kernels.py, table in docs/kernels.md):
  * big 2-D products (the GPT's linear layers, (B*T, C) @ (C, out)): BLAS via NumPy, called once per layer
    by functional.linear. OpenBLAS packs panels into cache, uses register tiles and AVX-512 FMA: 173
    GFLOP/s at (2048,128)@(128,512) against a few GFLOP/s for the tiled kernel below (measured). (Calling BLAS inside prange would need SciPy in Numba and would
    oversubscribe the cores, BLAS threads times Numba threads.)
  * attention's (B, H, T, hd) products: np.matmul over the B*H stacked heads (BLAS per head, outside any
    prange), with kernels/attention.py fusing the masked softmax between them into one Numba pass.
  * batched_matmul_numba: stacks of tiny products, where np.matmul pays a per-slice overhead: 4096 x
    (8,8)@(8,8) took 0.17 ms against np.matmul's 0.20 ms; at 64 x (128,32)@(32,128) np.matmul was 3x
    faster (95 vs 28 GFLOP/s). Nothing in the GPT calls it: it is here to measure and to read.
"""

import numpy as np
from numba import prange

from ._backend import current, njit

TILE = 64  # a 64 x 64 float32 tile of b is 16 KB: with a's row strip it stays in a 32-48 KB L1 cache


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
