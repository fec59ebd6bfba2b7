"""The exact GELU's float32 kernels: accuracy against float64 math and time beside the tanh GELU's.

Map of this script:
  accuracy()   forward and backward of the float32 Numba kernels on 4.4 million x in [-12, 12] against
               0.5 x (1 + erf(x / sqrt 2)) and Phi(x) + x phi(x) computed in float64 with math.erf
  timing()     median of --repeats calls at the MLP's shape (2048 x 512 float32): exact and tanh kernels,
               and the exact GELU's NumPy twin (math.erf per element)
Figures depend on the machine (printed first); docs/transformer.md quotes one run.
  python benchmarks/check_gelu_exact.py [--repeats 30]
"""

import argparse
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinyft.kernels import gelu  # noqa: E402


def accuracy():
    x = np.concatenate([np.linspace(-12, 12, 4_000_001), np.geomspace(1e-20, 12, 200_000),
                        -np.geomspace(1e-20, 12, 200_000)]).astype(np.float32)
    x64 = x.astype(np.float64)
    cdf = 0.5 * (1 + np.frompyfunc(math.erf, 1, 1)(x64 / math.sqrt(2)).astype(np.float64))
    want_y = x64 * cdf
    want_d = cdf + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)
    got_y = gelu.gelu_exact_forward_numba(x).astype(np.float64)
    got_d = gelu.gelu_exact_backward_numba(np.ones_like(x), x).astype(np.float64)
    tanh_y = gelu.gelu_forward_numba(x).astype(np.float64)
    for name, got, want in (("forward", got_y, want_y), ("backward", got_d, want_d)):
        err = np.abs(got - want)
        scaled = err / np.maximum(np.abs(want), 1.0)
        print(f"exact GELU {name}, float32 kernel vs float64: max |error| {err.max():.3g} (at x = "
              f"{x[err.argmax()]:.4g}); max |error| / max(|exact|, 1) {scaled.max():.3g}")
    d = np.abs(tanh_y - want_y)
    print(f"tanh GELU (float32 kernel) vs exact GELU (float64): max |difference| {d.max():.3g} "
          f"at x = {x[d.argmax()]:.4g}")


def timing(repeats):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(2048 * 512).astype(np.float32)
    g = rng.standard_normal(2048 * 512).astype(np.float32)
    cases = [("tanh forward", gelu.gelu_forward_numba, (x,)), ("exact forward", gelu.gelu_exact_forward_numba, (x,)),
             ("tanh backward", gelu.gelu_backward_numba, (g, x)),
             ("exact backward", gelu.gelu_exact_backward_numba, (g, x)),
             ("exact forward, NumPy twin", gelu.gelu_exact_forward_reference, (x,)),
             ("exact backward, NumPy twin", gelu.gelu_exact_backward_reference, (g, x))]
    for name, f, args in cases:
        f(*args)  # compile (or load from cache) first
        n = max(3, repeats // 10) if "twin" in name else repeats
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            f(*args)
            times.append(time.perf_counter() - t0)
        print(f"{name:28s} 2048 x 512 float32: median {1e3 * np.median(times):.2f} ms (best {1e3 * min(times):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}")
    accuracy()
    timing(args.repeats)
