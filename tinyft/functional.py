"""Differentiable ops for neural networks, composed from the engine's ops so each reads like its formula.

Map of this file:
  linear                      x @ weight.T + bias, weight stored (out, in) as torch.nn.Linear
  softmax, log_softmax        stable: subtract the row maximum before exp
  cross_entropy               mean negative log-likelihood over counted positions (ignore_index)
  layer_norm, gelu            normalisation and GPT-2's tanh-approximated GELU
  embedding, dropout          row lookup (scatter-add gradient), seeded inverted dropout
  where, masked_fill          choose elementwise between two tensors
  attention                   causal scaled dot-product attention over (B, H, T, hd)
These composed versions are the readable reference; tinyft/kernels/ adds fused fast paths beside them.
"""

import math

import numpy as np

from .autograd import Function, Tensor, default_rng, unbroadcast


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


# --- linear -------------------------------------------------------------------------------------------


def linear(x, weight, bias=None):
    """y = x W^T + b for x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but weight {weight.shape} "
                         f"expects {weight.shape[-1]}")
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


def cross_entropy(logits, targets, ignore_index=None):
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


def layer_norm(x, weight, bias=None, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over the last axis (biased var)."""
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu  # (..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    xhat = xc / (var + eps).sqrt()  # (..., C)
    out = xhat * weight
    return out if bias is None else out + bias


GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x):
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + (GELU_C * (x + 0.044715 * x * x * x)).tanh())


# --- lookup and regularisation ------------------------------------------------------------------------


def embedding(idx, weight):
    """Rows of `weight` (V, C) picked by integer ids `idx` (...) -> (..., C).

    The gradient scatter-adds each output row back into the row it came from (GetItem uses np.add.at),
    so a token appearing twice in a batch gets both contributions.
    """
    idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"embedding: idx must hold integer ids, got dtype {idx.dtype}")
    n_rows = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        raise ValueError(f"embedding: ids must lie in [0, {n_rows}), got min {idx.min()} and max {idx.max()}")
    return weight[idx]


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


def attention(q, k, v, causal=True):
    """softmax(q k^T / sqrt(hd) + mask) v, for q, k, v shaped (B, H, T, hd) -> (B, H, T, hd).

    With causal=True, position t attends to positions 0..t only: scores above the diagonal are set to
    -inf before the softmax, so their probabilities are exactly 0.
    """
    if q.ndim != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"attention: q, k, v must share one shape (B, H, T, hd), got {q.shape}, {k.shape}, {v.shape}")
    T, hd = q.shape[-2], q.shape[-1]
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hd))  # (B, H, T, T)
    if causal:
        future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T) True above the diagonal
        scores = masked_fill(scores, future, -np.inf)
    probs = softmax(scores, axis=-1)  # (B, H, T, T) rows sum to 1
    return probs @ v  # (B, H, T, hd)
