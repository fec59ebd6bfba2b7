"""Fused Adam / AdamW update: one pass over each parameter instead of about ten NumPy array passes.

Map of this file:
  adam_update_reference / _numba   in place on flat arrays p, g, m, v (one parameter's data, gradient and
                                   moments) for step count t (from 1); decoupled=True is AdamW
  adam_update_numba_serial         the same loop on one thread, for parameters under PARALLEL_MIN elements
  adam_update                      dispatch on tinyft.kernels.current(); any-shape contiguous arrays
  adam_update_many                 what Adam.step calls: every parameter's update in one go, cut into chunks of
                                   CHUNK elements that tinyft's threads share (one hand-off per step, not one
                                   parallel loop per parameter); elementwise, so chunking never changes a bit
The formulas are tinyft.optim.Adam's (torch.optim semantics):
  AdamW: p *= 1 - lr wd            Adam: g = g + wd p
  m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,  p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
NumPy writes a temporary for every operator above; the kernel reads p, g, m, v once and writes p, m, v once.
"""

import functools
import math

import numpy as np
from numba import prange

from ._backend import current, njit, run_parallel


def adam_update_reference(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decoupled):
    if weight_decay != 0:
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


@njit(inline="always")
def _adam_constants(lr, beta1, beta2, weight_decay, t, decoupled):
    """Once per call: the bias corrections 1 - b1^t and 1 - b2^t, AdamW's decay factor, Adam's L2 weight."""
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    return 1.0 - beta1**t, 1.0 - beta2**t, decay, l2


@njit(inline="always")
def _adam_element(p, g, m, v, i, lr, beta1, beta2, eps, decay, l2, bc1, bc2):
    """The update of element i (decay = 1 - lr wd for AdamW, else 1; l2 = wd for Adam, else 0)."""
    gi = g[i] + l2 * p[i]
    mi = beta1 * m[i] + (1.0 - beta1) * gi
    vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
    m[i] = mi
    v[i] = vi
    p[i] = p[i] * decay - lr * (mi / bc1) / (math.sqrt(vi / bc2) + eps)


@njit(parallel=True)
def adam_update_numba(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decoupled):
    bc1, bc2, decay, l2 = _adam_constants(lr, beta1, beta2, weight_decay, t, decoupled)
    for i in prange(p.shape[0]):
        _adam_element(p, g, m, v, i, lr, beta1, beta2, eps, decay, l2, bc1, bc2)


@njit(nogil=True)
def adam_update_numba_serial(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decoupled):
    """The same loop on one thread, for small parameters (biases, layer-norm weights): starting the
    parallel loop costs ~0.1 ms, measured, while 512 elements take a microsecond."""
    bc1, bc2, decay, l2 = _adam_constants(lr, beta1, beta2, weight_decay, t, decoupled)
    for i in range(p.shape[0]):
        _adam_element(p, g, m, v, i, lr, beta1, beta2, eps, decay, l2, bc1, bc2)


PARALLEL_MIN = 1 << 15  # elements; below this adam_update runs the serial loop


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decoupled=True):
    """Update p, m, v in place (same shape and float dtype, C-contiguous; g is cast to p's dtype)."""
    g = np.ascontiguousarray(g, dtype=p.dtype)
    if current() == "numba" and p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous:
        kernel = adam_update_numba if p.size >= PARALLEL_MIN else adam_update_numba_serial
        kernel(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), float(lr), float(beta1),
               float(beta2), float(eps), float(weight_decay), int(t), bool(decoupled))
    else:
        adam_update_reference(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decoupled)


CHUNK = 1 << 16  # elements per task in adam_update_many: ~1 MB of p, g, m, v, a few tens of microseconds


def adam_update_many(updates):
    """Apply adam_update to every (p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decoupled) in `updates`.

    Under numba the parameters are cut into chunks of at most CHUNK elements and the chunks shared by
    tinyft's threads (kernels/_backend.run_parallel) running the serial kernel, which releases the GIL:
    one hand-off for the whole step instead of a parallel loop launched for each of the GPT's 52 parameters.
    """
    if current() != "numba":
        for update in updates:
            adam_update(*update)
        return
    tasks = []
    for update in updates:
        p, g, m, v, lr, beta1, beta2, eps, weight_decay, t, decoupled = update
        if not (p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
            adam_update(*update)  # a strided parameter: adam_update's own fallback (the twin)
            continue
        flat = [a.reshape(-1) for a in (p, np.ascontiguousarray(g, dtype=p.dtype), m, v)]  # 4 x (n,) views
        numbers = (float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(t), bool(decoupled))
        for start in range(0, p.size, CHUNK):
            chunk = [a[start:start + CHUNK] for a in flat]  # each task writes only its own elements
            tasks.append(functools.partial(adam_update_numba_serial, *chunk, *numbers))
    run_parallel(tasks, blas=False)  # the update calls no BLAS
