"""Kernels against their NumPy twins, fused ops against their composed specs, and the backend switch.

Map of this file:
  1. every *_numba kernel equals its *_reference twin (float32 and float64, awkward shapes, fwd and bwd);
     the threaded paths (matmuls, attention's head groups and row blocks, serial/parallel AdamW) and _math's tanh
  2. gradcheck (float64) through every fused Function under both backends
  3. every fused public op equals its *_composed spec (output and gradients)
  4. the switch: use() as call and context manager, TINYFT_KERNELS, bad names; the cache fallback
  5. the whole GPT: same loss and gradients under "numba" and "numpy"
  6. run_parallel / parallel_chunks: every task once, errors after all finish, serial off the main thread,
     BLAS held to one thread meanwhile and its counts restored
Tests marked nojit use tiny shapes; tests/test_kernels_nojit.py reruns them with NUMBA_DISABLE_JIT=1.
Speed is never asserted here: benchmarks/ measures it.
"""

import math
import os
import re
import subprocess
import sys
import threading
import time
import warnings

import numba
import numpy as np
import pytest
import threadpoolctl

import tinyft
from tinyft import Tensor, gradcheck, kernels
from tinyft import functional as F
from tinyft.kernels import _backend, _math, adamw, attention, cross_entropy, embedding, gelu, layernorm, matmul

DTYPES = [np.float32, np.float64]
BACKENDS = ["numba", "numpy"]
nojit = pytest.mark.nojit


def tol(dtype):
    return dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)


def randn(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def assert_all_close(got, want, dtype, what=""):
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype == dtype, f"{what}[{i}]: dtypes {a.dtype} vs {b.dtype}, expected {dtype}"
        np.testing.assert_allclose(a, b, err_msg=f"{what}[{i}]", **tol(dtype))


# ----------------------------------------------------------------------------------------------------
# 1. kernel vs twin
# ----------------------------------------------------------------------------------------------------


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 1)])
def test_layernorm_kernel_matches_twin_small(shape, dtype):
    check_layernorm(shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(65, 33), (130, 128), (64, 7)])  # 65, 130: not a multiple of ROWS_PER_CHUNK
def test_layernorm_kernel_matches_twin(shape, dtype):
    check_layernorm(shape, dtype)


def check_layernorm(shape, dtype):
    rng = np.random.default_rng(1)
    x = randn(rng, shape, dtype, 3.0) + dtype(2.0)
    w, b = randn(rng, shape[1:], dtype), randn(rng, shape[1:], dtype)
    eps = dtype(1e-5)
    want = layernorm.layernorm_forward_reference(x, w, b, eps)
    got = layernorm.layernorm_forward_numba(x, w, b, eps)
    assert_all_close(got, want, dtype, "layernorm forward")
    g = randn(rng, shape, dtype)
    want = layernorm.layernorm_backward_reference(g, x, w, want[1], want[2])
    got = layernorm.layernorm_backward_numba(g, x, w, got[1], got[2])
    assert_all_close(got, want, dtype, "layernorm backward")


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 300])
def test_gelu_kernel_matches_twin(n, dtype):
    rng = np.random.default_rng(2)
    x = randn(rng, n, dtype, 4.0)  # reaches the tanh clamp at |u| > 7.9
    if n > 2:
        x[:2] = (-30.0, 30.0)
    g = randn(rng, n, dtype)
    assert_all_close([gelu.gelu_forward_numba(x)], [gelu.gelu_forward_reference(x)], dtype, "gelu forward")
    assert_all_close([gelu.gelu_backward_numba(g, x)], [gelu.gelu_backward_reference(g, x)], dtype, "gelu backward")


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 301])
def test_gelu_exact_kernel_matches_twin(n, dtype):
    rng = np.random.default_rng(2)
    x = randn(rng, n, dtype, 4.0)  # reaches erf's +-1 clamp at |x / sqrt 2| > 3.83
    if n > 4:
        x[:4] = (-30.0, 30.0, -14.0, 1e30)  # exp(-x^2 / 2) underflows: phi is 0 in the backward, not nan
    g = randn(rng, n, dtype)
    with np.errstate(over="ignore"):  # under NUMBA_DISABLE_JIT, x^2 of 1e30 overflows to inf in NumPy scalars
        assert_all_close([gelu.gelu_exact_forward_numba(x)], [gelu.gelu_exact_forward_reference(x)], dtype,
                         "gelu_exact forward")
        assert_all_close([gelu.gelu_exact_backward_numba(g, x)], [gelu.gelu_exact_backward_reference(g, x)], dtype,
                         "gelu_exact backward")


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_exact_kernel_matches_erf_formula_written_here(dtype):
    """y = 0.5 x (1 + erf(x / sqrt 2)) and dy/dx = Phi(x) + x exp(-x^2/2) / sqrt(2 pi), per element in float64
    with math.erf: an oracle independent of the twin (which the kernel is also compared with above)."""
    x = np.array([-9.0, -3.1, -1.0, -0.37, -1e-6, 0.0, 2e-5, 0.5, 1.3, 2.7, 4.2, 8.0], dtype=dtype)
    x64 = x.astype(np.float64)
    y_want = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x64])
    d_want = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                       for v in x64])
    close = dict(rtol=1e-6, atol=2e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(gelu.gelu_exact_forward_numba(x), y_want, **close)
    np.testing.assert_allclose(gelu.gelu_exact_backward_numba(np.ones_like(x), x), d_want, **close)


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,ignored", [((1, 1), []), ((6, 5), [0, 3]), ((4, 3), [0, 1, 2, 3]), ((37, 70), [5])])
def test_cross_entropy_kernel_matches_twin(shape, ignored, dtype):
    rng = np.random.default_rng(3)
    N, V = shape
    logits = randn(rng, shape, dtype, 5.0)
    targets = rng.integers(0, V, N)
    targets[ignored] = -100
    want = cross_entropy.cross_entropy_forward_reference(logits, targets, -100)
    got = cross_entropy.cross_entropy_forward_numba(logits, targets, -100)
    assert_all_close(got, want, dtype, "cross_entropy forward")
    assert np.all(got[0][ignored] == 0)
    g_rows = randn(rng, N, dtype)
    want = cross_entropy.cross_entropy_backward_reference(g_rows, logits, targets, -100, want[1])
    got = cross_entropy.cross_entropy_backward_numba(g_rows, logits, targets, -100, got[1])
    assert_all_close([got], [want], dtype, "cross_entropy backward")
    assert np.all(got[ignored] == 0)


ATTENTION_SMALL = [(1, 1, 1, 1), (2, 1, 5, 3), (1, 3, 4, 2)]  # T = 1, H = 1, odd hd


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ATTENTION_SMALL)
def test_attention_kernel_matches_twin_small(shape, dtype):
    for causal in (True, False):
        for save_probs in (True, False):
            check_attention(shape, dtype, causal, save_probs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 33, 7), (1, 2, 64, 32), (2, 1, 17, 16)])
