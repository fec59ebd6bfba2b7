"""The process settings tinyft.kernels makes at import (kernels/_backend.py lists them): each is made by
default, each has its own way out, and TINYFT_NO_PROCESS_SETTINGS=1 skips them all."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWITCHES = ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "TINYFT_KEEP_MEMORY", "TINYFT_NO_PROCESS_SETTINGS")
PROBE = ("import json, os, numba, tinyft; from tinyft.kernels import _backend; "
         "print(json.dumps({'omp': os.environ.get('OMP_WAIT_POLICY'), 'layer': numba.config.THREADING_LAYER, "
         "'kept': _backend.MEMORY_KEPT}))")


def settings_after_import(**env):
    """What a fresh `import tinyft` leaves, in a process whose environment has only `env` of the switches."""
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_defaults_set_passive_openmp_and_the_workqueue_layer():
    made = settings_after_import()
    assert made["omp"] == "PASSIVE" and made["layer"] == "workqueue"
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert made["kept"] is True  # glibc: mallopt took effect


def test_no_process_settings_leaves_the_process_alone():
    made = settings_after_import(TINYFT_NO_PROCESS_SETTINGS="1")
    assert made == {"omp": None, "layer": "default", "kept": False}


def test_each_setting_has_its_own_switch():
    made = settings_after_import(OMP_WAIT_POLICY="ACTIVE", NUMBA_THREADING_LAYER="omp", TINYFT_KEEP_MEMORY="0")
    assert made == {"omp": "ACTIVE", "layer": "omp", "kept": False}
