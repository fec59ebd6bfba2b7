"""What a cold start spends compiling: one training step of the reference GPT with an empty Numba cache, then
each kernel it compiled with the time Numba's own timers recorded for it.

Map of this script:
  main()            re-runs itself in a fresh process whose NUMBA_CACHE_DIR is an empty temporary folder
  cold_step()       (in that process) import, build the reference GPT, time its first step, then
                    compile_times() and prange_against_range()
  compile_times()   every kernel signature the step compiled, compiled once more without a cache: wall seconds
  prange_against_range()   AdamW's update, one loop body compiled under prange (parallel=True) and as a
                    serial loop, each as the first kernel of its own fresh process
Numba compiles a kernel on its first call (docs/kernels.md, "Compilation and threads"); a parallel=True
kernel goes through Numba's parfor passes as well. Usage:
  python benchmarks/bench_compile.py
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def fresh_compile_seconds(dispatcher, signature):
    """Wall time to compile dispatcher's Python function for `signature` anew: the same options, no cache."""
    import numba
    options = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(cache=False, **options)(dispatcher.py_func)
    t0 = time.perf_counter()
    fresh.compile(signature)
    return time.perf_counter() - t0


def compile_times():
    """[(seconds, 'module.kernel', parallel)]: every kernel signature the step compiled, compiled again here."""
    import numba

    from tinyft.kernels import _backend
    rows = []
    for module_name in _backend._KERNEL_MODULES:
        module = sys.modules[f"tinyft.kernels.{module_name}"]
        for name, value in sorted(vars(module).items()):
            if isinstance(value, numba.core.registry.CPUDispatcher):
                for signature in value.signatures:
                    rows.append((fresh_compile_seconds(value, signature), f"{module_name}.{name}",
                                 bool(value.targetoptions.get("parallel"))))
    return sorted(rows, reverse=True)


ADAM_KERNELS = ("adam_update_numba", "adam_update_numba_serial")


def compile_adam(name):
    """(In a fresh process) compile adamw.<name> for float32 and return the wall seconds it took."""
    import numba

    from tinyft.kernels import adamw
    f32 = numba.float32[::1]
    signature = (f32, f32, f32, f32) + (numba.float64,) * 5 + (numba.int64, numba.boolean)
    return fresh_compile_seconds(getattr(adamw, name), signature)


def prange_against_range(env):
    """AdamW's update compiled both ways, each as the first kernel of a fresh process: the same loop body
    (_adam_element) under prange with parallel=True (adam_update_numba) and as a serial loop
    (adam_update_numba_serial). [(name, seconds)]"""
    rows = []
    for name in ADAM_KERNELS:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--adam", name], env=env, check=True,
                              capture_output=True, text=True)
        rows.append((name, float(done.stdout.strip().splitlines()[-1])))
    return rows


def cold_step():
    t0 = time.perf_counter()
    import tinyft.kernels  # noqa: F401 - timed: the import itself
    t1 = time.perf_counter()
    import bench_step
    step = bench_step.tinyft_stepper(16)  # the reference GPT, batch 16, exact GELU
    t2 = time.perf_counter()
    step()
    t3 = time.perf_counter()
    print(f"import {t1 - t0:.2f} s, build {t2 - t1:.2f} s, first step {t3 - t2:.2f} s: {t3 - t0:.2f} s in all "
          f"(NUMBA_CACHE_DIR an empty folder)")
    rows = compile_times()
    print("\nthe kernels that step compiled, each compiled once more here (wall s, no cache):")
    print(f"{'kernel':<44}{'parallel':>9}{'compile s':>11}")
    for seconds, name, parallel in rows:
        print(f"{name:<44}{'yes' if parallel else 'no':>9}{seconds:11.2f}")
    print(f"{'sum':<53}{sum(r[0] for r in rows):11.2f}")
    print("\nthe same loop body both ways (AdamW's update, float32), each the first kernel of a fresh process:")
    for name, seconds in prange_against_range(dict(os.environ)):
        print(f"{name:<44}{seconds:11.2f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)  # internal: the fresh process
    parser.add_argument("--adam", choices=ADAM_KERNELS, help=argparse.SUPPRESS)  # internal: compile one, print s
    args = parser.parse_args(argv)
    if args.adam:
        print(compile_adam(args.adam))
        return
    if args.here:
        cold_step()
        return
    with tempfile.TemporaryDirectory() as empty:
        env = {**os.environ, "NUMBA_CACHE_DIR": empty}
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--here"], env=env,
                              cwd=os.path.dirname(os.path.abspath(__file__)))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