def test_attention_kernel_matches_twin(shape, dtype):
    for causal in (True, False):
        for save_probs in (True, False):
            check_attention(shape, dtype, causal, save_probs)


ATTENTION_PATHS = {"blas+softmax": (attention.attention_forward_numba, attention.attention_backward_numba),
                   "loops": (attention.attention_forward_loops_numba, attention.attention_backward_loops_numba)}


def check_attention(shape, dtype, causal, save_probs, paths=tuple(ATTENTION_PATHS)):
    """The Numba paths (BLAS + fused softmax, and the all-loops kernel) against the NumPy twin."""
    rng = np.random.default_rng(4)
    q, k, v, dout = (randn(rng, shape, dtype) for _ in range(4))
    want = attention.attention_forward_reference(q, k, v, causal, save_probs)
    want_grads = attention.attention_backward_reference(dout, q, k, v, *want, causal)
    for name in paths:
        forward, backward = ATTENTION_PATHS[name]
        what = f"attention {name} shape={shape} causal={causal} save_probs={save_probs}"
        got = forward(q, k, v, causal, save_probs)
        assert_all_close(got, want, dtype, what + " forward")
        if causal and save_probs:  # the masked entries: exact zeros, whatever the products skipped
            above = np.triu(np.ones(shape[2:3] * 2, dtype=bool), k=1)
            assert not got[2][..., above].any(), what + ": probabilities above the diagonal"
        got = backward(dout, q, k, v, *got, causal)
        assert_all_close(got, want_grads, dtype, what + " backward")


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row_block", [1, 5, 64, 1000])
@pytest.mark.parametrize("heads_per_task", [1, 3])
def test_attention_numba_matches_twin_for_any_head_groups_and_row_blocks(heads_per_task, row_block, dtype,
                                                                         monkeypatch):
    # The tests above never split: tasks take whole batch elements (about HEADS_PER_TASK = 16 heads) and
    # T <= 64 (ROW_BLOCK = 64). Here heads_per_task 1 and 3 give one batch element per task.
    monkeypatch.setattr(attention, "HEADS_PER_TASK", heads_per_task)
    monkeypatch.setattr(attention, "ROW_BLOCK", row_block)
    for shape in [(1, 5, 13, 8), (2, 2, 10, 3), (2, 1, 1, 4)]:  # B*H = 5, 4, 2 heads; T = 13, 10 (5 | 10), 1
        for causal in (True, False):
            for save_probs in (True, False):
                check_attention(shape, dtype, causal, save_probs, paths=["blas+softmax"])


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_backward_kernel_adds_repeated_ids(dtype):
    rng = np.random.default_rng(5)
    ids = np.array([3, 0, 3, 3, 1, 6], dtype=np.int64)  # 3 repeats, rows 2, 4, 5 unused
    g = randn(rng, (6, 4), dtype)
    got = embedding.embedding_backward_numba(ids, g, 7)
    assert_all_close([got], [embedding.embedding_backward_reference(ids, g, 7)], dtype, "embedding backward")
    np.testing.assert_allclose(got[3], g[0] + g[2] + g[3], **tol(dtype))


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled,weight_decay", [(True, 0.1), (False, 0.1), (True, 0.0)])
def test_adam_update_kernel_matches_twin(decoupled, weight_decay, dtype):
    rng = np.random.default_rng(6)
    arrays = [randn(rng, 37, dtype) for _ in range(3)] + [np.abs(randn(rng, 37, dtype))]  # p, g, m, v >= 0
    twin = [a.copy() for a in arrays]
    for t in (1, 2, 3):
        adamw.adam_update_numba(*arrays, 1e-2, 0.9, 0.999, 1e-8, weight_decay, t, decoupled)
        adamw.adam_update_reference(*twin, 1e-2, 0.9, 0.999, 1e-8, weight_decay, t, decoupled)
    assert_all_close(arrays, twin, dtype, "adam update p, g, m, v")


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_many_in_chunks_equals_the_twin_parameter_by_parameter(dtype, monkeypatch):
    """What AdamW.step runs: every parameter in one call, cut into CHUNK-element tasks on tinyft's threads.
    The update is elementwise, so cutting must not change one bit (compared with the serial kernel run on
    each whole parameter) and must match the NumPy twin; a non-contiguous parameter takes the twin."""
    monkeypatch.setattr(adamw, "CHUNK", 5)  # 13 elements -> chunks of 5, 5, 3
    rng = np.random.default_rng(15)
    shapes, hyper = [(13,), (2, 3), (1,)], [(1e-2, 0.9, 0.999, 1e-8, 0.1, True), (3e-3, 0.8, 0.99, 1e-6, 0.01, False),
                                           (1e-1, 0.9, 0.95, 1e-8, 0.0, True)]
    arrays = [[randn(rng, s, dtype) for _ in range(3)] + [np.abs(randn(rng, s, dtype))] for s in shapes]
    whole, twin = ([[a.copy() for a in group] for group in arrays] for _ in range(2))
    strided = [randn(rng, (4, 6), dtype)[:, ::2] for _ in range(3)] + [np.abs(randn(rng, (4, 6), dtype))[:, ::2]]
    strided_twin = [np.ascontiguousarray(a) for a in strided]
    with kernels.use("numba"):
        for t in (1, 2):
            adamw.adam_update_many([(*group, lr, b1, b2, eps, wd, t, dec) for group, (lr, b1, b2, eps, wd, dec)
                                    in zip(arrays + [strided], hyper + [hyper[0]])])
            for group, twin_group, (lr, b1, b2, eps, wd, dec) in zip(whole, twin, hyper):
                adamw.adam_update_numba_serial(*(a.reshape(-1) for a in group), lr, b1, b2, eps, wd, t, dec)
                adamw.adam_update_reference(*twin_group, lr, b1, b2, eps, wd, t, dec)
            adamw.adam_update_reference(*strided_twin, *hyper[0][:5], t, True)
    for got, want_bits, want in zip(arrays, whole, twin):
        for a, b in zip(got, want_bits):
            np.testing.assert_array_equal(a, b)  # chunking changes nothing
        assert_all_close(got, want, dtype, "adam_update_many vs the twin")
    assert_all_close(strided, strided_twin, dtype, "a non-contiguous parameter")


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kernel", [((7,), "adam_update_numba_serial"), ((8,), "adam_update_numba"),
                                          ((3, 3), "adam_update_numba")])  # PARALLEL_MIN = 8: below, at, above
