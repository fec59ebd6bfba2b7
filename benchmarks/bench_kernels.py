"""Matrix products and threads at the GPT's shapes: which path serves which shapes, and why.

Map of this script:
  products()         BLAS (np.matmul, BLAS's own threads), tinyft's threads (matmuls_threads), the tiled
                     and batched Numba kernels: best-of-N time and GFLOP/s
  spinning_blas()    a GELU and an attention call timed right after a BLAS product on two threads, and
                     right after the same product on one: the cost of OpenBLAS's idle thread spinning
  attention_sweep()  attention forward + backward for each HEADS_PER_TASK x ROW_BLOCK setting
It backs the notes in tinyft/kernels/matmul.py, tinyft/kernels/attention.py and docs/kernels.md.
Usage: python benchmarks/bench_kernels.py [--repeats 20] [--no-sweep]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_step import best_and_median  # noqa: E402  (the same timing loop as the step benchmark)
from tinyft.kernels import _backend, attention, gelu, matmul  # noqa: E402

RNG = np.random.default_rng(0)
F32 = np.float32


def randn(*shape):
    return RNG.standard_normal(shape).astype(F32)


def products(repeats):
    print(f"{'product (float32)':<44}{'path':<26}{'best ms':>9}{'median':>9}{'GFLOP/s':>9}")
    cases = [("linear fwd (2048,128)@(128,512)", (2048, 128), (128, 512)),
             ("linear fwd (2048,128)@(128,128)", (2048, 128), (128, 128)),
             ("linear fwd (2048,512)@(512,128)", (2048, 512), (512, 128)),
             ("attention scores 64 x (128,32)@(32,128)", (64, 128, 32), (64, 32, 128)),
             ("small stack 4096 x (8,8)@(8,8)", (4096, 8, 8), (4096, 8, 8))]
    for name, sa, sb in cases:
        a, b = randn(*sa), randn(*sb)
        flops = 2 * np.prod(sa) * sb[-1]
        paths = [("np.matmul (BLAS threads)", lambda: np.matmul(a, b))]
        if a.ndim == 2:
            paths += [("matmuls_threads (tinyft)", lambda: matmul.matmuls_threads([(a, b)])),
                      ("matmul_tiled_numba", lambda: matmul.matmul_tiled_numba(a, b))]
        else:
            paths.append(("batched_matmul_numba", lambda: matmul.batched_matmul_numba(a, b)))
        for path, fn in paths:
            time.sleep(0.3)  # let BLAS's idle threads go to sleep between paths
            best, med = best_and_median(fn, repeats)
            print(f"{name:<44}{path:<26}{best * 1e3:>9.3f}{med * 1e3:>9.3f}{flops / best / 1e9:>9.1f}")
    # the backward's two products of one linear layer, dx = g W and dW = g^T x, at once on two cores
    g, w, x = randn(2048, 512), randn(512, 128), randn(2048, 128)
    flops = 2 * 2 * 2048 * 512 * 128
    for path, fn in [("np.matmul x2 (BLAS threads)", lambda: (np.matmul(g, w), np.matmul(g.T, x))),
                     ("matmuls_threads (tinyft)", lambda: matmul.matmuls_threads([(g, w), (g.T, x)]))]:
        time.sleep(0.3)
        best, med = best_and_median(fn, repeats)
        print(f"{'linear bwd dx and dW, (2048,512) out':<44}{path:<26}{best * 1e3:>9.3f}{med * 1e3:>9.3f}"
              f"{flops / best / 1e9:>9.1f}")


def after(setup, fn, repeats):
    """Median ms of fn, each call right after setup()."""
    times = []
    for _ in range(repeats + 1):
        setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])) * 1e3


def spinning_blas(repeats):
    """The same product right before each timed call, once on BLAS's two threads and once held to one:
    the only difference is whether OpenBLAS's helper thread is left spinning while the call runs."""
    x, w = randn(2048, 128), randn(128, 512)
    h = randn(2048 * 512)
    q, k, v, dout = (randn(16, 4, 128, 32) for _ in range(4))

    def attn():
        out, lse, probs = attention.attention_forward_numba(q, k, v, True, attention.SAVE_PROBS)
        attention.attention_backward_numba(dout, q, k, v, out, lse, probs, True)

    def two_thread_product():
        np.matmul(x, w)  # BLAS's own threads: its helper keeps polling afterwards

    def one_thread_product():
        with _backend.one_blas_thread():
            np.matmul(x, w)

    print(f"\n{'call (median ms), right after a product on':<44}{'1 BLAS thread':>15}{'2 BLAS threads':>16}")
    for name, fn in [("gelu fwd (2048x512)", lambda: gelu.gelu_forward_numba(h)),
                     ("attention fwd+bwd (16,4,128,32)", attn)]:
        time.sleep(0.3)  # no helper left spinning from before
        one = after(one_thread_product, fn, repeats)
        two = after(two_thread_product, fn, repeats)
        print(f"{name:<44}{one:>15.3f}{two:>16.3f}")


def attention_sweep(repeats):
    q, k, v, dout = (randn(16, 4, 128, 32) for _ in range(4))

    def attn():
        out, lse, probs = attention.attention_forward_numba(q, k, v, True, attention.SAVE_PROBS)
        attention.attention_backward_numba(dout, q, k, v, out, lse, probs, True)

    saved = attention.HEADS_PER_TASK, attention.ROW_BLOCK
    print(f"\nattention fwd+bwd (16,4,128,32), median ms (best), threads {_backend.thread_count()}")
    blocks = (32, 64, 128)
    print(f"{'HEADS_PER_TASK':<16}" + "".join(f"{f'ROW_BLOCK {b}':>20}" for b in blocks))
    try:
        for heads in (4, 8, 16, 32, 64):
            cells = []
            for block in blocks:
                attention.HEADS_PER_TASK, attention.ROW_BLOCK = heads, block
                best, med = best_and_median(attn, repeats)
                cells.append(f"{med * 1e3:.2f} ({best * 1e3:.2f})")
            print(f"{heads:<16}" + "".join(f"{c:>20}" for c in cells))
    finally:
        attention.HEADS_PER_TASK, attention.ROW_BLOCK = saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-sweep", action="store_true", help="skip the HEADS_PER_TASK x ROW_BLOCK sweep")
    args = parser.parse_args(argv)
    products(args.repeats)
    spinning_blas(args.repeats)
    if not args.no_sweep:
        attention_sweep(args.repeats)


if __name__ == "__main__":
    main()
