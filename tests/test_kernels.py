"""Kernels against their NumPy twins, fused ops against their composed specs, and the backend switch.

Map of this file:
  1. every *_numba kernel equals its *_reference twin (float32 and float64, awkward shapes, fwd and bwd)
  2. gradcheck (float64) through every fused Function under both backends
  3. every fused public op equals its *_composed spec (output and gradients)
  4. the switch: use() as call and context manager, TINYFT_KERNELS, bad names; the cache fallback
  5. the whole GPT: same loss and gradients under "numba" and "numpy"
Tests marked nojit use tiny shapes; tests/test_kernels_nojit.py reruns them with NUMBA_DISABLE_JIT=1.
Speed is never asserted here: benchmarks/ measures it.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tinyft
from tinyft import Tensor, gradcheck, kernels
from tinyft import functional as F
from tinyft.kernels import _backend, adamw, attention, cross_entropy, embedding, gelu, layernorm, matmul

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


def check_attention(shape, dtype, causal, save_probs):
    """Both Numba paths (BLAS + fused softmax, and the all-loops kernel) against the NumPy twin."""
    rng = np.random.default_rng(4)
    q, k, v, dout = (randn(rng, shape, dtype) for _ in range(4))
    paths = {"blas+softmax": (attention.attention_forward_numba, attention.attention_backward_numba),
             "loops": (attention.attention_forward_loops_numba, attention.attention_backward_loops_numba)}
    want = attention.attention_forward_reference(q, k, v, causal, save_probs)
    want_grads = attention.attention_backward_reference(dout, q, k, v, *want, causal)
    for name, (forward, backward) in paths.items():
        what = f"attention {name} causal={causal} save_probs={save_probs}"
        got = forward(q, k, v, causal, save_probs)
        assert_all_close(got, want, dtype, what + " forward")
        got = backward(dout, q, k, v, *got, causal)
        assert_all_close(got, want_grads, dtype, what + " backward")


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
        assert gradcheck(lambda x, W, bias: F.linear(x, W, bias), [x, W, bias])
        assert gradcheck(lambda x, W: F.linear(x, W), [x, W])
        assert gradcheck(lambda x: F.cross_entropy(x, targets, ignore_index=-1), [x])
        assert gradcheck(lambda x: F.cross_entropy(x, np.abs(targets)), [x])
        assert gradcheck(lambda q, k, v: F.attention(q, k, v), [q, k, v])
        assert gradcheck(lambda q, k, v: F.attention(q, k, v, causal=False), [q, k, v])
        assert gradcheck(lambda t: F.embedding(np.array([[1, 5, 1], [0, 1, 1]]), t), [table])


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
    "cross_entropy": (lambda x: F.cross_entropy(x, TARGETS, ignore_index=-1),
                      lambda x: F.cross_entropy_composed(x, TARGETS, ignore_index=-1), [(3, 4, 7)]),
    "embedding": (lambda w: F.embedding(TARGETS + 1, w), lambda w: F.embedding_composed(TARGETS + 1, w), [(8, 3)]),
    "attention": (F.attention, F.attention_composed, [(2, 3, 5, 4)] * 3),
    "attention_full": (lambda q, k, v: F.attention(q, k, v, causal=False),
                       lambda q, k, v: F.attention_composed(q, k, v, causal=False), [(1, 2, 6, 3)] * 3),
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
    with pytest.raises(ValueError, match="attention: q, k, v must share one shape"):
        F.attention(Tensor(np.ones((1, 1, 2, 3))), Tensor(np.ones((1, 1, 2, 3))), Tensor(np.ones((1, 1, 3, 3))))
    with pytest.raises(ValueError, match=r"cross_entropy: targets must lie in \[0, 4\)"):
        F.cross_entropy(Tensor(np.ones((2, 4))), np.array([0, 4]))
    with pytest.raises(ValueError, match="embedding: ids must lie in"):
        F.embedding(np.array([5]), Tensor(np.ones((3, 2))))
    x16 = Tensor(np.linspace(-2, 2, 6).astype(np.float16))  # not a kernel dtype: the composed path serves it
    np.testing.assert_allclose(F.gelu(x16).data, F.gelu_composed(x16).data)
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
    nn = pytest.importorskip("tinyft.nn", reason="tinyft/nn.py (GPT) not written yet")
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