def test_adam_update_picks_serial_below_parallel_min_and_both_match_twin(shape, kernel, dtype, monkeypatch):
    monkeypatch.setattr(adamw, "PARALLEL_MIN", 8)
    calls = []

    def spy(name, kernel):
        def record_and_run(*args):
            calls.append(name)
            return kernel(*args)
        return record_and_run

    for name in ("adam_update_numba", "adam_update_numba_serial"):
        monkeypatch.setattr(adamw, name, spy(name, getattr(adamw, name)))
    rng = np.random.default_rng(14)
    for decoupled in (True, False):
        arrays = [randn(rng, shape, dtype) for _ in range(3)] + [np.abs(randn(rng, shape, dtype))]  # p, g, m, v
        twin = [a.copy() for a in arrays]
        with kernels.use("numba"):
            for t in (1, 2, 3):
                adamw.adam_update(*arrays, 1e-2, 0.9, 0.999, 1e-8, 0.1, t, decoupled)
                adamw.adam_update_reference(*twin, 1e-2, 0.9, 0.999, 1e-8, 0.1, t, decoupled)
        assert_all_close(arrays, twin, dtype, f"adam update {kernel} decoupled={decoupled}")
    assert calls == [kernel] * 6


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_kernels_match_numpy_small(dtype):
    rng = np.random.default_rng(7)
    a, b = randn(rng, (1, 1), dtype), randn(rng, (1, 3), dtype)
    assert_all_close([matmul.matmul_tiled_numba(a, b)], [a @ b], dtype, "tiled matmul 1x1")
    a, b = randn(rng, (2, 3, 4), dtype), randn(rng, (2, 4, 5), dtype)
    assert_all_close([matmul.batched_matmul_numba(a, b)], [a @ b], dtype, "batched matmul")


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_kernels_match_numpy(dtype):
    rng = np.random.default_rng(8)
    a, b = randn(rng, (65, 70), dtype), randn(rng, (70, 131), dtype)  # crosses TILE = 64 boundaries
    assert_all_close([matmul.matmul_tiled_numba(a, b)], [a @ b], dtype, "tiled matmul")
    a, b = randn(rng, (2, 3, 9, 5), dtype), randn(rng, (1, 5, 6), dtype)  # broadcast batch
    for backend in BACKENDS:
        with kernels.use(backend):
            assert_all_close([matmul.batched_matmul(a, b)], [np.matmul(a, b)], dtype, f"batched {backend}")


def matrix(rng, n, k, dtype, transposed=False):
    """An (n, k) matrix: C-contiguous, or the .T view of a contiguous (k, n) one (as g^T in dW = g^T x)."""
    return randn(rng, (k, n), dtype).T if transposed else randn(rng, (n, k), dtype)


def check_matmuls(pairs, dtype, what):
    assert_all_close(matmul.matmuls(pairs), [np.matmul(a, b) for a, b in pairs], dtype, what + " matmuls")
    for i, (a, b) in enumerate(pairs):
        assert_all_close([matmul.matmul(a, b)], [np.matmul(a, b)], dtype, f"{what} matmul [{i}]")


