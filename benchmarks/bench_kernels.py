"""Matmul paths: the tiled Numba kernel, the batched prange kernel and BLAS (np.matmul), at the GPT's shapes.

Map of this script: for each shape, best-of-N wall time and GFLOP/s of each path, printed as a table.
It backs the "which path serves which shapes" note in tinyft/kernels/matmul.py and docs/kernels.md.
Usage: python benchmarks/bench_kernels.py [--repeats 20]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_step import best_and_median  # noqa: E402  (the same timing loop as the step benchmark)
from tinyft.kernels import matmul  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    f32 = np.float32
    print(f"{'product (float32)':<44}{'path':<22}{'ms':>9}{'GFLOP/s':>9}")
    cases = [("linear (2048,128)@(128,512)", (2048, 128), (128, 512), None),
             ("attention scores 64 x (128,32)@(32,128)", (64, 128, 32), (64, 32, 128), None),
             ("small stack 4096 x (8,8)@(8,8)", (4096, 8, 8), (4096, 8, 8), None)]
    for name, sa, sb, _ in cases:
        a, b = rng.standard_normal(sa).astype(f32), rng.standard_normal(sb).astype(f32)
        flops = 2 * np.prod(sa) * sb[-1]
        paths = [("np.matmul (BLAS)", lambda: np.matmul(a, b))]
        if a.ndim == 2:
            paths.append(("matmul_tiled_numba", lambda: matmul.matmul_tiled_numba(a, b)))
        else:
            paths.append(("batched_matmul_numba", lambda: matmul.batched_matmul_numba(a, b)))
        for path, fn in paths:
            t, _ = best_and_median(fn, args.repeats)
            print(f"{name:<44}{path:<22}{t * 1e3:>9.3f}{flops / t / 1e9:>9.1f}")


if __name__ == "__main__":
    main()
