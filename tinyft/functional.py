"""Differentiable ops for neural networks, composed from the engine's ops so each reads like its formula.

Map of this file:
  linear                      x @ weight.T + bias, weight stored (out, in) as torch.nn.Linear
  softmax, log_softmax        stable: subtract the row maximum before exp
  cross_entropy               mean negative log-likelihood over counted positions (ignore_index)
  layer_norm, gelu            normalisation and GPT-2's tanh-approximated GELU
  erf, gelu_exact             the error function and the exact GELU x Phi(x) (nanoGPT's nn.GELU())
  embedding, dropout          row lookup (scatter-add gradient), seeded inverted dropout
  where, masked_fill          choose elementwise between two tensors
  attention                   causal scaled dot-product attention over (B, H, T, hd)
  qkv_attention               the same for all heads at once on a packed (B, T, 3C) q|k|v, heads side by side
Two versions of the hot ops. `linear_composed, layer_norm_composed, gelu_composed, gelu_exact_composed,
cross_entropy_composed, embedding_composed, attention_composed, qkv_attention_composed` are built from engine
ops: read them, they are the spec. The public names `linear, layer_norm, gelu, gelu_exact, cross_entropy,
embedding, attention, qkv_attention` apply
one fused Function each (section "fused ops" at the end), whose forward and backward call tinyft/kernels/:
the Numba kernels, or their NumPy twins under tinyft.kernels.use("numpy"). tests/test_kernels.py checks
that every fused op equals its composed spec. softmax, log_softmax, erf, where, masked_fill, dropout stay
composed (erf is one small Function of its own: the engine has no erf).
"""

import math

import numpy as np

from . import kernels
from .autograd import Function, Tensor, default_rng, unbroadcast


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


# --- linear -------------------------------------------------------------------------------------------


def _check_linear(x, weight):
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but weight {weight.shape} "
                         f"expects {weight.shape[-1]}")


def linear_composed(x, weight, bias=None):
    """y = x W^T + b for x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    _check_linear(x, weight)
    y = x @ weight.T  # (..., out)
    return y if bias is None else y + bias


# --- softmax family -----------------------------------------------------------------------------------


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max_j x_j for stability.

    m is detached: subtracting any constant leaves softmax unchanged, so no gradient flows through it.
    """
    m = Tensor(x.data.max(axis=axis, keepdims=True))
    e = (x - m).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log softmax(x)_i = (x_i - m) - log sum_j exp(x_j - m): never exponentiates a large number."""
    z = x - Tensor(x.data.max(axis=axis, keepdims=True))
    return z - z.exp().sum(axis=axis, keepdims=True).log()


def _check_targets(logits, targets, ignore_index):
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"cross_entropy: targets must be an integer array of class ids, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets shape {targets.shape} must equal logits shape without its "
                         f"last (class) axis, {logits.shape[:-1]}")
    counted = np.ones(targets.shape, dtype=bool) if ignore_index is None else targets != ignore_index
    n_classes = logits.shape[-1]
    bad = counted & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        raise ValueError(f"cross_entropy: targets must lie in [0, {n_classes}), found {targets[bad][0]}")
    return targets, counted


def cross_entropy_composed(logits, targets, ignore_index=None):
    """Mean over counted positions of -log softmax(logits)[target].

    logits: (..., C) Tensor; targets: (...) integer array; positions whose target equals ignore_index
    are not counted (in the sum or in the mean). If no position counts, the loss is 0.
    """
    targets, counted = _check_targets(logits, targets, ignore_index)
    n_classes = logits.shape[-1]
    logp = log_softmax(logits.reshape(-1, n_classes), axis=-1)  # (N, C)
    rows = np.flatnonzero(counted.reshape(-1))  # (n,) positions that count
    picked = logp[rows, targets.reshape(-1)[rows]]  # (n,) log-probability of each target
    return -picked.sum() / max(len(rows), 1)


# --- normalisation and activation ---------------------------------------------------------------------


def layer_norm_composed(x, weight, bias=None, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over the last axis (biased var)."""
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu  # (..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    xhat = xc / (var + eps).sqrt()  # (..., C)
    out = xhat * weight
    return out if bias is None else out + bias


GELU_C = math.sqrt(2.0 / math.pi)


def gelu_composed(x):
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + (GELU_C * (x + 0.044715 * x * x * x)).tanh())