def linear_backward_pairs(rng, n, fan_in, fan_out, dtype):
    """A linear layer's backward products, as functional.LinearFunction asks for them: dx = g W, dW = g^T x."""
    g, x, w = randn(rng, (n, fan_out), dtype), randn(rng, (n, fan_in), dtype), randn(rng, (fan_out, fan_in), dtype)
    return [(g, w), (g.T, x)]


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threaded", [False, True])  # True: PARALLEL_MIN_MACS = 0 forces the threaded path
def test_matmuls_match_numpy_small(threaded, backend, dtype, monkeypatch):
    if threaded:
        monkeypatch.setattr(matmul, "PARALLEL_MIN_MACS", 0)
    rng = np.random.default_rng(15)
    with kernels.use(backend):
        check_matmuls([(matrix(rng, 1, 3, dtype), matrix(rng, 3, 4, dtype))], dtype, "1 row")  # n < thread_count()
        check_matmuls([(matrix(rng, 5, 2, dtype, True), matrix(rng, 2, 3, dtype, True))], dtype, "transposed")
        check_matmuls(linear_backward_pairs(rng, 7, 3, 4, dtype), dtype, "dx, dW")
        check_matmuls([(matrix(rng, 7, 3, dtype), matrix(rng, 3, 2, dtype)), (matrix(rng, 1, 4, dtype, True),
                       matrix(rng, 4, 5, dtype)), (matrix(rng, 2, 6, dtype, True), matrix(rng, 6, 1, dtype))],
                      dtype, "3 pairs")


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threaded", [False, True])
def test_matmul_adds_the_bias_to_every_row_of_every_block(threaded, backend, dtype, monkeypatch):
    if threaded:
        monkeypatch.setattr(matmul, "PARALLEL_MIN_MACS", 0)
    rng = np.random.default_rng(19)
    a, b, bias = matrix(rng, 7, 3, dtype), matrix(rng, 3, 4, dtype), randn(rng, 4, dtype)
    c, d = matrix(rng, 5, 2, dtype, True), matrix(rng, 2, 6, dtype)
    with kernels.use(backend):
        assert_all_close([matmul.matmul(a, b, bias)], [a @ b + bias], dtype, "matmul + bias")
        assert_all_close(matmul.matmuls([(a, b), (c, d)], [bias, None]), [a @ b + bias, c @ d], dtype,
                         "matmuls, one product with a bias and one without")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matmuls_match_numpy_above_and_below_parallel_min(backend, dtype, monkeypatch):
    threaded = []  # how many times matmuls_threads handed tasks to run_parallel
    monkeypatch.setattr(matmul, "run_parallel", lambda tasks: (threaded.append(len(tasks)), _backend.run_parallel(tasks)))
    rng = np.random.default_rng(16)
    big = [[(matrix(rng, 601, 64, dtype), matrix(rng, 64, 96, dtype))],  # 3.7M multiply-adds, odd rows
           [(matrix(rng, 1, 2048, dtype), matrix(rng, 2048, 1100, dtype))],  # 2.25M in ONE row: fewer rows than threads
           linear_backward_pairs(rng, 600, 64, 96, dtype),  # dx and dW, 3.7M each, dW from the transposed g
           linear_backward_pairs(rng, 300, 64, 96, dtype) + [(matrix(rng, 64, 300, dtype, True), matrix(rng, 300, 50, dtype))]]
    small = [[(matrix(rng, 1, 64, dtype), matrix(rng, 64, 96, dtype))], linear_backward_pairs(rng, 60, 64, 96, dtype)]
    with kernels.use(backend):
        for size, cases in (("big", big), ("small", small)):
            for pairs in cases:
                macs = sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
                assert (macs >= matmul.PARALLEL_MIN_MACS) == (size == "big"), f"{size}: {macs} multiply-adds"
                what = f"{backend} {size} {[(a.shape, b.shape) for a, b in pairs]}"
                assert_all_close(matmul.matmuls(pairs), [np.matmul(a, b) for a, b in pairs], dtype, what)
    assert len(threaded) == (len(big) if backend == "numba" else 0)  # the big calls, and only they, went threaded


def _tanh_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = _math.tanh(x[i], x)
    return out


def _erf_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = _math.erf(x[i], x)
    return out


def _exp_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = _math.exp_nonpositive(x[i], x)
    return out


def _tanh_and_one(u, like):
    return _math.tanh(u, like), _math.as_type(1, like)


# Not tinyft's cached njit: a cached wrapper would keep _math's old formulas after _math.py changes.
tanh_all = numba.njit(fastmath=set(_backend.FASTMATH))(_tanh_all)
exp_all = numba.njit(fastmath=set(_backend.FASTMATH))(_exp_all)
erf_all = numba.njit(fastmath=set(_backend.FASTMATH))(_erf_all)
tanh_and_one = numba.njit(fastmath=set(_backend.FASTMATH))(_tanh_and_one)


@nojit
def test_tanh_float32_within_a_few_ulps_and_float64_is_libm():
    F32 = np.float32
    edges = [_math.TANH_ONE, _math.TANH_CLAMP, F32(0.0), F32(1e-30)]
    edges += [np.nextafter(e, F32(0.0)) for e in edges] + [np.nextafter(e, F32(20.0)) for e in edges]
    n = 2_401 if numba.config.DISABLE_JIT else 240_001  # plain Python: a coarser grid
    x = np.concatenate([np.linspace(-12, 12, n, dtype=F32), edges, np.negative(edges)]).astype(F32)
    got = tanh_all(x)
    want = np.tanh(x.astype(np.float64))
    assert got.dtype == F32
    ulp = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(want), 1e-38))) - 23)  # float32 ulp at the exact value
    assert np.max(np.abs(got - want) / ulp) <= 6  # measured: 4.3 ulps, at x = -5.21
    ones = np.abs(x) >= _math.TANH_ONE
    assert np.array_equal(got[ones], np.sign(x[ones])) and np.all(np.abs(got) <= 1)  # exactly +-1 from TANH_ONE
    x64 = np.linspace(-12, 12, 2001)
    np.testing.assert_allclose(tanh_all(x64), np.tanh(x64), rtol=1e-15, atol=1e-15)
    if not numba.config.DISABLE_JIT:  # typed: float32 in, float32 arithmetic out (and float64 stays float64)
        for dtype in (F32, np.float64):
            tanh_and_one(dtype(0.5), np.zeros(1, dtype))
        assert {sig.return_type for sig in tanh_and_one.nopython_signatures} == {
            numba.types.UniTuple(numba.float32, 2), numba.types.UniTuple(numba.float64, 2)}


@nojit
def test_erf_float32_within_its_stated_error_and_float64_is_libm():
    F32 = np.float32
    edges = [_math.ERF_ONE, F32(0.0), F32(1e-30)]
    edges += [np.nextafter(e, F32(0.0)) for e in edges] + [np.nextafter(e, F32(20.0)) for e in edges]
    n = 2_401 if numba.config.DISABLE_JIT else 240_001
    x = np.concatenate([np.linspace(-6, 6, n, dtype=F32), edges, np.negative(edges)]).astype(F32)
    got = erf_all(x)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert got.dtype == F32
    assert np.max(np.abs(got - want)) < 3.6e-7  # the bound _math.py states
    ulp = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(want), 1e-38))) - 23)  # float32 ulp at the exact value
    assert np.max(np.abs(got - want) / ulp) <= 6
    ones = np.abs(x) >= _math.ERF_ONE
    assert np.array_equal(got[ones], np.sign(x[ones])) and np.all(np.abs(got) <= 1)
    x64 = np.linspace(-7, 7, 2001)
    np.testing.assert_allclose(erf_all(x64), [math.erf(v) for v in x64], rtol=1e-15, atol=1e-16)


