"""The kernel tests marked nojit, rerun with NUMBA_DISABLE_JIT=1: every kernel must run as plain Python.

With the JIT off, numba.njit returns the Python function and prange is range, so this checks the kernels'
Python semantics (what a student steps through in a debugger) against the same twins, on small shapes.
"""

import os
import subprocess
import sys
from pathlib import Path


def test_kernel_tests_pass_with_numba_jit_disabled():
    here = Path(__file__).resolve().parent
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", str(here / "test_kernels.py"), "-m", "nojit", "-q",
                           "-p", "no:cacheprovider"], capture_output=True, text=True, env=env, timeout=300,
                          cwd=here.parent)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