class Erf(Function):
    """erf(x) = 2/sqrt(pi) * integral from 0 to x of exp(-t^2) dt, elementwise.

    forward: math.erf on each element (NumPy has no erf), in float64, returned in x's dtype.
    backward: d erf(x) / dx = 2/sqrt(pi) exp(-x^2), the integrand at x.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.asarray(_erf_each(x.astype(np.float64)), dtype=np.float64).astype(x.dtype)  # 0-d safe

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * (2.0 / math.sqrt(math.pi)) * np.exp(-x * x)


_erf_each = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """The error function, elementwise (float dtypes; the gradient is 2/sqrt(pi) exp(-x^2))."""
    x = _tensor(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"erf: x must hold floats, got dtype {x.dtype}")
    return Erf.apply(x)


def gelu_exact_composed(x):
    """GELU, exact (torch.nn.GELU(), nanoGPT's MLP): x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


# --- lookup and regularisation ------------------------------------------------------------------------


def _check_embedding(idx, weight):
    idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"embedding: idx must hold integer ids, got dtype {idx.dtype}")
    n_rows = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        raise ValueError(f"embedding: ids must lie in [0, {n_rows}), got min {idx.min()} and max {idx.max()}")
    return idx


def embedding_composed(idx, weight):
    """Rows of `weight` (V, C) picked by integer ids `idx` (...) -> (..., C).

    The gradient scatter-adds each output row back into the row it came from (GetItem uses np.add.at),
    so a token appearing twice in a batch gets both contributions.
    """
    return weight[_check_embedding(idx, weight)]