@nojit
def test_exp_nonpositive_float32_within_its_stated_error_and_float64_is_libm():
    n = 2_001 if numba.config.DISABLE_JIT else 400_001
    x = np.concatenate([np.linspace(-87.3, 0, n, dtype=np.float32), np.float32([-1e-30, -0.5 * np.log(2), -0.0])])
    got = exp_all(x)
    assert got.dtype == np.float32 and got[-1] == 1
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 3.1e-7  # the bound _math.py states (measured: 2.96e-7)
    low = exp_all(np.float32([-87.4, -100.0, -1e4, -np.inf]))  # below EXP_LOW: about the smallest normal float32
    assert np.all((low > 0) & (low < 1.3e-38))
    x64 = np.linspace(-700, 0, 2001)
    np.testing.assert_allclose(exp_all(x64), np.exp(x64), rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------------------------------
# 2. gradcheck through every fused Function, both backends
# ----------------------------------------------------------------------------------------------------


def leaf(rng, *shape, scale=1.0):
    return Tensor(rng.standard_normal(shape) * scale, requires_grad=True)


@nojit
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_functions_pass_gradcheck(backend):
    rng = np.random.default_rng(9)
    x, w, b = leaf(rng, 2, 3, 5), leaf(rng, 5), leaf(rng, 5)
    W, bias = leaf(rng, 4, 5), leaf(rng, 4)
    q, k, v = leaf(rng, 2, 2, 4, 3), leaf(rng, 2, 2, 4, 3), leaf(rng, 2, 2, 4, 3)
    table = leaf(rng, 6, 3)
    targets = np.array([[0, 4, -1], [2, -1, 1]])
    with kernels.use(backend):
        assert gradcheck(lambda x, w, b: F.layer_norm(x, w, b), [x, w, b])
        assert gradcheck(lambda x, w: F.layer_norm(x, w), [x, w])
        assert gradcheck(F.gelu, [leaf(rng, 3, 4, scale=3.0)])
        assert gradcheck(F.gelu_exact, [leaf(rng, 3, 4, scale=3.0)])
        assert gradcheck(lambda x, W, bias: F.linear(x, W, bias), [x, W, bias])
        assert gradcheck(lambda x, W: F.linear(x, W), [x, W])
        assert gradcheck(lambda x: F.cross_entropy(x, targets, ignore_index=-1), [x])
        assert gradcheck(lambda x: F.cross_entropy(x, np.abs(targets)), [x])
        assert gradcheck(lambda q, k, v: F.attention(q, k, v), [q, k, v])
        assert gradcheck(lambda q, k, v: F.attention(q, k, v, causal=False), [q, k, v])
        assert gradcheck(lambda t: F.qkv_attention(t, 2), [leaf(rng, 2, 5, 12)])  # 2 heads of 2 channels
        assert gradcheck(lambda t: F.qkv_attention(t, 2, causal=False), [leaf(rng, 2, 5, 12)])
        assert gradcheck(lambda t: F.embedding(np.array([[1, 5, 1], [0, 1, 1]]), t), [table])


def test_fused_functions_pass_gradcheck_on_the_threaded_paths(monkeypatch):
    """float64 gradcheck through linear's threaded products and attention split into head groups and row
    blocks (the default thresholds keep the shapes above on the single-task paths)."""
    monkeypatch.setattr(matmul, "PARALLEL_MIN_MACS", 0)
    monkeypatch.setattr(attention, "HEADS_PER_TASK", 3)  # 2 x 2 heads -> tasks of 3 and 1
    monkeypatch.setattr(attention, "ROW_BLOCK", 2)  # T = 5 -> row blocks 0-1, 2-3, 4
    rng = np.random.default_rng(10)
    x, W, bias = leaf(rng, 3, 4, 5), leaf(rng, 6, 5), leaf(rng, 6)
    q, k, v = leaf(rng, 2, 2, 5, 3), leaf(rng, 2, 2, 5, 3), leaf(rng, 2, 2, 5, 3)
    with kernels.use("numba"):
        assert gradcheck(lambda x, W, bias: F.linear(x, W, bias), [x, W, bias])
        assert gradcheck(lambda q, k, v: F.attention(q, k, v), [q, k, v])
        assert gradcheck(lambda q, k, v: F.attention(q, k, v, causal=False), [q, k, v])
        packed = leaf(rng, 3, 5, 18)  # 3 heads of 2: one batch element per task, 3 tasks
        assert gradcheck(lambda t: F.qkv_attention(t, 3), [packed])
        assert gradcheck(lambda t: F.qkv_attention(t, 3, causal=False), [packed])


# ----------------------------------------------------------------------------------------------------
# 3. fused public op == composed spec
# ----------------------------------------------------------------------------------------------------


def run(op, arrays, dtype, grad_seed=0):
    """Output and input gradients of op(*Tensors) for a fixed random upstream gradient."""
    tensors = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    out = op(*tensors)
    g = np.random.default_rng(grad_seed).standard_normal(out.shape).astype(dtype)
    out.backward(g)
    return [out.data] + [t.grad for t in tensors]


TARGETS = np.array([[1, 0, 6, 2], [-1, 3, 3, -1], [5, 2, -1, 0]])
FUSED_VS_COMPOSED = {
    "linear": (F.linear, F.linear_composed, [(3, 4, 5), (6, 5), (6,)]),
    "linear_no_bias": (lambda x, w: F.linear(x, w), lambda x, w: F.linear_composed(x, w), [(2, 5), (3, 5)]),
    "layer_norm": (F.layer_norm, F.layer_norm_composed, [(3, 4, 7), (7,), (7,)]),
    "gelu": (F.gelu, F.gelu_composed, [(3, 4, 7)]),
    "gelu_exact": (F.gelu_exact, F.gelu_exact_composed, [(3, 4, 7)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, TARGETS, ignore_index=-1),
                      lambda x: F.cross_entropy_composed(x, TARGETS, ignore_index=-1), [(3, 4, 7)]),
    "embedding": (lambda w: F.embedding(TARGETS + 1, w), lambda w: F.embedding_composed(TARGETS + 1, w), [(8, 3)]),
    "attention": (F.attention, F.attention_composed, [(2, 3, 5, 4)] * 3),
    "attention_full": (lambda q, k, v: F.attention(q, k, v, causal=False),
                       lambda q, k, v: F.attention_composed(q, k, v, causal=False), [(1, 2, 6, 3)] * 3),
    "qkv_attention": (lambda t: F.qkv_attention(t, 3), lambda t: F.qkv_attention_composed(t, 3), [(2, 5, 18)]),
    "qkv_attention_full": (lambda t: F.qkv_attention(t, 2, causal=False),
                           lambda t: F.qkv_attention_composed(t, 2, causal=False), [(1, 6, 12)]),
}


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(FUSED_VS_COMPOSED))
def test_fused_op_equals_composed_spec(name, backend, dtype):
    fused, composed, shapes = FUSED_VS_COMPOSED[name]
    rng = np.random.default_rng(10)
    arrays = [rng.standard_normal(s) * 2 for s in shapes]
    with kernels.use(backend):
        got = run(fused, arrays, dtype)
    want = run(composed, arrays, dtype)
    assert_all_close(got, want, dtype, f"{name} fused vs composed")


