"""Why a Numba loop does or does not vectorize: the exact-GELU forward written four ways, timed on one thread.

Map of this script:
  gelu_loop(x, y, start, stop)  the kernel's loop body over range(start, stop), compiled twice:
                                Numba's default error model ("python") and error_model="numpy"
  gelu_slice(x, y)              the same body over range(x.shape[0]): the index is provably >= 0
  gelu_prange(x, y)             the body under prange, parallel=True, run on one thread
  packed_ops(dispatcher)        how many packed vector instructions (v...ps on ymm/zmm registers) its machine code has
Each variant is compiled here without a disk cache (so its assembly can be read), with tinyft's fast-math
flags, and timed best of --repeats calls on 2^20 float32 values. docs/kernels.md ("Why a loop does not
vectorize") explains the two causes. Usage:
  python benchmarks/bench_vectorize.py [--repeats 50]
"""

import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numba  # noqa: E402

from bench_step import best_and_median  # noqa: E402  (the timing loop of the step benchmark: one untimed call first)
from tinyft.kernels._backend import FASTMATH  # noqa: E402
from tinyft.kernels._math import as_type, erf  # noqa: E402
from tinyft.kernels.gelu import SQRT_HALF  # noqa: E402


def gelu_loop(x, y, start, stop):
    r, half, one = as_type(SQRT_HALF, x), as_type(0.5, x), as_type(1.0, x)
    for i in range(start, stop):  # start is an argument: i might be negative, as far as Numba knows
        xi = x[i]
        y[i] = half * xi * (one + erf(xi * r, x))


def gelu_slice(x, y):
    r, half, one = as_type(SQRT_HALF, x), as_type(0.5, x), as_type(1.0, x)
    for i in range(x.shape[0]):  # from 0 up: i >= 0, no wrap-around check
        xi = x[i]
        y[i] = half * xi * (one + erf(xi * r, x))


def gelu_prange(x, y):
    r, half, one = as_type(SQRT_HALF, x), as_type(0.5, x), as_type(1.0, x)
    for i in numba.prange(x.shape[0]):
        xi = x[i]
        y[i] = half * xi * (one + erf(xi * r, x))


def packed_ops(dispatcher):
    """Packed float32 vector instructions in the compiled code (0 or a handful: the loop is scalar)."""
    return sum(len(re.findall(r"\bv\w+ps\s+%[yz]mm", asm)) for asm in dispatcher.inspect_asm().values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="calls per variant; the best is reported (default 50)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if numba.config.DISABLE_JIT:
        parser.error("NUMBA_DISABLE_JIT=1 is set: there is no compiled code to compare")
    numba.set_num_threads(1)
    fastmath = set(FASTMATH)
    x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)  # seed 0
    y = np.empty_like(x)
    n = x.shape[0]
    variants = [
        ("range(start, stop), error_model='python' (Numba's default)",
         numba.njit(nogil=True, fastmath=fastmath)(gelu_loop), (x, y, 0, n)),
        ("range(start, stop), error_model='numpy'",
         numba.njit(nogil=True, fastmath=fastmath, error_model="numpy")(gelu_loop), (x, y, 0, n)),
        ("range(x.shape[0]) over a slice, error_model='numpy' (the kernels)",
         numba.njit(nogil=True, fastmath=fastmath, error_model="numpy")(gelu_slice), (x, y)),
        ("prange, parallel=True, one thread",
         numba.njit(parallel=True, fastmath=fastmath)(gelu_prange), (x, y)),
    ]
    print(f"exact GELU forward, {n:,} float32 values, one thread, best of {args.repeats}; numba {numba.__version__}")
    print(f"{'loop':<68} {'ms':>7} {'ns/value':>9} {'packed vector ops':>18}")
    for label, kernel, call_args in variants:
        ms = best_and_median(lambda: kernel(*call_args), args.repeats)[0] * 1e3
        print(f"{label:<68} {ms:7.3f} {ms * 1e6 / n:9.2f} {packed_ops(kernel):18d}")


if __name__ == "__main__":
    main()
