"""Embedding backward: scatter-add each output row's gradient into the weight row it was read from.

Map of this file:
  embedding_backward_reference / _numba   ids (N,) ints, g (N, C), n_rows -> dweight (n_rows, C)
  embedding_backward                      dispatch on tinyft.kernels.current()
The forward is plain NumPy fancy indexing (weight[ids]) and needs no kernel. The backward must add, not
assign: a token seen twice gets both gradients. NumPy's np.add.at does that correctly but element by
element through a generic slow path; the kernel is the obvious loop, serial on purpose: two positions
with the same id would race on one row if threads split the positions.
"""

import numpy as np

from ._backend import current, njit


def embedding_backward_reference(ids, g, n_rows):
    grad = np.zeros((n_rows, g.shape[1]), dtype=g.dtype)
    np.add.at(grad, ids, g)
    return grad


@njit()
def embedding_backward_numba(ids, g, n_rows):
    N, C = g.shape
    grad = np.zeros((n_rows, C), dtype=g.dtype)
    for n in range(N):
        row = ids[n]
        for c in range(C):
            grad[row, c] += g[n, c]
    return grad


def embedding_backward(ids, g, n_rows):
    """ids (N,) int64, g (N, C) C-contiguous float -> dweight (n_rows, C)."""
    if current() == "numba":
        return embedding_backward_numba(ids, g, n_rows)
    return embedding_backward_reference(ids, g, n_rows)