def test_cross_entropy_with_nothing_counted_is_zero_with_zero_gradient():
    logits = Tensor(np.random.default_rng(11).standard_normal((2, 3, 4)).astype(np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.full((2, 3), 7), ignore_index=7)
    loss.backward()
    assert loss.item() == 0.0 and loss.dtype == np.float32
    assert np.all(logits.grad == 0)


def test_fused_ops_keep_errors_and_other_dtypes():
    with pytest.raises(ValueError, match="linear: input has 3 features"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5))))
    with pytest.raises(ValueError, match=r"qkv_attention: qkv must be \(B, T, 3C\) with C divisible by n_head=2"):
        F.qkv_attention(Tensor(np.ones((1, 2, 9))), 2)
    with pytest.raises(ValueError, match="qkv_attention: n_head must be a positive int"):
        F.qkv_attention(Tensor(np.ones((1, 2, 6))), 0)
    with pytest.raises(ValueError, match="attention: q, k, v must share one shape"):
        F.attention(Tensor(np.ones((1, 1, 2, 3))), Tensor(np.ones((1, 1, 2, 3))), Tensor(np.ones((1, 1, 3, 3))))
    with pytest.raises(ValueError, match=r"cross_entropy: targets must lie in \[0, 4\)"):
        F.cross_entropy(Tensor(np.ones((2, 4))), np.array([0, 4]))
    with pytest.raises(ValueError, match="embedding: ids must lie in"):
        F.embedding(np.array([5]), Tensor(np.ones((3, 2))))
    x16 = Tensor(np.linspace(-3, 3, 13).astype(np.float16))  # not a kernel dtype: the composed path serves it
    y16 = F.gelu(x16).data
    x = x16.data.astype(np.float64)
    want = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))  # the formula, in float64
    assert y16.dtype == np.float16
    # float16 spacing near 1 is 2^-10 ~ 1e-3, and 1 + tanh(u) is rounded there before it is scaled by x / 2
    np.testing.assert_allclose(y16.astype(np.float64), want, rtol=2e-3, atol=3e-3)
    ye16 = F.gelu_exact(x16).data
    assert ye16.dtype == np.float16
    want_exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])  # x * Phi(x), in float64
    np.testing.assert_allclose(ye16.astype(np.float64), want_exact, rtol=2e-3, atol=3e-3)
    mixed = F.layer_norm(Tensor(np.ones((2, 3), np.float32)), Tensor(np.ones(3)), Tensor(np.zeros(3)))
    assert mixed.dtype == np.float64  # float32 x with float64 weight promotes, as the composed version does


# ----------------------------------------------------------------------------------------------------
# 4. the switch and the cache fallback
# ----------------------------------------------------------------------------------------------------


@nojit
def test_use_switches_and_context_manager_restores():
    before = kernels.current()
    with kernels.use("numpy"):
        assert kernels.current() == "numpy"
        with kernels.use("numba"):
            assert kernels.current() == "numba"
        assert kernels.current() == "numpy"
    assert kernels.current() == before
    kernels.use("numpy")
    try:
        assert kernels.current() == "numpy"
    finally:
        kernels.use(before)


def test_use_rejects_unknown_backend_naming_the_valid_ones():
    with pytest.raises(ValueError, match="'numba', 'numpy'"):
        kernels.use("cuda")
    assert kernels.current() in kernels.BACKENDS


