"""Vectorizable tanh and exp for the float32 kernels (Numba's math.tanh / math.exp are scalar libm calls).

Map of this file:
  as_type(value, like)     a constant as a scalar of like's dtype, so float32 loops stay in float32
  tanh(u, like)            float32 `like`: a rational approximation (Eigen's, in float32), else libm's tanh
  exp_nonpositive(u, like) exp(u) for u <= 0; float32 `like`: exp(u / 1024) ** 1024 by a degree-6 Taylor
                           polynomial and ten squarings (relative error < 1e-8 on [-87, 0], measured)
`like` is any array of the kernel's dtype; only its dtype matters. Compiled, an @overload picks one
formula per dtype while the kernel is typed, so no branch is left in the loop to stop vectorization.
Under NUMBA_DISABLE_JIT=1 the plain Python bodies below run instead (same formulas, same choice).
Caution: Numba's cache only watches the file that defines a kernel, so after editing this file delete
tinyft/kernels/__pycache__ (or the NUMBA_CACHE_DIR folder) or the kernels keep the old formulas.
Why: a loop calling libm's expf or tanhf does one element at a time (~4 and ~15 ns each here); these
polynomials are plain multiply-adds, which LLVM turns into 8- or 16-wide vector code.
"""

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ._backend import njit

F32 = np.float32
TANH_CLAMP = F32(7.90531110763549805)  # the rational approximation's fitted range
TANH_ONE = F32(9.1)  # from here on float32 tanh(u) rounds to exactly +-1
# Eigen's float32 tanh: an odd degree-13 numerator over an even degree-6 denominator, in float32 throughout
# (float32 constants keep the arithmetic in float32: 16 lanes per AVX-512 vector instead of float64's 8).
P13, P11, P9, P7, P5, P3, P1 = (F32(c) for c in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                                                 5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                                                 4.89352455891786e-03))
Q6, Q4, Q2, Q0 = (F32(c) for c in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                                   4.89352518554385e-03))


def _tanh_rational(x):
    if abs(x) >= TANH_ONE:  # float32's own tanh is exactly +-1 here; keeping 1 - t^2 = 0 keeps GELU's tail exact
        return math.copysign(F32(1.0), x)  # (a select, not a jump, after compilation: the loop still vectorizes)
    u = min(max(x, -TANH_CLAMP), TANH_CLAMP)
    u2 = u * u
    p = u2 * P13 + P11  # numerator / u, Horner in u^2
    p = u2 * p + P9
    p = u2 * p + P7
    p = u2 * p + P5
    p = u2 * p + P3
    p = u2 * p + P1
    q = u2 * Q6 + Q4  # denominator
    q = u2 * q + Q2
    q = u2 * q + Q0
    return u * p / q


def _tanh_exact(u):
    return math.tanh(u)


def _exp_squaring(u):
    y = float(u) * (1.0 / 1024.0)  # float(): in float64, compiled or not (ten squarings amplify rounding)  # |y| <= 0.085 for u >= -87: the Taylor tail y^7/7! is ~1e-11
    p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0))))))
    for _ in range(10):  # exp(y)^(2^10); each squaring doubles the relative error: 1e-11 * 1024 ~ 1e-8
        p = p * p
    return p


def _exp_exact(u):
    return math.exp(u)


def as_type(value, like):
    """value as a scalar of like's dtype: kernels cast their constants once, so float32 data is computed in
    float32 (a Python float constant would make every product float64)."""
    return like.dtype.type(value)


def tanh(u, like):
    return _tanh_rational(u) if like.dtype == np.float32 else _tanh_exact(u)


def exp_nonpositive(u, like):
    return _exp_squaring(u) if like.dtype == np.float32 else _exp_exact(u)


if not numba.config.DISABLE_JIT:
    _tanh_rational_jit = njit(inline="always")(_tanh_rational)
    _tanh_exact_jit = njit(inline="always")(_tanh_exact)
    _exp_squaring_jit = njit(inline="always")(_exp_squaring)
    _exp_exact_jit = njit(inline="always")(_exp_exact)

    @overload(as_type, inline="always")
    def _as_type_typed(value, like):
        if like.dtype == types.float32:
            return lambda value, like: np.float32(value)
        return lambda value, like: np.float64(value)

    @overload(tanh, inline="always")
    def _tanh_typed(u, like):
        if like.dtype == types.float32:
            return lambda u, like: _tanh_rational_jit(u)
        return lambda u, like: _tanh_exact_jit(u)

    @overload(exp_nonpositive, inline="always")
    def _exp_typed(u, like):
        if like.dtype == types.float32:
            return lambda u, like: _exp_squaring_jit(u)
        return lambda u, like: _exp_exact_jit(u)
