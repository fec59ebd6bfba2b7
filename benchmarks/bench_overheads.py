"""Fixed costs behind the kernels' design: thread hand-offs, BLAS thread limits, libm calls, loop launches.

Map of this script:
  handoffs()         run_parallel with empty tasks, a ThreadPoolExecutor doing the same, one_blas_thread()
  per_element()      ns per float32 element: a Numba loop calling libm (math.tanh, math.exp) against
                     tinyft's vectorizable _math.tanh / _math.exp_nonpositive, and NumPy's np.tanh / np.exp
  small_products()   attention's q k^T for 64 heads of (128, 32): BLAS on its threads, held to one thread,
                     and as two halves on tinyft's threads
  loops_vs_blas()    the all-loops attention kernel's GFLOP/s on one thread against BLAS on one thread
  adamw_launches()   one AdamW step over the GPT's parameters: every parameter through the prange loop,
                     against the serial loop for the small ones (what tinyft.kernels.adamw does)
Each figure is the median of --repeats timed calls after one warm-up call. It backs docs/kernels.md.
Usage: python benchmarks/bench_overheads.py [--repeats 200]
"""

import argparse
import concurrent.futures
import math
import os
import statistics
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_step import CONFIG, machine  # noqa: E402  (the step benchmark's GPT and machine line)
from tinyft.kernels import _backend, _math, adamw, attention, gelu  # noqa: E402

F32 = np.float32


def median_s(fn, repeats):
    fn()  # warm-up: compilation, thread start, first touch of memory
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def handoffs(repeats):
    n = _backend.thread_count()
    noop = lambda: None  # noqa: E731
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=n)

    def executor():
        for future in [pool.submit(noop) for _ in range(n)]:
            future.result()

    def blas_limit():
        with _backend.one_blas_thread():
            pass

    print(f"{'hand-off of ' + str(n) + ' empty tasks (median us)':<56}")
    for name, fn in [("run_parallel (tinyft's threads)", lambda: _backend.run_parallel([noop] * n)),
                     ("ThreadPoolExecutor.submit + result", executor),
                     ("one_blas_thread(): set BLAS to 1 thread and back", blas_limit)]:
        print(f"  {name:<54}{median_s(fn, repeats) * 1e6:8.1f}")
    pool.shutdown()


def _loop(f):
    """out[i] = f(x[i]) compiled as the kernels are (prange, tinyft's fast-math flags); run it on one thread."""
    def body(x):
        out = np.empty_like(x)
        for i in numba.prange(x.shape[0]):
            out[i] = f(x[i], x)
        return out
    return numba.njit(parallel=True, fastmath=set(_backend.FASTMATH))(body)


def per_element(repeats):
    n = 1 << 19
    x = np.random.default_rng(0).uniform(-5, 5, n).astype(F32)  # seed 0
    neg = -np.abs(x) * F32(17)  # exp's argument is <= 0 in the kernels (x - max)
    libm_tanh = numba.njit(inline="always")(lambda u, like: math.tanh(u))
    libm_exp = numba.njit(inline="always")(lambda u, like: math.exp(u))
    cases = [("tanh: Numba loop calling math.tanh (libm)", _loop(libm_tanh), x),
             ("tanh: Numba loop calling _math.tanh", _loop(_math.tanh), x),
             ("tanh: np.tanh", np.tanh, x),
             ("GELU forward: gelu_forward_numba", gelu.gelu_forward_numba, x),
             ("exp: Numba loop calling math.exp (libm)", _loop(libm_exp), neg),
             ("exp: Numba loop calling _math.exp_nonpositive", _loop(_math.exp_nonpositive), neg),
             ("exp: np.exp", np.exp, neg)]
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        print(f"\n{'float32, 2^19 elements, one thread':<56}{'ns/element':>10}")
        for name, fn, arg in cases:
            print(f"  {name:<54}{median_s(lambda: fn(arg), repeats) / n * 1e9:10.2f}")
    finally:
        numba.set_num_threads(threads)


def small_products(repeats):
    rng = np.random.default_rng(1)  # seed 1
    q, kt = (rng.standard_normal(s).astype(F32) for s in ((64, 128, 32), (64, 32, 128)))
    out = np.empty((64, 128, 128), F32)

    def one_thread():
        with _backend.one_blas_thread():
            np.matmul(q, kt, out=out)

    def halves():
        _backend.run_parallel([lambda: np.matmul(q[:32], kt[:32], out=out[:32]),
                               lambda: np.matmul(q[32:], kt[32:], out=out[32:])])

    print(f"\n{'q k^T for 64 heads, (128,32)@(32,128) each (median ms)':<56}")
    for name, fn in [("np.matmul, BLAS's own threads", lambda: np.matmul(q, kt, out=out)),
                     ("np.matmul, BLAS held to one thread", one_thread),
                     ("two halves of 32 heads on tinyft's threads", halves)]:
        time.sleep(0.3)  # let BLAS's idle threads go to sleep between paths
        print(f"  {name:<54}{median_s(fn, repeats) * 1e3:8.3f}")


def loops_vs_blas(repeats):
    B, H, T, hd = 16, 4, 128, 32
    rng = np.random.default_rng(2)  # seed 2
    q, k, v = (0.5 * rng.standard_normal((B, H, T, hd)).astype(F32) for _ in range(3))
    causal_flops = B * H * 2 * (2 * hd * T * (T + 1) // 2)  # q k^T and p v, keys 0..i only for query i
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        loops = median_s(lambda: attention.attention_forward_loops_numba(q, k, v, True, True), repeats)
    finally:
        numba.set_num_threads(threads)
    q3, k3t = q.reshape(B * H, T, hd), np.ascontiguousarray(k.reshape(B * H, T, hd).transpose(0, 2, 1))

    def blas():
        with _backend.one_blas_thread():
            np.matmul(q3, k3t)

    full_flops = B * H * 2 * T * T * hd  # one full (128,32)@(32,128) product per head
    print(f"\n{'one thread, (B, H, T, hd) = (16, 4, 128, 32)':<56}{'GFLOP/s':>10}")
    print(f"  {'all-loops attention forward (the causal products)':<54}{causal_flops / loops / 1e9:10.1f}")
    print(f"  {'BLAS, q k^T of every head':<54}{full_flops / median_s(blas, repeats) / 1e9:10.1f}")


def adamw_launches(repeats):
    import tinyft
    from tinyft.nn import GPT, GPTConfig
    from tinyft.optim import AdamW
    tinyft.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG))
    params = list(model.parameters())
    for p in params:
        p.grad = np.full_like(p.data, 1e-3)
    opt = AdamW(params, lr=1e-4, weight_decay=0.1)
    saved = adamw.PARALLEL_MIN
    print(f"\n{f'one AdamW step, {len(params)} parameters (median ms)':<56}")
    try:
        for name, limit in [("every parameter through the prange loop", 0),
                            (f"serial loop below {saved:,} elements (tinyft)", saved)]:
            adamw.PARALLEL_MIN = limit
            print(f"  {name:<54}{median_s(opt.step, repeats) * 1e3:8.3f}")
    finally:
        adamw.PARALLEL_MIN = saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()))
    handoffs(args.repeats)
    per_element(args.repeats // 10 or 1)
    small_products(args.repeats)
    loops_vs_blas(args.repeats // 10 or 1)
    adamw_launches(args.repeats // 4 or 1)


if __name__ == "__main__":
    main()