def python_in_subprocess(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_env_var_sets_default_backend_and_rejects_bad_names():
    done = python_in_subprocess("import tinyft.kernels as k; print(k.current())", TINYFT_KERNELS="numpy")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy"
    done = python_in_subprocess("import tinyft.kernels", TINYFT_KERNELS="fortran")
    assert done.returncode != 0 and "TINYFT_KERNELS='fortran'" in done.stderr and "'numba', 'numpy'" in done.stderr


def test_unwritable_cache_folder_warns_once_and_still_compiles(monkeypatch):
    monkeypatch.setattr(_backend, "_writable", lambda folder: False)
    monkeypatch.setattr(_backend, "_warned_folders", set())
    monkeypatch.setattr(_backend.numba.config, "DISABLE_JIT", False)

    def double(x):
        return 2 * x

    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        fast_double = _backend.njit()(double)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second kernel from the same folder: no second warning
        _backend.njit()(lambda x: x)
    assert fast_double(21) == 42


# ----------------------------------------------------------------------------------------------------
# 5. the whole GPT under both backends
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 8])  # T = 1 and T = block_size
def test_gpt_loss_and_gradients_agree_under_both_backends(T):
    from tinyft import nn  # nn.py exists: an ImportError here is a failure, not a reason to skip
    tinyft.manual_seed(0)
    model = nn.GPT(nn.GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=12))
    rng = np.random.default_rng(12)
    idx, targets = rng.integers(0, 13, (3, T)), rng.integers(0, 13, (3, T))
    targets[0, 0] = -1  # an ignored position
    results = {}
    for backend in BACKENDS:
        with kernels.use(backend):
            model.zero_grad()
            _, loss = model(idx, targets)
            loss.backward()
            results[backend] = (loss.item(), {n: p.grad.copy() for n, p in model.named_parameters()})
    (loss_a, grads_a), (loss_b, grads_b) = results["numba"], results["numpy"]
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        np.testing.assert_allclose(grads_a[name], grads_b[name], rtol=1e-3, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------------------------------
# 6. run_parallel / parallel_chunks: the threads under matmuls and attention
# ----------------------------------------------------------------------------------------------------


def blas_threads():
    return [(lib["filepath"], lib["num_threads"]) for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def two_threads(monkeypatch):
    """run_parallel on two threads (the caller and one helper) whatever the machine, or skip if BLAS can't be held."""
    with _backend.one_blas_thread() as blas:
        if not blas.ok:
            pytest.skip("no BLAS library threadpoolctl can control: run_parallel runs serially")
    monkeypatch.setattr(_backend, "thread_count", lambda: 2)


def test_parallel_chunks_runs_every_chunk_once_into_its_own_slice(two_threads):
    n, chunk = 103, 4  # 26 chunks for 2 threads, the last one 3 long
    out, hits, calls = np.zeros(n), np.zeros(n, dtype=int), []

    def work(start, stop):
        calls.append((start, stop))
        hits[start:stop] += 1
        out[start:stop] = np.arange(start, stop) ** 2

    _backend.parallel_chunks(work, n, chunk)
    assert sorted(calls) == [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    assert np.all(hits == 1)
    np.testing.assert_array_equal(out, np.arange(n) ** 2)


def test_parallel_rows_cuts_two_blocks_per_thread_never_under_grain(two_threads):
    for n, grain, chunk in ((103, 4, 26), (103, 50, 50), (3, 1, 1), (0, 8, 8)):  # chunk = max(grain, ceil(n / 4))
        calls = []
        _backend.parallel_rows(lambda start, stop: calls.append((start, stop)), n, grain)
        assert sorted(calls) == [(s, min(s + chunk, n)) for s in range(0, n, chunk)], (n, grain)


def row_kernel_runs(dtype):
    """Every row kernel's _numba function on shapes that are no multiple of anything, with its inputs and its
    twin: [(name, call, twin_call), ...]."""
    rng = np.random.default_rng(11)
    x, w, b, g = randn(rng, (130, 33), dtype, 2.0), randn(rng, 33, dtype), randn(rng, 33, dtype), randn(rng, (130, 33), dtype)
    eps = dtype(1e-5)
    _, mean, rstd = layernorm.layernorm_forward_reference(x, w, b, eps)
    h, gh = randn(rng, 301, dtype, 3.0), randn(rng, 301, dtype)
    logits, targets, g_rows = randn(rng, (37, 70), dtype, 4.0), rng.integers(0, 70, 37), randn(rng, 37, dtype)
    targets[5] = -100
    _, lse = cross_entropy.cross_entropy_forward_reference(logits, targets, -100)
    return [
        ("layernorm forward", lambda: layernorm.layernorm_forward_numba(x, w, b, eps),
         lambda: layernorm.layernorm_forward_reference(x, w, b, eps)),
        ("layernorm backward", lambda: layernorm.layernorm_backward_numba(g, x, w, mean, rstd),
         lambda: layernorm.layernorm_backward_reference(g, x, w, mean, rstd)),
        ("gelu forward", lambda: [gelu.gelu_forward_numba(h)], lambda: [gelu.gelu_forward_reference(h)]),
        ("gelu backward", lambda: [gelu.gelu_backward_numba(gh, h)], lambda: [gelu.gelu_backward_reference(gh, h)]),
        ("gelu_exact forward", lambda: [gelu.gelu_exact_forward_numba(h)], lambda: [gelu.gelu_exact_forward_reference(h)]),
        ("gelu_exact backward", lambda: [gelu.gelu_exact_backward_numba(gh, h)],
         lambda: [gelu.gelu_exact_backward_reference(gh, h)]),
        ("cross_entropy forward", lambda: cross_entropy.cross_entropy_forward_numba(logits, targets, -100),
         lambda: cross_entropy.cross_entropy_forward_reference(logits, targets, -100)),
        ("cross_entropy backward", lambda: [cross_entropy.cross_entropy_backward_numba(g_rows, logits, targets, -100, lse)],
         lambda: [cross_entropy.cross_entropy_backward_reference(g_rows, logits, targets, -100, lse)]),
    ]


_backend_run = _backend.run_parallel  # the real one, for spies that count its calls


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_kernels_cut_into_blocks_match_the_twin_and_one_block_bit_for_bit(dtype, two_threads, monkeypatch):
    """The shapes above are under each file's GRAIN, so they ran as one block; here GRAIN = 1 cuts every call
    into four blocks (two per thread). Rows (and elements) are independent and layer norm's dw, db add fixed
    64-row partials in order, so the blocks must change no bit; and the result must still match the twin."""
    one_block = {name: run() for name, run, _ in row_kernel_runs(dtype)}
    blocks = []
    monkeypatch.setattr(_backend, "run_parallel",
                        lambda tasks, blas=True: (blocks.append(len(tasks)), _backend_run(tasks, blas)))
    for module in (layernorm, gelu, cross_entropy):
        monkeypatch.setattr(module, "GRAIN", 1)
    for name, run, twin in row_kernel_runs(dtype):
        got = run()
        for a, b in zip(got, one_block[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
        assert_all_close(got, twin(), dtype, name)
    assert len(blocks) == 8 and all(n >= 3 for n in blocks), blocks  # every kernel ran as several tasks


def cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


def packed_float32_ops(dispatcher):
    """Packed float32 vector instructions (v...ps on a ymm or zmm register) in a compiled function's x86 code."""
    return sum(len(re.findall(r"\bv\w+ps\s+%[yz]mm", asm)) for asm in dispatcher.inspect_asm().values())


@pytest.mark.skipif(numba.config.DISABLE_JIT or not cpu_has("avx2"), reason="reads compiled x86 AVX code")
def test_njit_options_let_the_exact_gelu_loop_vectorize():
    """What njit's error_model="numpy" is for (docs/kernels.md, "Why a loop does not vectorize"): the exact
    GELU's loop, compiled with the kernel's own options, is vector code; with Numba's default error model,
    whose ZeroDivisionError check puts a branch in the loop, it is scalar. Compiled here without a cache,
    since Numba cannot show the code of a cached function."""
    options = {k: v for k, v in gelu._exact_forward.targetoptions.items() if k not in ("cache", "nopython")}
    assert options.get("error_model") == "numpy" and options.get("nogil"), options
    signature = (numba.float32[::1], numba.float32[::1])
    counts = {}
    for model in ("numpy", "python"):
        fresh = numba.njit(cache=False, **dict(options, error_model=model))(gelu._exact_forward.py_func)
        fresh.compile(signature)
        counts[model] = packed_float32_ops(fresh)
    assert counts["numpy"] >= 16 and counts["python"] * 4 <= counts["numpy"], counts


def test_run_parallel_runs_tasks_at_once_on_the_main_thread(two_threads):
    barrier = threading.Barrier(2, timeout=10)  # run one after the other, the first task would wait in vain
    idents = []

    def task():
        idents.append(threading.get_ident())
        barrier.wait()

    _backend.run_parallel([task, task])
    assert len(set(idents)) == 2 and threading.get_ident() in idents


def test_tasks_without_blas_use_the_threads_even_where_blas_cannot_be_held(two_threads, monkeypatch):
    """Where threadpoolctl controls no BLAS (Apple's Accelerate, say), products run serially, so that BLAS's
    own threads do not compete with ours; the row kernels call no BLAS (blas=False) and still share the cores."""
    monkeypatch.setattr(_backend, "_blas_controllers", lambda: [])
    for blas, threads_used in ((True, 1), (False, 2)):
        barrier = threading.Barrier(threads_used, timeout=10)  # two tasks one after the other would wait in vain
        idents = []

        def task():
            idents.append(threading.get_ident())
            barrier.wait()

        _backend.run_parallel([task, task], blas=blas)
        assert len(set(idents)) == threads_used, blas
    barrier, idents = threading.Barrier(2, timeout=10), []

    def rows(start, stop):  # what a row kernel's block does, as far as threads go
        idents.append(threading.get_ident())
        barrier.wait()

    _backend.parallel_rows(rows, 2, 1)  # two blocks of one row
    assert len(set(idents)) == 2


@pytest.mark.parametrize("failing_first", [True, False])  # the error in the calling thread, or in the helper
def test_run_parallel_raises_a_task_error_after_every_other_task_finished(failing_first, two_threads):
    slow_started, slow_done, quick_done = threading.Event(), threading.Event(), []

    def slow():
        slow_started.set()
        time.sleep(0.1)
        slow_done.set()

    def failing():  # fails while slow() runs on the other thread
        slow_started.wait(timeout=10)
        raise ValueError("task failed")

    tasks = ([failing, slow] if failing_first else [slow, failing]) + [lambda: quick_done.append(1)] * 4
    before = blas_threads()
    with pytest.raises(ValueError, match="task failed"):
        _backend.run_parallel(tasks)
    assert slow_done.is_set(), "the error came out while a sibling task was still running"
    assert len(quick_done) == 4
    assert blas_threads() == before


def test_run_parallel_off_the_main_thread_runs_serially_there(two_threads, monkeypatch):
    monkeypatch.setattr(matmul, "PARALLEL_MIN_MACS", 0)
    rng = np.random.default_rng(17)
    pairs = linear_backward_pairs(rng, 9, 4, 5, np.float64)
    seen = {}

    def off_main():
        try:
            out, idents, events = np.zeros(50), set(), []

            def work(start, stop):
                events.append(("start", start))
                idents.add(threading.get_ident())
                if start == 0:
                    time.sleep(0.05)  # a helper thread, if any, would start the next chunks meanwhile
                out[start:stop] = np.arange(start, stop)
                events.append(("stop", start))

            _backend.parallel_chunks(work, 50, 3)
            with kernels.use("numba"):
                products = matmul.matmuls(pairs)
            seen.update(out=out, idents=idents, events=events, products=products)
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            seen["error"] = error

    worker = threading.Thread(target=off_main)
    worker.start()
    worker.join(30)
    assert not worker.is_alive() and "error" not in seen, seen.get("error")
    assert seen["idents"] == {worker.ident}
    assert seen["events"] == [(edge, start) for start in range(0, 50, 3) for edge in ("start", "stop")]  # in order
    np.testing.assert_array_equal(seen["out"], np.arange(50))
    assert_all_close(seen["products"], [a @ b for a, b in pairs], np.float64, "matmuls off the main thread")


def test_run_parallel_holds_blas_to_one_thread_and_restores_its_counts(two_threads):
    with threadpoolctl.threadpool_limits(limits=3, user_api="blas"):  # a count to give back that is not the default
        before = blas_threads()
        inside = []
        _backend.run_parallel([lambda: inside.append(blas_threads())] * 2)
        assert len(inside) == 2 and all(n == 1 for counts in inside for _, n in counts)
        assert blas_threads() == before
        rng = np.random.default_rng(18)
        with kernels.use("numba"):
            matmul.matmuls([(randn(rng, (4, 3), np.float32), randn(rng, (3, 2), np.float32))])  # serial branch
            matmul.matmuls([(randn(rng, (600, 64), np.float32), randn(rng, (64, 96), np.float32))])  # threaded
        assert blas_threads() == before