def dropout(x, p=0.1, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = default_rng().random(x.shape) >= p  # seeded by tinyft.manual_seed
    return x * Tensor((keep / (1.0 - p)).astype(x.dtype))


# --- selection -----------------------------------------------------------------------------------------


class Where(Function):
    """out = a where cond is True, else b (cond is a plain boolean array, broadcast with a and b)."""

    @staticmethod
    def forward(ctx, a, b, cond=None):
        ctx.cond, ctx.shapes = cond, (a.shape, b.shape)
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        a_shape, b_shape = ctx.shapes
        zero = np.zeros((), dtype=g.dtype)
        return unbroadcast(np.where(ctx.cond, g, zero), a_shape), unbroadcast(np.where(ctx.cond, zero, g), b_shape)


def where(cond, a, b):
    """Elementwise choice (np.where); gradients go to whichever side was chosen."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    # A Python number takes the other side's dtype (as Tensor._lift does), so float32 stays float32
    # whichever side the number is on.
    if isinstance(a, (int, float)) and isinstance(b, Tensor) and np.issubdtype(b.dtype, np.floating):
        a = np.asarray(a, dtype=b.dtype)
    if isinstance(b, (int, float)) and isinstance(a, Tensor) and np.issubdtype(a.dtype, np.floating):
        b = np.asarray(b, dtype=a.dtype)
    a, b = _tensor(a), _tensor(b)
    dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else b.dtype
    # Only a side that needs no gradient may be cast (casting makes a new leaf, cutting the graph);
    # if both sides require grad in different dtypes, np.where promotes and backward casts each grad back.
    a = a if a.dtype == dtype or a.requires_grad else Tensor(a.data.astype(dtype))
    b = b if b.dtype == dtype or b.requires_grad else Tensor(b.data.astype(dtype))
    return Where.apply(a, b, cond=cond)


def masked_fill(x, mask, value):
    """x with `value` wherever mask is True (the filled places get no gradient)."""
    return where(mask, Tensor(np.asarray(value, dtype=x.dtype)), x)


# --- attention -----------------------------------------------------------------------------------------


def _check_attention(q, k, v):
    if q.ndim != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"attention: q, k, v must share one shape (B, H, T, hd), got {q.shape}, {k.shape}, {v.shape}")


def attention_composed(q, k, v, causal=True):
    """softmax(q k^T / sqrt(hd) + mask) v, for q, k, v shaped (B, H, T, hd) -> (B, H, T, hd).

    With causal=True, position t attends to positions 0..t only: scores above the diagonal are set to
    -inf before the softmax, so their probabilities are exactly 0.
    """
    _check_attention(q, k, v)
    T, hd = q.shape[-2], q.shape[-1]
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hd))  # (B, H, T, T)
    if causal:
        future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T) True above the diagonal
        scores = masked_fill(scores, future, -np.inf)
    probs = softmax(scores, axis=-1)  # (B, H, T, T) rows sum to 1
    return probs @ v  # (B, H, T, hd)


def _check_qkv(qkv, n_head):
    if isinstance(n_head, bool) or not isinstance(n_head, (int, np.integer)) or n_head < 1:
        raise ValueError(f"qkv_attention: n_head must be a positive int, got {n_head!r}")
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
        raise ValueError(f"qkv_attention: qkv must be (B, T, 3C) with C divisible by n_head={n_head}, "
                         f"got shape {qkv.shape}")


def qkv_attention_composed(qkv, n_head, causal=True):
    """Multi-head attention on q, k, v packed side by side: qkv (B, T, 3C) -> (B, T, C), heads side by side.

    Step by step, as nanoGPT's CausalSelfAttention writes it: split into q, k, v (B, T, C); give each head
    its own axis, (B, T, H, hd) -> (B, H, T, hd); attend; put the heads back side by side, (B, T, C).
    """
    _check_qkv(qkv, n_head)
    B, T, C3 = qkv.shape
    C, H = C3 // 3, int(n_head)
    q, k, v = qkv[:, :, :C], qkv[:, :, C:2 * C], qkv[:, :, 2 * C:]  # 3 x (B, T, C)
    q, k, v = (a.reshape(B, T, H, C // H).transpose(0, 2, 1, 3) for a in (q, k, v))  # 3 x (B, H, T, hd)
    y = attention_composed(q, k, v, causal)  # (B, H, T, hd)
    return y.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, H, hd) -> (B, T, C)


# --- fused ops: one Function each, forward and backward in tinyft/kernels/ ------------------------------
# The forward casts its inputs to one float dtype and C-contiguous layout (the kernels read raw memory);
# Function.apply casts each gradient back to its input's dtype. Other dtypes (ints, float16) and unusual
# parameter shapes take the composed path, which handles everything NumPy broadcasting does.

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _fused_dtype(*tensors):
    """The one float dtype a fused kernel runs in, or None when the composed path must serve."""
    dtype = np.result_type(*(t.dtype for t in tensors))
    return dtype if dtype in _KERNEL_DTYPES else None


def _c(array, dtype):
    return np.ascontiguousarray(array, dtype=dtype)


class LinearFunction(Function):
    """y = x W^T + b as ONE matrix product: x (..., in) is viewed as a (N, in) matrix, N = every leading position.

    backward: dx = g W,  dW = g^T x,  db = sum of g over the N rows (each a 2-D product or a sum).
    The composed version's broadcast matmul instead builds a (..., out, in)-sized batch of products in its
    backward and sums it; here the sum over positions happens inside one matrix product.
    The products run by kernels.matmul: BLAS, spread over the cores by tinyft's threads (numba: the two
    gradient products side by side) or by BLAS's own threads (numpy).
    """

    @staticmethod
    def forward(ctx, x, weight, *bias):
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        y = kernels.matmul.matmul(x2, weight.T, bias[0] if bias else None)  # (N, out), + b on every row
        ctx.save_for_backward(x2, weight)
        ctx.x_shape, ctx.has_bias = x.shape, bool(bias)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, weight = ctx.saved
        g2 = g.reshape(-1, g.shape[-1])  # (N, out)
        wanted = [pair for pair, needed in (((g2, weight), ctx.needs_input_grad[0]),  # dx = g W     (N, in)
                                            ((g2.T, x2), ctx.needs_input_grad[1])) if needed]  # dW = g^T x (out, in)
        products = iter(kernels.matmul.matmuls(wanted))  # equal work: under numba, one core each
        dx = next(products).reshape(ctx.x_shape) if ctx.needs_input_grad[0] else None  # (..., in)
        dw = next(products) if ctx.needs_input_grad[1] else None  # (out, in)
        return (dx, dw, g2.sum(axis=0)) if ctx.has_bias else (dx, dw)


def linear(x, weight, bias=None):
    """y = x W^T + b for x (..., in), weight (out, in), bias (out,) -> (..., out). Fused: LinearFunction."""
    x, weight = _tensor(x), _tensor(weight)
    _check_linear(x, weight)
    if weight.ndim != 2 or (bias is not None and _tensor(bias).shape != (weight.shape[0],)):
        return linear_composed(x, weight, bias)
    return LinearFunction.apply(x, weight) if bias is None else LinearFunction.apply(x, weight, bias)


class LayerNormFunction(Function):
    """Layer norm over the last axis; kernels/layernorm.py (saves x, mean and 1/std per row)."""

    @staticmethod
    def forward(ctx, x, weight, *bias, eps=1e-5):
        dtype, C = np.result_type(x, weight, *bias), x.shape[-1]
        x2 = _c(x.reshape(-1, C), dtype)  # (N, C)
        w = _c(weight, dtype)
        b = _c(bias[0], dtype) if bias else np.zeros(C, dtype=dtype)
        y, mean, rstd = kernels.layernorm.layernorm_forward(x2, w, b, eps)
        ctx.save_for_backward(x2, w, mean, rstd)
        ctx.has_bias = bool(bias)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x2, w, mean, rstd = ctx.saved
        dx, dw, db = kernels.layernorm.layernorm_backward(_c(g.reshape(x2.shape), x2.dtype), x2, w, mean, rstd)
        dx = dx.reshape(g.shape)
        return (dx, dw, db) if ctx.has_bias else (dx, dw)


def layer_norm(x, weight, bias=None, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis. Fused: LayerNormFunction."""
    x, weight = _tensor(x), _tensor(weight)
    bias = None if bias is None else _tensor(bias)
    tensors = (x, weight) if bias is None else (x, weight, bias)
    dtype = _fused_dtype(*tensors)
    C = x.shape[-1] if x.ndim else None
    if dtype is None or weight.shape != (C,) or (bias is not None and bias.shape != (C,)):
        return layer_norm_composed(x, weight, bias, eps)
    return LayerNormFunction.apply(*tensors, eps=eps)


