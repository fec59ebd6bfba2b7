"""Shared pytest set-up for tinyft's tests."""


def pytest_configure(config):
    # tests/test_kernels_nojit.py reruns the tests marked nojit with NUMBA_DISABLE_JIT=1 (small shapes only)
    config.addinivalue_line("markers", "nojit: small-shape kernel test that also runs with NUMBA_DISABLE_JIT=1")
