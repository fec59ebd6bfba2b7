"""The GPT training step under each process setting tinyft chooses at import, against the alternatives.

Map of this script:
  SETTINGS     name -> environment (and one code switch) for a fresh process: Numba's threading layer
               (workqueue, or OpenMP with OMP_WAIT_POLICY PASSIVE, ACTIVE or libgomp's default),
               TINYFT_KEEP_MEMORY=0 (glibc gives big blocks back), products on BLAS's own threads
  worker()     in the fresh process: build bench_step's GPT, 2 warm-up steps, time --steps steps (numba backend)
  main()       --rounds interleaved rounds (every setting once per round, each in a new process), then
               the median and best step time of each setting
These settings act when Numba or libgomp start, so each needs its own process. Backs docs/kernels.md,
"Compilation and threads". Usage: python benchmarks/bench_settings.py [--steps 10] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SETTINGS = {  # name -> (environment variables, products on BLAS's own threads?)
    "workqueue (tinyft's default)": ({}, False),
    "omp, OMP_WAIT_POLICY=PASSIVE": ({"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "PASSIVE"}, False),
    "omp, OMP_WAIT_POLICY=ACTIVE": ({"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "ACTIVE"}, False),
    # an empty value is not "unset" for tinyft (which only fills in an unset variable) but libgomp ignores it,
    # so this is libgomp's own default: spin for a while after each loop, then sleep
    "omp, libgomp's default wait policy": ({"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": ""}, False),
    "TINYFT_KEEP_MEMORY=0": ({"TINYFT_KEEP_MEMORY": "0"}, False),
    "products on BLAS's own threads": ({}, True),
}


def worker(name, steps):
    import numpy as np

    from bench_step import timed_steps, tinyft_stepper
    from tinyft import kernels

    if SETTINGS[name][1]:  # the linear layers' products as plain np.matmul calls, BLAS's threads
        def blas_matmuls(pairs, biases=None):
            biases = biases or [None] * len(pairs)
            return [np.matmul(a, b) if bias is None else np.matmul(a, b) + bias for (a, b), bias in zip(pairs, biases)]
        kernels.matmul.matmuls = blas_matmuls
    with kernels.use("numba"):
        times = timed_steps(tinyft_stepper(16), steps, warmup=2)  # warm-up: compile or load the cache, allocate
    import numba
    print(json.dumps({"layer": numba.threading_layer(), "times": times}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one process per setting each)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: time one setting, print JSON
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps)
        return
    from bench_step import CONFIG, machine
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()))
    print(f"GPT {CONFIG}, batch 16, numba backend; {args.rounds} rounds x {args.steps} steps, a fresh process each")
    times, layers = {name: [] for name in SETTINGS}, {}
    for _ in range(args.rounds):
        for name, (env, _) in SETTINGS.items():
            base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY",
                                                                      "TINYFT_KEEP_MEMORY")}
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--steps",
                                   str(args.steps)], env={**base, **env}, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            times[name] += result["times"]
            layers[name] = result["layer"]
    print(f"\n{'setting':<40}{'layer':>11}{'median ms':>11}{'best ms':>9}")
    for name, ts in times.items():
        print(f"{name:<40}{layers[name]:>11}{statistics.median(ts) * 1e3:>11.1f}{min(ts) * 1e3:>9.1f}")


if __name__ == "__main__":
    main()