class GeluFunction(Function):
    """GPT-2's tanh GELU, elementwise; kernels/gelu.py (saves x, recomputes tanh in the backward)."""

    @staticmethod
    def forward(ctx, x):
        x1 = _c(x.reshape(-1), x.dtype)  # (n,)
        ctx.save_for_backward(x1)
        return kernels.gelu.gelu_forward(x1).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        (x1,) = ctx.saved
        return kernels.gelu.gelu_backward(_c(g.reshape(-1), x1.dtype), x1).reshape(g.shape)


def gelu(x):
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Fused: GeluFunction.

    For the exact x Phi(x) (PyTorch's default nn.GELU(), nanoGPT's MLP) call gelu_exact.
    """
    x = _tensor(x)
    return GeluFunction.apply(x) if _fused_dtype(x) is not None else gelu_composed(x)


class GeluExactFunction(Function):
    """The exact GELU x Phi(x), elementwise; kernels/gelu.py (saves x, recomputes erf in the backward)."""

    @staticmethod
    def forward(ctx, x):
        x1 = _c(x.reshape(-1), x.dtype)  # (n,)
        ctx.save_for_backward(x1)
        return kernels.gelu.gelu_exact_forward(x1).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        (x1,) = ctx.saved
        return kernels.gelu.gelu_exact_backward(_c(g.reshape(-1), x1.dtype), x1).reshape(g.shape)


def gelu_exact(x):
    """GELU, exact: x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), as torch.nn.GELU(). Fused: GeluExactFunction.

    It differs from the tanh approximation (gelu) by at most 4.7e-4, near |x| = 2.7 (docs/transformer.md).
    """
    x = _tensor(x)
    return GeluExactFunction.apply(x) if _fused_dtype(x) is not None else gelu_exact_composed(x)


class CrossEntropyFunction(Function):
    """Mean softmax cross-entropy over counted rows; kernels/cross_entropy.py (saves each row's log-sum-exp)."""

    @staticmethod
    def forward(ctx, logits, targets=None, ignore=-1):
        C = logits.shape[-1]
        x2 = _c(logits.reshape(-1, C), logits.dtype)  # (N, C)
        t1 = _c(targets.reshape(-1), np.int64)  # (N,)
        row_loss, lse = kernels.cross_entropy.cross_entropy_forward(x2, t1, ignore)
        count = max(int(np.count_nonzero(t1 != ignore)), 1)  # no counted row: loss 0, gradient 0
        ctx.save_for_backward(x2, t1, lse)
        ctx.ignore, ctx.count, ctx.shape = ignore, count, logits.shape
        return np.asarray(row_loss.sum(dtype=np.float64) / count, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        x2, t1, lse = ctx.saved
        g_rows = np.full(len(t1), float(g) / ctx.count, dtype=x2.dtype)  # d loss / d row_loss_n
        grad = kernels.cross_entropy.cross_entropy_backward(g_rows, x2, t1, ctx.ignore, lse)
        return grad.reshape(ctx.shape)


def cross_entropy(logits, targets, ignore_index=None):
    """Mean over counted positions of -log softmax(logits)[target]. Fused: CrossEntropyFunction.

    logits: (..., C) Tensor; targets: (...) integer array; positions whose target equals ignore_index
    are not counted (in the sum or in the mean). If no position counts, the loss is 0.
    """
    logits = _tensor(logits)
    targets, _ = _check_targets(logits, targets, ignore_index)
    if _fused_dtype(logits) is None:
        return cross_entropy_composed(logits, targets, ignore_index)
    ignore = -1 if ignore_index is None else int(ignore_index)  # -1: every target is in [0, C), none matches
    return CrossEntropyFunction.apply(logits, targets=targets, ignore=ignore)


class EmbeddingFunction(Function):
    """weight[idx]; the backward scatter-adds rows with kernels/embedding.py instead of np.add.at."""

    @staticmethod
    def forward(ctx, weight, idx=None):
        ctx.ids, ctx.n_rows = _c(idx.reshape(-1), np.int64), weight.shape[0]
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        g2 = _c(g.reshape(len(ctx.ids), -1), g.dtype)  # (N, C)
        return kernels.embedding.embedding_backward(ctx.ids, g2, ctx.n_rows)


def embedding(idx, weight):
    """Rows of `weight` (V, C) picked by integer ids `idx` (...) -> (..., C). Fused: EmbeddingFunction.

    The gradient scatter-adds each output row back into the row it came from, so a token appearing
    twice in a batch gets both contributions.
    """
    weight = _tensor(weight)
    idx = _check_embedding(idx, weight)
    if weight.ndim != 2 or _fused_dtype(weight) is None:
        return embedding_composed(idx, weight)
    return EmbeddingFunction.apply(weight, idx=idx)


class AttentionFunction(Function):
    """Causal (or full) scaled dot-product attention over (B, H, T, hd); kernels/attention.py.

    Saves q, k, v, the output and each row's log-sum-exp (and the probabilities only if
    kernels.attention.SAVE_PROBS); the backward rebuilds what it needs from them.
    """

    @staticmethod
    def forward(ctx, q, k, v, causal=True):
        dtype = np.result_type(q, k, v)
        q, k, v = _c(q, dtype), _c(k, dtype), _c(v, dtype)
        out, lse, probs = kernels.attention.attention_forward(q, k, v, causal, kernels.attention.SAVE_PROBS)
        ctx.save_for_backward(q, k, v, out, lse, probs)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, out, lse, probs = ctx.saved
        return kernels.attention.attention_backward(_c(g, q.dtype), q, k, v, out, lse, probs, ctx.causal)


def attention(q, k, v, causal=True):
    """softmax(q k^T / sqrt(hd) + mask) v, for q, k, v shaped (B, H, T, hd) -> (B, H, T, hd).

    With causal=True, position t attends to positions 0..t only. Fused: AttentionFunction (the causal
    mask is a loop bound in the kernel; attention_composed shows it as -inf scores).
    """
    q, k, v = _tensor(q), _tensor(k), _tensor(v)
    _check_attention(q, k, v)
    if _fused_dtype(q, k, v) is None:
        return attention_composed(q, k, v, causal)
    return AttentionFunction.apply(q, k, v, causal=bool(causal))


class QKVAttentionFunction(Function):
    """qkv_attention as one Function; kernels/attention.py's qkv_attention_forward / _backward.

    The Numba path reads each head of q, k, v as a strided view of qkv and writes y and dqkv in place, so
    the split, reshapes and transposes of qkv_attention_composed cost no copies (forward or backward).
    Saves qkv, the output y (the next Linear keeps it anyway), each row's log-sum-exp and, if
    kernels.attention.SAVE_PROBS, the probabilities.
    """

    @staticmethod
    def forward(ctx, qkv, n_head=None, causal=True):
        qkv = _c(qkv, qkv.dtype)  # (B, T, 3C)
        y, lse, probs = kernels.attention.qkv_attention_forward(qkv, n_head, causal, kernels.attention.SAVE_PROBS)
        ctx.save_for_backward(qkv, y, lse, probs)
        ctx.n_head, ctx.causal = n_head, causal
        return y  # (B, T, C)

    @staticmethod
    def backward(ctx, g):
        qkv, y, lse, probs = ctx.saved
        return kernels.attention.qkv_attention_backward(_c(g, qkv.dtype), qkv, y, lse, probs, ctx.n_head, ctx.causal)


def qkv_attention(qkv, n_head, causal=True):
    """Multi-head (causal) attention on qkv (B, T, 3C) = [q | k | v], each C = n_head heads of C // n_head
    side by side -> (B, T, C), heads side by side. Fused: QKVAttentionFunction (qkv_attention_composed
    spells out the split, reshapes and transposes it avoids)."""
    qkv = _tensor(qkv)
    _check_qkv(qkv, n_head)
    if _fused_dtype(qkv) is None:
        return qkv_attention_composed(qkv, n_head, causal)
    return QKVAttentionFunction.apply(qkv, n_head=int(n_head), causal=bool(causal))
